"""The cellular link's figures as the running daemon last saw them, for ``homehub status``.

The daemon holds the module's AT port exclusively (or ModemManager does), so a technician's
``homehub status`` cannot ask the module itself while the hub runs: the daemon writes what its
link saw to ``<hub.state_dir>/modem_status.json`` (0600, replaced atomically) when the figures
change, at most every :data:`WRITE_EVERY_S`, and the command reads it with its age.

The file holds the figures of :class:`~agent.modem.status.ModemStatus` without the IMEI and the
ICCID (identifiers stay off the disk; ``homehub modem status`` shows them, asked while the
daemon is stopped).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

from agent.cert_rotation import write_private_file
from agent.errors import KeyMaterialError, StorageError
from agent.modem.status import KEYS, ModemStatus
from agent.private_files import read_state_file_up_to

STATE_FILE: Final = "modem_status.json"
WRITE_EVERY_S: Final = 60.0
"""Least time between two writes: the signal figures change every poll (30 s); a minute's
staleness is nothing to a technician, and the flash is spared."""
MAX_BYTES: Final = 8 * 1024
IDENTIFIERS: Final = frozenset({"imei", "iccid"})


def figures_on_disk(figures: ModemStatus) -> dict[str, Any]:
    """The figures as the file keeps them: every key, the identifiers null."""
    return {k: (None if k in IDENTIFIERS else v) for k, v in figures.to_dict().items()}


def write(path: Path, figures: ModemStatus, as_of: dt.datetime) -> None:
    """Replace the file (atomically, fsync, 0600).

    Raises:
        StorageError: it cannot be written.
    """
    body = {"v": 1, "as_of": as_of.isoformat(), "figures": figures_on_disk(figures)}
    try:
        write_private_file(path, json.dumps(body).encode(), "modem status file")
    except KeyMaterialError as exc:
        raise StorageError(str(path), "write", exc.reason) from None


def read(path: Path) -> dict[str, Any] | None:
    """``{"as_of": iso, "figures": {...}}`` as written, or None when there is no usable file
    (none yet, unreadable, or not what :func:`write` writes)."""
    data = read_state_file_up_to(path, MAX_BYTES)
    if data is None:
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("v") != 1:
        return None
    figures, as_of = body.get("figures"), body.get("as_of")
    if not isinstance(figures, dict) or set(figures) != set(KEYS) or not isinstance(as_of, str):
        return None
    return {"as_of": as_of, "figures": figures}
