"""hil/faults/disk.py on real child processes: past RLIMIT_FSIZE a write fails with EFBIG (the
limit set at start through ``prlimit``, and on a process already running), past a tmpfs's size
with ENOSPC, with the directory's files copied in first. The child reports what it wrote and
the error it got, as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from hil.faults.disk import FileSizeLimit, TmpfsLimit, tmpfs_available
from hil.faults.events import FaultLog

T: Final = 10.0
LIMIT: Final = 64 * 1024

WRITER: Final = """
import json, os, sys
path, total = sys.argv[1], int(sys.argv[2])
seed = os.path.join(os.path.dirname(path), "seed")
seen = open(seed).read() if os.path.exists(seed) else None
if len(sys.argv) > 3:
    print("ready", flush=True)
    sys.stdin.readline()  # the test applies the limit meanwhile
written, error = 0, None
with open(path, "wb", buffering=0) as f:
    try:
        while written < total:
            written += f.write(b"x" * 4096)
    except OSError as exc:
        error = exc.errno
print(json.dumps({"written": written, "errno": error, "seed": seen}), flush=True)
"""
"""Writes ``total`` bytes in 4 KiB chunks until an error; with a third argument, waits for a
line on stdin first."""


def _writer(path: Path, total: int) -> list[str]:
    return [sys.executable, "-c", WRITER, str(path), str(total)]


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_file_size_limit_fails_writes_with_efbig(tmp_path: Path) -> None:
    limit = FileSizeLimit(LIMIT)
    cmd = limit.argv(_writer(tmp_path / "outbox.db", 4 * LIMIT))
    report = _report(subprocess.run(cmd, capture_output=True, text=True, timeout=T, check=False))
    assert report == {"written": LIMIT, "errno": 27, "seed": None}  # EFBIG
    assert (tmp_path / "outbox.db").stat().st_size == LIMIT  # on the real disk, kept


def test_file_size_limit_applied_to_a_running_process(tmp_path: Path) -> None:
    log = FaultLog()
    child = subprocess.Popen(
        [*_writer(tmp_path / "wal", 4 * LIMIT), "wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        assert child.stdout.readline() == "ready\n"
        FileSizeLimit(LIMIT).apply_to(child.pid, log)
        out, _ = child.communicate("go\n", timeout=T)
    finally:
        child.kill()
        child.wait(T)
    assert json.loads(out) == {"written": LIMIT, "errno": 27, "seed": None}
    assert [e.detail for e in log.events("disk")] == [f"pid {child.pid} {LIMIT} bytes"]


@pytest.mark.skipif(not tmpfs_available(), reason="no mount namespace with tmpfs here")
def test_tmpfs_limit_fails_writes_with_enospc_and_keeps_the_seed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "seed").write_text("keys and config")
    limit = TmpfsLimit(state, LIMIT)
    cmd = limit.argv(_writer(state / "outbox.db", 4 * LIMIT))
    report = _report(subprocess.run(cmd, capture_output=True, text=True, timeout=T, check=False))
    assert report["errno"] == 28  # ENOSPC
    assert LIMIT - 8192 <= report["written"] < LIMIT  # the seed and the inodes count too
    assert report["seed"] == "keys and config"
    assert not (state / "outbox.db").exists()  # it lived in the child's tmpfs only
