"""mosquitto for a fleet: room for every hub's TLS connection, and persistence as chosen.

mosquitto 2.0 limits a listener's clients with ``max_connections`` (-1, unlimited, by default)
and, under that, by how many files it may open: one socket per client, plus its listeners,
log and persistence file. Both are set here on purpose:

- ``max_connections`` = hubs + :data:`CONNECTION_HEADROOM` (the platform, the readiness probe
  of hil/broker.py): bounded, as everything is, and a fleet larger than planned is refused at
  CONNACK rather than exhausting the machine;
- the open-files limit (``ulimit -n``, inherited by mosquitto, which also keeps it when it
  drops to the ``mosquitto`` user) is raised to what the fleet needs when the hard limit
  allows, else the run stops before it starts. A common default soft limit is 1,024: enough
  for 200 hubs, not for 2,000.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Final

from hil.broker import Broker
from hil.fleet.plan import FleetOptions, RestartMode
from hil.pki import DevPki

CONNECTION_HEADROOM: Final = 16
"""Connections beyond the hubs: the platform's receiver and hil/broker.py's readiness probe."""

FILES_PER_CONNECTION: Final = 2
"""Open files the coordinator's side of the machine needs per hub, counted generously: the
broker's socket for it (the hubs' own sockets live in the worker processes)."""

FILES_BASE: Final = 256
"""Open files besides the hubs' connections: the broker's listeners, log and persistence, the
platform's store and sockets, the worker pipes, Python's own."""


def open_files_needed(hubs: int) -> int:
    """The open-files limit the coordinator (and the broker it starts) needs for ``hubs``."""
    return FILES_BASE + FILES_PER_CONNECTION * hubs


def ensure_open_files(need: int) -> int:
    """Raise this process's soft open-files limit to ``need`` when it is lower and the hard
    limit allows; the limit in force. RuntimeError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise RuntimeError(
                f"the fleet needs {need} open files; the hard limit is {hard} (ulimit -Hn)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        soft = need
    return int(soft)


def fleet_broker(pki: DevPki, run_dir: Path, options: FleetOptions) -> Broker:
    """A :class:`hil.broker.Broker` (TLS, client certificates, the hubs' ACL) sized for the
    fleet, persistent for :attr:`RestartMode.PERSISTENT`."""
    return Broker(
        pki,
        run_dir,
        persistence=options.restart is RestartMode.PERSISTENT,
        extra_config=[f"max_connections {options.hubs + CONNECTION_HEADROOM}"],
    )
