"""hil/faults/process.py on real child processes: a SIGKILL at a moment drawn from a seeded RNG
within its window (the same seed draws the same moments), one fired by a log event the child
wrote to its log file or to a pipe, a SIGTERM, and a freeze that stops the child and lets it
go on. Each wait is on the shot (a future) or the child's exit, under a timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Final

from hil.faults.events import FaultLog
from hil.faults.process import Action, Killer, log_event, process_stopped

T: Final = 10.0
WINDOW: Final = (0.05, 0.2)
SEED: Final = 20261202

IDLE: Final = "import signal; signal.pause()"
"""A child that waits for a signal; any the Killer sends ends or stops it."""
LOGGER: Final = (
    "import json, signal, sys\n"
    "for i in range(5):\n"
    "    print(json.dumps({'event': 'tick', 'i': i}), flush=True)\n"
    "print('<6>' + json.dumps({'event': 'publish_started', 'seq': 7}), flush=True)\n"
    "signal.pause()\n"
)
"""Five ticks, then the event a scenario kills on (with a journald prefix), then waits."""


def _child(code: str, stdout: int | IO[bytes] = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=stdout)


def test_random_kill_lands_in_its_window_and_repeats_with_the_seed() -> None:
    log = FaultLog()
    killer = Killer(seed=SEED, log=log)
    child = _child(IDLE)
    shot = killer.at_random(child.pid, WINDOW).wait(T)
    assert child.wait(T) == -9
    assert shot is not None
    assert shot.delivered
    assert shot.trigger == "random"
    assert shot.planned_s is not None
    assert WINDOW[0] <= shot.planned_s <= WINDOW[1]
    assert shot.delay_s >= shot.planned_s
    assert Killer(seed=SEED).draw(WINDOW) == shot.planned_s
    assert killer.shots == [shot]
    assert [(e.action, e.detail) for e in log.events()] == [("SIGKILL", f"pid {child.pid} random")]


def test_kill_on_a_log_event_in_a_file_and_in_a_pipe(tmp_path: Path) -> None:
    killer = Killer(seed=SEED)
    log_path = tmp_path / "child.log"
    log_path.touch()
    with log_path.open("ab") as out:
        child = _child(LOGGER, stdout=out)
        armed = killer.on_log(
            child.pid, log_path, log_event("publish_started"), name="upload", offset=0
        )
        shot = armed.wait(T)
    assert child.wait(T) == -9
    assert shot is not None
    assert shot.trigger == "log:upload"
    assert log_path.read_text().count('"tick"') == 5
    piped = _child(LOGGER, stdout=subprocess.PIPE)
    assert piped.stdout is not None
    shot = killer.on_log(piped.pid, piped.stdout, log_event("publish_started"), name="up").wait(T)
    assert piped.wait(T) == -9
    piped.stdout.close()
    assert shot is not None
    assert shot.trigger == "log:up"
    assert len(killer.shots) == 2


def test_term_and_freeze() -> None:
    child = _child(IDLE)
    shot = Killer(seed=SEED, action=Action.TERM).fire(child.pid)
    assert child.wait(T) == -15
    assert shot.action is Action.TERM
    child = _child(IDLE)
    try:
        freeze_s = 0.1
        armed = Killer(seed=SEED, action=Action.FREEZE, freeze_s=freeze_s).at_random(
            child.pid, (0.0, 0.0)
        )
        frozen = armed.wait(T)
        assert frozen is not None
        assert frozen.thawed_at is not None
        assert frozen.thawed_at - frozen.fired_at >= freeze_s
        assert child.poll() is None
        assert not process_stopped(child.pid)
    finally:
        child.kill()
        child.wait(T)
