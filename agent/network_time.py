"""Whether the hub's clock agrees with the cellular network's time (sans-I/O).

Issue 10: "network time from the modem offered as a time source while the system clock is not
synchronized (a hub that boots with a wrong clock must not stamp readings with it)". A Pi has
no battery-backed clock: it boots at the time fake-hwclock saved at its last shutdown, hours
or months behind, until NTP answers, and a hub behind a cellular link reaches NTP only once
that link is up. The module's network time (NITZ, polled by the link manager with +QLTS) is
independent of both, so the hub's clock is judged against it:

- a hub clock more than :data:`TOLERANCE_S` away from the network's time is *not trusted*:
  the hub does not write it into a device's Current Time (agent/ble/current_time.py), the
  platform gets a ``clock_unsynced`` event with ``check: "network_time"``, and the hub's own
  wall clock (agent/wall_clock.py: every reading's stamp, the device clocks' offsets) is the
  network's time until the two agree again;
- without a network time (no modem, not yet registered, an operator that sends no NITZ),
  nothing is concluded from it.

Setting the system clock itself is the operating system's (systemd-timesyncd, chrony with a
NITZ source), not a service running without CAP_SYS_TIME.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

TOLERANCE_S: Final = 900.0
"""How far the hub's clock may be from the network's time: the link polls the network time
every 30 s (300 s while stopped), a NITZ is accurate to seconds; a clock fifteen minutes off
is wrong, not late."""


def clock_disagrees(hub_now: dt.datetime, network_time: str | None) -> bool:
    """Whether ``hub_now`` is more than :data:`TOLERANCE_S` away from ``network_time`` (ISO
    8601 with an offset, as ``homehub modem status`` prints it); False when the network's time
    is unknown or unreadable (nothing is concluded)."""
    if network_time is None:
        return False
    try:
        network = dt.datetime.fromisoformat(network_time)
    except ValueError:
        return False
    if network.tzinfo is None:
        return False
    return abs((hub_now - network).total_seconds()) > TOLERANCE_S
