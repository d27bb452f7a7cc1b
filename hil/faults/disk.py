"""Disk limits for a child process: the hub's flash filling up, without touching the host.

Two parts, each emulating a full disk differently; pick by what the scenario needs:

``FileSizeLimit``: a write past it fails with ``EFBIG`` (errno 27)
    RLIMIT_FSIZE. Works everywhere without privileges, even on a *running* process
    (:meth:`FileSizeLimit.apply_to`: the disk fills mid-run); the files stay on the real disk
    across kills and restarts. But it bounds each *file*, not the directory's total; it applies
    to every file the process writes (its log too, when that is a file); and the error is EFBIG
    where a full flash says ENOSPC. A non-Python child is killed by SIGXFSZ (Python ignores it).
``TmpfsLimit``: a write past it fails with ``ENOSPC`` (errno 28)
    A tmpfs of ``max_bytes`` over the directory, in the child's own mount namespace
    (``unshare``): the real error and a real total. Needs root or unprivileged user namespaces
    (:func:`tmpfs_available` checks); the directory's files are copied in at start, and what
    the child writes there is gone when it exits (a tmpfs lives with its namespace): one life
    per limit, no crash-restart on the same data.

A loop-mounted filesystem image would give both (ENOSPC and persistence) but needs root and
a free loop device on every rig; it is not offered.

Both wrap the child's command line (``argv(...)``), so they work with ``subprocess`` and
asyncio's ``create_subprocess_exec`` alike, and with ``preexec_fn`` left alone (it is unsafe
when the parent runs threads, as the rig does).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hil.faults.events import FaultLog, record

PROBE_TIMEOUT_S: Final = 5.0
"""``unshare`` plus a mount answers in milliseconds."""

_MOUNT_SCRIPT: Final = (
    'set -e; dir="$1"; size="$2"; shift 2; cd "$dir"; '
    'mount -t tmpfs -o "size=$size,mode=0700" homehub-faults "$dir"; '
    'cp -a . "$dir/"; cd /; '
    'exec "$@"'
)
"""In the new mount namespace: hold the directory as the working directory, mount the tmpfs
over its path, copy the held (now hidden) files into it, then run the child's own command (it
keeps the shell's pid). No staging directory is left anywhere."""


@dataclass(frozen=True, slots=True)
class FileSizeLimit:
    """RLIMIT_FSIZE of ``max_bytes`` for a child (see the module docstring's table)."""

    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run under the limit (util-linux ``prlimit``, soft and hard)."""
        return [_tool("prlimit"), f"--fsize={self.max_bytes}", "--", *command]

    def apply_to(self, pid: int, log: FaultLog | None = None) -> None:
        """Set the limit on a running process now (same user, or CAP_SYS_RESOURCE): the
        disk fills while the agent runs. Writes already past it fail from their next byte."""
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.max_bytes, self.max_bytes))
        record(log, "disk", "fsize_limit", f"pid {pid} {self.max_bytes} bytes")

    def apply_soft_to(self, pid: int, log: FaultLog | None = None) -> None:
        """:meth:`apply_to` on the soft limit only, the hard one kept: :meth:`lift` then
        ends the fault without CAP_SYS_RESOURCE (which raising a hard limit needs)."""
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        if hard != resource.RLIM_INFINITY and hard < self.max_bytes:
            raise ValueError(f"max_bytes above the process's hard limit ({hard})")
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.max_bytes, hard))
        record(log, "disk", "fsize_soft_limit", f"pid {pid} {self.max_bytes} bytes")

    @staticmethod
    def lift(pid: int, log: FaultLog | None = None) -> None:
        """The soft limit of a running process back up to its hard limit: room again."""
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        record(log, "disk", "fsize_lifted", f"pid {pid}")

    def preexec(self) -> None:
        """For ``preexec_fn`` where the parent has no threads (prefer :meth:`argv`)."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_bytes, self.max_bytes))


@dataclass(frozen=True, slots=True)
class TmpfsLimit:
    """A tmpfs of ``max_bytes`` over ``directory``, for one child (the module docstring)."""

    directory: Path
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_bytes < 4096:
            raise ValueError("max_bytes must be >= 4096 (a tmpfs allocates in pages)")

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run in its own mount namespace with the tmpfs over the directory.

        The directory must exist; its files are copied into the tmpfs first (they count
        against ``max_bytes``). As non-root, the child runs as root of a user namespace
        mapped to the caller (files it creates outside the tmpfs are the caller's)."""
        directory = self.directory.resolve(strict=True)
        return [
            *_unshare(),
            "sh",
            "-c",
            _MOUNT_SCRIPT,
            "homehub-faults-tmpfs",
            str(directory),
            str(self.max_bytes),
            *command,
        ]


def tmpfs_available() -> bool:
    """Whether :class:`TmpfsLimit` works here: a mount namespace and a tmpfs mount in it."""
    if shutil.which("unshare") is None:
        return False
    probe = [*_unshare(), "sh", "-c", "mount -t tmpfs -o size=4096 homehub-faults /tmp"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _unshare() -> list[str]:
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [_tool("unshare"), *user, "--mount", "--propagation", "private", "--"]


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise FileNotFoundError(f"{name} (util-linux) not found")
    return found
