"""A week of readings while the platform is unreachable, then recovery: time-accelerated.

The daemon reaches mosquitto through a hil/faults :class:`~hil.faults.proxy.LoopbackProxy`
that is **cut** from before the daemon starts until the week is over (every connection
refused: the home's internet is down; the platform itself stays connected to mosquitto). The
week is lived in well under a minute of real time, in quarter-day steps: at each step the hub's wall
clock and the devices' clocks move on six hours, then the devices measure, stamped by their
own clocks: the glucometer at every step (four times a day), the cuff at every other one
(twice a day), 42 readings in seven days. Only when the week's last readings are in the
outbox does the proxy pass again; every reading of the week must then reach the platform
exactly once, each with its own day's effective time (the device's stamp, in the hub's
zone, with its IG identifier: the clocks agree, so the hub keeps the devices' times).

Clocks. The **simulated week ends at the real now**: the daemon runs under
:mod:`hil.faults.clock_child` (:attr:`Home.agent_base <hil.scenarios.home.Home.agent_base>`)
with its wall clock seven days behind from its first instruction, and each step is
:func:`hil.faults.clock.step` (SIGUSR2, +6 h, announced in its log as
``hil_clock_stepped``); the devices' clocks (their CTS, :class:`EmulatedClock` with
``now`` = :data:`DEVICE_TIME`) move by the same amount right after the hub announced its
step. After the 28th step both are back on the real clock, so when the platform returns its
receipts (``iat`` from the real clock, accepted by the hub from ``iat - 300 s`` to ``exp`` =
``iat + 900 s``) and the platform's certificate checks agree with the hub. (A hub left a
week *ahead* would reject every receipt as expired and never empty its outbox: the platform
here is not accelerated, so the week has to end where the platform's clock is.)
A device connected across a step would be read by the hub with a six-hour clock offset and
its readings re-mapped (agent/normalize/clock.py): a step therefore waits, before the next
measurement, until every connection begun before the devices' clocks moved has ended.

What is accelerated: inside the daemon, ``time.time`` and ``datetime.now`` (every reading's
receipt stamp, ``hub_time`` and ``issued``, the device-clock offsets it judges, its log
times); the devices' clocks and the stamps of what they measure. What is **not**:

- the monotonic clock and every asyncio timer (a real clock step does not move them
  either): the reconnect backoff (capped at 1 s in the HIL configuration, 120 s by default:
  after a real week the hub is back within two minutes of the platform's return, here
  within a second), the receipt timeout, MQTT keepalive, the BLE session, quiet and cycle
  timers; how long the hub itself thinks the outage lasted (monotonic, so some seconds:
  what a week-long outage would show on the patient's indicator or in status is not
  exercised);
- C code reading the clock itself: OpenSSL's certificate checks (TLS handshakes are judged
  at the real time; the run's certificates are valid from an hour before it for 30 days, so
  by its own clock the hub spends its week before their notBefore, which nothing the daemon
  does here checks), SQLite's ``CURRENT_TIMESTAMP``;
- mosquitto, the platform and its receipts (real time throughout);
- the volume of a real week's radio traffic: the glucometer (advertising all the time) is
  connected some fifty times here instead of a week's worth; the outbox holds the week's 42
  readings, as it would.

The scenario's own checks: nothing reached the platform during the week (the proxy accepted
no connection); the hub announced every step and ended on the real clock; the outbox's
high-water mark equals the week's count (nothing deleted, nothing lost while the platform
was away); the readings at the platform span the seven days (six a day); and the time to
drain from the platform's return until it held everything and the outbox was empty.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.emulators.peripheral import EmulatedClock
from hil.faults.clock import STEPPED_EVENT, ClockSteps, step
from hil.faults.proxy import LoopbackProxy, ProxyMode
from hil.scenarios.base import TIMEZONE, Scenario
from hil.scenarios.checks import match
from hil.scenarios.devices import Cuff, Glucometer, seen
from hil.scenarios.home import Arrival, Home, HomeError
from hil.scenarios.readings import morning_readings

DAY_S: Final = 86_400.0
DAYS: Final = 7
STEPS_PER_DAY: Final = 4
STEP_S: Final = DAY_S / STEPS_PER_DAY
"""Six hours: the glucometer measures at every step, the cuff at every other one."""
SLOTS: Final = DAYS * STEPS_PER_DAY
CUFF_SLOTS: Final = frozenset({0, 2})
"""Which of a day's four steps the cuff measures at: twice a day."""
START_OFFSET_S: Final = -DAYS * DAY_S
"""The hub's and the devices' clocks start a week behind: the week ends at the real now."""
CLOCK_STEPS: Final = ClockSteps(at_start_s=START_OFFSET_S, on_signal_s=STEP_S)

CUFF_READINGS: Final = morning_readings(DAYS * len(CUFF_SLOTS), first=20)
"""Distinct values; each one's stamp is the cuff's clock when it measures."""
GLUCOSE_MG_DL: Final = tuple(str(80 + 3 * n) for n in range(SLOTS))
"""Distinct concentrations, one per step."""
WEEK_READINGS: Final = len(CUFF_READINGS) + len(GLUCOSE_MG_DL)
DRAIN_S: Final = 60.0
"""Bound of the drain after the platform returns (seconds: a reconnect, 42 readings)."""


class DeviceTime:
    """The devices' clocks in the simulated week: the host's UTC clock plus an offset moved
    by each step (the hub's offset lives in its own process, stepped by signal)."""

    def __init__(self) -> None:
        self.offset_s = START_OFFSET_S

    def utc_now(self) -> datetime:
        """What the devices' clocks derive their time from (``EmulatedClock.now``)."""
        return datetime.now(UTC) + timedelta(seconds=self.offset_s)


DEVICE_TIME: Final = DeviceTime()
"""Shared by both devices' clocks; :func:`setup` puts it back at the week's start."""

_proxies: weakref.WeakKeyDictionary[Home, LoopbackProxy] = weakref.WeakKeyDictionary()
"""Each running home's proxy (set by :func:`setup`)."""


async def setup(home: Home) -> None:
    """The proxy in the daemon's MQTT path, cut from the start; the daemon under the clock
    child, a week behind; the devices' clocks at the week's start."""
    DEVICE_TIME.offset_s = START_OFFSET_S
    proxy = await home.parts.enter_async_context(LoopbackProxy(home.broker.port))
    await proxy.aset_mode(ProxyMode.CUT)
    home.mqtt_port = proxy.port
    home.agent_base = [sys.executable, "-m", "hil.faults.clock_child", *CLOCK_STEPS.args(), "--"]
    _proxies[home] = proxy


def _connected(emulator: Any) -> bool:
    return bool(emulator.connections) and not emulator.disconnected.is_set()


def _clock(home: Home, label: str) -> EmulatedClock:
    clock = home.emulator(label).clock
    if not isinstance(clock, EmulatedClock):
        raise HomeError(f"the {label} has no clock")
    return clock


def _stamp(now: datetime | None) -> DateTime:
    if now is None:
        raise HomeError("a device's clock is unset")
    return DateTime(now.year, now.month, now.day, now.hour, now.minute, now.second)


async def _step_clocks(home: Home, steps_done: int) -> None:
    """Six hours on: the hub's clock (announced), then the devices'; then wait until every
    connection begun before the devices' clocks moved has ended (its clock offset was read
    across the step)."""
    agent = home.agent
    if agent is None:
        raise HomeError("no daemon to step")
    step(agent.pid)
    announced = steps_done + 2  # the start offset's announcement, then one per step
    await home.until(
        lambda: len(home.agent_events(STEPPED_EVENT)) >= announced, "the hub's clock step"
    )
    DEVICE_TIME.offset_s += STEP_S
    before = {label: (em.connections, _connected(em)) for label, em in home.emulators.items()}

    def old_links_ended() -> bool:
        return all(
            not was_connected or em.connections > count or em.disconnected.is_set()
            for em, (count, was_connected) in (
                (home.emulators[label], mark) for label, mark in before.items()
            )
        )

    await home.until(old_links_ended, "the sessions begun before the devices' step")


async def _measure_slot(home: Home, slot: int) -> int:
    """The slot's measurements, stamped by the devices' clocks; how many."""
    taken = 0
    if slot % STEPS_PER_DAY in CUFF_SLOTS:
        reading = CUFF_READINGS[len(home.measured.get("cuff", []))]
        stamped = dataclasses.replace(reading, time_stamp=_stamp(_clock(home, "cuff").read()))
        await home.measure("cuff", stamped)
        taken += 1
    now = _stamp(_clock(home, "glucometer").read())
    await home.measure("glucometer", GlucoseRecord(0, now, mg_per_dl(GLUCOSE_MG_DL[slot])))
    return taken + 1


def _pending_at_least(home: Home, count: int) -> Callable[[], bool]:
    return lambda: home.pending >= count


def _effective_time(arrival: Arrival) -> datetime | None:
    view = seen(arrival.reading)
    if view is None:
        return None
    try:
        return datetime.fromisoformat(view.effective)
    except ValueError:
        return None


def _note_span(home: Home) -> None:
    """The readings at the platform by simulated day (24 h from the week's first effective
    time: the week starts at the run's time of day, so calendar dates would cut its days),
    and the span from first to last (27 steps: 6 d 18 h). No date leaves the detail."""
    times = [_effective_time(a) for a in home.arrivals]
    known = sorted(t for t in times if t is not None)
    per_day: collections.Counter[int] = collections.Counter()
    span_h = 0.0
    if known:
        first = known[0]
        per_day.update(int((t - first).total_seconds() // DAY_S) for t in known)
        span_h = (known[-1] - first).total_seconds() / 3600
    counts = [per_day[d] for d in range(max(per_day, default=-1) + 1)]
    per_day_expected = STEPS_PER_DAY + len(CUFF_SLOTS)
    # The last step's readings are 27 steps after the first, plus the real seconds between.
    span_expected_h = (SLOTS - 1) * STEP_S / 3600
    ok = (
        len(known) == len(times) == WEEK_READINGS
        and counts == [per_day_expected] * DAYS
        and span_expected_h <= span_h < span_expected_h + 1
    )
    home.note(
        "readings span the week",
        ok,
        f"effective times over {len(counts)} simulated days, first to last {span_h:.2f} h "
        f"(expected {span_expected_h:g} h and some real minutes at most), readings per day "
        f"{counts} (expected {DAYS} days of {per_day_expected}); unreadable "
        f"{len(times) - len(known)}",
    )


async def drive(home: Home) -> None:
    """The week without the platform, step by step; then the platform returns."""
    proxy = _proxies.pop(home)
    stored = 0
    async with home.fault("platform unreachable for a week (28 quarter-day clock steps)"):
        await home.until(
            lambda: len(home.agent_events(STEPPED_EVENT)) >= 1, "the hub's clock a week behind"
        )
        for slot in range(SLOTS):
            if slot:
                await _step_clocks(home, slot - 1)
            stored += await _measure_slot(home, slot)
            await home.until(
                _pending_at_least(home, stored), f"the readings of step {slot} in the outbox"
            )
        await _step_clocks(home, SLOTS - 1)  # the week is over: both clocks on the real one
        held = await home.fresh_sample()
        high_water = max((n for _, n in home.timeline.depth), default=0)
        steps = home.agent_events(STEPPED_EVENT)
        offset = float(steps[-1].get("offset_s", float("nan"))) if steps else float("nan")
        home.note(
            "hub clock stepped through the week",
            len(steps) == SLOTS + 1 and offset == 0.0 and DEVICE_TIME.offset_s == 0.0,
            f"{len(steps) - 1} steps of {STEP_S / 3600:g} h announced after the start's "
            f"{START_OFFSET_S / DAY_S:g} days; hub offset at the end {offset:g} s, devices' "
            f"{DEVICE_TIME.offset_s:g} s",
        )
        accepted = proxy.stats().accepted
        home.note(
            "nothing reached the platform during the week",
            accepted == 0 and not home.arrivals,
            f"proxy accepted {accepted} connections; platform received {len(home.arrivals)}",
        )
        home.note(
            "outbox held the whole week",
            high_water == WEEK_READINGS and held == WEEK_READINGS,
            f"high-water mark {high_water}, pending before the platform returned {held}, "
            f"the week's readings {WEEK_READINGS}",
        )
        await proxy.aset_mode(ProxyMode.PASS)
        returned = time.monotonic()

    def drained() -> bool:
        matched, _ = match(home)
        return home.pending == 0 and all(matched.values())

    await home.until(drained, "every reading of the week at the platform", DRAIN_S)
    home.note(
        "time to drain",
        True,
        f"{time.monotonic() - returned:.1f} s from the platform's return until it held all "
        f"{WEEK_READINGS} readings and the outbox was empty (informational: not a speed check)",
    )
    _note_span(home)


SCENARIO: Final = Scenario(
    name="week-outage",
    purpose="a week of readings with the platform unreachable (time-accelerated), then recovery:"
    " every reading once, each on its own day",
    devices=(
        Cuff("cuff", options={"clock": EmulatedClock(TIMEZONE, now=DEVICE_TIME.utc_now)}),
        Glucometer(
            "glucometer", options={"clock": EmulatedClock(TIMEZONE, now=DEVICE_TIME.utc_now)}
        ),
    ),
    faults=(
        "the hub's MQTT path cut (connections refused) from its start for the whole week",
        "the hub's wall clock a week behind, stepped 6 h at a time (28 steps) by the clock child;"
        " the devices' clocks stepped alike",
        "a cuff twice a day and a glucometer four times a day, stamped by their own clocks",
        "the path restored once the week's 42 readings are in the outbox",
    ),
    drive=drive,
    setup=setup,
    needs=frozenset({"proxy", "clock_wrapper"}),
    receipt_timeout_s=5.0,
    timeout_s=240.0,
)
