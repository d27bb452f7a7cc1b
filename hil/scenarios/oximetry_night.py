"""A night of continuous oximetry: 28,800 samples of a worn oximeter's 1 Hz PLX Continuous
Measurement (0x2A5F) through one BLE session, compressed in time; the platform must hold
exactly the samples the hub's thinning rule keeps, and the hub must stay bounded.

The hub's rule (agent/ble/plx_session.py, "Continuous data policy"): per session, it hands on
the first notification and then the first one that arrives at least ``continuous_interval_s``
after the last one handed on, by its own monotonic clock; every other notification is
counted (``continuous_skipped``) and dropped. The interval is 60 s
(:data:`agent.ble.plx_session.CONTINUOUS_INTERVAL_S`) and **not configurable** (a session
parameter, no configuration key), and a continuous sample carries no time stamp: the rule runs
on the hub's receipt times, whatever the device's own rate. So the night cannot be
compressed by shortening the interval. It is compressed in the device's rate instead: the
28,800 samples (8 h at 1 Hz of device time, each with its own SpO2/pulse pair) are notified
at ~175 Hz in a few 60 s intervals of the hub, and the platform must hold one sample per
interval: three or four for the night, where a real night at 1 Hz gives 480 under the same
rule. What the compression does not change is the hub's work per notification (each is
received, counted against the flood bound and dropped or handed on), so a night's volume
passes through the real daemon in about three minutes.

Exactly which samples the rule keeps depends on when the hub took each one in, which the
scenario bounds instead of guessing (:class:`~hil.scenarios.devices.ContinuousOximeter`,
:meth:`~hil.emulators.oximeter.EmulatedOximeter.central_round_trip`): the clocks compared are
the host's monotonic clock, the same in both processes. Each interval opens with one sample
sent at ``t0`` and taken with ``Home.measure`` (expected once): the first of the session, or
one sent at least 60 s after an ATT round trip that followed the previous kept sample (the hub
had it by then, so its interval had ended). The rest of the interval is streamed in chunks,
each followed by a round trip (the hub took in every earlier notification before answering:
flow control, so no backlog builds), paced to end :data:`GUARD_S` before ``t0 + 60 s``; the
last round trip must return before ``t0 + 60 s`` (else the run errors: the rig was too slow
to tell), so every one of them reached the hub inside the interval and was skipped. Between
intervals the stream pauses a few seconds (the guard and one round trip), well inside the
session's quiet period. None of this depends on the rig's speed: a slower rig streams fewer
samples per interval and uses more intervals; only the number kept changes, and it is
counted, not assumed.

Configuration for the night (``[ble]``): ``session_timeout_s`` 900 and ``quiet_period_s``
10, so the whole night is one session (no reconnection resets the rule) that ends by quiet
once the oximeter stops. The hub's flood bound is 50 notifications a second *over the session
limit* (``ceil(50 * session_timeout_s)`` = 45,000 per session here); with the HIL default of
60 s (3,000) a compressed night would be cut as a flood, as it should be: only the long
session lets it through, and that bound, not the rate, is what the night tests.

The scenario's own checks: the hub's account (``ble_session_ended``: handed on = kept,
skipped = the rest, one connection, ended by quiet); the outbox bounded (high-water mark at
most the kept count, as many stored); the daemon's memory bounded: its peak resident set
(``VmHWM`` in /proc/<pid>/status) grows by at most :data:`RSS_GROWTH_MAX_MIB` over the night.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from agent.ble.plx_session import CONTINUOUS_INTERVAL_S
from hil.emulators.oximeter import ContinuousSample
from hil.scenarios.base import Scenario
from hil.scenarios.devices import ContinuousOximeter
from hil.scenarios.home import Home, HomeError

LABEL: Final = "oximeter"
NIGHT_SAMPLES: Final = 8 * 3600
"""A night at 1 Hz: 28,800 samples."""
HUB_INTERVAL_S: Final = CONTINUOUS_INTERVAL_S
"""The hub's thinning interval (60 s), from the hub's own code."""
PLANNED_INTERVALS: Final = 3
"""The night is spread over this many of the hub's intervals (more if the rig is slower)."""
PER_INTERVAL: Final = -(-NIGHT_SAMPLES // PLANNED_INTERVALS)
GUARD_S: Final = 3.0
"""An interval's stream stops this long before ``t0 + 60 s``: room for its last round trip."""
PACE_MARGIN_S: Final = 2.0
"""The pacing aims to end this long before the guard (a loaded rig catches up in it)."""
CHUNK: Final = 50
"""Notifications between two round trips (~0.3 s of stream)."""
ROUND_TRIP_S: Final = 10.0
"""Bound of one ATT round trip to the hub (milliseconds on loopback)."""
QUIET_PERIOD_S: Final = 10.0
SESSION_TIMEOUT_S: Final = 900.0
RSS_GROWTH_MAX_MIB: Final = 8.0
"""The daemon's peak resident set may grow this much over the night: a skipped sample costs
it a counter, so what grows is first use (the first commit and publish) and allocator noise,
not the stream (keeping ~300 bytes of each of the 28,800 would be 8 MiB)."""


def night_sample(n: int) -> ContinuousSample:
    """Sample ``n`` of the night: SpO2 90.0-99.9 %, pulse 50.0-78.7 /min, each pair distinct
    (the platform's copy is matched by its values)."""
    return ContinuousSample(Decimal(900 + n % 100).scaleb(-1), Decimal(500 + n // 100).scaleb(-1))


async def setup(home: Home) -> None:
    """One session for the whole night, ending by quiet once the oximeter stops."""
    home.config_overrides["ble"] = {
        "session_timeout_s": SESSION_TIMEOUT_S,
        "quiet_period_s": QUIET_PERIOD_S,
    }


def _status_kib(pid: int, field: str) -> int | None:
    """A ``VmHWM``/``VmRSS`` line of /proc/<pid>/status, in KiB; None when unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


async def _round_trip(oximeter: Any) -> float:
    """An ATT round trip to the hub; when it returned (monotonic)."""
    try:
        async with asyncio.timeout(ROUND_TRIP_S):
            linked = await oximeter.central_round_trip()
    except TimeoutError:
        raise HomeError(
            f"the hub did not answer an ATT request within {ROUND_TRIP_S:g} s"
        ) from None
    if not linked:
        raise HomeError("the oximeter's link ended during the night")
    return time.monotonic()


async def _notify(oximeter: Any, n: int) -> None:
    if not await oximeter.notify_continuous(night_sample(n)):
        raise HomeError("the hub stopped listening to the continuous measurements")


async def _interval(home: Home, oximeter: Any, first: int) -> tuple[int, float]:
    """One interval of the hub's: the sample it must keep, then the rest of the interval's
    share, paced and flow-controlled; (samples sent, when the hub surely had the first)."""
    t0 = time.monotonic()
    await home.measure(LABEL, night_sample(first))
    opened = await _round_trip(oximeter)  # the hub's interval ends after opened + 60 s
    quota = min(PER_INTERVAL - 1, NIGHT_SAMPLES - first - 1)
    stop_at = t0 + HUB_INTERVAL_S - GUARD_S
    pace_end = stop_at - PACE_MARGIN_S
    n, sent = first + 1, 0
    last = opened
    while sent < quota and time.monotonic() < stop_at:
        for _ in range(min(CHUNK, quota - sent)):
            await _notify(oximeter, n)
            n, sent = n + 1, sent + 1
        last = await _round_trip(oximeter)
        # The device's output rate (not a synchronisation: the round trip was the sync).
        delay = opened + sent / quota * (pace_end - opened) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    if last >= t0 + HUB_INTERVAL_S:
        raise HomeError(
            "the rig was too slow to judge the hub's rule: an interval's last notifications "
            f"were confirmed taken in {last - t0:.1f} s after its first, not within "
            f"{HUB_INTERVAL_S:g} s"
        )
    return 1 + sent, opened


def _note_hub_account(home: Home, ended: dict[str, Any], kept: int, connections: int) -> None:
    handed_on = ended.get("measurements")
    skipped = ended.get("continuous_skipped")
    ok = (
        handed_on == kept
        and skipped == NIGHT_SAMPLES - kept
        and ended.get("ended_by") == "quiet"
        and connections == 1
    )
    home.note(
        "hub kept what its rule keeps",
        ok,
        f"{NIGHT_SAMPLES} notified in one session ({connections} connection); the hub handed "
        f"on {handed_on} (expected {kept}: one per {HUB_INTERVAL_S:g} s interval), skipped "
        f"{skipped} (expected {NIGHT_SAMPLES - kept}), ended by {ended.get('ended_by')}",
    )


def _note_bounds(home: Home, kept: int, start_kib: int | None, end_kib: int | None) -> None:
    high_water = max((n for _, n in home.timeline.depth), default=0)
    stored = len(home.agent_events("measurement_stored"))
    home.note(
        "outbox bounded",
        high_water <= kept and stored == kept,
        f"high-water mark {high_water}, readings stored {stored}, kept by the rule {kept}",
    )
    if start_kib is None or end_kib is None:
        home.note("daemon memory bounded", False, "/proc/<pid>/status VmHWM unreadable")
        return
    growth_mib = (end_kib - start_kib) / 1024
    home.note(
        "daemon memory bounded",
        growth_mib <= RSS_GROWTH_MAX_MIB,
        f"peak resident set (VmHWM) {start_kib / 1024:.1f} MiB at the night's start, "
        f"{end_kib / 1024:.1f} MiB after {NIGHT_SAMPLES} notifications: +{growth_mib:.1f} MiB "
        f"(at most {RSS_GROWTH_MAX_MIB:g})",
    )


async def drive(home: Home) -> None:
    """The night, interval by interval; then the oximeter is taken off."""
    oximeter = home.emulator(LABEL)
    agent = home.agent
    if agent is None:
        raise HomeError("no daemon")
    await home.until(
        lambda: oximeter.continuous_subscribed, "the hub listening to continuous measurements"
    )
    sessions_before = len(home.agent_events("ble_session_ended"))
    connections_before = oximeter.connections
    start_kib = _status_kib(agent.pid, "VmHWM")
    n = kept = 0
    async with home.fault(f"a night of 1 Hz continuous oximetry ({NIGHT_SAMPLES} samples)"):
        while n < NIGHT_SAMPLES:
            sent, opened = await _interval(home, oximeter, n)
            n, kept = n + sent, kept + 1
            if n < NIGHT_SAMPLES:
                # The hub's rule is time: its interval has surely ended once this has passed.
                await asyncio.sleep(max(0.0, opened + HUB_INTERVAL_S - time.monotonic()))
        oximeter.advertise_when_empty = False  # taken off: it stops advertising
        await home.until(
            lambda: len(home.agent_events("ble_session_ended")) > sessions_before,
            "the hub's session to end by quiet",
            QUIET_PERIOD_S + 30.0,
        )
    end_kib = _status_kib(agent.pid, "VmHWM")
    ended = home.agent_events("ble_session_ended")[sessions_before]
    _note_hub_account(home, ended, kept, oximeter.connections - connections_before + 1)
    _note_bounds(home, kept, start_kib, end_kib)


SCENARIO: Final = Scenario(
    name="oximetry-night",
    purpose="a night of 1 Hz continuous oximetry in one session: the platform holds exactly what"
    " the hub's one-a-minute rule keeps, the hub stays bounded",
    devices=(ContinuousOximeter(LABEL),),
    faults=(
        f"{NIGHT_SAMPLES} continuous notifications (a night at 1 Hz) compressed into a few of"
        f" the hub's {HUB_INTERVAL_S:g} s intervals, paced around their boundaries",
        "one BLE session for the whole night (session limit 900 s, quiet period 10 s)",
    ),
    drive=drive,
    setup=setup,
    needs=frozenset(),
    timeout_s=330.0,
)
