"""Glucometer quirks through the daemon's own Hub and collector (issue 8, "Emulators: quirks
and adversaries, each a switch"): sequence numbers counting down, an RACP that never answers,
a meter reset. Each record the meter holds is stored once and arrives once, values exact.

Scaffolding: tests/collector_home.py (the Hub with its BLE collector on the Bumble virtual
radio, real outbox, TLS mosquitto, reference receiver); the meter is the ``meter`` fixture
(tests/conftest.py). Nothing sleeps to synchronise: every wait is for a reading at the
receiver or a session's end (``Hub.session_done``), under a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest
from structlog.testing import capture_logs

from agent.daemon import Hub
from agent.retry import BLE_BREAKER_CAP_S, BLE_BREAKER_FLOOR_S
from drivers.gls_sync import (
    GlsSync,
    Procedure,
    ProcedureFinished,
    Reason,
    SyncDone,
    SyncMark,
    counts_down,
)
from hil.broker import Broker
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, GlucoseRecord, example_records, mg_per_dl
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_radio import VirtualRadio
from tests.collector_home import WAIT_S, arrive, events_named, hub_config, running
from tests.conftest import MeterFactory
from tests.phi_canaries import DEVICE_ADDRESS
from tests.test_end_to_end_glucose import expected, seen

pytestmark = pytest.mark.timeout(120)

METER: Final = {"kind": "glucose", "address": DEVICE_ADDRESS, "label": "meter"}

FAST_RACP: Final = {"scan_timeout_s": 1.0, "connect_timeout_s": 5.0, "session_timeout_s": 8.0}
"""Sessions whose RACP procedure timeout is 1 s: the glucose session nests it in half of
what ``session_timeout_s`` leaves after scan and connect (agent/ble/sessions.py)."""


def later_records(count: int) -> list[GlucoseRecord]:
    """``count`` records measured after :func:`example_records` (numbered by the meter),
    each with its own value and time."""
    return [
        GlucoseRecord(0, DateTime(2025, 3, 15, 8 + n, 5, 0), mg_per_dl(str(101 + 7 * n)))
        for n in range(count)
    ]


def numbered_down(records: Sequence[GlucoseRecord], first: int) -> list[GlucoseRecord]:
    """``records`` (oldest first) numbered as a meter counting down from ``first`` would."""
    return [r.with_sequence_number((first - i) & 0xFFFF) for i, r in enumerate(records)]


def sequence_number(reading: VerifiedReading) -> int:
    """The meter's sequence number of a reading (its hub identifier ends ``-seq:<n>``)."""
    return int(reading.id.rsplit("-seq:", 1)[1])


def exact(got: Sequence[VerifiedReading], records: Sequence[GlucoseRecord]) -> None:
    """Each record arrived exactly once, with its values."""
    by_number = {r.sequence_number: r for r in records}
    assert sorted(sequence_number(r) for r in got) == sorted(by_number)
    for reading in got:
        assert seen(reading) == expected(by_number[sequence_number(reading)])


async def a_full_session_later(hub: Hub) -> None:
    """Return once a session that started after this call has ended (the one under way, if
    any, ends first): whatever the meter would send again has been sent by then."""
    target = hub.sessions_done + 2
    async with asyncio.timeout(WAIT_S):
        while hub.sessions_done < target:
            hub.session_done.clear()
            await hub.session_done.wait()


def racp_requests(meter: Glucometer, operator: int) -> list[int]:
    """The sequence-number operands of the "report stored records" requests with
    ``operator`` (0x02 <=, 0x03 >=) the meter received, in order."""
    return [
        int.from_bytes(r[3:5], "little")
        for r in meter.requests
        if r[:3] == bytes((0x01, operator, 0x01))
    ]


@pytest.mark.parametrize(
    ("first", "at_most", "at_least", "duplicates"),
    [
        # 100..97, then 96 and 95, then 94: "<= 96", then "<= 94".
        (100, [96, 94], [], 0),
        # 3..0, then 0xFFFF and 0xFFFE (wrapped: ">= 0xFFFE"), then 0xFFFD ("<= 0xFFFD",
        # which also matches the oldest records 3..0: duplicates, not stored again).
        (3, [0xFFFD], [0xFFFE], 4),
    ],
)
async def test_sequence_numbers_counting_down(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    radio: VirtualRadio,
    meter: MeterFactory,
    first: int,
    at_most: list[int],
    at_least: list[int],
    duplicates: int,
) -> None:
    """A meter that numbers newer records with smaller numbers (wrapping from 0 to 0xFFFF):
    over three sessions with new records added between them, every record is stored once
    and arrives once with its values; the later sessions ask for the records below the mark
    ("<= mark-1", or ">= newest" once the numbers wrapped), never for the older ones above it."""
    held = numbered_down(example_records(), first)
    glucometer = await meter(held, count_down=True)
    cfg = hub_config(tmp_path, radio, dev_pki, broker, [METER])
    with capture_logs() as events:
        async with running(cfg) as hub:
            got = await arrive(receiver, len(held))
            added = [glucometer.add_record(r) for r in later_records(3)[:2]]
            got += await arrive(receiver, 2)
            added.append(glucometer.add_record(later_records(3)[2]))
            got += await arrive(receiver, 1)
            await a_full_session_later(hub)
            assert (hub.stored, hub.duplicates, hub.conflicts) == (7, duplicates, 0)
    records = [*held, *added]
    assert [r.sequence_number for r in added] == [(first - n) & 0xFFFF for n in (4, 5, 6)]
    exact(got, records)
    assert receiver.readings.empty()
    assert receiver.stats.rejected_total == 0
    assert glucometer.requests[0] == bytes.fromhex("0101")
    assert (racp_requests(glucometer, 0x02), racp_requests(glucometer, 0x03)) == (
        at_most,
        at_least,
    )
    assert events_named(events, "ble_device_misbehaved") == []
    assert len(events_named(events, "gls_sequence_counts_down")) == 2


async def test_racp_that_never_answers(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    radio: VirtualRadio,
    meter: MeterFactory,
) -> None:
    """A meter that accepts the RACP request but never answers: the session ends after the
    procedure timeout (Abort written) with DeviceProtocolError, logged ble_device_misbehaved;
    nothing is stored and the breaker keeps the meter away for minutes. Once fixed and the
    breaker's wait over, one session syncs every record once."""
    records = example_records()
    glucometer = await meter(records, racp_silent=True)
    cfg = hub_config(tmp_path, radio, dev_pki, broker, [METER], **FAST_RACP)
    with capture_logs() as events:
        async with running(cfg) as hub:
            async with asyncio.timeout(WAIT_S):
                await hub.session_done.wait()
            assert (hub.sessions_done, hub.stored) == (1, 0)
            waiting_s = hub._backoff.ready_in("meter")
            assert BLE_BREAKER_FLOOR_S - WAIT_S < waiting_s <= BLE_BREAKER_CAP_S
            misbehaved = events_named(events, "ble_device_misbehaved")
            glucometer.racp_silent = False  # the meter is fixed...
            backoff = hub._backoff
            backoff.clock = lambda: time.monotonic() + BLE_BREAKER_CAP_S  # ...and the wait over
            got = await arrive(receiver, len(records))
            await a_full_session_later(hub)
            assert (hub.stored, hub.duplicates) == (len(records), 0)
    assert [(e["error"], e["reason"], e["device"]) for e in misbehaved] == [
        (
            "DeviceProtocolError",
            "device ..:12:34: racp_report_stored_records: no response within 1 s",
            "..:12:34",
        )
    ]
    assert misbehaved[0]["retry_in_s"] >= BLE_BREAKER_FLOOR_S
    # The silent session asked for everything, then wrote Abort; the fixed meter's first
    # session asked for everything again (nothing was stored: no mark).
    assert glucometer.requests[:3] == [bytes.fromhex(h) for h in ("0101", "0300", "0101")]
    exact(got, records)
    assert receiver.readings.empty()


async def test_meter_reset_reuses_a_number(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    radio: VirtualRadio,
    meter: MeterFactory,
) -> None:
    """A meter reset (memory cleared, numbering restarted at 1) after its records were
    synced: the new record numbered 1 is stored as a conflict of the first record 1 (kept,
    never merged) and arrives with ``conflict_of``; nothing is lost or sent twice."""
    records = example_records()
    glucometer = await meter(records)
    cfg = hub_config(tmp_path, radio, dev_pki, broker, [METER])
    with capture_logs() as events:
        async with running(cfg) as hub:
            got = await arrive(receiver, len(records))
            glucometer.restart_numbering(1)
            (renumbered,) = [glucometer.add_record(r) for r in later_records(1)]
            (conflict,) = await arrive(receiver, 1)
            await a_full_session_later(hub)
            assert (hub.stored, hub.conflicts, hub.duplicates) == (len(records), 1, 0)
    exact(got, records)
    assert renumbered.sequence_number == 1
    assert seen(conflict) == expected(renumbered)
    (first_one,) = [r for r in got if sequence_number(r) == 1]
    assert (sequence_number(conflict), conflict.payload["conflict_of"]) == (1, first_one.seq)
    assert all("conflict_of" not in r.payload for r in got)
    assert receiver.readings.empty()
    assert len(events_named(events, "gls_sequence_reset")) == 1
    assert [e["conflict_of"] for e in events_named(events, "measurement_conflict")] == [
        first_one.seq
    ]


# -- the sans-I/O core's side of counting down (drivers/gls_sync.py) -------------------------

WALL: Final = datetime(2026, 1, 1, tzinfo=UTC)
SUCCESS: Final = bytes.fromhex("06000101")


def _value(seq: int) -> bytes:
    """A 0x2A18 value: flags, sequence number, a Base Time."""
    return bytes((0,)) + seq.to_bytes(2, "little") + bytes(7)


@pytest.mark.parametrize(
    ("marked", "newest", "down"),
    [
        (5, 9, False),
        (0xFFFE, 3, False),  # wrapped upwards
        (97, 95, True),
        (2, 0xFFFE, True),  # wrapped downwards
        (0x8000, 0, True),  # 32,768 numbers apart: read as counting down
        (0x8000, 0xFFFF, False),
    ],
)
def test_counts_down_by_distance_modulo_2_16(marked: int, newest: int, down: bool) -> None:
    """The direction is the shorter way from the marked number to the newest, modulo 2^16."""
    assert counts_down(marked, newest) is down


@pytest.mark.parametrize(
    ("marked", "newest", "expected"),
    [
        (97, 95, [("0102016000", Reason.COUNTS_DOWN)]),
        (0, 0xFFFE, [("010301feff", Reason.COUNTS_DOWN)]),
        (2, 0xFFFE, [("0102010100", Reason.COUNTS_DOWN), ("010301feff", Reason.WRAPPED)]),
    ],
    ids=["down", "down-from-0", "down-wrapped"],
)
def test_counting_down_asks_below_the_mark(
    marked: int, newest: int, expected: list[tuple[str, Reason]]
) -> None:
    """After the probes (newest, then the marked record, unchanged), a meter counting down is
    asked for the records below the mark, and past the wrap for those from the newest on."""
    sync = GlsSync(SyncMark.of(_value(marked)))
    asked: list[tuple[str, Reason]] = []
    for probe in (newest, marked):
        step = sync.next_procedure()
        assert isinstance(step, Procedure)
        sync.measurement(_value(probe), 0.0, WALL)
        sync.racp_indication(SUCCESS)
        assert isinstance(sync.next_event(), ProcedureFinished)
    while isinstance(step := sync.next_procedure(), Procedure):
        asked.append((bytes(step.request).hex(), step.reason))
        sync.racp_indication(SUCCESS)
        assert isinstance(sync.next_event(), ProcedureFinished)
    assert (asked, step) == (expected, SyncDone(False, Reason.COMPLETE))
    assert sync.counting_down
