"""What ``homehub status`` reports, gathered without the daemon's help.

Everything is read from what lies on the disk: the outbox's counts (a read-only WAL reader,
no key: agent/outbox.py ``peek_counts``), the daemon's state file (agent/hub_state.py), the
modem's figures file (agent/modem/state_file.py), the instance lock (whether the daemon runs,
agent/instance_lock.py) and the kernel's clock state. So it works while the daemon runs and
after it stopped, and never disturbs it.

The report is one JSON object whose keys are stable (a technician's ``| jq`` and the platform's
tooling read it); times are ISO 8601 UTC, ages seconds, absent values ``null``:

``version``
    The installed homehub's version.
``hub``
    The hub's id.
``as_of``
    When this report was read.
``daemon``
    ``running`` (bool), ``pid`` (null when not running), ``started_at``, ``stopped_at`` (the
    last run's orderly stop, when not running).
``outbox``
    ``pending``, ``awaiting_receipt`` (of the pending, those the broker acknowledged and whose
    platform receipt the daemon awaits: 0 when the daemon is stopped, null when it runs and
    has not said yet), ``refused``, ``refused_records`` (``[{"seq", "rc"}]``, the oldest),
    ``damaged``, ``oldest_age_s``, ``used_bytes``, ``quota_bytes``, ``storage`` (ok, critical,
    full).
``uplink``
    ``state``: online, offline, unknown (the daemon runs and has not said yet) or
    not_running; ``since`` and ``for_s`` (when it entered that state: connected,
    disconnected, or the daemon's stop); ``last_delivery`` and ``last_delivery_age_s``.
``clock``
    ``problem`` (null, implausible, network_time: the daemon's judgement of its own clock),
    ``correction_s`` (the network time's correction in force), ``system_synchronized`` (the
    kernel's NTP state: true, false, or null when it cannot be read).
``storage``
    ``used_bytes``, ``quota_bytes``, ``level`` (the outbox against its quota, as in
    ``outbox``) and the state directory's file system: ``disk_free_bytes``,
    ``disk_total_bytes``.
``indicator``
    ``backend`` (none, log, gpiod) and ``state``: what the patient's status light shows
    (starting, all_well, syncing, needs_attention, fault), null when not running or not known.
``devices``
    One object per configured device: ``label``, ``kind``, ``device`` (the address's last
    two octets), ``last_reading``, ``last_reading_age_s``, ``last_session``,
    ``last_session_age_s``, ``last_session_result``, ``battery_percent``.
``modem``
    ``{"backend": "none"}`` without a modem; else ``backend``, ``as_of`` and ``figures``
    (agent/modem/status.py keys without the identifiers), null before the daemon's first.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import importlib.metadata
import shutil
import time
from pathlib import Path
from typing import Any, Final

from agent import hub_state, instance_lock
from agent.config import Config
from agent.logs import device_label
from agent.modem import state_file as modem_state_file
from agent.outbox import peek_counts, peek_refused, storage_level

TIME_ERROR: Final = 5
"""adjtimex(2)'s clock state when the kernel's clock is not synchronized (STA_UNSYNC)."""
TIMEX_BYTES: Final = 512
"""Room for ``struct timex`` (208 bytes on 64-bit Linux) with margin: zeroed, modes 0 reads."""


def status(cfg: Config, *, now: float | None = None) -> dict[str, Any]:
    """The report (module docstring) of the hub ``cfg`` configures, as of ``now`` (Unix).

    Raises:
        StorageError: the outbox cannot be read (none at its path, or failing).
    """
    at = time.time() if now is None else now
    counts = peek_counts(cfg.outbox.path, clock=lambda: at)
    refused = peek_refused(cfg.outbox.path) if counts.refused else []
    quota = cfg.outbox.quota_bytes
    level = storage_level(counts.used_bytes, quota).value
    pid = instance_lock.running_pid(cfg.hub.state_dir)
    running = pid is not None
    state = hub_state.read(cfg.hub.state_dir / hub_state.STATE_FILE)
    # A file of the running daemon (a pid unknown to the lock, 0, is trusted), or of an
    # earlier run: the latter says nothing of the uplink now.
    current = state if state is not None and running and pid in (0, state.pid) else None
    if not running:
        awaiting: int | None = 0  # nothing awaits a receipt without a daemon: all is pending
    else:
        awaiting = current.awaiting_receipt if current is not None else None
    return {
        "version": _version(),
        "hub": cfg.hub.id,
        "as_of": _iso(at),
        "daemon": {
            "running": running,
            "pid": pid or None,
            "started_at": _iso(current.started_at) if current is not None else None,
            "stopped_at": _iso(state.stopped_at) if state is not None and not running else None,
        },
        "outbox": {
            "pending": counts.pending,
            "awaiting_receipt": awaiting,
            "refused": counts.refused,
            # The oldest refused records with the broker's reason code: what to look into.
            "refused_records": [{"seq": seq, "rc": rc} for seq, rc in refused],
            "damaged": counts.damaged,
            "oldest_age_s": counts.oldest_age_s,
            "used_bytes": counts.used_bytes,
            "quota_bytes": quota,
            "storage": level,
        },
        "uplink": _uplink(running, current, state, at),
        "clock": {
            "problem": current.clock_problem if current is not None else None,
            "correction_s": current.clock_correction_s if current is not None else None,
            "system_synchronized": system_clock_synchronized(),
        },
        "storage": {
            "used_bytes": counts.used_bytes,
            "quota_bytes": quota,
            "level": level,
            **_disk(cfg.hub.state_dir),
        },
        "indicator": {
            "backend": cfg.indicator.backend,
            "state": current.indicator_state if current is not None else None,
        },
        "devices": _devices(cfg, state, at),
        "modem": modem_status(cfg),
    }


def _uplink(
    running: bool, current: hub_state.HubState | None, state: hub_state.HubState | None, at: float
) -> dict[str, Any]:
    if not running:
        name, since = "not_running", state.stopped_at if state is not None else None
    elif current is None:
        name, since = "unknown", None
    else:
        name = "online" if current.uplink_online else "offline"
        since = current.uplink_since
    delivered = state.last_delivery_at if state is not None else None
    return {
        "state": name,
        "since": _iso(since),
        "for_s": _age(since, at),
        "last_delivery": _iso(delivered),
        "last_delivery_age_s": _age(delivered, at),
    }


def _devices(cfg: Config, state: hub_state.HubState | None, at: float) -> list[dict[str, Any]]:
    """The configured devices (the allow-list is the truth: a device the file still names
    but the configuration no longer does is left out) with what the daemon last saw."""
    seen = {d.label: d for d in state.devices} if state is not None else {}
    rows = []
    for device in cfg.devices:
        known = seen.get(device.label)
        reading = known.last_reading_at if known is not None else None
        session = known.last_session_at if known is not None else None
        rows.append(
            {
                "label": device.label,
                "kind": device.kind,
                "device": device_label(device.address),
                "last_reading": _iso(reading),
                "last_reading_age_s": _age(reading, at),
                "last_session": _iso(session),
                "last_session_age_s": _age(session, at),
                "last_session_result": known.last_session_result if known is not None else None,
                "battery_percent": known.battery_percent if known is not None else None,
            }
        )
    return rows


def modem_status(cfg: Config) -> dict[str, Any]:
    """The cellular link: its backend, and the figures the running daemon last saw
    (agent/modem/state_file.py) with their time, ``null`` before the first
    (``{"backend": "none"}``: no modem, Ethernet or Wi-Fi)."""
    if cfg.modem.backend == "none":
        return {"backend": "none"}
    seen = modem_state_file.read(cfg.hub.state_dir / modem_state_file.STATE_FILE)
    return {
        "backend": cfg.modem.backend,
        "as_of": None if seen is None else seen["as_of"],
        "figures": None if seen is None else seen["figures"],
    }


def system_clock_synchronized() -> bool | None:
    """Whether the kernel's clock is synchronized (NTP: timesyncd, chrony), by adjtimex(2)
    with no change asked (modes 0): what ``timedatectl`` shows. None where it cannot be read
    (not Linux, no C library)."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex  # the C library already loaded
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(TIMEX_BYTES)  # modes = 0: read only
    result = int(adjtimex(buffer))
    if result < 0:
        return None
    return result != TIME_ERROR


def _disk(directory: Path) -> dict[str, int | None]:
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return {"disk_free_bytes": None, "disk_total_bytes": None}
    return {"disk_free_bytes": usage.free, "disk_total_bytes": usage.total}


def _version() -> str:
    try:
        return importlib.metadata.version("homehub")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


def _age(value: float | None, at: float) -> float | None:
    return None if value is None else round(max(0.0, at - value), 1)


__all__ = ["modem_status", "status", "system_clock_synchronized"]
