"""systemd's notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket, a path or ``@`` for
the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``).
Each message is one datagram of ``KEY=value`` lines. Outside systemd (no ``NOTIFY_SOCKET``)
every call does nothing, so the daemon runs the same by hand and in tests.

:func:`message` is the sans-I/O part (bounded, one line per field, no newline smuggled in a
value); :class:`Notifier` sends, never blocking (a full socket drops the datagram: a late
STATUS is worthless, and a missed WATCHDOG is systemd's to judge).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Final

MAX_MESSAGE_BYTES: Final = 4096
MAX_STATUS_CHARS: Final = 200
"""A STATUS= line a technician reads in ``systemctl status``: one short sentence."""


def message(fields: Mapping[str, str]) -> bytes:
    """The datagram for ``fields`` (``{"READY": "1", "STATUS": "..."}``). A value loses any
    line break (it would start another field) and a STATUS is cut to :data:`MAX_STATUS_CHARS`.

    Raises:
        ValueError: a field name that is not an upper-case identifier, or a message over
            :data:`MAX_MESSAGE_BYTES`.
    """
    lines = []
    for name, value in fields.items():
        if not name or not all(c.isupper() or c == "_" for c in name):
            raise ValueError(f"not a notify field name: {name[:40]!r}")
        clean = " ".join(value.splitlines())
        if name == "STATUS":
            clean = clean[:MAX_STATUS_CHARS]
        lines.append(f"{name}={clean}")
    data = "\n".join(lines).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"notify message of {len(data)} bytes")
    return data


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """How often to send WATCHDOG=1: half the ``WATCHDOG_USEC`` systemd set for this process
    (``WATCHDOG_PID`` absent or ours), None when there is no watchdog."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if usec is None or (pid is not None and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Sends to ``NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # "@name": the abstract namespace (a leading NUL byte).
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> bool:
        """One message; False when it could not be sent (no socket, full, gone)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(message(fields), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
