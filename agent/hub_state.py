"""What the running daemon knows and ``homehub status`` cannot read elsewhere: a small state
file, ``<hub.state_dir>/hub_state.json``.

The outbox's depth is read from the database itself (a WAL reader, no key), the modem's
figures from ``modem_status.json`` (agent/modem/state_file.py); what lives only in the
daemon's memory is written here: whether the uplink is connected and since when, the last
delivery, how many envelopes await the platform's receipt, the hub clock's trouble, what the
patient's status light shows, and per
configured device its last stored reading, its last session and its battery level. The
technician's command then works without the daemon's help, and after it stopped (the last
file stays, with its time).

Nothing here is protected health information: device labels and kinds, the last two octets of
an address, times and counts; no reading value, no patient or device identifier, no key.

The daemon writes it (atomically, fsync, 0600) on the storage thread when its content
changed, at most every :data:`WRITE_MIN_INTERVAL_S`, and once more when it stops. Times are
the system's wall clock (Unix seconds), as the reader's own clock compares them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from agent.cert_rotation import write_private_file
from agent.errors import KeyMaterialError, StorageError
from agent.private_files import read_state_file_up_to

STATE_FILE: Final = "hub_state.json"
FORMAT_VERSION: Final = 1
WRITE_MIN_INTERVAL_S: Final = 10.0
"""Least time between two writes: an uplink that flaps or a stream of receipts changes the
content many times a second; the flash is written at most this often (the first change after
a quiet spell at once, the rest together at the end of the interval)."""
MAX_BYTES: Final = 64 * 1024
"""Far above what 16 devices take (~250 bytes each); a larger file is not ours."""

SESSION_RESULTS: Final = frozenset(
    {"completed", "link_lost", "absent", "failed", "misbehaved", "security"}
)
"""How a BLE session ended, as the daemon judged it (no reason text: that is in the log)."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One configured device as the daemon last saw it."""

    label: str
    kind: str
    device: str
    """The address's last two octets (agent/logs.py ``device_label``), never the full one."""
    last_reading_at: float | None = None
    """When the daemon last committed a reading of this device (Unix time)."""
    last_session_at: float | None = None
    """When its last BLE session ended (Unix time)."""
    last_session_result: str | None = None
    """One of :data:`SESSION_RESULTS`."""
    battery_percent: int | None = None


@dataclass(frozen=True, slots=True)
class HubState:
    """The daemon's state for ``homehub status``; equal states are not written twice."""

    pid: int
    started_at: float
    uplink_online: bool = False
    uplink_since: float | None = None
    """When the uplink last connected (online) or went offline (or the daemon started)."""
    last_delivery_at: float | None = None
    """When records were last deleted after their acknowledgement (PUBACK or receipt)."""
    awaiting_receipt: int = 0
    """Envelopes acknowledged by the broker and awaiting the platform's signed receipt (held in
    the daemon's memory; still pending in the outbox)."""
    clock_problem: str | None = None
    """``"implausible"`` or ``"network_time"`` (agent/daemon.py ``hub_clock_problem``)."""
    clock_correction_s: float | None = None
    """The correction applied to the system clock (agent/wall_clock.py), if any."""
    stopped_at: float | None = None
    """Set in the last write of a daemon that stopped in order."""
    indicator_state: str | None = None
    """What the patient's status light shows (agent/indicator/ ``IndicatorState``)."""
    devices: tuple[DeviceState, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["devices"] = [asdict(d) for d in self.devices]
        return {"v": FORMAT_VERSION, **body}


def write(path: Path, state: HubState) -> None:
    """Replace the file (atomically, fsync, 0600). On the storage thread: never the loop.

    Raises:
        StorageError: it cannot be written.
    """
    data = json.dumps(state.to_json(), separators=(",", ":")).encode()
    try:
        write_private_file(path, data, "hub state file")
    except KeyMaterialError as exc:
        raise StorageError(str(path), "write", exc.reason) from None


def read(path: Path) -> HubState | None:
    """The state as last written, or None when there is no usable file (none yet,
    unreadable, or not what :func:`write` writes).

    Not a secret, so not read with the key files' owner check: ``homehub status`` run by
    root reads the file of the daemon's own user (a symbolic link is still not followed).
    """
    data = read_state_file_up_to(path, MAX_BYTES)
    if data is None:
        return None
    try:
        body = json.loads(data)
        return _parse(body)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a time")
    return float(value)


def _text(value: object, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise ValueError("not a short string")
    return value


def _count(value: object, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a count")
    return value


def _parse(body: object) -> HubState:
    if not isinstance(body, Mapping) or body.get("v") != FORMAT_VERSION:
        raise ValueError("not a hub state")
    devices = body["devices"]
    if not isinstance(devices, list):
        raise ValueError("devices")
    result = [d.get("last_session_result") for d in devices if isinstance(d, Mapping)]
    if any(r is not None and r not in SESSION_RESULTS for r in result):
        raise ValueError("session result")
    return HubState(
        pid=_count(body["pid"]),
        started_at=_time(body["started_at"]) or 0.0,
        uplink_online=bool(body["uplink_online"]),
        uplink_since=_time(body["uplink_since"]),
        last_delivery_at=_time(body["last_delivery_at"]),
        awaiting_receipt=_count(body["awaiting_receipt"]),
        clock_problem=_text(body["clock_problem"], optional=True),
        clock_correction_s=_time(body["clock_correction_s"]),
        stopped_at=_time(body["stopped_at"]),
        indicator_state=_text(body.get("indicator_state"), optional=True),
        devices=tuple(
            DeviceState(
                label=_text(d["label"]),
                kind=_text(d["kind"]),
                device=_text(d["device"]),
                last_reading_at=_time(d["last_reading_at"]),
                last_session_at=_time(d["last_session_at"]),
                last_session_result=_text(d["last_session_result"], optional=True),
                battery_percent=_count(d["battery_percent"], optional=True),
            )
            for d in devices
        ),
    )


__all__ = [
    "SESSION_RESULTS",
    "STATE_FILE",
    "WRITE_MIN_INTERVAL_S",
    "DeviceState",
    "HubState",
    "read",
    "write",
]
