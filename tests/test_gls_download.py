"""Long glucose downloads through the daemon's own pipeline, on the virtual radio.

The hub is :class:`agent.daemon.Hub` run as ``homehub run`` runs it (``Hub(cfg).run(stop)``:
its BLE collector, ingest queue, storage thread and encrypted outbox on disk), driven only
through its public surface: the configuration, the observer and the stop event. The meter
is the emulated glucometer (``hil.emulators.glucometer``) on the Bumble virtual radio,
where nothing paces it: it sends a report far faster than the pipeline stores it, the worst
case for the session's buffers (``drivers.gls_sync.MAX_READY_RECORDS``).

No broker is reachable: every stored record stays pending, so the outbox's contents after
the stop are exactly what was stored. Expected values come from the meter's own encoders.
Nothing sleeps: every wait is for a condition, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from structlog.testing import capture_logs

from agent import config, cose
from agent.ble.gls_session import SYNC_KEY, SyncMark, fingerprint
from agent.daemon import Arrival, Fate, Hub, open_outbox
from agent.ingest_batcher import Outcome, Status
from agent.outbox import OutboxRecord
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, GlucoseContext, GlucoseRecord, mg_per_dl
from hil.pki import DevPki
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.conftest import MeterFactory

pytestmark = pytest.mark.timeout(120)

LABEL: Final = "meter"
WAIT_S: Final = 60.0
"""Bound on waiting for a whole download: measured 1.5-3 s for 1,000 records here."""
DROPS: Final = (1, 137, 250, 499)
"""Sequence numbers after which the meter's link is cut, one per session."""


def meter_records(count: int) -> list[GlucoseRecord]:
    """``count`` records numbered from 1; every seventh with a context (two notifications,
    joined by sequence number)."""
    day = DateTime(2025, 3, 14, 7, 0, 0)
    return [
        GlucoseRecord(
            n,
            day,
            mg_per_dl(str(70 + n % 150)),
            time_offset_min=n % 600,
            context=GlucoseContext(meal=1 + n % 3) if n % 7 == 0 else None,
        )
        for n in range(1, count + 1)
    ]


class Recorder:
    """The hub's observer: every arrival's fate, and an event once ``expect`` were stored."""

    def __init__(self, expect: int) -> None:
        self.fates: list[tuple[Arrival, Fate]] = []
        self.expect = expect
        self.all_stored = asyncio.Event()

    def stored(self, arrival: Arrival, fate: Fate) -> None:
        self.fates.append((arrival, fate))
        if sum(isinstance(f, Outcome) and f.status is Status.STORED for _, f in self.fates) >= (
            self.expect
        ):
            self.all_stored.set()

    def stored_data(self) -> list[bytes]:
        """The 0x2A18 values of the arrivals stored (not re-sends), in commit order."""
        return [
            a.raw.data
            for a, f in self.fates
            if isinstance(f, Outcome) and f.status is Status.STORED
        ]

    def delivered(self, seqs: Sequence[int]) -> None:
        raise AssertionError("no broker is reachable: nothing can be delivered")


def hub_config(tmp_path: Path, radio: VirtualRadio, pki: DevPki) -> config.Config:
    """The daemon's configuration: this radio, one glucometer, an unreachable broker."""
    state = tmp_path / "state"
    return config.from_mapping(
        {
            "hub": {"id": pki.hub_id, "timezone": "UTC", "state_dir": str(state)},
            "patient": {"id": phi_canaries.PATIENT_ID},
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
            "signing": {"key_file": str(pki.hub_key)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": 9,  # discard: refused, so every record stays pending
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.hub_cert),
                "key_file": str(pki.hub_key),
            },
            "ble": {
                "stack": radio.stack,
                "scan_timeout_s": 5.0,
                "connect_timeout_s": 5.0,
                "session_timeout_s": 40.0,
                "cycle_interval_s": 0.5,
            },
            "devices": [
                {"kind": "glucose", "address": phi_canaries.DEVICE_ADDRESS, "label": LABEL}
            ],
        },
        tmp_path / "homehub.toml",
    )


async def run_until_stored(
    cfg: config.Config, recorder: Recorder
) -> list[MutableMapping[str, Any]]:
    """Run the daemon until ``recorder`` saw every record stored, then stop it as SIGTERM
    does; the log events of the run."""
    stop = asyncio.Event()
    with capture_logs() as events:
        run = asyncio.create_task(Hub(cfg, observer=recorder).run(stop), name="test.hub")
        try:
            async with asyncio.timeout(WAIT_S):
                done = asyncio.ensure_future(recorder.all_stored.wait())
                await asyncio.wait({run, done}, return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
                assert not run.done(), run  # the hub ended on its own: its error
        finally:
            stop.set()
            await run
    return events


def stored_payloads(cfg: config.Config, pki: DevPki) -> tuple[list[dict[str, Any]], bytes | None]:
    """Every record in the outbox (pending: nothing was delivered), opened and verified, in
    outbox order; and the glucometer's committed high-water mark."""
    public = cose.load_signing_key(pki.hub_key).public_key()
    outbox, _signer = open_outbox(cfg)
    try:
        records: list[OutboxRecord] = []
        while batch := outbox.pending_after(records[-1].seq if records else 0, 1000):
            records += batch
        counts = outbox.counts()
        mark = outbox.get_sync_state(LABEL, SYNC_KEY)
    finally:
        outbox.close()
    assert (counts.pending, counts.refused, counts.damaged) == (len(records), 0, 0)
    payloads = [cbor2.loads(cose.verify1(r.body, public).payload) for r in records]
    assert [p["seq"] for p in payloads] == [r.seq for r in records]
    return payloads, mark


def sequence_numbers(payloads: list[dict[str, Any]]) -> list[int]:
    """The meter's sequence number of each stored glucose record (from its identifier)."""
    out = []
    for payload in payloads:
        identifier = payload["id"]
        assert "-seq:" in identifier, "a GLS record's identity is its sequence number"
        out.append(int(identifier.rsplit("-seq:", 1)[1]))
    return out


def glucose_values(payloads: list[dict[str, Any]]) -> list[str]:
    """The primary Observation's value of each stored record, as the platform reads it."""
    return [str(p["fhir"]["entry"][0]["resource"]["valueQuantity"]["value"]) for p in payloads]


def expected_values(records: list[GlucoseRecord]) -> list[str]:
    """The meter's concentrations in mg/dL, exact."""
    values = []
    for record in records:
        assert record.concentration is not None
        values.append(str(record.concentration.scaleb(5)))
    return values


def session_events(
    events: list[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e["event"] == name]


async def test_link_cut_at_several_records_of_a_500_record_transfer(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """The meter's link is cut right after records 1, 137, 250 and 499 of a 500-record
    transfer (one cut a session); the running daemon's next sessions resume each from the
    committed mark, and at the end the outbox holds records 1..500 exactly once, in the
    meter's order, with its values, and the mark is record 500. Nothing was lost, rejected
    or a conflict, and the meter was never called misbehaving.

    A device's next session starts only once the previous one's records are committed
    (agent/daemon.py), so each resumes exactly after the cut and nothing is sent twice."""
    records = meter_records(500)
    glucometer: Glucometer = await meter(records, drop_link_after_sequence_numbers=DROPS)
    recorder = Recorder(len(records))
    cfg = hub_config(tmp_path, radio, dev_pki)

    events = await run_until_stored(cfg, recorder)

    statuses = [f.status if isinstance(f, Outcome) else f for _, f in recorder.fates]
    assert set(statuses) == {Status.STORED}, set(statuses)
    assert len(statuses) == len(records)
    # Each stored once, in the meter's order.
    assert recorder.stored_data() == [r.measurement_value() for r in records]
    payloads, mark = stored_payloads(cfg, dev_pki)
    assert sequence_numbers(payloads) == list(range(1, 501))
    assert glucose_values(payloads) == expected_values(records)
    assert mark == bytes(SyncMark(500, fingerprint(records[-1].measurement_value())))

    assert (glucometer.link_drops, glucometer.drop_points) == (4, set())
    assert glucometer.requests[0] == bytes.fromhex("0101")
    # Every later session resumed right after the record its predecessor was cut at.
    starts = [
        int.from_bytes(r[3:5], "little") for r in glucometer.requests if r[:3] == b"\x01\x03\x01"
    ]
    assert starts[: len(DROPS)] == [end + 1 for end in DROPS]
    # Each cut session handed on exactly its records up to the cut: from where it started
    # to the cut's record, none of those the meter had queued lost on the way.
    begins = [1, *starts[: len(DROPS) - 1]]
    lost = session_events(events, "ble_session_link_lost")
    assert [e["measurements"] for e in lost] == [
        end - begin + 1 for begin, end in zip(begins, DROPS, strict=True)
    ]
    assert session_events(events, "ble_device_misbehaved") == []


async def test_healthy_thousand_record_download_through_the_daemon(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """A meter holding 1,000 records, unpaced, into the real pipeline: one session, all
    stored once, in order; the session's buffer held what the pipeline had not taken yet
    (far more than the old 256-record bound) and the meter was not called misbehaving."""
    records = meter_records(1000)
    await meter(records)
    recorder = Recorder(len(records))
    cfg = hub_config(tmp_path, radio, dev_pki)

    events = await run_until_stored(cfg, recorder)

    assert recorder.stored_data() == [r.measurement_value() for r in records]
    payloads, _mark = stored_payloads(cfg, dev_pki)
    assert sequence_numbers(payloads) == list(range(1, 1001))
    assert session_events(events, "ble_device_misbehaved") == []
    ended = session_events(events, "ble_session_ended")[0]
    assert (ended["measurements"], ended["ended_by"]) == (1000, "complete")
    assert 0 < ended["peak_gls_ready"] <= 1000
