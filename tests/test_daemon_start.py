"""Starting the daemon: a disk that fails at start is waited for, never a crash loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from agent.daemon import Hub
from tests.example_config import example_config


async def test_unusable_state_directory_is_waited_for_not_fatal(tmp_path: Path) -> None:
    """With the state directory unusable, run() logs outbox_open_failed and waits (until stop)."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    cfg = example_config(tmp_path, outbox_path=blocker / "outbox.db")
    stop = asyncio.Event()
    stop.set()  # stop while waiting: run() must return cleanly instead of raising
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):
            await Hub(cfg).run(stop)
    failures = [e for e in logs if e["event"] == "outbox_open_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == "StorageError"
    assert "state directory" in failures[0]["reason"]
    assert not any(e["event"] == "hub_started" for e in logs)


async def test_under_systemd_the_wait_says_why_and_keeps_the_start_alive(tmp_path: Path) -> None:
    """Type=notify: while the state directory is unusable, STATUS says why, the start timeout
    is extended (a restart would only meet the same disk) and the watchdog is fed."""
    import socket

    from agent.sd_notify import Notifier

    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    cfg = example_config(tmp_path, outbox_path=blocker / "outbox.db")
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.setblocking(False)
        stop = asyncio.Event()
        stop.set()
        notifier = Notifier(address)
        try:
            async with asyncio.timeout(10):
                await Hub(cfg, notifier=notifier).run(stop)
        finally:
            notifier.close()
        data = listener.recv(4096).decode()
    fields = dict(line.split("=", 1) for line in data.splitlines())
    assert fields["STATUS"].startswith("waiting for storage: ")
    assert "state directory" in fields["STATUS"]
    assert ("15000000", "1") == (fields["EXTEND_TIMEOUT_USEC"], fields["WATCHDOG"])
