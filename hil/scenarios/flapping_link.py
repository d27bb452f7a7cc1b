"""A flapping uplink: the hub's MQTT connection cut and blackholed again and again while its
devices deliver; once the link stays up, every reading is at the platform exactly once.

The daemon reaches mosquitto through a hil/faults :class:`~hil.faults.proxy.LoopbackProxy`
started by the scenario's ``setup`` (the daemon's ``mqtt.port`` is the proxy's; the platform
talks to mosquitto directly). Once the first reading reached the platform the link goes
through :data:`PLAN`, one cycle at a time:

- ``cut``: the proxy's ``flap`` for one cycle, its down and up windows drawn by a seeded RNG
  (:data:`SEED`, :data:`DOWN_S`, :data:`UP_S`): the hub's connection is reset (RST) and new
  connections are refused for the down window; the cuff measures while the link is down;
  the next cycle starts once the hub connected again (``mqtt_connected``), so each cut finds
  a live connection to reset;
- ``blackhole``: the connection is kept, nothing is forwarded, until the cuff's new reading
  is in the outbox and its publish held (a dead cellular link shorter than MQTT's keepalive
  and the PUBACK timeout: TCP delivers what waited once it passes again).

The glucometer is switched on in the second cycle (a paced RACP download of
:data:`RECORDS`, uploaded across the cuts that follow) and takes new records in later ones.
Only the platform's signed receipt deletes a reading: what had no PUBACK when its connection
was cut is sent again, what the broker took waits for its receipt over the session the broker
kept; a copy that arrives twice is deduplicated by reading id (none did in the runs so far:
the kept session carried every receipt across the cuts).

The scenario's own check (``link flapped``): the proxy's counters (connections accepted,
connections reset by a cut, cuts, blackholes) show that the hub's connection really was
reset at each cut and that it reconnected after each.
"""

from __future__ import annotations

import random
import weakref
from typing import Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.faults.proxy import Flap, LoopbackProxy, ProxyMode
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff, Glucometer
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings

SEED: Final = 20
PLAN: Final = ("cut", "cut", "cut", "blackhole", "cut", "blackhole", "cut", "cut")
"""The link's cycles in order (module doc)."""
CUTS: Final = PLAN.count("cut")
BLACKHOLES: Final = PLAN.count("blackhole")
DOWN_S: Final = (0.3, 2.5)
"""A cut's down window (uniform, seeded): shorter and longer than the hub's 1 s backoff."""
UP_S: Final = (0.3, 1.5)
"""The flap's up window after a cut (uniform, seeded); the next cycle also waits for the
hub's reconnection, however long that takes."""
METER_ON_CYCLE: Final = 1
"""The cycle (from 0) in which the glucometer is switched on."""
METER_NEW_ON: Final = (4, 6)
"""Cycles in which the meter takes a new record."""
HELD: Final = morning_readings(6, first=0, day=21)
DURING: Final = morning_readings(len(PLAN), first=10, day=21)
"""One cuff measurement per cycle, taken while the link is down."""
RECORDS: Final = tuple(
    GlucoseRecord(n, DateTime(2026, 11, 21, 6 + n // 60, n % 60, 30), mg_per_dl(str(90 + n)))
    for n in range(1, 31)
)
RECORD_INTERVAL_S: Final = 0.0075
"""One record per connection event of the shortest interval (a paced download)."""
NEW_RECORDS: Final = tuple(
    GlucoseRecord(0, DateTime(2026, 11, 21, 21, n, 0), mg_per_dl(str(160 + n)))
    for n in range(len(METER_NEW_ON))
)
FLAP_WAIT_S: Final = 15.0
"""A one-cycle flap ends within its windows (< 4 s) and the proxy's control timeout (5 s)."""

_proxies: weakref.WeakKeyDictionary[Home, LoopbackProxy] = weakref.WeakKeyDictionary()
"""Each running home's proxy (set by :func:`setup`)."""


async def setup(home: Home) -> None:
    """The proxy in the daemon's MQTT path, stopped after the daemon."""
    proxy = await home.parts.enter_async_context(LoopbackProxy(home.broker.port))
    home.mqtt_port = proxy.port
    _proxies[home] = proxy


def _connects(home: Home) -> int:
    return len(home.agent_events("mqtt_connected"))


async def _reconnected(home: Home, connects: int) -> None:
    await home.until(lambda: _connects(home) > connects, "the hub's reconnection")


def _stored(home: Home) -> int:
    return len(home.agent_events("measurement_stored"))


async def _cut(home: Home, proxy: LoopbackProxy, n: int, down_s: float, up_s: float) -> Flap:
    """One cut cycle: the flap's cut, a measurement while down, the flap's pass (its up
    window still running)."""
    cuts = proxy.stats().cuts
    flap = proxy.flap(up_s, down_s, 1)
    await home.until(lambda: proxy.stats().cuts > cuts, "the proxy's cut")
    await _during(home, n)
    await home.until(
        lambda: proxy.stats().cuts > cuts and proxy.mode is ProxyMode.PASS,
        "the link back after the cut",
        FLAP_WAIT_S,
    )
    return flap


async def _blackhole(home: Home, proxy: LoopbackProxy, n: int) -> None:
    """One blackhole: held until the cycle's reading is committed and pending."""
    stored = _stored(home)
    await proxy.aset_mode(ProxyMode.BLACKHOLE)
    await _during(home, n)
    await home.until(lambda: _stored(home) > stored, "a reading committed in the blackhole")
    if await home.fresh_sample() < 1:
        raise HomeError("the blackhole held nothing in the outbox")
    await proxy.aset_mode(ProxyMode.PASS)


async def _during(home: Home, n: int) -> None:
    """What the devices do in cycle ``n`` while the link is down."""
    if n == METER_ON_CYCLE:
        await home.add_device(SCENARIO.device("glucometer"))
    if n in METER_NEW_ON:
        await home.measure("glucometer", NEW_RECORDS[METER_NEW_ON.index(n)])
    await home.measure("cuff", DURING[n])


async def drive(home: Home) -> None:
    """The cycles of :data:`PLAN`, each once the hub is connected; the proxy's counts noted."""
    proxy = _proxies[home]
    rng = random.Random(SEED)
    flap: Flap | None = None
    connects = 0
    await home.until(lambda: len(home.arrivals) >= 1, "the first reading at the platform")
    async with home.fault(f"link flapping: {CUTS} cuts, {BLACKHOLES} blackholes (seed {SEED})"):
        for n, kind in enumerate(PLAN):
            if kind == "blackhole":
                await _blackhole(home, proxy, n)
                continue
            down_s = round(rng.uniform(*DOWN_S), 2)
            up_s = round(rng.uniform(*UP_S), 2)
            connects = _connects(home)
            flap = await _cut(home, proxy, n, down_s, up_s)
            if n == len(PLAN) - 1:
                break  # the link is up for good: the rest is recovery
            await home.until(flap.done, "the flap's up window", FLAP_WAIT_S)
            await _reconnected(home, connects)
    if flap is not None:
        await home.until(flap.done, "the last flap's up window", FLAP_WAIT_S)
    await _reconnected(home, connects)
    stats = proxy.stats()
    lives = _connects(home)
    ok = stats.reset >= CUTS and stats.accepted >= CUTS + 1 and stats.cuts == CUTS
    home.note(
        "link flapped",
        ok,
        f"proxy: {stats.accepted} connections accepted, {stats.reset} reset by {stats.cuts} "
        f"cuts, {BLACKHOLES} blackholes, {stats.upstream_failures} upstream failures; "
        f"hub connected {lives} times (expected >= {CUTS} resets, >= {CUTS + 1} accepted)",
    )


SCENARIO: Final = Scenario(
    name="flapping-link",
    purpose="the uplink cut and blackholed again and again as devices deliver: every reading once",
    devices=(
        Cuff("cuff", HELD),
        Glucometer(
            "glucometer",
            RECORDS,
            options={"record_interval_s": RECORD_INTERVAL_S},
            starts=False,
        ),
    ),
    faults=(
        f"the hub's MQTT link through a loopback proxy: {CUTS} cuts (RST, refused; down "
        f"{DOWN_S[0]}-{DOWN_S[1]} s, up {UP_S[0]}-{UP_S[1]} s plus the reconnection, seed "
        f"{SEED}) and {BLACKHOLES} blackholes (held until a reading waits in the outbox)",
        "a cuff measurement in every outage; a glucometer switched on in the second one "
        f"({len(RECORDS)} records, paced RACP download), new records in two later ones",
    ),
    drive=drive,
    setup=setup,
    needs=frozenset({"proxy"}),
    receipt_timeout_s=5.0,
    timeout_s=110.0,
)
