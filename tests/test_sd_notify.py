"""systemd's notify protocol (agent/sd_notify.py) and ``homehub run`` speaking it.

The end-to-end test starts the real daemon as a process with a real notify socket (a datagram
socket the test binds, as systemd does) and ``WATCHDOG_USEC``, its broker unreachable (an
outage): READY=1 arrives with a status line, WATCHDOG=1 keeps arriving through the outage, and
SIGTERM ends it with STOPPING=1 and exit status 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Final

import pytest

from agent.sd_notify import MAX_STATUS_CHARS, Notifier, message, watchdog_interval_s
from hil.pki import DevPki
from tests import phi_canaries
from tests.platform_hub import write_hub_config
from tests.test_end_to_end_receipts import _closed_port

T: Final = 30.0


def test_message() -> None:
    assert b"READY=1\nSTATUS=3 devices, 0 pending" == message(
        {"READY": "1", "STATUS": "3 devices, 0 pending"}
    )
    assert b"STATUS=a b" == message({"STATUS": "a\nb"})  # no field smuggled in a value
    assert MAX_STATUS_CHARS + len("STATUS=") == len(message({"STATUS": "x" * 1000}))
    with pytest.raises(ValueError, match="field name"):
        message({"ready": "1"})


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert 0.2 == watchdog_interval_s({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": pid})
    assert 0.2 == watchdog_interval_s({"WATCHDOG_USEC": "400000"})
    assert watchdog_interval_s({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "zero"}) is None
    assert watchdog_interval_s({}) is None


def test_without_a_socket_nothing_happens() -> None:
    notifier = Notifier.from_env({})
    assert (False, False) == (notifier.enabled, notifier.ready("x"))


async def test_homehub_run_is_ready_fed_and_stops(tmp_path: Path, dev_pki: DevPki) -> None:
    config = write_hub_config(tmp_path, dev_pki, _closed_port())  # the broker: an outage
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    log_path = phi_canaries.log_dir() / "sd-notify.agent.log"
    with log_path.open("ab") as log_file, listener:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},
        )
        messages: list[dict[str, str]] = []

        async def next_message() -> dict[str, str]:
            data = await loop.sock_recv(listener, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            messages.append(fields)
            return fields

        try:
            async with asyncio.timeout(T):
                ready = await next_message()
                assert "1" == ready.get("READY")
                assert "0 devices, 0 pending, offline" == ready["STATUS"]
                watchdogs = 0
                while watchdogs < 5:  # 5 × 0.2 s through the outage
                    watchdogs += (await next_message()).get("WATCHDOG") == "1"
                proc.send_signal(signal.SIGTERM)
                while "STOPPING" not in (await next_message()):
                    pass
                assert 0 == await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    statuses = [m["STATUS"] for m in messages if "STATUS" in m]
    assert ["0 devices, 0 pending, offline"] == sorted(set(statuses[:-1]))
    assert "stopping" == statuses[-1]


async def test_watchdog_withheld_while_the_pipeline_is_stuck(
    tmp_path: Path, dev_pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's own Hub with a notifier: WATCHDOG=1 every 0.1 s; the storage thread
    blocked for 1 s (injected: a job that waits) withholds it, the event loop running all
    along; then it comes again."""
    import threading
    import time

    from structlog.testing import capture_logs

    from agent import config as hub_config
    from agent.daemon import Hub

    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = hub_config.load(write_hub_config(tmp_path, dev_pki, _closed_port()))
    address = str(tmp_path / "notify.sock")
    stop = asyncio.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        notifier = Notifier(address)
        hub = Hub(cfg, notifier=notifier, collect=False)

        async def watchdog_at() -> float:
            while "WATCHDOG=1" not in (await loop.sock_recv(listener, 4096)).decode():
                pass
            return time.monotonic()

        with capture_logs() as logs:
            running = asyncio.create_task(hub.run(stop), name="test.hub")
            try:
                async with asyncio.timeout(T):
                    await hub.ready.wait()
                    await watchdog_at()
                    await watchdog_at()  # fed: two in a row
                    # Its STATUS follows each WATCHDOG: once read, the task sleeps a period,
                    # and its next storage round trip meets the blocked thread.
                    while "STATUS=" not in (await loop.sock_recv(listener, 4096)).decode():
                        pass
                    storage, _outbox = hub._storage or (None, None)
                    assert storage is not None
                    release = threading.Event()
                    blocked_at = time.monotonic()
                    stuck = asyncio.create_task(storage.call(release.wait, 1.0))
                    first_after = await watchdog_at()
                    await stuck
            finally:
                stop.set()
                await running
                notifier.close()
    assert first_after - blocked_at >= 0.9  # none while the storage thread was stuck
    assert any(e["event"] == "watchdog_withheld" for e in logs)
