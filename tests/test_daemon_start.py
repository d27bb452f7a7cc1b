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
