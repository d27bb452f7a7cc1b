"""The Glucose Service session (incremental RACP sync) against the emulated glucometer.

Over the real virtual radio: ``agent.ble.gls_session`` on bleak's public API with our
Bumble backend; the meter is ``hil.emulators.glucometer``. Expected bytes come from the
meter's own encoders (independent of ``drivers/``). The "outbox" here is a fake that
commits each record's sync state as the daemon does. No sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.ble.gls_session import (
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    SYNC_KEY,
    GlsSessionResult,
    RecordJoiner,
    SessionEnd,
    SyncMark,
    collect_glucose,
    fingerprint,
    read_mark,
)
from agent.ble.stack import BleStack
from agent.cancellation import raise_if_cancelled
from agent.errors import BleLinkLostError, DecodeError, DeviceProtocolError
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from hil.emulators.glucometer import GlucoseRecord, example_records
from hil.emulators.racp_server import Respond
from tests.conftest import MeterFactory
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL, SYSTEM_ID_HEX

WAIT_S = 5.0
WALL = datetime(2026, 1, 1, tzinfo=UTC)


class Outbox:
    """A stand-in for the daemon and outbox: keeps each record and commits its sync state."""

    def __init__(self) -> None:
        self.records: list[RawMeasurement] = []
        self.state: dict[str, bytes] = {}
        self.facts: list[DeviceFacts] = []

    async def __call__(self, raw: RawMeasurement, facts: DeviceFacts) -> None:
        self.records.append(raw)
        self.facts.append(facts)
        self.state.update(raw.sync_state)

    def mark(self) -> SyncMark | None:
        return read_mark(self.state.get(SYNC_KEY))

    @property
    def values(self) -> list[bytes]:
        return [r.data for r in self.records]

    @property
    def contexts(self) -> list[bytes | None]:
        return [r.related.get(GLUCOSE_MEASUREMENT_CONTEXT) for r in self.records]


async def sync(ble: BleStack, outbox: Outbox, **kwargs: Any) -> GlsSessionResult:
    """One session from the outbox's committed mark."""
    options: dict[str, Any] = {"scan_timeout_s": WAIT_S, "connect_timeout_s": WAIT_S, **kwargs}
    async with asyncio.timeout(6 * WAIT_S):
        return await collect_glucose(ble, DEVICE_ADDRESS, outbox, outbox.mark(), **options)


def measurements(records: list[GlucoseRecord]) -> list[bytes]:
    """The 0x2A18 values of ``records``."""
    return [r.measurement_value() for r in records]


async def test_first_sync_gets_all_then_only_new(meter: MeterFactory, ble: BleStack) -> None:
    """First sync: 'all', every record once with its context joined and its mark; second:
    nothing new; after a new measurement: exactly that one, asked for as '>= last+1'."""
    records = example_records(first_sequence_number=40)
    glucometer = await meter(records)
    outbox = Outbox()

    result = await sync(ble, outbox)

    assert outbox.values == measurements(records)
    assert outbox.contexts == [r.context_value() for r in records]
    assert {r.characteristic_uuid for r in outbox.records} == {GLUCOSE_MEASUREMENT}
    assert [SyncMark.from_bytes(r.sync_state[SYNC_KEY]) for r in outbox.records] == [
        SyncMark(r.sequence_number, fingerprint(r.measurement_value())) for r in records
    ]
    assert (result.measurements, result.ended_by, result.resynced) == (
        4,
        SessionEnd.COMPLETE,
        False,
    )
    assert result.facts == DeviceFacts(
        address=DEVICE_ADDRESS,
        system_id=SYSTEM_ID_HEX,
        manufacturer="Homehub Test Devices",
        model="HH-GLU-1",
        serial=DEVICE_SERIAL,
        firmware="1.4.2",
    )
    assert result.info.glucose_feature == bytes.fromhex("2502")
    assert glucometer.requests == [bytes.fromhex("0101")]

    again = await sync(ble, outbox)
    assert (again.measurements, len(outbox.records)) == (0, 4)
    assert glucometer.requests[1:] == [bytes.fromhex("0106")]

    new = glucometer.add_record(records[0])
    third = await sync(ble, outbox)
    assert third.measurements == 1
    assert outbox.values[4:] == [new.measurement_value()]
    assert outbox.mark() == SyncMark(44, fingerprint(new.measurement_value()))
    assert glucometer.requests[2:] == [
        bytes.fromhex("0106"),
        bytes.fromhex("0104012b002b00"),  # the marked record, 43..43
        bytes.fromhex("0103012c00"),  # >= 44
    ]


async def test_dropped_link_resumes_from_the_committed_mark(
    meter: MeterFactory, ble: BleStack
) -> None:
    """A link lost after two records: those two are handed on (mark = the second); the next
    session asks '>= third' and gets the rest: no loss, no duplicate."""
    records = example_records()
    glucometer = await meter(records, drop_link_after_records=2)
    outbox = Outbox()

    with pytest.raises(BleLinkLostError) as caught:
        await sync(ble, outbox)

    assert (caught.value.phase, caught.value.measurements) == ("collect", 2)
    assert outbox.values == measurements(records[:2])
    assert outbox.mark() == SyncMark(2, fingerprint(records[1].measurement_value()))

    glucometer.drop_link_after_records = None
    result = await sync(ble, outbox)
    assert result.measurements == 2
    assert outbox.values == measurements(records)
    assert outbox.contexts == [r.context_value() for r in records]
    assert glucometer.requests[-1] == bytes.fromhex("0103010300")


async def test_context_joined_by_sequence_number(meter: MeterFactory, ble: BleStack) -> None:
    """A meter that sends each context before its measurement: still joined correctly."""
    records = example_records()
    await meter(records, context_first=True)
    outbox = Outbox()
    await sync(ble, outbox)
    assert outbox.values == measurements(records)
    assert outbox.contexts == [r.context_value() for r in records]


async def test_sequence_reset_resyncs_all(meter: MeterFactory, ble: BleStack) -> None:
    """Numbering restarted below the mark (memory cleared): the marked record is gone, so
    the hub asks for 'all' and gets the new records (never a silent skip)."""
    records = example_records(first_sequence_number=100)
    glucometer = await meter(records)
    outbox = Outbox()
    await sync(ble, outbox)
    glucometer.restart_numbering(0)
    fresh = [glucometer.add_record(r) for r in records[:2]]

    result = await sync(ble, outbox)

    assert result.resynced
    assert outbox.values[4:] == measurements(fresh)
    assert glucometer.requests[-1] == bytes.fromhex("0101")
    assert outbox.mark() == SyncMark(1, fingerprint(fresh[1].measurement_value()))


async def test_sequence_wrap(meter: MeterFactory, ble: BleStack) -> None:
    """Numbers wrapped past 0xFFFF: the marked record is still there, the newest number is
    below it, so the hub asks '<= newest' (0xFFFF has no '>= mark+1') and gets 0 and 1."""
    records = example_records(first_sequence_number=0xFFFE)[:2]
    glucometer = await meter(records)
    outbox = Outbox()
    await sync(ble, outbox)
    wrapped = [glucometer.add_record(r) for r in example_records()[:2]]
    assert [r.sequence_number for r in wrapped] == [0, 1]

    result = await sync(ble, outbox)

    assert (result.measurements, result.resynced) == (2, False)
    assert outbox.values[2:] == measurements(wrapped)
    assert glucometer.requests[-1] == bytes.fromhex("0102010100")


async def test_empty_meter(meter: MeterFactory, ble: BleStack) -> None:
    """A meter without records answers 'no records found': a normal, empty session."""
    await meter([])
    outbox = Outbox()
    result = await sync(ble, outbox)
    assert (result.measurements, result.ended_by, outbox.state) == (0, SessionEnd.COMPLETE, {})


async def test_failed_response_code_is_a_protocol_error(meter: MeterFactory, ble: BleStack) -> None:
    """A report answered 06 00 01 05 (invalid operand) raises DeviceProtocolError."""
    glucometer = await meter(example_records())

    def refuse(_data: bytes, **_kwargs: bool) -> Respond:  # fault injection at the edge
        return Respond(bytes.fromhex("06000105"))

    glucometer.racp.handle = refuse  # type: ignore[method-assign]
    with pytest.raises(DeviceProtocolError) as caught:
        await sync(ble, Outbox())
    assert caught.value.procedure == "racp_report_stored_records"
    assert "invalid_operand" in caught.value.reason


async def test_procedure_timeout_aborts(meter: MeterFactory, ble: BleStack) -> None:
    """No final response: after the procedure timeout the hub writes Abort and raises;
    the records that did arrive were handed on."""
    records = example_records()
    glucometer = await meter(records)

    async def swallow(_connection: object, _value: bytes) -> None:  # fault: never indicates
        return None

    glucometer._indicate = swallow  # type: ignore[method-assign]
    outbox = Outbox()
    with pytest.raises(DeviceProtocolError) as caught:
        await sync(ble, outbox, procedure_timeout_s=0.3)
    assert "no response within 0.3 s" in caught.value.reason
    assert glucometer.requests[-1] == bytes.fromhex("0300")
    assert outbox.values == measurements(records)


def test_joiner_releases_in_order() -> None:
    """A measurement awaiting its context holds back later ones; a missing context is
    released (counted) when the next measurement arrives; orphan contexts are dropped."""
    joiner = RecordJoiner()
    m1 = bytes.fromhex("10010000")  # flag: context follows, seq 1
    m2 = bytes.fromhex("00020000")  # seq 2, no context
    m3 = bytes.fromhex("10030000")
    assert joiner.measurement(m1, 0.0, WALL) == []
    out = joiner.measurement(m2, 0.0, WALL)
    assert [(r.sequence_number, r.context) for r in out] == [(1, None), (2, None)]
    assert joiner.context(bytes.fromhex("020300")) == []  # context first
    out = joiner.measurement(m3, 0.0, WALL)
    assert [(r.sequence_number, r.context) for r in out] == [(3, bytes.fromhex("020300"))]
    assert joiner.context(bytes.fromhex("020900")) == []
    assert joiner.flush() == []
    assert (joiner.missing_contexts, joiner.dropped_contexts) == (1, 1)
    with pytest.raises(DecodeError):
        joiner.measurement(b"\x00\x01", 0.0, WALL)


def test_sync_mark_bytes() -> None:
    """The mark is seq (uint16 LE) + 8-octet fingerprint; a 2-octet mark is accepted, any
    other size reads as no mark (resync all)."""
    value = bytes.fromhex("02") + (513).to_bytes(2, "little") + bytes(7)
    mark = SyncMark(513, fingerprint(value))
    assert bytes(mark)[:2] == b"\x01\x02"
    assert len(bytes(mark)) == 10
    assert SyncMark.from_bytes(bytes(mark)) == mark
    assert mark.matches(value)
    assert not mark.matches(value[:-1] + b"\x01")
    assert SyncMark.from_bytes(b"\x01\x02").matches(value)
    assert read_mark(b"\x01\x02\x03") is None
    assert read_mark(None) is None


async def test_meter_requiring_encryption(meter: MeterFactory, ble: BleStack) -> None:
    """A meter that refuses RACP writes on an unencrypted link (ATT 0x0F): without pairing
    the session fails with a DeviceProtocolError naming it; with pair=True (Just Works) the
    link is encrypted and the sync completes."""
    records = example_records()
    await meter(records, require_encryption=True)
    with pytest.raises(DeviceProtocolError) as caught:
        await sync(ble, Outbox())
    assert caught.value.reason == "ATT error 0x0F (insufficient encryption)"

    outbox = Outbox()
    result = await sync(ble, outbox, pair=True)
    assert result.measurements == len(records)
    assert outbox.values == measurements(records)


async def test_record_limit_aborts_and_next_session_continues(
    meter: MeterFactory, ble: BleStack
) -> None:
    """At max_records the hub writes Abort (03 00) and ends with LIMIT; the meter keeps the
    rest, and the next session continues from the committed mark without loss."""
    records = example_records()
    glucometer = await meter(records)
    outbox = Outbox()

    result = await sync(ble, outbox, max_records=2)

    assert (result.measurements, result.ended_by) == (2, SessionEnd.LIMIT)
    assert bytes.fromhex("0300") in glucometer.requests
    assert outbox.values == measurements(records[:2])
    rest = await sync(ble, outbox)
    assert rest.ended_by is SessionEnd.COMPLETE
    assert outbox.values == measurements(records)


async def test_swallowed_cancellation_is_raised_again() -> None:
    """A cancellation an inner wait_for swallowed (Python 3.11) is raised at the next check."""
    started = asyncio.Event()

    async def body() -> None:
        operation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started.set()
        # What 3.11's wait_for does when the operation completed meanwhile:
        with contextlib.suppress(asyncio.CancelledError):
            await operation
        raise_if_cancelled()

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    raise_if_cancelled()  # not cancelling here: no effect
