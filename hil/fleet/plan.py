"""What a fleet run is made of: its options, each hub's identity and files, each worker's share.

Everything a worker process needs travels in a :class:`WorkerPlan` (frozen, picklable: the
workers are spawned, not forked), so a worker reads no global state of the coordinator.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.batching import BATCH_MAX_READINGS
from agent.envelopes import MAX_BATCH_READINGS
from agent.retry import MQTT_BACKOFF_BASE_S, MQTT_BACKOFF_CAP_S
from hil.pki import DevPki

MAX_HUBS: Final = 2000
"""Hubs a run may hold: the hub id's four digits leave room, and the bound keeps a typo from
asking one machine for a million TLS clients."""

MAX_PER_PROCESS: Final = 200
"""Hubs one worker's event loop may run: each hub has two threads (storage, connect worker)."""

MAX_BACKLOG: Final = 10_000
"""Readings per hub at most (a hub offline for weeks holds about this many)."""

BOOT_JITTER_S: Final = 30.0
"""``[mqtt] first_connect_jitter_s``'s default (agent/config.py): the fleet boots as a
neighbourhood whose power came back does."""

DOWN_S: Final = 10.0
"""How long the broker stays down by default: a restart that loads its persistence, a
failover behind a load balancer's health check. Long enough for the hubs' backoff to
escalate past its first ceiling, which is what spreads them."""

RESTART_AT: Final = 0.5
"""The broker restarts once the platform holds this share of every reading: mid-drain."""


class RestartMode(enum.StrEnum):
    """How the broker restarts."""

    PERSISTENT = "persistent"
    """``persistence true`` and a graceful stop: sessions, subscriptions and queued messages
    survive (mosquitto writes them at the stop), as a platform's broker is run."""
    FORGETFUL = "forgetful"
    """No persistence: the broker forgets every session. What hubs publish before the platform
    has subscribed again is dropped, and comes again after the hubs' receipt timeout."""


def hub_id(index: int) -> str:
    """``fleet-hub-0007``: fits the CN and hub id allowlists and sorts by index."""
    return f"fleet-hub-{index:04d}"


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """One run's parameters (``python -m hil.fleet --help`` explains each)."""

    hubs: int = 200
    per_process: int = 25
    backlog: int = 100
    batch_max_readings: int = BATCH_MAX_READINGS
    boot_jitter_s: float = BOOT_JITTER_S
    backoff_base_s: float = MQTT_BACKOFF_BASE_S
    backoff_max_s: float = MQTT_BACKOFF_CAP_S
    restart: RestartMode = RestartMode.PERSISTENT
    down_s: float = DOWN_S
    restart_at: float = RESTART_AT
    seed: int | None = None
    """Seeds each hub's backoff RNG with ``seed + index`` (reproducible draws); None: each hub
    seeds its own from the OS, as in the field."""

    def __post_init__(self) -> None:
        if not 1 <= self.hubs <= MAX_HUBS:
            raise ValueError(f"hubs must be 1..{MAX_HUBS}")
        if not 1 <= self.per_process <= MAX_PER_PROCESS:
            raise ValueError(f"per_process must be 1..{MAX_PER_PROCESS}")
        if not 1 <= self.backlog <= MAX_BACKLOG:
            raise ValueError(f"backlog must be 1..{MAX_BACKLOG}")
        if not 1 <= self.batch_max_readings <= MAX_BATCH_READINGS:
            raise ValueError(f"batch_max_readings must be 1..{MAX_BATCH_READINGS}")
        if not 0 <= self.boot_jitter_s <= 600 or not 0 <= self.down_s <= 600:
            raise ValueError("boot_jitter_s and down_s must be 0..600 s")
        if not 0 < self.backoff_base_s <= self.backoff_max_s <= 600:
            raise ValueError("need 0 < backoff_base_s <= backoff_max_s <= 600")
        if not 0 <= self.restart_at < 1:
            raise ValueError("restart_at must be in [0, 1)")

    @property
    def processes(self) -> int:
        """Worker processes: the hubs in groups of ``per_process``."""
        return math.ceil(self.hubs / self.per_process)

    @property
    def readings(self) -> int:
        """Readings the whole fleet holds at the start."""
        return self.hubs * self.backlog


@dataclass(frozen=True, slots=True)
class HubSpec:
    """One hub's identity and files. ``key`` is its TLS client key and its signing key."""

    index: int
    hub_id: str
    cert: Path
    key: Path
    outbox: Path
    data_key: Path


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """One worker process's hubs and where they connect."""

    index: int
    hubs: tuple[HubSpec, ...]
    broker_port: int
    ca_file: Path
    platform_cert: Path
    """The platform's signing certificate: receipts verify with its key."""
    options: FleetOptions


def make_hubs(pki: DevPki, directory: Path, count: int) -> list[HubSpec]:
    """``count`` hub identities from ``pki``'s CA (hub 0 is the PKI's own hub), each with a
    directory for its outbox and a 0700 one for its data key. One certificate costs well under
    a millisecond (a P-256 key and a signature), so :meth:`DevPki.issue_client` is used as is."""
    if pki.hub_id != hub_id(0):
        raise ValueError(f"the PKI's hub must be {hub_id(0)}")
    specs = []
    for index in range(count):
        name = hub_id(index)
        cert, key = (pki.hub_cert, pki.hub_key) if index == 0 else pki.issue_client(name)
        home = directory / name
        (home / "keys").mkdir(mode=0o700, parents=True)
        specs.append(
            HubSpec(index, name, cert, key, home / "outbox.db", home / "keys" / "data.key")
        )
    return specs


def share_out(
    specs: list[HubSpec], pki: DevPki, port: int, options: FleetOptions
) -> list[WorkerPlan]:
    """The hubs in consecutive groups of ``options.per_process``, one plan per worker."""
    step = options.per_process
    return [
        WorkerPlan(
            index=n,
            hubs=tuple(specs[first : first + step]),
            broker_port=port,
            ca_file=pki.ca_cert,
            platform_cert=pki.platform_cert,
            options=options,
        )
        for n, first in enumerate(range(0, len(specs), step))
    ]
