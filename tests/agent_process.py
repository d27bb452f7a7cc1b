"""Run ``homehub run`` as a real process for end-to-end and crash tests.

Its stderr (the structured log) goes to a file in the PHI-scanned log directory, so every
line the daemon writes in the suite is checked for canaries.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from tests import phi_canaries

STOP_TIMEOUT_S: Final = 20.0


@asynccontextmanager
async def agent_process(config: Path, name: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m agent run --config CONFIG``; SIGTERM (then SIGKILL) on exit."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-100:]
    log_path = phi_canaries.log_dir() / f"{safe}.agent.log"
    with log_path.open("ab") as log_file:
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
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> int:
    """Stop the agent as systemd would: SIGTERM, then SIGKILL after the stop timeout."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode
