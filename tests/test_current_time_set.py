"""Setting a device's clock when it drifts: Current Time 0x2A2B written (CTS 1.1 Write O).

The pure decisions first (agent.ble.current_time with fixed times), then real BPS sessions on
the Bumble virtual radio against the emulated cuff, whose CTS is read-only by default and
writable with ``EmulatedClock(writable=True)`` (hil/emulators/peripheral.py). The emulated
clock records every write it is sent, applied or refused, so "never written" is exact. No
sleeps: each session returns when the cuff has gone quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import pytest
from bumble.att import ATT_Error
from structlog.testing import capture_logs

from agent.ble.bps_session import BpsSessionResult, collect_blood_pressure
from agent.ble.current_time import (
    ClockPolicy,
    att_error_name,
    clock_set_due,
    current_time_value,
    drift_s,
)
from agent.ble.gls_session import collect_glucose
from agent.ble.stack import BleStack
from agent.errors import BleLinkLostError
from agent.ingest import blood_pressure_reading
from agent.measurement import RawMeasurement
from agent.normalize.blood_pressure import reading_time
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context, localize, utc_now
from drivers.blood_pressure import BloodPressureMeasurement
from drivers.gatt_time import AdjustReason, CurrentTime
from hil.emulators.cuff import BpReading, EmulatedCuff
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import example_records
from hil.emulators.peripheral import CLOCK_RESET_VALUE, DATA_FIELD_IGNORED, EmulatedClock
from hil.virtual_radio import VirtualRadio
from tests.conftest import MeterFactory
from tests.phi_canaries import DEVICE_ADDRESS

TZ: Final = "Europe/Berlin"
HUB_NOW: Final = datetime(2026, 11, 23, 9, 30, 0, tzinfo=UTC)  # Monday 10:30:00 in Berlin
HALF: Final = timedelta(milliseconds=500)
POLICY: Final = ClockPolicy(set_clock=True, threshold_s=60.0, timezone=TZ)
WAIT_S: Final = 5.0
SET_EVENTS: Final = ("ble_current_time_set", "ble_current_time_set_failed")


def naive(*fields: int) -> datetime:
    """A device-local wall-clock time."""
    return datetime(*fields)  # type: ignore[arg-type]  # noqa: DTZ001


def clock_at_hub_now(device_now: datetime | None) -> ClockFacts:
    """A CTS read at HUB_NOW showing ``device_now`` (None: date unknown)."""
    data = bytes(10) if device_now is None else bytes(CurrentTime.from_datetime(device_now))
    return ClockFacts.from_current_time(data, HUB_NOW)


def hub_local_now() -> datetime:
    """The hub's wall-clock time in the patient's zone, as a device keeps it."""
    return utc_now().astimezone(ZoneInfo(TZ)).replace(tzinfo=None)


# -- the decisions, sans I/O --------------------------------------------------------------


class TestDecision:
    """Whether a clock read is set, and what is written."""

    @pytest.mark.parametrize(
        ("device_now", "policy", "due"),
        [
            (naive(2026, 11, 23, 10, 10, 0), POLICY, True),  # 20 min slow
            (naive(2026, 11, 23, 10, 31, 1), POLICY, True),  # 61 s fast
            (naive(2026, 11, 23, 10, 31, 0), POLICY, False),  # 60 s: not beyond
            (naive(2026, 11, 23, 10, 30, 0), POLICY, False),
            (None, POLICY, True),  # date unknown
            (naive(2000, 1, 1, 0, 5, 0), POLICY, True),  # reset by a battery change
            (naive(2026, 11, 23, 10, 10, 0), ClockPolicy(False, 60.0, TZ), False),
            (None, ClockPolicy(False, 60.0, TZ), False),
            (naive(2026, 11, 23, 10, 10, 0), ClockPolicy(True, 60.0), False),  # no zone
            (naive(2026, 11, 23, 10, 29, 55), ClockPolicy(True, 1.0, TZ), True),
        ],
    )
    def test_clock_set_due(
        self, device_now: datetime | None, policy: ClockPolicy, due: bool
    ) -> None:
        """Set when asked, the zone known, and the clock unset, reset or beyond the threshold
        (whole seconds of wall-clock time in the patient's zone)."""
        assert due == clock_set_due(clock_at_hub_now(device_now), policy)

    def test_drift_is_device_minus_hub_in_whole_seconds(self) -> None:
        """A clock 20 min slow drifts -1200 s, 61 s fast +61 s; an unknown date has none."""
        assert -1200 == drift_s(clock_at_hub_now(naive(2026, 11, 23, 10, 10, 0)), TZ)
        assert 61 == drift_s(clock_at_hub_now(naive(2026, 11, 23, 10, 31, 1)), TZ)
        assert drift_s(clock_at_hub_now(None), TZ) is None

    def test_value_is_local_wall_time_with_external_reference_reason(self) -> None:
        """10 octets: Berlin wall time (UTC+1 in November), Monday, 128/256 s, Adjust Reason
        bit 1 "External reference time update"."""
        value = current_time_value(HUB_NOW + HALF, TZ)
        assert bytes.fromhex("ea070b170a1e00" + "01" + "80" + "02") == value
        decoded = CurrentTime.from_bytes(value)
        assert AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE == decoded.adjust_reason
        assert naive(2026, 11, 23, 10, 30, 0) == decoded.date_time.to_datetime()

    def test_value_follows_daylight_saving(self) -> None:
        """In July Berlin is UTC+2: 09:30 UTC is written as 11:30."""
        value = current_time_value(datetime(2026, 7, 6, 9, 30, tzinfo=UTC), TZ)
        assert bytes.fromhex("ea0707060b1e00" + "01" + "00" + "02") == value

    @pytest.mark.parametrize(
        ("code", "name"),
        [
            (0x03, "WRITE_NOT_PERMITTED"),
            (0x0E, "UNLIKELY_ERROR"),
            (0x80, "DATA_FIELD_IGNORED"),
            (0x81, "ATT_ERROR_0x81"),
            (0xFC, "WRITE_REQUEST_REJECTED"),
        ],
    )
    def test_att_error_names(self, code: int, name: str) -> None:
        """ATT errors are logged by name: bleak's, CTS's 0x80, or the code."""
        assert name == att_error_name(code)

    @pytest.mark.parametrize(
        "build",
        [
            lambda: ClockPolicy(True, -1.0, TZ),
            lambda: ClockPolicy(True, float("nan"), TZ),
        ],
    )
    def test_policy_refuses_a_bad_threshold(self, build: Callable[[], ClockPolicy]) -> None:
        """A negative or NaN threshold is refused when the policy is built."""
        with pytest.raises(ValueError, match="threshold_s"):
            build()

    def test_policy_refuses_an_unknown_zone(self) -> None:
        """An unknown zone is refused when the policy is built, not at the first write."""
        with pytest.raises(KeyError):
            ClockPolicy(True, 60.0, "Europe/Atlantis")


# -- the emulated CTS -----------------------------------------------------------------------


class TestEmulatedClockWrites:
    """The emulator's switch: read-only by default; writable sets the clock."""

    def test_write_sets_the_clock_which_runs_on(self) -> None:
        """A written value is read back (adjust reason kept) and runs on with the host."""
        host = [HUB_NOW]
        clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True, now=lambda: host[0])
        clock.write_current_time(current_time_value(HUB_NOW + HALF, TZ))
        assert bytes.fromhex("ea070b170a1e00018002") == clock.current_time_value()
        host[0] = HUB_NOW + timedelta(seconds=90)
        assert naive(2026, 11, 23, 10, 31, 30, 500_000) == clock.read()

    def test_unset_clock_once_written_knows_its_zone(self) -> None:
        """An unset clock that is set reads the written time; its Local Time Information
        then follows its zone."""
        clock = EmulatedClock(TZ, unset=True, writable=True, now=lambda: HUB_NOW)
        clock.write_current_time(current_time_value(HUB_NOW + HALF, TZ))
        assert naive(2026, 11, 23, 10, 30, 0, 500_000) == clock.read()
        assert bytes((4, 0)) == clock.local_time_information_value()

    @pytest.mark.parametrize(
        ("options", "value", "code"),
        [
            ({}, bytes.fromhex("ea070b170a1e00018002"), 0x03),
            (
                {"writable": True, "write_error": DATA_FIELD_IGNORED},
                bytes.fromhex("ea070b170a1e00018002"),
                0x80,
            ),
            ({"writable": True}, bytes(9), 0x0D),
            ({"writable": True}, bytes.fromhex("ea07021e0a1e00018002"), 0x80),
        ],
        ids=["read-only", "refusing", "short", "30-february"],
    )
    def test_refused_writes(self, options: dict[str, Any], value: bytes, code: int) -> None:
        """Read-only: Write Not Permitted; a refusing or a bad value: its ATT error; each
        recorded, the clock unchanged."""
        clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), now=lambda: HUB_NOW, **options)
        before = clock.current_time_value()
        with pytest.raises(ATT_Error) as info:
            clock.write_current_time(value)
        assert code == info.value.error_code
        assert before == clock.current_time_value()
        assert [value] == clock.writes


# -- over the virtual radio ----------------------------------------------------------------


def reading_at(taken: datetime, systolic: int = 121) -> BpReading:
    """A cuff reading stamped ``taken`` on the cuff's clock."""
    stamp = DateTime(taken.year, taken.month, taken.day, taken.hour, taken.minute, taken.second)
    return BpReading(systolic, 79, 93, time_stamp=stamp, pulse_rate=68)


async def add_cuff(radio: VirtualRadio, clock: EmulatedClock) -> tuple[EmulatedCuff, datetime]:
    """A cuff on ``clock`` holding one reading taken an hour ago by that clock."""
    device_now = clock.read() or CLOCK_RESET_VALUE
    taken = (device_now - timedelta(hours=1)).replace(microsecond=0)
    cuff = await radio.add_cuff([reading_at(taken)], address=DEVICE_ADDRESS, clock=clock)
    return cuff, taken


async def session(
    ble: BleStack, policy: ClockPolicy | None = POLICY
) -> tuple[BpsSessionResult, list[RawMeasurement], list[MutableMapping[str, Any]]]:
    """One BPS session with ``policy``: its result, what it handed on, and its log events."""
    handed: list[RawMeasurement] = []

    async def keep(raw: RawMeasurement, _facts: DeviceFacts) -> None:
        handed.append(raw)

    with capture_logs() as events:
        async with asyncio.timeout(4 * WAIT_S):
            result = await collect_blood_pressure(
                ble,
                DEVICE_ADDRESS,
                keep,
                scan_timeout_s=WAIT_S,
                connect_timeout_s=WAIT_S,
                quiet_period_s=0.2,
                clock=policy,
            )
    return result, handed, events


def set_events(events: list[MutableMapping[str, Any]]) -> list[dict[str, Any]]:
    """The set and set-skipped events, without the log level."""
    return [
        {k: v for k, v in e.items() if k != "log_level"}
        for e in events
        if e["event"] in (*SET_EVENTS, "ble_current_time_set_skipped")
    ]


def placed(raw: RawMeasurement, facts: DeviceFacts) -> tuple[datetime, timedelta]:
    """Where the normalizer puts a cuff reading: ``effective[x]`` and the offset applied."""
    reading = blood_pressure_reading(BloodPressureMeasurement.from_bytes(raw.data))
    ctx = Context("hub-0001", "patient-0001", TZ, raw.received_wall)
    when = reading_time(reading, facts, ctx)
    return when.effective, when.offset_applied


def assert_right(clock: EmulatedClock) -> None:
    """The emulated clock reads the hub's wall time in the patient's zone, within 2 s."""
    device_now = clock.read()
    assert device_now is not None
    assert abs(device_now - hub_local_now()) <= timedelta(seconds=2)


async def test_slow_clock_is_set_and_this_sessions_reading_keeps_the_old_offset(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """A cuff 20 min slow with a writable CTS: one write (External reference time update),
    after which its clock is right; the session's reading is placed with the offset read
    before the write (its stamp + that offset, exactly), the drift logged in whole seconds.
    The next session reads the corrected clock, does not write again, and places a reading
    taken since by its own stamp."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True)
    cuff, taken = await add_cuff(radio, clock)

    result, handed, events = await session(ble)

    assert 1 == result.measurements
    (written,) = clock.writes
    assert AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE == written[9]
    assert_right(clock)
    read = result.facts.clock
    assert read is not None
    offset = read.offset(TZ)
    assert offset is not None
    assert abs(offset - timedelta(minutes=20)) <= timedelta(seconds=1)
    (raw,) = handed
    assert (localize(taken + offset, TZ), offset) == placed(raw, result.facts)
    assert [
        {
            "event": "ble_current_time_set",
            "device": "..:12:34",
            "drift_s": -int(offset.total_seconds()),
            "clock_unset": False,
        }
    ] == set_events(events)

    later = (hub_local_now() - timedelta(minutes=5)).replace(microsecond=0)
    await cuff.add_reading(reading_at(later, systolic=118))
    result, handed, events = await session(ble)
    assert 1 == result.measurements
    assert [] == set_events(events)
    assert [written] == clock.writes
    again = result.facts.clock
    assert again is not None
    assert again.offset(TZ) is not None
    assert abs(again.offset(TZ) or timedelta(0)) <= timedelta(seconds=1)
    (raw,) = handed
    assert (localize(later, TZ), timedelta(0)) == placed(raw, result.facts)


@pytest.mark.parametrize(
    "options",
    [{"unset": True}, {"reset_at": CLOCK_RESET_VALUE}],
    ids=["unset", "reset-to-2000"],
)
async def test_unset_or_reset_clock_is_set(
    options: dict[str, Any], radio: VirtualRadio, ble: BleStack
) -> None:
    """An unset clock (date fields 0) or one restarted at 2000-01-01 is set; the reading is
    still handed on."""
    clock = EmulatedClock(TZ, writable=True, **options)
    await add_cuff(radio, clock)
    unset = clock.read() is None

    result, handed, events = await session(ble)

    assert (1, 1) == (result.measurements, len(handed))
    assert 1 == len(clock.writes)
    assert_right(clock)
    (event,) = set_events(events)
    assert ("ble_current_time_set", True) == (event["event"], event["clock_unset"])
    if unset:
        assert event["drift_s"] is None
    else:
        assert event["drift_s"] < -800_000_000  # about 27 years behind


async def test_clock_within_threshold_is_not_written(radio: VirtualRadio, ble: BleStack) -> None:
    """A writable clock 30 s fast (threshold 60 s) is left alone."""
    clock = EmulatedClock(TZ, skew=timedelta(seconds=30), writable=True)
    await add_cuff(radio, clock)

    result, _handed, events = await session(ble)

    assert 1 == result.measurements
    assert [] == clock.writes
    assert [] == set_events(events)


async def test_read_only_cts_is_never_written(radio: VirtualRadio, ble: BleStack) -> None:
    """A cuff 20 min slow whose Current Time lacks the Write property: no write is sent
    (the emulator records every attempt), the reading is handed on with the offset."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20))
    _cuff, taken = await add_cuff(radio, clock)

    result, handed, events = await session(ble)

    assert [] == clock.writes
    (raw,) = handed
    assert result.facts.clock is not None
    offset = result.facts.clock.offset(TZ)
    assert offset is not None
    assert (localize(taken + offset, TZ), offset) == placed(raw, result.facts)
    (skipped,) = set_events(events)
    assert ("ble_current_time_set_skipped", "not_writable") == (
        skipped["event"],
        skipped["reason"],
    )


@pytest.mark.parametrize(
    ("policy", "skipped"),
    [
        (ClockPolicy(set_clock=False, threshold_s=60.0, timezone=TZ), []),
        (None, []),
        (
            ClockPolicy(
                set_clock=True, threshold_s=60.0, timezone=TZ, hub_clock_trusted=lambda: False
            ),
            ["hub_clock_untrusted"],
        ),
        (ClockPolicy(set_clock=True, threshold_s=60.0), ["no_timezone"]),
    ],
    ids=["set-clock-false", "no-policy", "hub-clock-untrusted", "no-timezone"],
)
async def test_clock_never_written_unless_asked_and_trusted(
    policy: ClockPolicy | None, skipped: list[str], radio: VirtualRadio, ble: BleStack
) -> None:
    """A writable clock 20 min slow is never written with ``set_clock=False``, no policy, a
    hub clock that is not trusted, or no zone to write the time in."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True)
    await add_cuff(radio, clock)

    result, _handed, events = await session(ble, policy)

    assert 1 == result.measurements
    assert [] == clock.writes
    assert skipped == [e["reason"] for e in set_events(events)]


@pytest.mark.parametrize(
    ("code", "name"),
    [(DATA_FIELD_IGNORED, "DATA_FIELD_IGNORED"), (0x0E, "UNLIKELY_ERROR")],
)
async def test_refused_write_is_logged_and_the_session_goes_on(
    code: int, name: str, radio: VirtualRadio, ble: BleStack
) -> None:
    """A cuff that answers the write with an ATT error: the refusal is logged by name (the
    drift beside it, no time), the clock stays slow, the reading is handed on with the
    offset read."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True, write_error=code)
    _cuff, taken = await add_cuff(radio, clock)

    result, handed, events = await session(ble)

    assert 1 == len(clock.writes)
    device_now = clock.read()
    assert device_now is not None
    assert abs(device_now + timedelta(minutes=20) - hub_local_now()) <= timedelta(seconds=2)
    (raw,) = handed
    assert result.facts.clock is not None
    offset = result.facts.clock.offset(TZ)
    assert offset is not None
    assert (localize(taken + offset, TZ), offset) == placed(raw, result.facts)
    assert [
        {
            "event": "ble_current_time_set_failed",
            "device": "..:12:34",
            "drift_s": -int(offset.total_seconds()),
            "clock_unset": False,
            "error": name,
        }
    ] == set_events(events)


async def test_glucometer_clock_is_set_after_its_clock_is_read(
    meter: MeterFactory, ble: BleStack
) -> None:
    """The GLS session takes the same policy: a meter 20 min slow with a writable CTS is set
    once, and every record of the RACP sync is handed on with the clock read before."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True)
    records = example_records()
    await meter(records, clock=clock)
    handed: list[DeviceFacts] = []

    async def keep(_raw: RawMeasurement, facts: DeviceFacts) -> None:
        handed.append(facts)

    with capture_logs() as events:
        async with asyncio.timeout(6 * WAIT_S):
            result = await collect_glucose(
                ble,
                DEVICE_ADDRESS,
                keep,
                None,
                scan_timeout_s=WAIT_S,
                connect_timeout_s=WAIT_S,
                clock=POLICY,
            )

    assert len(records) == result.measurements == len(handed)
    assert 1 == len(clock.writes)
    assert_right(clock)
    offsets = {facts.clock.offset(TZ) if facts.clock else None for facts in handed}
    (offset,) = offsets
    assert offset is not None
    assert abs(offset - timedelta(minutes=20)) <= timedelta(seconds=1)
    assert ["ble_current_time_set"] == [e["event"] for e in set_events(events)]


async def test_clock_is_not_set_by_a_session_that_ends_early(
    meter: MeterFactory, ble: BleStack
) -> None:
    """The clock is set only once a meter has handed over everything: a session whose link
    drops mid-transfer leaves the clock alone, so the records still on the meter (stamped by
    the slow clock) are placed by the next session with the same 20-minute offset; that
    complete session then sets the clock."""
    clock = EmulatedClock(TZ, skew=timedelta(minutes=-20), writable=True)
    records = example_records()
    glucometer = await meter(records, clock=clock, drop_link_after_records=2)
    handed: list[DeviceFacts] = []

    async def keep(_raw: RawMeasurement, facts: DeviceFacts) -> None:
        handed.append(facts)

    async with asyncio.timeout(6 * WAIT_S):
        with pytest.raises(BleLinkLostError):
            await collect_glucose(
                ble, DEVICE_ADDRESS, keep, None, scan_timeout_s=WAIT_S,
                connect_timeout_s=WAIT_S, clock=POLICY,
            )  # fmt: skip
    assert clock.writes == []
    first = len(handed)
    assert 0 < first < len(records)
    glucometer.drop_link_after_records = None
    mark = None  # the hub resyncs from its committed mark; none was committed here
    async with asyncio.timeout(6 * WAIT_S):
        await collect_glucose(
            ble, DEVICE_ADDRESS, keep, mark, scan_timeout_s=WAIT_S,
            connect_timeout_s=WAIT_S, clock=POLICY,
        )  # fmt: skip
    assert 1 == len(clock.writes)
    assert_right(clock)
    offsets = [facts.clock.offset(TZ) if facts.clock else None for facts in handed]
    assert all(
        o is not None and abs(o - timedelta(minutes=20)) <= timedelta(seconds=1) for o in offsets
    )
    assert len(handed) == first + len(records)
