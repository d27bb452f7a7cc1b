"""One daemon per hub: ``homehub run`` holds ``<state_dir>/homehub.lock``; a second daemon,
and commands that must not run beside it, are refused with the holder's pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from agent import daemon, instance_lock
from tests.example_config import example_config


def test_a_held_lock_is_reported_with_its_holder(tmp_path: Path) -> None:
    assert instance_lock.running_pid(tmp_path) is None  # no file yet, none made
    assert not (tmp_path / instance_lock.LOCK_FILE).exists()
    with instance_lock.hold(tmp_path) as path:
        assert os.getpid() == instance_lock.running_pid(tmp_path)
        assert 0o600 == path.stat().st_mode & 0o777
        with (
            pytest.raises(instance_lock.InstanceRunningError) as refused,
            instance_lock.hold(tmp_path),
        ):
            pass  # pragma: no cover
        assert os.getpid() == refused.value.pid
        assert "daemon is running" in str(refused.value)
    assert instance_lock.running_pid(tmp_path) is None  # released with the block
    with instance_lock.hold(tmp_path):  # and can be taken again
        pass


def test_a_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A daemon killed by SIGKILL leaves no stale lock: the kernel drops an flock with the
    process, whatever the file still says."""
    code = (
        "import sys, pathlib; from agent import instance_lock\n"
        "with instance_lock.hold(pathlib.Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert "held\n" == child.stdout.readline()
        assert child.pid == instance_lock.running_pid(tmp_path)
        child.kill()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:  # pragma: no cover - the assertion above failed
            child.kill()
            child.wait(timeout=10)
    assert instance_lock.running_pid(tmp_path) is None
    assert str(child.pid) == (tmp_path / instance_lock.LOCK_FILE).read_text().strip()


def test_a_second_daemon_is_refused_before_it_opens_anything(tmp_path: Path) -> None:
    cfg = example_config(tmp_path)
    cfg.hub.state_dir.mkdir()
    with instance_lock.hold(cfg.hub.state_dir), structlog.testing.capture_logs() as logs:
        assert 2 == daemon.main(cfg)
    failed = [e for e in logs if e["event"] == "hub_failed"]
    assert ["InstanceRunningError"] == [e["error"] for e in failed]
    assert f"pid {os.getpid()}" in failed[0]["reason"]
    assert not cfg.outbox.path.exists()  # refused before the outbox was opened
