"""agent.ble.schedule: which allow-listed device the collector connects, and when; the
adapter watchdog. Sans-I/O: a named fake clock (``Clock``) stands in for monotonic time."""

from __future__ import annotations

import random

import pytest

from agent.ble.schedule import (
    POWER_CYCLE_MIN_INTERVAL_S,
    UNKNOWN_REMEMBERED,
    AdapterWatchdog,
    CollectionSchedule,
    Ignore,
    IgnoreReason,
    Start,
    WatchdogAction,
)
from agent.ble.uuids import BLOOD_PRESSURE_SERVICE, GLUCOSE_SERVICE, PULSE_OXIMETER_SERVICE
from agent.config import DeviceConfig
from agent.errors import BleLinkError, DeviceIdentityError
from agent.retry import KeyedBackoff

CUFF = DeviceConfig(kind="blood_pressure", address="F0:00:00:00:10:01", label="cuff")
METER = DeviceConfig(kind="glucose", address="F0:00:00:00:20:01", label="meter")
OXI = DeviceConfig(kind="pulse_oximeter", address="F0:00:00:00:30:01", label="oxi")


class Clock:
    """The mocked edge: monotonic time, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(clock: Clock, max_connections: int = 2) -> CollectionSchedule:
    backoff = KeyedBackoff(rng=random.Random(7), clock=clock)
    return CollectionSchedule(
        [CUFF, METER, OXI],
        max_connections=max_connections,
        cooldown_s=30.0,
        backoff=backoff,
        clock=clock,
    )


def test_allow_listed_device_with_its_service_starts() -> None:
    s = schedule(Clock())
    assert s.on_advertisement(CUFF.address.lower(), [BLOOD_PRESSURE_SERVICE]) == Start(CUFF)


def test_unknown_device_is_never_started_and_reported_once() -> None:
    s = schedule(Clock())
    stranger = "12:34:56:78:9A:BC"
    assert s.on_advertisement(stranger, [GLUCOSE_SERVICE]) == Ignore(
        IgnoreReason.UNKNOWN, first_time=True
    )
    assert s.on_advertisement(stranger, [GLUCOSE_SERVICE]) == Ignore(IgnoreReason.UNKNOWN)


def test_unknown_memory_is_bounded() -> None:
    s = schedule(Clock())
    for i in range(UNKNOWN_REMEMBERED + 1):
        decision = s.on_advertisement(f"12:34:56:78:{i >> 8:02X}:{i & 0xFF:02X}", [])
        assert decision == Ignore(IgnoreReason.UNKNOWN, first_time=True)
    # the oldest was forgotten: reported again
    assert s.on_advertisement("12:34:56:78:00:00", []).first_time  # type: ignore[union-attr]


def test_allow_listed_address_with_another_service_is_ignored() -> None:
    s = schedule(Clock())
    assert s.on_advertisement(CUFF.address, [GLUCOSE_SERVICE]) == Ignore(IgnoreReason.WRONG_SERVICE)


def test_one_session_per_device_and_cooldown_after_it() -> None:
    clock = Clock()
    s = schedule(clock)
    s.started(CUFF)
    assert s.on_advertisement(CUFF.address, [BLOOD_PRESSURE_SERVICE]) == Ignore(IgnoreReason.BUSY)
    s.ended(CUFF)
    assert s.on_advertisement(CUFF.address, [BLOOD_PRESSURE_SERVICE]) == Ignore(
        IgnoreReason.COOLING_DOWN
    )
    clock.now += 30.0
    assert s.on_advertisement(CUFF.address, [BLOOD_PRESSURE_SERVICE]) == Start(CUFF)


def test_slots_bound_concurrent_sessions_and_a_silent_device_takes_none() -> None:
    s = schedule(Clock(), max_connections=2)
    s.started(METER)
    assert s.on_advertisement(CUFF.address, [BLOOD_PRESSURE_SERVICE]) == Start(CUFF)
    s.started(CUFF)
    assert s.active == 2
    assert s.on_advertisement(OXI.address, [PULSE_OXIMETER_SERVICE]) == Ignore(IgnoreReason.NO_SLOT)
    s.ended(METER)
    assert s.on_advertisement(OXI.address, [PULSE_OXIMETER_SERVICE]) == Start(OXI)


def test_failed_device_waits_for_its_backoff() -> None:
    clock = Clock()
    s = schedule(clock)
    s.started(METER)
    s.ended(METER)
    delay = s.backoff.failed(METER.label, BleLinkError("connect failed", device="20:01"))
    clock.now += 30.0
    if delay > 30.0:
        assert s.on_advertisement(METER.address, [GLUCOSE_SERVICE]) == Ignore(
            IgnoreReason.BACKING_OFF
        )
    clock.now += delay
    assert s.on_advertisement(METER.address, [GLUCOSE_SERVICE]) == Start(METER)


def test_security_failure_opens_the_breaker_for_minutes() -> None:
    clock = Clock()
    s = schedule(clock)
    delay = s.backoff.failed(CUFF.label, DeviceIdentityError("10:01", "config", "mismatch"))
    assert delay >= 60.0
    clock.now += 59.0
    assert s.on_advertisement(CUFF.address, [BLOOD_PRESSURE_SERVICE]) == Ignore(
        IgnoreReason.BACKING_OFF
    )


class TestWatchdog:
    def test_quiet_adapter_restarts_scan_then_power_cycles(self) -> None:
        clock = Clock()
        dog = AdapterWatchdog(600.0, clock=clock)
        assert dog.check(devices_configured=True, sessions_active=0) is WatchdogAction.NONE
        clock.now += 599.0
        assert dog.check(devices_configured=True, sessions_active=0) is WatchdogAction.NONE
        assert dog.due_in() == pytest.approx(1.0)
        clock.now += 1.0
        assert dog.check(devices_configured=True, sessions_active=0) is (
            WatchdogAction.RESTART_SCAN
        )
        assert dog.check(devices_configured=True, sessions_active=0) is WatchdogAction.NONE
        clock.now += 600.0
        assert dog.check(devices_configured=True, sessions_active=0) is (WatchdogAction.POWER_CYCLE)
        # still quiet: scan restarts, but no second power cycle within the hour
        for _ in range(5):
            clock.now += 600.0
            assert dog.check(devices_configured=True, sessions_active=0) is (
                WatchdogAction.RESTART_SCAN
            )
        clock.now = clock.now + POWER_CYCLE_MIN_INTERVAL_S
        assert dog.check(devices_configured=True, sessions_active=0) is (WatchdogAction.POWER_CYCLE)
        assert (dog.restarts, dog.power_cycles) == (6, 2)

    def test_an_advertisement_resets_it(self) -> None:
        clock = Clock()
        dog = AdapterWatchdog(600.0, clock=clock)
        clock.now += 600.0
        assert dog.check(devices_configured=True, sessions_active=0) is (
            WatchdogAction.RESTART_SCAN
        )
        dog.heard()
        clock.now += 600.0
        assert dog.check(devices_configured=True, sessions_active=0) is (
            WatchdogAction.RESTART_SCAN
        )

    def test_never_acts_during_a_session_or_without_devices(self) -> None:
        clock = Clock()
        dog = AdapterWatchdog(600.0, clock=clock)
        clock.now += 5000.0
        assert dog.check(devices_configured=True, sessions_active=1) is WatchdogAction.NONE
        assert dog.check(devices_configured=False, sessions_active=0) is WatchdogAction.NONE
        clock.now += 599.0
        assert dog.check(devices_configured=True, sessions_active=0) is WatchdogAction.NONE
