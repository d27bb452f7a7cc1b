"""How spread out the fleet's connections were, and the run's figures for a person.

A synchronised storm is every hub in the same instant; full jitter spreads them evenly over
the backoff's window. :func:`spread` puts the two side by side: the connections per 1 s bucket
(the histogram and its maximum) beside what an even spread over the same span would put in
one second (``uniform_per_s``), and the largest 100 ms bucket beside the number of hubs.
:func:`failures` is the run's verdict: every backlog arrived exactly once, every hub came back,
and not in a storm (:func:`synchronised_storm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

BUCKET_S: Final = 1.0
FINE_BUCKET_S: Final = 0.1
STORM_SHARE: Final = 0.5
"""Connections are a synchronised storm when more than this share of them fall in one 100 ms
bucket. Without jitter every hub comes in the same instant; full jitter with a 1 s first
ceiling put 3 % of 200 hubs in the busiest 100 ms (hil/fleet/README.md)."""
STORM_MIN_COUNT: Final = 20
"""The share is judged from this many connections on. Fewer meet in one 100 ms by chance
(3 of 5 drawn evenly over one second do, one time in twelve): for them only every one in the
same bucket is a storm."""


@dataclass(frozen=True, slots=True)
class Spread:
    """Connection times after an origin (seconds): count, range, percentiles, histograms."""

    count: int
    first_s: float
    last_s: float
    p50_s: float
    p90_s: float
    per_s: tuple[int, ...]
    """Connections in each 1 s bucket from the origin (a time before it counts in bucket 0)."""
    max_per_s: int
    uniform_per_s: float
    """What an even spread of ``count`` over the seconds spanned (at least 1) puts in one."""
    max_per_100ms: int

    def as_dict(self) -> dict[str, Any]:
        """Rounded for the JSON line."""
        out = asdict(self)
        for key in ("first_s", "last_s", "p50_s", "p90_s", "uniform_per_s"):
            out[key] = round(out[key], 3)
        out["per_s"] = list(self.per_s)
        return out


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _histogram(offsets: Sequence[float], width: float) -> list[int]:
    buckets = [0] * (max(0, math.floor(max(offsets) / width)) + 1)
    for offset in offsets:
        buckets[max(0, math.floor(offset / width))] += 1
    return buckets


def spread(times: Sequence[float], origin: float) -> Spread:
    """The spread of ``times`` (``time.monotonic()`` values) after ``origin``."""
    if not times:
        raise ValueError("no connection to describe")
    offsets = sorted(t - origin for t in times)
    per_s = _histogram(offsets, BUCKET_S)
    return Spread(
        count=len(offsets),
        first_s=offsets[0],
        last_s=offsets[-1],
        p50_s=_nearest_rank(offsets, 0.5),
        p90_s=_nearest_rank(offsets, 0.9),
        per_s=tuple(per_s),
        max_per_s=max(per_s),
        uniform_per_s=len(offsets) / max(1.0, offsets[-1] - max(0.0, offsets[0])),
        max_per_100ms=max(_histogram(offsets, FINE_BUCKET_S)),
    )


def synchronised_storm(s: Mapping[str, Any]) -> bool:
    """Whether a spread (:meth:`Spread.as_dict`) is a storm: more than :data:`STORM_SHARE`
    of its connections in one 100 ms, or all of them under :data:`STORM_MIN_COUNT`."""
    count, most = s["count"], s["max_per_100ms"]
    if count < 2:
        return False
    return bool(most > STORM_SHARE * count if count >= STORM_MIN_COUNT else most == count)


def failures(f: Mapping[str, Any]) -> list[str]:
    """What went wrong in a run by its figures, one line each; none: the run passed. A reading
    missing, unexpected or handed on twice at the platform, a hub that did not come back after
    the restart, reconnections in a synchronised storm."""
    out = []
    p = f["platform"]
    if not p["exactly_once"]:
        out.append(
            f"backlog: {p['readings_handed_on']} readings handed on of {p['readings_expected']}"
            f" expected, {p['missing']} missing, {p['handed_on_twice']} twice,"
            f" {p['unexpected']} unexpected"
        )
    s = f["restart"]["reconnects"]
    if s["count"] < f["hubs"]:
        out.append(f"reconnections: {s['count']} of {f['hubs']} hubs came back")
    if synchronised_storm(s):
        out.append(
            f"reconnections: {s['max_per_100ms']} of {s['count']} hubs within one 100 ms,"
            " a synchronised storm"
        )
    return out


def report(f: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """The figures as a few lines for a person (counts and times: nothing of a reading)."""
    o = f["options"]
    out(
        f"fleet: {f['hubs']} hubs in {f['processes']} processes, {f['readings_per_hub']} readings"
        f" each ({f['readings']} in all), batches of {o['batch_max_readings']}, backoff full"
        f" jitter {o['backoff_base_s']}-{o['backoff_max_s']} s, boot jitter"
        f" {o['boot_jitter_s']} s, machine: {f['machine']['cpus']} CPUs"
    )
    b = f["boot"]
    out(
        f"  boot: every hub connected {b['last_s']:.2f} s after the start (p50 {b['p50_s']:.2f},"
        f" p90 {b['p90_s']:.2f}); at most {b['max_per_s']} in one second"
        f" (even: {b['uniform_per_s']:.1f}/s)"
    )
    r = f["restart"]
    s = r["reconnects"]
    out(
        f"  broker restart ({r['mode']}, down {r['down_s']:.2f} s) with"
        f" {r['held_at_restart']}/{f['readings']} readings at the platform: every hub back"
        f" {s['first_s']:.2f}-{s['last_s']:.2f} s after the broker (p50 {s['p50_s']:.2f},"
        f" p90 {s['p90_s']:.2f}), {r['failed_attempts']} attempts failed meanwhile"
    )
    out(
        f"  reconnects per 1 s: {s['per_s']}; max {s['max_per_s']} in a second of {f['hubs']}"
        f" hubs (even: {s['uniform_per_s']:.1f}/s), max {s['max_per_100ms']} in 100 ms"
    )
    p = f["platform"]
    out(
        f"  every backlog arrived {f['all_arrived_after_broker_back_s']:.2f} s after the broker"
        f" was back ({f['drain_s']:.2f} s after publishing began): exactly once"
        f" {p['exactly_once']} ({p['missing']} missing, {p['handed_on_twice']} twice),"
        f" {p['duplicates_removed']} duplicate copies removed, {p['rejected']} rejected,"
        f" {p['envelopes']} envelopes, {p['receipts_sent']} receipts"
    )
    c = f["cpu_s"]
    out(
        f"  CPU: workers {c['workers']:.1f} s ({c['per_hub_ms']:.0f} ms a hub), platform"
        f" {c['platform']:.1f} s, broker {c['broker']:.1f} s, in {f['wall_s']:.1f} s"
        f" (fill {f['fill_s']:.1f} s); {f['hub_counters']['receipt_timeouts']} receipt timeouts"
    )
