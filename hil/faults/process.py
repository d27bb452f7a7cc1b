"""Process faults: kill, stop or freeze a process at a drawn moment or when its log says so.

A :class:`Killer` *arms* one shot at a time against a pid, on a named thread
(``hil.killer[<pid>]``), and records each shot it fired (:class:`Shot`) on its list and on the
fault timeline (:mod:`hil.faults.events`):

- :meth:`Killer.at_random`: after a delay drawn uniformly from a window by the Killer's own
  seeded RNG, so a campaign's kill moments repeat with its seed;
- :meth:`Killer.on_log`: as soon as a line of the process's log satisfies a predicate, e.g.
  :func:`log_event` ``("publish_started")``: "kill it during an upload". The log is a file the
  process writes (followed from its end at arming, polled every ``FOLLOW_POLL_S``: a file has
  no wake-up without inotify) or a pipe (read line by line as it comes);
- :meth:`Killer.fire`: now.

The action is the Killer's: ``SIGKILL`` (a crash, a power cut as far as the process knows),
``SIGTERM`` (systemd stopping it), or a *freeze*: ``SIGSTOP``, then ``SIGCONT`` after
``freeze_s`` (a process stuck in a blocking call, a swap storm: its sockets and locks stay held).
A shot returns only once the signal took effect for a freeze; SIGKILL and SIGTERM are sent and
the caller reaps the process (it is the caller's child, not the Killer's).

Limits: a pid may be reused once the process was reaped (arm against a live child of yours);
log lines longer than ``MAX_LINE_BYTES`` are cut; predicates see whatever the process logs, so
they must not copy it anywhere (the agent's log holds no PHI, another program's might).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from hil.faults.events import FaultLog, record

FOLLOW_POLL_S: Final = 0.01
"""How often a followed log file is read for new lines: a log event is acted on within this."""
MAX_LINE_BYTES: Final = 65_536
"""A log line is cut here (the agent's lines are < 2 kB), so a runaway line costs bounded memory."""
SIGNAL_TIMEOUT_S: Final = 2.0
"""A signal stops or continues a process within microseconds; 2 s covers a loaded runner."""
_POLL_S: Final = (0.001, 0.05)
"""First and largest pause between looks at a process's state (doubling)."""
JOIN_TIMEOUT_S: Final = 2.0
"""Joining a cancelled shot's thread: it wakes within FOLLOW_POLL_S (or at the pipe's next line)."""

LinePredicate = Callable[[str], bool]


class Action(enum.StrEnum):
    """What a shot does to the process."""

    KILL = "SIGKILL"
    TERM = "SIGTERM"
    FREEZE = "SIGSTOP"
    """SIGSTOP, then SIGCONT after the Killer's ``freeze_s``."""


@dataclass(frozen=True, slots=True)
class Shot:
    """One fired shot.

    Attributes:
        pid: the process shot at.
        action: what was done.
        trigger: ``random``, ``now``, or ``log:<name>`` (the predicate's name).
        armed_at: ``time.monotonic()`` when armed.
        fired_at: ``time.monotonic()`` when the signal was sent.
        planned_s: the drawn delay (``random``), else None.
        delivered: False when the process was already gone (nothing was sent).
        thawed_at: when SIGCONT was sent (``FREEZE`` only).
    """

    pid: int
    action: Action
    trigger: str
    armed_at: float
    fired_at: float
    planned_s: float | None = None
    delivered: bool = True
    thawed_at: float | None = None

    @property
    def delay_s(self) -> float:
        """From arming to firing."""
        return self.fired_at - self.armed_at


class Armed:
    """An armed shot: wait for it (sync or async) or cancel it."""

    def __init__(
        self,
        future: concurrent.futures.Future[Shot | None],
        cancel: threading.Event,
        thread: threading.Thread,
    ) -> None:
        self._future = future
        self._cancel = cancel
        self._thread = thread

    def wait(self, timeout: float) -> Shot | None:
        """The shot once fired (None if cancelled first); TimeoutError after ``timeout``."""
        return self._future.result(timeout)

    async def await_shot(self) -> Shot | None:
        """:meth:`wait` for asyncio callers (wrap it in ``asyncio.timeout``)."""
        return await asyncio.shield(asyncio.wrap_future(self._future))

    def cancel(self) -> None:
        """Disarm (a shot already fired stays fired) and join the thread (bounded)."""
        self._cancel.set()
        self._thread.join(JOIN_TIMEOUT_S)


class Killer:
    """Fires :class:`Shot` s at processes (module docstring). Thread-safe."""

    def __init__(
        self,
        *,
        seed: int,
        action: Action = Action.KILL,
        freeze_s: float = 1.0,
        log: FaultLog | None = None,
    ) -> None:
        if freeze_s <= 0:
            raise ValueError("freeze_s must be > 0")
        self.seed = seed
        self.action = action
        self.freeze_s = freeze_s
        self._rng = random.Random(seed)
        self._log = log
        self._lock = threading.Lock()
        self._shots: list[Shot] = []

    @property
    def shots(self) -> list[Shot]:
        """Every shot fired so far, oldest first (a copy)."""
        with self._lock:
            return list(self._shots)

    def draw(self, window: tuple[float, float]) -> float:
        """The next delay from the seeded RNG, uniform in ``window`` (seconds)."""
        low, high = window
        if not 0 <= low <= high:
            raise ValueError("window must be (low, high) with 0 <= low <= high")
        with self._lock:
            return self._rng.uniform(low, high)

    def fire(self, pid: int, *, trigger: str = "now", armed_at: float | None = None) -> Shot:
        """Shoot now; returns once done (after the thaw, for a freeze)."""
        return self._fire(pid, trigger, armed_at, None, threading.Event())

    def at_random(self, pid: int, window: tuple[float, float]) -> Armed:
        """Arm a shot ``draw(window)`` seconds from now."""
        delay = self.draw(window)
        armed_at = time.monotonic()

        def run(cancel: threading.Event) -> Shot | None:
            if cancel.wait(delay):  # the drawn moment is the fault's schedule, not a sync
                return None
            return self._fire(pid, "random", armed_at, delay, cancel)

        return self._arm(pid, run)

    def on_log(
        self,
        pid: int,
        source: Path | IO[bytes],
        predicate: LinePredicate,
        *,
        name: str,
        offset: int | None = None,
    ) -> Armed:
        """Arm a shot for the first line of ``source`` that satisfies ``predicate``; ``name``
        says what it waits for, in the record. A file is read from ``offset`` (its current end
        when None: only what the process logs from now on; 0 for a log the process was started
        with, so a line written before arming is not missed); a pipe as it comes."""
        armed_at = time.monotonic()
        if offset is not None:
            start = offset
        else:
            start = source.stat().st_size if isinstance(source, Path) else 0

        def run(cancel: threading.Event) -> Shot | None:
            lines = (
                _follow(source, start, cancel)
                if isinstance(source, Path)
                else _read_pipe(source, cancel)
            )
            for line in lines:
                if predicate(line):
                    return self._fire(pid, f"log:{name}", armed_at, None, cancel)
            return None

        return self._arm(pid, run)

    def _arm(self, pid: int, run: Callable[[threading.Event], Shot | None]) -> Armed:
        cancel = threading.Event()
        future: concurrent.futures.Future[Shot | None] = concurrent.futures.Future()

        def target() -> None:
            try:
                future.set_result(run(cancel))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)

        thread = threading.Thread(target=target, name=f"hil.killer[{pid}]", daemon=True)
        thread.start()
        return Armed(future, cancel, thread)

    def _fire(
        self,
        pid: int,
        trigger: str,
        armed_at: float | None,
        planned_s: float | None,
        cancel: threading.Event,
    ) -> Shot:
        sig = signal.Signals[self.action.value]
        fired_at = time.monotonic()
        armed_at = fired_at if armed_at is None else armed_at
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            shot = Shot(pid, self.action, trigger, armed_at, fired_at, planned_s, False)
            return self._keep(shot)
        thawed_at = None
        if self.action is Action.FREEZE:
            await_stopped(pid, stopped=True)
            cancel.wait(self.freeze_s)  # the freeze's length: the fault itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                await_stopped(pid, stopped=False)
            thawed_at = time.monotonic()
        shot = Shot(pid, self.action, trigger, armed_at, fired_at, planned_s, True, thawed_at)
        return self._keep(shot)

    def _keep(self, shot: Shot) -> Shot:
        with self._lock:
            self._shots.append(shot)
        sent = "" if shot.delivered else " (already gone)"
        record(self._log, "killer", shot.action.value, f"pid {shot.pid} {shot.trigger}{sent}")
        return shot


def log_event(name: str) -> LinePredicate:
    """A predicate for the agent's log (agent/logs.py: one JSON object a line, possibly with a
    journald ``<N>`` prefix): the line's ``event`` is ``name``."""

    def matches(line: str) -> bool:
        text = line.strip()
        if text.startswith("<") and ">" in text[:4]:
            text = text[text.index(">") + 1 :]
        if f'"{name}"' not in text:  # cheap first look
            return False
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        return isinstance(parsed, dict) and parsed.get("event") == name

    matches.__name__ = f"log_event({name})"
    return matches


def _follow(path: Path, offset: int, cancel: threading.Event) -> Iterator[str]:
    """Lines appended to ``path`` after ``offset``, until ``cancel``."""
    partial = b""
    with path.open("rb") as f:
        f.seek(offset)
        while not cancel.is_set():
            chunk = f.read(MAX_LINE_BYTES)
            if not chunk:
                cancel.wait(FOLLOW_POLL_S)  # a file has no wake-up; bounded poll
                continue
            *complete, partial = (partial + chunk).split(b"\n")
            partial = partial[-MAX_LINE_BYTES:]
            for raw in complete:
                yield raw[:MAX_LINE_BYTES].decode("utf-8", "replace")


def _read_pipe(stream: IO[bytes], cancel: threading.Event) -> Iterator[str]:
    """Lines of ``stream`` as they come, until EOF or ``cancel`` (seen at the next line)."""
    while not cancel.is_set():
        raw = stream.readline(MAX_LINE_BYTES)
        if not raw:
            return
        yield raw.decode("utf-8", "replace")


def process_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (Linux: its state in /proc is ``T``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def await_stopped(pid: int, *, stopped: bool) -> None:
    """Return once ``pid`` is (not) stopped: a signal is delivered asynchronously, and the
    action returns only once it took effect. Polled (another process's state has no event),
    bounded by SIGNAL_TIMEOUT_S."""
    deadline = time.monotonic() + SIGNAL_TIMEOUT_S
    pause = _POLL_S[0]
    while process_stopped(pid) is not stopped:
        if time.monotonic() + pause > deadline:
            raise TimeoutError(f"pid {pid} not {'stopped' if stopped else 'running'}")
        time.sleep(pause)  # polling another process's state; nothing to wait on
        pause = min(pause * 2, _POLL_S[1])
