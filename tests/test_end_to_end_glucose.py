"""The glucose chain: emulated glucometer → homehub run (a real process) → TLS mosquitto → receiver.

As tests/test_end_to_end.py, with a GLS meter: the agent syncs the meter's records over RACP
incrementally; the receiver must see exactly the values the meter held (the control-solution
test as a device QC record, never as patient glucose), and the outbox's high-water mark must
equal the last sequence number once the sync is done.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import pytest

from agent.ble.gls_session import SYNC_KEY, SyncMark
from agent.config import load
from agent.daemon import open_outbox
from agent.outbox import peek_counts
from hil.broker import Broker
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, GlucoseRecord, Unit, example_records, mg_per_dl
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_home import TIMEZONE
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import agent_process, stop
from tests.virtual_home_fixtures import ARRIVAL_TIMEOUT_S, canary_agent_config, collect

pytestmark = pytest.mark.timeout(90)

LABEL: Final = "glucometer"
METER_INFO: Final = DeviceInformation(
    model_number="HH-GLU-1",
    serial_number=phi_canaries.DEVICE_SERIAL,
    system_id=(0x0012FFFE34, 0xCA7A00),
)


@dataclass(frozen=True, slots=True)
class Seen:
    """A glucose record as the platform reads it: kind, code, value, unit, time, subject."""

    kind: str
    code: str
    value: str
    unit: str
    effective: str
    subject: str


def seen(reading: VerifiedReading) -> Seen:
    """The primary Observation of a verified message."""
    entries = reading.payload["fhir"]["entry"]
    first = entries[0]["resource"]
    quantity = first["valueQuantity"]
    # The subject's type: an entry's by its fullUrl (urn:uuid:), else the relative Type/id.
    types = {e["fullUrl"]: e["resource"]["resourceType"] for e in entries}
    subject = first["subject"]["reference"]
    return Seen(
        reading.kind,
        first["code"]["coding"][0]["code"],
        str(quantity["value"]),
        quantity["code"],
        first["effectiveDateTime"],
        types.get(subject, subject.split("/")[0]),
    )


def expected(record: GlucoseRecord) -> Seen:
    """What the platform must see for a meter record (computed from the meter's own fields)."""
    assert record.concentration is not None
    control = record.sample_type == 10 or record.sample_location == 4
    codes = {1: "160184", 2: "160188"}
    if record.unit is Unit.MOL_PER_L:
        value, unit = record.concentration.scaleb(3), "mmol/L"
    else:
        value, unit = record.concentration.scaleb(5), "mg/dL"
    t = record.base_time
    local = datetime(t.year, t.month, t.day, t.hours, t.minutes, t.seconds, tzinfo=UTC)
    local += timedelta(minutes=record.time_offset_min or 0)
    effective = local.replace(tzinfo=ZoneInfo(TIMEZONE)).isoformat(timespec="seconds")
    return Seen(
        "device_qc" if control else "observation",
        "160208" if control else codes[record.sample_type],
        str(Decimal(value)),
        unit,
        effective,
        "Device" if control else "Patient",
    )


async def test_glucose_sync_arrives_exact_and_mark_commits(
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """Over an encrypted link (Just Works), all records arrive once with the meter's values
    (control solution as device QC); a record added later arrives alone; the outbox's mark
    is the last sequence number."""
    records = example_records()
    later = GlucoseRecord(0, DateTime(2025, 3, 15, 6, 55, 0), mg_per_dl("131"))
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(phi_canaries.DEVICE_ADDRESS, "glucometer")
        meter = Glucometer(device, records, info=METER_INFO, require_encryption=True)
        await meter.start()
        config = canary_agent_config(
            tmp_path, radio, dev_pki, broker.port, kind="glucose", label=LABEL
        )
        async with agent_process(config, request.node.nodeid) as agent:
            first = await collect(receiver, len(records))
            added = meter.add_record(later)
            second = await collect(receiver, 1)
            # Two more sessions after the new record: both find nothing new. The stop below
            # lands inside a session on purpose: it must still end the agent promptly.
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                await meter.wait_for_requests(len(meter.requests) + 2)
            assert receiver.readings.empty()
            assert 0 == await stop(agent)
        await meter.stop()

    assert sorted((seen(r) for r in first), key=lambda s: s.effective) == sorted(
        (expected(r) for r in records), key=lambda s: s.effective
    )
    assert [seen(r) for r in second] == [expected(added)]
    assert len({r.id for r in first + second}) == len(records) + 1
    assert meter.requests[0] == bytes.fromhex("0101")
    assert bytes.fromhex("0103010500") in meter.requests  # >= 5 after the mark at 4
    assert 0 == receiver.stats.rejected_total

    cfg = load(config)
    outbox, _signer = open_outbox(cfg)
    try:
        stored = outbox.get_sync_state(LABEL, SYNC_KEY)
    finally:
        outbox.close()
    assert stored is not None
    assert SyncMark.from_bytes(stored).sequence_number == added.sequence_number == 5
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (0, 0) == (counts.pending, counts.refused)
