"""When to try again and how long to wait first: the hub's one retry policy.

**Whether** is decided by type, never by message text or an instance flag:
:func:`retryable` reads :attr:`~agent.errors.HubError.retryable` from the exception's class. An
exception that is not a :class:`~agent.errors.HubError` is a bug in the hub, and retrying a
bug cannot help: it is not retryable (the caller logs it with its traceback).

**How long** (performance-anchors §B.2, style-anchors principle 11):

- :class:`FullJitter`, for failures that waiting can fix (a broker restarting, a radio link
  that dropped): AWS "full jitter" (Brooker, 2015), ``uniform(0, min(cap, base · 2^attempt))``,
  the same law as tenacity's ``wait_random_exponential``. Without jitter a fleet that lost its
  broker at the same moment retries in lockstep (paho's own reconnect, §B.2).
- :class:`FloorJitter`, for refusals that waiting alone cannot fix (a certificate the broker
  does not accept, 'not authorized', a bug): ``uniform(floor, min(cap, floor · 2^(attempt+1)))``.
  Never below the floor, so no tight loop against a broker that refuses us (one bad credential
  turned an EMQX fleet into a 50,000-attempts-a-minute self-DDoS, §B.1); never a fixed value,
  so a refused fleet does not re-synchronise either.
- :class:`Backoff`: one link's state (the MQTT uplink): picks the policy by :func:`retryable`,
  counts consecutive failures, and starts again from attempt 0 only after the link stayed up
  for a stable period (CONNACK + 60 s, §B.1): a broker that accepts and then drops at once
  must not reset the backoff every time.
- :class:`KeyedBackoff`: the same for many BLE devices at once, keyed by device label, with a
  base delay per error class in the style of bleak-retry-connector's ``calculate_backoff_time``
  and a circuit breaker that backs off for minutes after repeated failures, so a meter left in
  a drawer does not keep the radio busy.

Everything is bounded: attempt counters saturate at ATTEMPTS_CAP, every delay is at most its
policy's cap, :class:`KeyedBackoff` holds at most ``max_keys`` devices. The RNG and the clock
are parameters (a ``random.Random`` and ``time.monotonic`` when not given) so that tests replace
exactly these two edges. This module only computes delays: it never sleeps.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from agent.errors import BleLinkError, BleLinkLostError, HubError, UsageError

__all__ = [
    "ATTEMPTS_CAP",
    "BLE_BASE_DELAYS_S",
    "BLE_BREAKER_AFTER",
    "BLE_BREAKER_CAP_S",
    "BLE_BREAKER_FLOOR_S",
    "BLE_CAP_S",
    "BLE_DEFAULT_BASE_S",
    "BLE_MAX_KEYS",
    "MQTT_BACKOFF_BASE_S",
    "MQTT_BACKOFF_CAP_S",
    "REFUSAL_BACKOFF_CAP_S",
    "REFUSAL_BACKOFF_FLOOR_S",
    "STABLE_PERIOD_S",
    "Backoff",
    "Clock",
    "FloorJitter",
    "FullJitter",
    "KeyedBackoff",
    "Rng",
    "base_delay",
    "boot_jitter",
    "retryable",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

ATTEMPTS_CAP: Final = 32
"""Consecutive failures counted at most. 2^32 times any base (≥ 1 ms) is far beyond any cap, so
the delay has long saturated; the counter stops growing through a months-long outage."""

MQTT_BACKOFF_BASE_S: Final = 1.0
"""First reconnect ceiling: 1–2 s on cellular (performance-anchors §B.1, fleet storms)."""

MQTT_BACKOFF_CAP_S: Final = 120.0
"""Largest reconnect ceiling: every attach costs modem power and carriers may throttle, so
longer than aiomqtt's ~58 s LAN cap; the same as ``mqtt.backoff_max_s``'s default (§B.2)."""

REFUSAL_BACKOFF_FLOOR_S: Final = 30.0
"""Least pause after a refusal (untrusted certificate, CONNACK 'not authorized'): no tight loop
against a broker that refuses us (reliability N7). A refusal fixed on the broker's side (an ACL
reloaded, a certificate re-issued) is picked up within 30–60 s."""

REFUSAL_BACKOFF_CAP_S: Final = 300.0
"""Largest pause after repeated refusals: the cellular cap of §B.1. A refused fleet then
averages one attempt per hub every ~165 s instead of one every 30 s."""

STABLE_PERIOD_S: Final = 60.0
"""A link up this long resets the backoff (CONNACK + 60 s, performance-anchors §B.1, fleet
reconnect storms)."""

BLE_BASE_DELAYS_S: Final[Mapping[type[BaseException], float]] = {
    BleLinkLostError: 1.0,
    BleLinkError: 0.25,
}
"""First ceiling per BLE error class, bleak-retry-connector's split (performance-anchors §B.2):
a failed scan or connect is transient (0.25 s); a link lost mid-session means the device moved
away or reset its stack (1 s, its 'long transient'). The most derived class in the table wins.
(BlueZ's 'out of connection slots', 4 s there, gets its class when agent/ble maps it.)"""

BLE_DEFAULT_BASE_S: Final = 0.25
"""First ceiling for a retryable error the table does not name."""

BLE_CAP_S: Final = 30.0
"""Largest ceiling before the breaker: a cuff advertises for about 30 s after a measurement,
so a longer pause would miss the whole window."""

BLE_BREAKER_AFTER: Final = 5
"""Consecutive failures of one device after which its breaker opens: the target is ≥ 99 %
success within 3 attempts at 2 m (§B.1), so five misses mean the device is away, not unlucky."""

BLE_BREAKER_FLOOR_S: Final = 60.0
"""Least pause with the breaker open: minutes, not seconds (§B.2), so a meter in a drawer does
not keep the radio busy."""

BLE_BREAKER_CAP_S: Final = 600.0
"""Largest pause with the breaker open: a device back in range is retried within 10 minutes."""

BLE_MAX_KEYS: Final = 64
"""Devices a :class:`KeyedBackoff` remembers: a hub pairs a handful; the bound keeps a stream
of labels from growing the table (the least recently failed one is forgotten)."""


# ---------------------------------------------------------------------------
# Edges: randomness and time
# ---------------------------------------------------------------------------


class Rng(Protocol):
    """What the policies need from a random source (``random.Random`` has it)."""

    def uniform(self, a: float, b: float) -> float:
        """A float between ``a`` and ``b``."""
        ...


Clock = Callable[[], float]
"""Monotonic seconds (``time.monotonic``, ``loop.time``)."""


def _default_rng() -> Rng:
    # Seeded from os.urandom: every hub draws a different sequence (not for cryptography).
    return random.Random()  # noqa: S311 - jitter, not a secret


# ---------------------------------------------------------------------------
# Whether
# ---------------------------------------------------------------------------


def retryable(exc: BaseException) -> bool:
    """Whether trying the same operation again later can succeed, by the exception's class.

    A :class:`HubError` says so itself (:attr:`HubError.retryable`, a class attribute); anything
    else, ``CancelledError`` and ``KeyboardInterrupt`` included, is not retryable: a bug or a
    request to stop.
    """
    return isinstance(exc, HubError) and type(exc).retryable


def boot_jitter(window_s: float, rng: Rng) -> float:
    """Pause before the first connect after boot, ``uniform(0, window_s)``: a neighbourhood
    whose power comes back at once must not reach the broker at once (§B.1)."""
    if window_s < 0:
        raise UsageError("window_s", "cannot be negative")
    return rng.uniform(0.0, window_s) if window_s > 0 else 0.0


# ---------------------------------------------------------------------------
# How long: stateless policies
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FullJitter:
    """AWS full jitter: ``delay = uniform(0, min(cap_s, base_s · 2^attempt))``, attempt from 0."""

    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise UsageError("base_s", "must be > 0 and <= cap_s")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (the exponent is bounded: never an overflow)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 0), ATTEMPTS_CAP))

    def delay(self, attempt: int, rng: Rng) -> float:
        """One delay for ``attempt``, in ``[0, ceiling(attempt)]``."""
        return rng.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True, slots=True)
class FloorJitter:
    """For refusals: ``delay = uniform(floor_s, min(cap_s, floor_s · 2^(attempt+1)))``.

    Never below the floor (no tight loop), never a fixed value (no fleet in lockstep), slower
    the longer the refusals last.
    """

    floor_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.floor_s < self.cap_s:
            raise UsageError("floor_s", "must be > 0 and < cap_s (a refusal delay is jittered)")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (> floor_s: there is always room for jitter)."""
        return min(self.cap_s, self.floor_s * 2.0 ** (min(max(attempt, 0), ATTEMPTS_CAP) + 1))

    def delay(self, attempt: int, rng: Rng) -> float:
        """One delay for ``attempt``, in ``[floor_s, ceiling(attempt)]``."""
        return rng.uniform(self.floor_s, self.ceiling(attempt))


# ---------------------------------------------------------------------------
# How long: one link
# ---------------------------------------------------------------------------


class Backoff:
    """Consecutive failures of one link (the MQTT uplink) and the pause before the next try.

    Call :meth:`up` when the link is established (CONNACK) and :meth:`failed` when an attempt
    or a session ended; sleep for what :meth:`failed` returns. A retryable error waits
    ``transient``; anything else waits ``refused``. Both count the same consecutive failures,
    which start again from 0 once the link had been up for ``stable_s``.
    """

    def __init__(
        self,
        transient: FullJitter,
        refused: FloorJitter,
        *,
        stable_s: float = STABLE_PERIOD_S,
        rng: Rng | None = None,
        clock: Clock | None = None,
    ) -> None:
        if stable_s <= 0:
            raise UsageError("stable_s", "must be > 0")
        self.transient = transient
        self.refused = refused
        self.stable_s = stable_s
        self.rng = rng if rng is not None else _default_rng()
        self.clock = clock if clock is not None else time.monotonic
        self._attempts = 0
        self._up_since: float | None = None

    @property
    def attempts(self) -> int:
        """Consecutive failures counted so far (at most ATTEMPTS_CAP)."""
        return self._attempts

    def up(self) -> None:
        """The link is established; whether it lasts is judged at the next :meth:`failed`."""
        self._up_since = self.clock()

    def failed(self, exc: BaseException) -> float:
        """Count one failure caused by ``exc`` and return the pause before the next attempt."""
        up_since, self._up_since = self._up_since, None
        if up_since is not None and self.clock() - up_since >= self.stable_s:
            self._attempts = 0
        policy: FullJitter | FloorJitter = self.transient if retryable(exc) else self.refused
        delay = policy.delay(self._attempts, self.rng)
        self._attempts = min(self._attempts + 1, ATTEMPTS_CAP)
        return delay


# ---------------------------------------------------------------------------
# How long: many devices
# ---------------------------------------------------------------------------


def base_delay(
    exc: BaseException, bases: Mapping[type[BaseException], float], default_s: float
) -> float:
    """The first ceiling for ``exc``: its most derived class found in ``bases``, else default_s.

    In the style of bleak-retry-connector's ``calculate_backoff_time``, by type rather than by
    matching an error string.
    """
    for cls in type(exc).__mro__:
        if cls in bases:
            return bases[cls]
    return default_s


@dataclass(slots=True)
class _KeyState:
    attempts: int = 0
    not_before: float = field(default=0.0)


class KeyedBackoff:
    """Backoff per key (a BLE device's label), with per-error-class bases and a breaker.

    A retryable failure of a device waits ``uniform(0, min(cap_s, base · 2^attempt))``, where
    ``base`` depends on the error's class (:func:`base_delay`). After ``breaker_after``
    consecutive failures, or at once for an error that is not retryable (a device breaking its
    protocol, a bug), the device waits ``breaker`` instead: minutes. :meth:`succeeded` (a
    completed session) forgets the device's failures.
    """

    def __init__(
        self,
        bases: Mapping[type[BaseException], float] = BLE_BASE_DELAYS_S,
        *,
        default_base_s: float = BLE_DEFAULT_BASE_S,
        cap_s: float = BLE_CAP_S,
        breaker_after: int = BLE_BREAKER_AFTER,
        breaker: FloorJitter | None = None,
        max_keys: int = BLE_MAX_KEYS,
        rng: Rng | None = None,
        clock: Clock | None = None,
    ) -> None:
        for base_s in (*bases.values(), default_base_s):
            FullJitter(base_s, cap_s)  # validates 0 < base <= cap
        if breaker_after < 1:
            raise UsageError("breaker_after", "must be >= 1")
        if max_keys < 1:
            raise UsageError("max_keys", "must be >= 1")
        self.bases = dict(bases)
        self.default_base_s = default_base_s
        self.cap_s = cap_s
        self.breaker_after = breaker_after
        self.breaker = breaker or FloorJitter(BLE_BREAKER_FLOOR_S, BLE_BREAKER_CAP_S)
        self.max_keys = max_keys
        self.rng = rng if rng is not None else _default_rng()
        self.clock = clock if clock is not None else time.monotonic
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()

    def attempts(self, key: str) -> int:
        """Consecutive failures of ``key`` (0 for a key never seen or forgotten)."""
        state = self._keys.get(key)
        return state.attempts if state else 0

    def breaker_open(self, key: str) -> bool:
        """Whether ``key`` failed often enough to be waited on for minutes."""
        return self.attempts(key) >= self.breaker_after

    def failed(self, key: str, exc: BaseException) -> float:
        """Count one failure of ``key`` caused by ``exc``; return the pause before the next try."""
        state = self._keys.pop(key, None) or _KeyState()
        self._keys[key] = state  # most recently failed last: the first one is evicted
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        if not retryable(exc) or state.attempts >= self.breaker_after:
            delay = self.breaker.delay(max(0, state.attempts - self.breaker_after), self.rng)
        else:
            base_s = base_delay(exc, self.bases, self.default_base_s)
            delay = FullJitter(base_s, self.cap_s).delay(state.attempts, self.rng)
        state.attempts = min(state.attempts + 1, ATTEMPTS_CAP)
        state.not_before = self.clock() + delay
        return delay

    def succeeded(self, key: str) -> None:
        """A session with ``key`` completed: forget its failures."""
        self._keys.pop(key, None)

    def ready_in(self, key: str) -> float:
        """Seconds until ``key`` may be tried again (0.0 when it may be tried now)."""
        state = self._keys.get(key)
        return max(0.0, state.not_before - self.clock()) if state else 0.0
