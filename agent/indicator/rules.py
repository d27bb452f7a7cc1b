"""What the patient status indicator shows, decided from what the daemon knows (sans-I/O).

The patient never sees a screen; an LED (or LED ring) on the hub is all they get. It must
answer one question, "do I need to do anything?", so the rules fold everything the daemon
knows (:class:`HubCondition`) into five states (:class:`IndicatorState`), the most urgent
first:

1. **fault**: the outbox cannot be written, or a supervised part keeps failing (it is in
   restart backoff). Readings may not be kept: the care team must hear of it. Dominates all,
   even before the start completed (a hub waiting for an unusable disk is not "starting").
2. **starting**: the pipeline is not up yet (before READY); what else the daemon reports is
   not known yet, so nothing else is shown.
3. **needs attention**: something the patient (or a call to the care team) can fix: offline
   for at least ``offline_attention_s``, storage critical (>= 90 % of the quota), the clock
   implausible, an allow-listed device not heard from for too long.
4. **syncing**: a device session (a download) runs, or readings are draining while online:
   "keep the device near the hub for a moment".
5. **all well**: readings are safe; nothing to do. Readings pending while briefly offline
   are *all well*: they are stored, sealed, and leave when the link comes back.

An outage shorter than ``offline_attention_s`` never asks for attention: routers reboot,
cells are serviced, and nothing is lost (the outbox keeps weeks of readings). An unknown
outage length (``offline_for_s`` ``None``) is not a long one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["OFFLINE_ATTENTION_S", "HubCondition", "IndicatorState", "state_of"]

OFFLINE_ATTENTION_S: Final = 6 * 3600.0
"""Offline this long asks for attention. Six hours is past the outages a home link has on its
own (a router's reboot or firmware update, a provider's night maintenance window of up to
four hours, a cell's restart), so a patient is not asked to act on what fixes itself; and
short enough that a router switched off in the morning shows by the evening, the same day,
before the care team misses a day of readings. Nothing is lost meanwhile: the outbox keeps
readings for weeks."""


class IndicatorState(StrEnum):
    """The five things the indicator can say (docs/indicator.md: what each means)."""

    STARTING = "starting"
    ALL_WELL = "all_well"
    SYNCING = "syncing"
    NEEDS_ATTENTION = "needs_attention"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class HubCondition:
    """What the daemon knows about the hub at one moment; pure data, no PHI."""

    started: bool
    """READY reached (the pipeline is up)."""
    storage_usable: bool
    """The outbox can be written."""
    part_failing: bool
    """A supervised part is in restart backoff."""
    online: bool
    """The uplink is connected."""
    offline_for_s: float | None
    """How long offline (``None`` when online or unknown)."""
    pending: int
    """Readings not yet delivered."""
    session_active: bool
    """A BLE device session (a download) is running."""
    storage_critical: bool
    """The outbox is at >= 90 % of its quota."""
    clock_problem: bool
    """The hub's clock is implausible."""
    device_overdue: bool
    """An allow-listed device has not been heard from for too long."""


def state_of(
    condition: HubCondition, *, offline_attention_s: float = OFFLINE_ATTENTION_S
) -> IndicatorState:
    """The state the indicator shows for ``condition`` (the rules are the module's docstring)."""
    c = condition
    if not c.storage_usable or c.part_failing:
        return IndicatorState.FAULT
    if not c.started:
        return IndicatorState.STARTING
    long_offline = (
        not c.online and c.offline_for_s is not None and c.offline_for_s >= offline_attention_s
    )
    if long_offline or c.storage_critical or c.clock_problem or c.device_overdue:
        return IndicatorState.NEEDS_ATTENTION
    if c.session_active or (c.online and c.pending > 0):
        return IndicatorState.SYNCING
    return IndicatorState.ALL_WELL
