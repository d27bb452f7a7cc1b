"""hil/faults/clock.py and its child wrapper, in real processes: once installed, ``time.time``
and the agent's own wall clock (agent/wall_clock.py, its correction on top) run a step ahead,
and datetimes still behave as the real class; ``homehub status --watch`` run under the wrapper
reports the start step in its ``as_of``, then the signal step once the child announced it.
``homehub run`` under it, in the virtual home (emulated cuff, TLS mosquitto, the reference
receiver), stamps a reading with the stepped time. Clocks are compared with the test's own
(real) clock, within a slack for process start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from agent.outbox import Outbox
from agent.sealing import DataKey, Sealer
from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.faults.clock import STEPPED_EVENT, ClockSteps, child_argv, step
from hil.faults.events import FaultLog
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import stop
from tests.platform_hub import write_hub_config
from tests.virtual_home_fixtures import canary_agent_config, collect

T: Final = 15.0
"""Starting the agent's CLI and its first report; a loaded runner takes a few seconds."""
DAY_S: Final = 86_400.0
AHEAD_S: Final = 2 * DAY_S
"""The daemon's step: far enough that no slack could mistake it for the real time."""
BACK_S: Final = -7_200.0
SLACK_S: Final = 5.0
"""Between the test's reading of its clock and the child's (process start, a refresh)."""

PROBE: Final = """
import json, time
from datetime import timedelta
from hil.faults import clock
clock.install(86400.0)
import datetime
from agent import wall_clock
plain = wall_clock.now().timestamp()
wall_clock.set_correction(timedelta(seconds=60))
print(json.dumps({
    "time": time.time(),
    "time_ns": time.time_ns() / 1e9,
    "wall_clock": plain,
    "corrected": wall_clock.now().timestamp(),
    "isinstance": isinstance(datetime.datetime(2026, 1, 1), datetime.datetime),
    "parsed": type(datetime.datetime.fromisoformat("2026-01-01T00:00:00")).__name__,
}))
"""


def test_install_steps_time_and_the_agents_wall_clock() -> None:
    before = datetime.now().timestamp()  # noqa: DTZ005 - a Unix time; the zone is moot
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=T, check=False
    )
    after = datetime.now().timestamp()  # noqa: DTZ005
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    for name in ("time", "time_ns", "wall_clock"):
        assert before + DAY_S <= seen[name] <= after + DAY_S, name
    assert seen["corrected"] - seen["wall_clock"] >= 60.0
    assert seen["corrected"] <= after + DAY_S + 60.0
    assert seen["isinstance"] is True
    assert seen["parsed"] == "datetime"


def _status_config(tmp_path: Path, pki: DevPki) -> Path:
    path = write_hub_config(tmp_path, pki, 8883)  # no broker: status reads the disk only
    Outbox.open(tmp_path / "state" / "outbox.db", Sealer(DataKey.generate()), pki.hub_id).close()
    return path


async def _as_of(stdout: asyncio.StreamReader) -> float:
    line = await stdout.readline()
    assert line, "status --watch ended"
    return datetime.fromisoformat(json.loads(line)["as_of"]).timestamp()


async def test_clock_child_steps_homehub_at_start_and_on_signal(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    config = _status_config(tmp_path, dev_pki)
    log = FaultLog()
    homehub = ["status", "--config", str(config), "--json", "--watch", "--interval", "0.2"]
    argv = child_argv(ClockSteps(at_start_s=DAY_S, on_signal_s=BACK_S), homehub)
    stderr_path = phi_canaries.log_dir() / "test_hil_faults_clock.clock_child.log"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(T):
                first = await _as_of(proc.stdout)
                real = datetime.now().timestamp()  # noqa: DTZ005
                assert abs(first - (real + DAY_S)) <= SLACK_S
                step(proc.pid, log)
                # Refreshes already written show the old offset; the step shows within one.
                while (stepped := await _as_of(proc.stdout)) > first + BACK_S / 2:
                    pass
                real = datetime.now().timestamp()  # noqa: DTZ005
        finally:
            proc.terminate()
            await proc.wait()
    assert abs(stepped - (real + DAY_S + BACK_S)) <= SLACK_S
    steps = [
        json.loads(line) for line in stderr_path.read_text().splitlines() if STEPPED_EVENT in line
    ]
    assert [e.action for e in log.events("clock")] == ["step"]
    assert [(s["by_s"], s["offset_s"]) for s in steps] == [(DAY_S, DAY_S), (BACK_S, DAY_S + BACK_S)]


async def test_homehub_run_under_the_clock_child_stamps_readings_with_the_stepped_time(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    reading = BpReading(121, 79, 93, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=68)
    log_path = phi_canaries.log_dir() / "test_hil_faults_clock.homehub_run.agent.log"
    async with VirtualRadio() as radio:
        await radio.add_cuff([reading], address=phi_canaries.DEVICE_ADDRESS)
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port)
        argv = child_argv(ClockSteps(at_start_s=AHEAD_S), ["run", "--config", str(config)])
        before = time.time()
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                got = await collect(receiver, 1)
                after = time.time()
            finally:
                assert await stop(proc) == 0
    payload = got[0].payload
    hub_time = datetime.fromisoformat(payload["hub_time"]).timestamp()
    issued = datetime.fromisoformat(payload["fhir"]["entry"][0]["resource"]["issued"]).timestamp()
    assert before + AHEAD_S - 1 <= hub_time <= after + AHEAD_S  # stamps keep whole seconds
    assert issued == hub_time
    announced = [
        json.loads(line) for line in log_path.read_text().splitlines() if STEPPED_EVENT in line
    ]
    assert [(s["by_s"], s["offset_s"]) for s in announced] == [(AHEAD_S, AHEAD_S)]
