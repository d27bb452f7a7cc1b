"""The retry policy (agent/retry.py): by type, fully jittered, bounded, reset after a stable period.

The RNG is a seeded ``random.Random`` and the clock a settable float: the two named edges.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from typing import Any

import pytest

from agent import errors
from agent.errors import (
    BleLinkError,
    BleLinkLostError,
    DeviceProtocolError,
    HubError,
    UplinkError,
    UplinkRefusedError,
    UsageError,
)
from agent.retry import (
    ATTEMPTS_CAP,
    BLE_BREAKER_AFTER,
    BLE_BREAKER_FLOOR_S,
    Backoff,
    FloorJitter,
    FullJitter,
    KeyedBackoff,
    base_delay,
    boot_jitter,
    retryable,
)

SAMPLES = 2000
"""Draws per attempt: enough for the extremes of a uniform law to come within 1 % of its ends."""


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _exported_hub_errors() -> dict[str, type[HubError]]:
    found = {name: getattr(errors, name) for name in errors.__all__}
    return {n: c for n, c in found.items() if isinstance(c, type) and issubclass(c, HubError)}


# Every error class agent.errors exports, and whether waiting can fix it. A new class must be
# added here (test_every_exported_error_is_classified fails otherwise).
EXPECTED_RETRYABLE = {
    "HubError": False,
    "DeviceError": False,
    "DecodeError": False,
    "DeviceProtocolError": False,
    "DeviceFloodError": False,
    "DeviceSecurityError": False,
    "DeviceIdentityError": False,
    "LinkSecurityError": False,
    "PairingError": False,
    "BondExistsError": False,
    "BondNotDeletedError": False,
    "LocalError": False,
    "UsageError": False,
    "ConfigError": False,
    "RecordTooLargeError": False,
    "TransportError": True,
    "BleLinkError": True,
    "BleDeviceAbsentError": True,
    "BleStackUnavailableError": True,
    "BleLinkLostError": True,
    "UplinkError": True,
    "UplinkRefusedError": False,
    "PublishRefusedError": True,
    "PublishNotQueuedError": True,
    "PublishRejectedError": False,
    "StorageError": True,
    "StorageFullError": True,
    "StorageUnusableError": False,
    "StorageCorruptError": False,
    "CryptoError": False,
    "KeyMaterialError": False,
    "IntegrityError": False,
    # A version-3 reading naming a device set its reader does not hold: waiting does not
    # bring the set; the platform refuses it and the hub sends the Devices in full.
    "UnknownDevicesError": False,
    "PlatformError": False,
    "CommandRejectedError": False,
    "CertificateRefusedError": False,
    "ReceiptRejectedError": False,
    # The modem (agent/modem/): a port or module that went away, or ModemManager not
    # answering, may come back; no modem, or a port ModemManager holds, is the operator's.
    "ModemTransportError": True,
    "ModemPortLostError": True,
    "ModemTimeoutError": True,
    "ModemManagerError": True,
    "ModemManagerUnavailableError": True,
    "ModemManagerTimeoutError": True,
    "ModemManagerCallError": True,
    "ModemAbsentError": False,
    "ModemPortHeldError": False,
}


def _instance(cls: type[HubError]) -> HubError:
    """One instance of ``cls``, whatever its constructor's fields (retryable() ignores them)."""
    return cls.__new__(cls)


class TestRetryable:
    def test_every_exported_error_is_classified(self) -> None:
        assert set(_exported_hub_errors()) == set(EXPECTED_RETRYABLE)

    @pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_RETRYABLE.items()))
    def test_by_class(self, name: str, expected: bool) -> None:
        cls = _exported_hub_errors()[name]
        assert (retryable(_instance(cls)), cls.retryable) == (expected, expected)

    def test_real_instances(self) -> None:
        assert retryable(UplinkError("cannot reach the broker"))
        assert not retryable(UplinkRefusedError("CONNACK refused: Not authorized", rc=0x87))
        assert retryable(BleLinkLostError("collect", 2, "..:3C:4D"))
        assert not retryable(DeviceProtocolError("..:3C:4D", "discover", "no BPS"))

    @pytest.mark.parametrize(
        "exc",
        [
            ValueError("a bug"),
            TimeoutError(),
            OSError("not ours"),
            asyncio.CancelledError(),
            KeyboardInterrupt(),
        ],
    )
    def test_anything_else_is_a_bug_or_a_stop(self, exc: BaseException) -> None:
        assert not retryable(exc)


class TestFullJitter:
    def test_ceiling_grows_exponentially_then_saturates(self) -> None:
        policy = FullJitter(base_s=1.0, cap_s=60.0)
        assert [policy.ceiling(n) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert policy.ceiling(10**9) == 60.0  # bounded exponent: no OverflowError

    def test_delays_fill_zero_to_ceiling(self) -> None:
        policy = FullJitter(base_s=1.0, cap_s=60.0)
        rng = random.Random(7)
        for attempt in range(9):
            ceiling = policy.ceiling(attempt)
            delays = [policy.delay(attempt, rng) for _ in range(SAMPLES)]
            assert all(0.0 <= d <= ceiling for d in delays)
            # Full jitter: the whole range is used, not a band near the ceiling.
            assert min(delays) < 0.01 * ceiling
            assert max(delays) > 0.99 * ceiling
            assert statistics.fmean(delays) == pytest.approx(ceiling / 2, rel=0.05)

    def test_two_seeds_differ(self) -> None:
        policy = FullJitter(base_s=1.0, cap_s=60.0)
        one, two = random.Random(1), random.Random(2)
        assert [policy.delay(6, one) for _ in range(5)] != [policy.delay(6, two) for _ in range(5)]

    @pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
    def test_bad_bounds_are_refused(self, base: float, cap: float) -> None:
        with pytest.raises(UsageError):
            FullJitter(base, cap)


class TestFloorJitter:
    def test_never_below_the_floor_and_jittered(self) -> None:
        policy = FloorJitter(floor_s=30.0, cap_s=300.0)
        assert [policy.ceiling(n) for n in range(5)] == [60, 120, 240, 300, 300]
        rng = random.Random(3)
        for attempt in range(6):
            delays = [policy.delay(attempt, rng) for _ in range(SAMPLES)]
            assert all(30.0 <= d <= policy.ceiling(attempt) for d in delays)
            assert max(delays) - min(delays) > 0.98 * (policy.ceiling(attempt) - 30.0)

    def test_two_seeds_give_different_delays(self) -> None:
        """A refused fleet does not retry in lockstep: hubs with different seeds drift apart."""
        policy = FloorJitter(floor_s=30.0, cap_s=300.0)
        first = [policy.delay(n, random.Random(11)) for n in range(4)]
        second = [policy.delay(n, random.Random(12)) for n in range(4)]
        assert all(a != b for a, b in zip(first, second, strict=True))
        assert min(first + second) >= 30.0

    @pytest.mark.parametrize(("floor", "cap"), [(0.0, 1.0), (1.0, 1.0), (5.0, 1.0)])
    def test_bad_bounds_are_refused(self, floor: float, cap: float) -> None:
        """A zero floor would be a tight loop; floor == cap would be a fixed, synchronising one."""
        with pytest.raises(UsageError):
            FloorJitter(floor, cap)


class TestBackoff:
    @staticmethod
    def _backoff(clock: FakeClock, seed: int = 5) -> Backoff:
        return Backoff(
            FullJitter(base_s=1.0, cap_s=120.0),
            FloorJitter(floor_s=30.0, cap_s=300.0),
            stable_s=60.0,
            rng=random.Random(seed),
            clock=clock,
        )

    def test_transient_failures_grow_then_saturate(self) -> None:
        backoff = self._backoff(FakeClock())
        transient = FullJitter(base_s=1.0, cap_s=120.0)
        for attempt in range(12):
            assert backoff.attempts == attempt
            assert 0.0 <= backoff.failed(UplinkError("down")) <= transient.ceiling(attempt)

    def test_attempts_are_bounded(self) -> None:
        backoff = self._backoff(FakeClock())
        for _ in range(ATTEMPTS_CAP + 10):
            assert backoff.failed(UplinkError("down")) <= 120.0
        assert backoff.attempts == ATTEMPTS_CAP

    def test_refusals_wait_at_least_the_floor(self) -> None:
        """A refused CONNACK never leads to a tight loop, however many times it repeats."""
        backoff = self._backoff(FakeClock())
        delays = [backoff.failed(UplinkRefusedError("not authorized")) for _ in range(50)]
        assert min(delays) >= 30.0
        assert max(delays) <= 300.0
        assert len(set(delays)) == 50  # jittered, never one fixed value

    def test_bugs_back_off_like_refusals(self) -> None:
        """Not a HubError: a bug. Retrying it fast would only spin."""
        backoff = self._backoff(FakeClock())
        assert backoff.failed(RuntimeError("bridge bug")) >= 30.0

    def test_refusal_delays_differ_between_hubs(self) -> None:
        clock = FakeClock()
        one, two = self._backoff(clock, seed=1), self._backoff(clock, seed=2)
        refusal = UplinkRefusedError("connection closed before CONNACK")
        assert one.failed(refusal) != two.failed(refusal)

    def test_stable_session_resets(self) -> None:
        clock = FakeClock()
        backoff = self._backoff(clock)
        for _ in range(6):
            backoff.failed(UplinkError("down"))
        backoff.up()
        clock.now += 60.0
        backoff.failed(UplinkError("dropped"))
        assert backoff.attempts == 1  # counted again from the first attempt

    def test_short_session_does_not_reset(self) -> None:
        """A broker that accepts and drops at once must not reset the backoff every time."""
        clock = FakeClock()
        backoff = self._backoff(clock)
        for _ in range(6):
            backoff.failed(UplinkError("down"))
        backoff.up()
        clock.now += 59.9
        backoff.failed(UplinkError("dropped"))
        assert backoff.attempts == 7

    def test_up_counts_once(self) -> None:
        """A failure without a new up() after the reset does not reset again."""
        clock = FakeClock()
        backoff = self._backoff(clock)
        backoff.up()
        clock.now += 120.0
        backoff.failed(UplinkError("dropped"))
        backoff.failed(UplinkError("down"))
        assert backoff.attempts == 2

    def test_boot_jitter(self) -> None:
        rng = random.Random(9)
        delays = [boot_jitter(30.0, rng) for _ in range(SAMPLES)]
        assert all(0.0 <= d <= 30.0 for d in delays)
        assert max(delays) - min(delays) > 29.0
        assert boot_jitter(0.0, rng) == 0.0
        with pytest.raises(UsageError):
            boot_jitter(-1.0, rng)


class TestKeyedBackoff:
    def test_base_by_most_derived_class(self) -> None:
        bases = {BleLinkError: 0.25, BleLinkLostError: 1.0}
        assert base_delay(BleLinkError("connect timed out"), bases, 0.1) == 0.25
        assert base_delay(BleLinkLostError("collect", 0), bases, 0.1) == 1.0
        assert base_delay(UplinkError("other"), bases, 0.1) == 0.1

    def test_per_class_first_delays(self) -> None:
        keyed = KeyedBackoff(rng=random.Random(4), clock=FakeClock())
        for i in range(SAMPLES):
            assert 0.0 <= keyed.failed(f"a{i}", BleLinkError("connect timed out")) <= 0.25
            assert 0.0 <= keyed.failed(f"b{i}", BleLinkLostError("collect", 1)) <= 1.0

    def test_keys_are_independent(self) -> None:
        keyed = KeyedBackoff(rng=random.Random(4), clock=FakeClock())
        for _ in range(3):
            keyed.failed("..:3C:4D", BleLinkError("not found"))
        keyed.failed("..:AA:BB", BleLinkError("not found"))
        assert (keyed.attempts("..:3C:4D"), keyed.attempts("..:AA:BB")) == (3, 1)
        keyed.succeeded("..:3C:4D")
        assert (keyed.attempts("..:3C:4D"), keyed.attempts("..:AA:BB")) == (0, 1)

    def test_breaker_opens_after_repeated_failures(self) -> None:
        keyed = KeyedBackoff(rng=random.Random(4), clock=FakeClock())
        early = [keyed.failed("cuff", BleLinkError("not found")) for _ in range(BLE_BREAKER_AFTER)]
        assert max(early) <= 0.25 * 2 ** (BLE_BREAKER_AFTER - 1)
        assert keyed.breaker_open("cuff")
        late = [keyed.failed("cuff", BleLinkError("not found")) for _ in range(20)]
        assert min(late) >= BLE_BREAKER_FLOOR_S
        assert max(late) <= 600.0
        assert len(set(late)) == 20

    def test_device_fault_opens_the_breaker_at_once(self) -> None:
        keyed = KeyedBackoff(rng=random.Random(4), clock=FakeClock())
        fault = DeviceProtocolError("..:3C:4D", "discover", "no BPS")
        assert keyed.failed("cuff", fault) >= BLE_BREAKER_FLOOR_S

    def test_ready_in_follows_the_clock(self) -> None:
        clock = FakeClock()
        keyed = KeyedBackoff(rng=random.Random(4), clock=clock)
        assert keyed.ready_in("cuff") == 0.0
        delay = keyed.failed("cuff", BleLinkLostError("collect", 0))
        assert keyed.ready_in("cuff") == pytest.approx(delay)
        clock.now += delay / 2
        assert keyed.ready_in("cuff") == pytest.approx(delay / 2)
        clock.now += delay
        assert keyed.ready_in("cuff") == 0.0

    def test_table_is_bounded(self) -> None:
        """The least recently failed key is forgotten first."""
        keyed = KeyedBackoff(max_keys=3, rng=random.Random(4), clock=FakeClock())
        for key in ("a", "b", "c"):
            keyed.failed(key, BleLinkError("not found"))
        keyed.failed("a", BleLinkError("not found"))  # a is now the most recent
        keyed.failed("d", BleLinkError("not found"))  # b goes
        assert [keyed.attempts(k) for k in "abcd"] == [2, 0, 1, 1]

    def test_attempts_are_bounded(self) -> None:
        keyed = KeyedBackoff(rng=random.Random(4), clock=FakeClock())
        for _ in range(ATTEMPTS_CAP + 10):
            assert keyed.failed("cuff", BleLinkError("not found")) <= 600.0
        assert keyed.attempts("cuff") == ATTEMPTS_CAP

    @pytest.mark.parametrize(
        "kwargs",
        [{"breaker_after": 0}, {"max_keys": 0}, {"cap_s": 0.1}, {"default_base_s": 0.0}],
    )
    def test_bad_settings_are_refused(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(UsageError):
            KeyedBackoff(**kwargs)
