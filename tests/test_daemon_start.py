"""Starting the daemon: a disk that fails at start is waited for, never a crash loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from agent import config
from agent.daemon import Hub
from hil.pki import make_dev_pki

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def _cfg(tmp_path: Path, outbox_path: Path) -> config.Config:
    pki = make_dev_pki(tmp_path / "pki", "hub-0001")
    (tmp_path / "kek").mkdir(mode=0o700)
    text = EXAMPLE.read_text()
    for old, new in (
        ('path = "/var/lib/homehub/outbox.db"', f'path = "{outbox_path}"'),
        ('key_file = "/etc/homehub/keys/data.key"', f'key_file = "{tmp_path}/keys/data.key"'),
        ('kek_file = "/etc/homehub/keys/kek.bin"', f'kek_file = "{tmp_path}/kek/kek.bin"'),
        ('key_file = "/etc/homehub/keys/hub-signing.pem"', f'key_file = "{pki.hub_key}"'),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    return config.load(path)


async def test_unusable_state_directory_is_waited_for_not_fatal(tmp_path: Path) -> None:
    """With the state directory unusable, run() logs outbox_open_failed and waits (until stop)."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    cfg = _cfg(tmp_path, blocker / "outbox.db")
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
