"""Devices that push without end, over the real virtual radio: every buffer they fill is cut
at its bound, the session ends with DeviceFloodError naming the buffer, and what was complete
before is handed on.

Agent side: the BLE sessions on bleak with our Bumble backend; device side: the emulators'
flood modes (``hil.emulators.glucometer.Flood``, the oximeter's ``flood_continuous``). The
buffers are read from the session's own log (``peak_*``: the most each ever held), so the
bound is checked, not inferred from timing. A stalled pipeline is a test outbox that waits
until the meter saw the hub end the link: deterministic, no sleeps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.ble.gls_session import SYNC_KEY, GlsSessionResult, SessionEnd, SyncMark, collect_glucose
from agent.ble.plx_session import PLX_CONTINUOUS_MEASUREMENT, collect_pulse_oximetry
from agent.ble.stack import BleStack
from agent.config import Config
from agent.daemon import INGEST_QUEUE_MAX, Hub
from agent.errors import DeviceFloodError
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.retry import BLE_BREAKER_FLOOR_S
from drivers.gls_sync import (
    MAX_ORPHAN_CONTEXTS,
    MAX_PROBE_RECORDS,
    MAX_RACP_INDICATIONS,
    MAX_READY_RECORDS,
    MAX_RECORDS_AFTER_ABORT,
    fingerprint,
)
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Flood, GlucoseRecord, example_records, mg_per_dl
from hil.emulators.oximeter import EmulatedOximeter, example_continuous
from hil.virtual_radio import VirtualRadio
from tests.conftest import MeterFactory
from tests.example_config import minimal_config
from tests.phi_canaries import DEVICE_ADDRESS

pytestmark = pytest.mark.timeout(120)

WAIT_S = 5.0


class Outbox:
    """Keeps what it is handed; with ``until``, the first hand-on waits for that event (a
    stalled pipeline)."""

    def __init__(self, until: asyncio.Event | None = None) -> None:
        self.records: list[RawMeasurement] = []
        self.until = until

    async def __call__(self, raw: RawMeasurement, _facts: DeviceFacts) -> None:
        if self.until is not None:
            await self.until.wait()
        self.records.append(raw)

    @property
    def values(self) -> list[bytes]:
        return [r.data for r in self.records]


def flood_values(records: list[GlucoseRecord], count: int) -> list[bytes]:
    """The first ``count`` 0x2A18 values a ``Flood.RECORDS`` meter sends for "all"."""
    template = example_records()[1]
    values = [r.measurement_value() for r in records]
    seq = records[-1].sequence_number
    while len(values) < count:
        seq += 1
        values.append(template.with_sequence_number(seq).measurement_value())
    return values[:count]


def session_log(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one log event ``name`` of the session."""
    found = [e for e in events if e["event"] == name]
    assert len(found) == 1, [e["event"] for e in events]
    return found[0]


async def sync(
    ble: BleStack, outbox: Outbox, mark: SyncMark | None = None, **kwargs: Any
) -> GlsSessionResult:
    """One GLS session with the test timings."""
    options: dict[str, Any] = {"scan_timeout_s": WAIT_S, "connect_timeout_s": WAIT_S, **kwargs}
    async with asyncio.timeout(12 * WAIT_S):
        return await collect_glucose(ble, DEVICE_ADDRESS, outbox, mark, **options)


class TestGlucometerFloods:
    """Each GLS buffer a meter fills, flooded through the radio."""

    async def test_endless_probe_is_cut_at_the_probe_bound(
        self, meter: MeterFactory, ble: BleStack
    ) -> None:
        """A meter answering "last record" with an endless stream: cut at the fifth record
        (racp_probe, 4), nothing handed on (probes never are), the link ended."""
        records = example_records()
        glucometer = await meter(records, flood=Flood.RECORDS)
        newest = records[-1].measurement_value()
        mark = SyncMark(records[-2].sequence_number, fingerprint(records[-2].measurement_value()))
        outbox = Outbox()

        with structlog.testing.capture_logs() as events, pytest.raises(DeviceFloodError) as caught:
            await sync(ble, outbox, mark)

        assert (caught.value.buffer, caught.value.limit) == ("racp_probe", MAX_PROBE_RECORDS)
        assert caught.value.procedure == "racp_report_stored_records"
        assert outbox.values == []
        assert session_log(events, "gls_session_failed_by_device")["peak_racp_probe"] == 4
        assert session_log(events, "ble_device_flood")["buffer"] == "racp_probe"
        assert glucometer.requests[0] == bytes.fromhex("0106")
        assert glucometer.sent[0][1] == newest
        assert glucometer.flood_sent >= MAX_PROBE_RECORDS
        async with asyncio.timeout(WAIT_S):
            await glucometer.disconnected.wait()

    async def test_stalled_pipeline_cuts_an_endless_report_at_the_ready_bound(
        self, meter: MeterFactory, ble: BleStack
    ) -> None:
        """While the hand-on waits, an endless report fills the ready buffer of a session
        allowed more records than it holds: cut at its bound (gls_ready, a session's worth,
        1,000); the records complete before are all handed on, in order."""
        records = example_records()
        glucometer = await meter(records, flood=Flood.RECORDS)
        outbox = Outbox(until=glucometer.disconnected)

        with structlog.testing.capture_logs() as events, pytest.raises(DeviceFloodError) as caught:
            await sync(ble, outbox, max_records=2 * MAX_READY_RECORDS)

        assert (caught.value.buffer, caught.value.limit) == ("gls_ready", MAX_READY_RECORDS)
        # The first record was being handed on when the other 1,000 filled the buffer.
        assert outbox.values == flood_values(records, MAX_READY_RECORDS + 1)
        failed = session_log(events, "gls_session_failed_by_device")
        assert (failed["peak_gls_ready"], failed["measurements"]) == (1000, 1001)
        assert glucometer.flood_sent > MAX_READY_RECORDS - len(records)

    async def test_endless_report_ignoring_abort_is_cut(
        self, meter: MeterFactory, ble: BleStack
    ) -> None:
        """At max_records the hub writes Abort; a meter that streams on is cut after the
        records a healthy one could have had in flight (records_after_abort: 10,000 counted,
        or still streaming when the wait for the Abort's answer ends); the max_records were
        handed on."""
        records = example_records()
        glucometer = await meter(records, flood=Flood.RECORDS)
        outbox = Outbox()

        with pytest.raises(DeviceFloodError) as caught:
            await sync(ble, outbox, max_records=10)

        assert caught.value.buffer == "records_after_abort"
        assert 0 < caught.value.limit <= MAX_RECORDS_AFTER_ABORT
        assert outbox.values == flood_values(records, 10)
        assert glucometer.requests == [bytes.fromhex("0101"), bytes.fromhex("0300")]

    async def test_contexts_without_measurements_are_cut(
        self, meter: MeterFactory, ble: BleStack
    ) -> None:
        """Contexts whose measurement never comes: cut at the orphan bound (16)."""
        glucometer = await meter(example_records(), flood=Flood.CONTEXTS)
        outbox = Outbox()

        with structlog.testing.capture_logs() as events, pytest.raises(DeviceFloodError) as caught:
            await sync(ble, outbox)

        assert (caught.value.buffer, caught.value.limit) == (
            "gls_orphan_contexts",
            MAX_ORPHAN_CONTEXTS,
        )
        assert outbox.values == []
        assert session_log(events, "gls_session_failed_by_device")["peak_gls_orphan_contexts"] == 16
        assert glucometer.flood_sent > MAX_ORPHAN_CONTEXTS

    async def test_endless_racp_indications_are_cut(
        self, meter: MeterFactory, ble: BleStack
    ) -> None:
        """One record, then RACP indications without end while the hand-on waits: cut at the
        fifth indication of the procedure (racp_indications, 4); the record is handed on."""
        records = example_records()
        glucometer = await meter(records, flood=Flood.RACP)
        outbox = Outbox(until=glucometer.disconnected)

        with structlog.testing.capture_logs() as events, pytest.raises(DeviceFloodError) as caught:
            await sync(ble, outbox)

        assert (caught.value.buffer, caught.value.limit) == (
            "racp_indications",
            MAX_RACP_INDICATIONS,
        )
        assert outbox.values == [records[0].measurement_value()]
        assert session_log(events, "gls_session_failed_by_device")["peak_racp_indications"] == 4


async def test_healthy_thousand_record_download_is_not_cut(
    meter: MeterFactory, ble: BleStack
) -> None:
    """A meter with 1,000 records, handed to a daemon-like ingest (a 256-entry queue drained
    in batches): all arrive in order, the session completes, the ready buffer stays below its
    bound."""
    day = DateTime(2025, 3, 14, 7, 0, 0)
    records = [GlucoseRecord(n, day, mg_per_dl(str(80 + n % 100))) for n in range(1, 1001)]
    await meter(records)
    queue: asyncio.Queue[RawMeasurement] = asyncio.Queue(maxsize=INGEST_QUEUE_MAX)
    stored: list[RawMeasurement] = []

    async def on_measurement(raw: RawMeasurement, _facts: DeviceFacts) -> None:
        await queue.put(raw)

    async def ingest() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            await asyncio.sleep(0)  # the commit: other tasks run meanwhile
            stored.extend(batch)
            for _ in batch:
                queue.task_done()

    consumer = asyncio.create_task(ingest(), name="test.ingest")
    try:
        with structlog.testing.capture_logs() as events:
            async with asyncio.timeout(12 * WAIT_S):
                result = await collect_glucose(
                    ble,
                    DEVICE_ADDRESS,
                    on_measurement,
                    None,
                    scan_timeout_s=WAIT_S,
                    connect_timeout_s=WAIT_S,
                )
        async with asyncio.timeout(WAIT_S):
            await queue.join()
    finally:
        consumer.cancel()
    assert (result.measurements, result.ended_by) == (1000, SessionEnd.COMPLETE)
    assert [r.data for r in stored] == [r.measurement_value() for r in records]
    assert SyncMark.from_bytes(stored[-1].sync_state[SYNC_KEY]).sequence_number == 1000
    assert session_log(events, "ble_session_ended")["peak_gls_ready"] < MAX_READY_RECORDS


async def test_a_meter_holding_more_than_a_session_takes_is_not_cut(
    meter: MeterFactory, ble: BleStack
) -> None:
    """1,500 records on the unpaced virtual radio: the session stops at its limit (1,000
    handed on, in order; LIMIT), writes Abort, and the rest of the report the meter had
    already queued arrives after it: counted, refused, and no flood (it was 16 before, and
    a healthy meter with more than a session's records was reported as misbehaving)."""
    day = DateTime(2025, 3, 14, 7, 0, 0)
    records = [GlucoseRecord(n, day, mg_per_dl(str(80 + n % 100))) for n in range(1, 1501)]
    glucometer = await meter(records)
    outbox = Outbox()

    with structlog.testing.capture_logs() as events:
        result = await sync(ble, outbox)

    assert (result.measurements, result.ended_by) == (1000, SessionEnd.LIMIT)
    assert outbox.values == [r.measurement_value() for r in records[:1000]]
    assert glucometer.requests == [bytes.fromhex("0101"), bytes.fromhex("0300")]
    assert [e["event"] for e in events if e["log_level"] in ("warning", "error")] == []
    assert session_log(events, "ble_session_ended")["peak_gls_ready"] <= MAX_READY_RECORDS


async def test_oximeter_notifying_without_pause_is_cut(radio: VirtualRadio, ble: BleStack) -> None:
    """Continuous notifications faster than 50 Hz on average over a 3 s session (150): cut
    (continuous_notifications); the one value forwarded before is handed on."""
    device = await radio.add_peripheral_device(DEVICE_ADDRESS, "oximeter")
    oximeter = EmulatedOximeter(
        device, continuous=example_continuous(), continuous_repeat=True, flood_continuous=True
    )
    await oximeter.start()
    outbox = Outbox()
    try:
        with pytest.raises(DeviceFloodError) as caught:
            async with asyncio.timeout(4 * WAIT_S):
                await collect_pulse_oximetry(
                    ble,
                    DEVICE_ADDRESS,
                    outbox,
                    scan_timeout_s=1.0,
                    connect_timeout_s=1.0,
                    quiet_period_s=0.5,
                    session_timeout_s=3.0,
                )
        assert (caught.value.buffer, caught.value.limit) == ("continuous_notifications", 150)
        assert [r.characteristic_uuid for r in outbox.records] == [PLX_CONTINUOUS_MEASUREMENT]
        assert outbox.values == [oximeter.notified_values[0]]
        assert len(oximeter.notified_values) > 150
    finally:
        await oximeter.stop()


def _glucose_config(tmp_path: Path, radio: VirtualRadio, scan_timeout_s: float) -> Config:
    return minimal_config(
        tmp_path,
        hub_id="hub-flood-1",
        patient_id="patient-flood-1",
        outbox_path=tmp_path / "outbox.db",
        key_file=tmp_path / "k",
        ble={
            "stack": radio.stack,
            "scan_timeout_s": scan_timeout_s,
            "connect_timeout_s": WAIT_S,
            "session_timeout_s": 30.0,
        },
        devices=[{"kind": "glucose", "address": DEVICE_ADDRESS, "label": "meter"}],
    )


async def test_daemon_reports_the_flooding_device(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory
) -> None:
    """The daemon's session for a glucometer that floods contexts logs ble_device_misbehaved
    with DeviceFloodError, and the device's label, never its address; the per-device breaker
    then keeps the device away for at least a minute (agent/retry.py)."""
    await meter(example_records(), flood=Flood.CONTEXTS)
    cfg = _glucose_config(tmp_path, radio, WAIT_S)
    hub = Hub(cfg)
    async with BleStack.open(radio.stack) as stack:
        with structlog.testing.capture_logs() as events:
            async with asyncio.timeout(12 * WAIT_S):
                await hub._session(stack, cfg.devices[0])

    misbehaved = session_log(events, "ble_device_misbehaved")
    assert misbehaved["error"] == "DeviceFloodError"
    assert "gls_orphan_contexts buffer bound of 16 reached" in misbehaved["reason"]
    assert misbehaved["device"] == "..:12:34"
    assert DEVICE_ADDRESS.lower() not in repr(events).lower()
    assert misbehaved["retry_in_s"] >= BLE_BREAKER_FLOOR_S
    assert hub._backoff.ready_in("meter") > BLE_BREAKER_FLOOR_S - WAIT_S


async def test_an_absent_device_is_not_backed_off(tmp_path: Path, radio: VirtualRadio) -> None:
    """A device that does not advertise (switched off) is the normal case: logged as absent,
    no backoff, so its next advertisement is not missed."""
    cfg = _glucose_config(tmp_path, radio, 1.0)
    hub = Hub(cfg)
    async with BleStack.open(radio.stack) as stack:
        with structlog.testing.capture_logs() as events:
            async with asyncio.timeout(WAIT_S):
                await hub._session(stack, cfg.devices[0])

    assert session_log(events, "ble_device_absent")["device"] == "..:12:34"
    assert (0, 0.0) == (hub._backoff.attempts("meter"), hub._backoff.ready_in("meter"))
