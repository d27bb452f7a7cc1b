"""Starting the real daemon with ``ble.stack = "bluez"`` (issue 7): ``python -X importtime -m
agent run`` with one configured cuff, a real TLS mosquitto, and no system D-Bus (the bus
address points at a socket that does not exist, so the test means the same on any machine).

- Bumble is never imported (the -X importtime record on stderr names every module loaded).
- Not reaching BlueZ is a fault of the host, not a bug: it must be logged as a clear event
  and waited out, and SIGTERM must still stop the daemon with exit code 0 within 5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from hil.broker import Broker
from hil.pki import DevPki
from hil.virtual_home import write_agent_config
from tests import phi_canaries

START_TIMEOUT_S: Final = 30.0
"""Interpreter start with paho, cryptography and bleak, keys, outbox, first session."""

EXIT_BOUND_S: Final = 5.0
"""SIGTERM → exit 0 within this (the daemon's STOP_BUDGET_S; the unit allows 20 s)."""

BLUEZ_FAILURE_EVENTS: Final = frozenset(
    {"ble_stack_unavailable", "ble_session_failed", "ble_session_link_lost"}
)
"""The daemon's events for a stack or session that could not reach the adapter."""


@dataclass
class AgentRun:
    """One ``homehub run`` process: its stderr lines as they come, the JSON events among them."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    """stderr reached its end: the process exited."""
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("{"):
            with suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))
        self._changed()

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def named(self, *names: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") in names]

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds or stderr ends (the process exited)."""
        while not predicate() and not self.ended:
            await self._change.wait()

    def imported_modules(self) -> list[str]:
        """Every module named in the -X importtime record."""
        return [
            line.rsplit("|", 1)[1].strip()
            for line in self.lines
            if line.startswith("import time:") and line.count("|") == 2
        ]


@asynccontextmanager
async def _agent(config: Path, tmp_path: Path, name: str) -> AsyncIterator[AgentRun]:
    """``python -X importtime -m agent run --config CONFIG``; stderr is read line by line and
    also written to the PHI-scanned log directory; killed at the end if still running."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        # No system D-Bus, on any machine: the bus socket does not exist.
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-system-bus'}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "agent",
        "run",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    run = AgentRun(proc)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-100:]
    log_path = phi_canaries.log_dir() / f"{safe}.agent.log"

    async def read() -> None:
        assert proc.stderr is not None
        with log_path.open("a") as log:
            async for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                run.note(line)
        run.ended = True
        run._changed()

    reader = asyncio.create_task(read(), name="test.agent.stderr")
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader


async def _started(run: AgentRun, *more: str) -> None:
    """Until hub_started and one of ``more`` were logged (or the process ended)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        await run.until(lambda: bool(run.named("hub_started")) and bool(run.named(*more)))


async def _sigterm(run: AgentRun) -> int | None:
    """SIGTERM (if still running); the exit code, or None if not exited within EXIT_BOUND_S."""
    if run.proc.returncode is None:
        run.proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(EXIT_BOUND_S):
            return await run.proc.wait()
    except TimeoutError:
        return None


def _config(tmp_path: Path, pki: DevPki, broker: Broker) -> Path:
    return write_agent_config(
        tmp_path / "run", stack="bluez", broker_port=broker.port, pki=pki, hub_id=pki.hub_id
    )


async def test_bluez_hub_never_imports_bumble(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, request: pytest.FixtureRequest
) -> None:
    """With ble.stack = "bluez" the daemon starts (hub_started), opens the BlueZ stack and
    starts its scan (ble_scan_starting), and at no point imports bumble or any bumble.*
    module; bleak's BlueZ backend is what it loaded."""
    async with _agent(_config(tmp_path, dev_pki, broker), tmp_path, request.node.nodeid) as run:
        await _started(run, "ble_scan_starting")
        await _sigterm(run)
        async with asyncio.timeout(EXIT_BOUND_S):
            await run.until(lambda: False)  # stderr to its end
    modules = run.imported_modules()
    assert "agent.daemon" in modules, "no -X importtime record on stderr"
    assert [] == [m for m in modules if m == "bumble" or m.startswith("bumble.")]
    assert "bleak.backends.bluezdbus.scanner" in modules
    (opened,) = run.named("ble_stack_open")
    assert "bluez" == opened["stack"]
    assert run.named("ble_scan_starting")


async def test_bluez_without_dbus_is_logged_and_the_daemon_keeps_running(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, request: pytest.FixtureRequest
) -> None:
    """No system D-Bus: the failure to reach BlueZ is logged as a clear event (with its
    reason), the daemon keeps running (no traceback), and SIGTERM stops it with exit code 0
    within 5 s."""
    async with _agent(_config(tmp_path, dev_pki, broker), tmp_path, request.node.nodeid) as run:
        await _started(run, *BLUEZ_FAILURE_EVENTS)
        still_running = run.proc.returncode is None
        code = await _sigterm(run)
        async with asyncio.timeout(EXIT_BOUND_S):
            await run.until(lambda: False)
    tracebacks = [line for line in run.lines if "Traceback" in line]
    assert [] == tracebacks, "\n".join(line for line in run.lines if "import time:" not in line)
    assert still_running, f"the daemon exited by itself with {run.proc.returncode}"
    assert 0 == code
    failures = run.named(*BLUEZ_FAILURE_EVENTS)
    assert failures, "the failure to reach BlueZ was not logged"
    assert all(e.get("reason") for e in failures)
    assert [] == [m for m in run.imported_modules() if m.split(".")[0] == "bumble"]
