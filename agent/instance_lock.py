"""One daemon per hub, and commands that must not run beside it: an ``flock`` on
``<state_dir>/homehub.lock``.

``homehub run`` holds the lock for its whole life (the kernel drops it when the process
dies, however it dies, so a crash never leaves a stale lock). Commands that change what the
daemon holds open (``factory-reset``) take the same lock first: while the daemon runs they
are refused, and while they run a daemon cannot start. The file holds the holder's pid, for
the message only; the lock, not the file's existence, is what counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from agent.errors import LocalError

LOCK_FILE: Final = "homehub.lock"
_PID_MAX_BYTES: Final = 32


class InstanceRunningError(LocalError):
    """Another process (the daemon, or a command that excludes it) holds the hub's lock.

    Attributes:
        path: the lock file.
        pid: the holder's pid as it wrote it, or ``None`` when unreadable.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"{path}: held by {who}: the homehub daemon is running"
            " (stop it first: systemctl stop homehub)"
        )


def _holder_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, _PID_MAX_BYTES, 0).decode("ascii").strip())
    return None


@contextlib.contextmanager
def hold(state_dir: Path) -> Iterator[Path]:
    """Hold the hub's lock for the ``with`` block; :class:`InstanceRunningError` when another
    process holds it. ``OSError`` when the state directory cannot hold the file (missing,
    read-only): the caller decides whether that matters."""
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstanceRunningError(path, _holder_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def running_pid(state_dir: Path) -> int | None:
    """The pid of the process holding the hub's lock (0 when it is held but the pid is
    unreadable), or ``None`` when nobody holds it or there is no lock file. Never creates the
    file and never holds the lock past the call."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            return 0 if pid is None else pid
        return None
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "InstanceRunningError", "hold", "running_pid"]
