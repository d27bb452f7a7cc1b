"""The storage thread: one named worker owns the outbox, the keys, signing and sealing.

Why a thread: a ``synchronous=FULL`` commit fsyncs the WAL, and on an SD card one fsync can
take 100 ms and more; ECDSA signing, AEAD sealing, decoding and FHIR building cost CPU per
reading. On the event loop, which also runs the Bluetooth host, bleak's D-Bus traffic and the
MQTT socket, that would stall everything else. So all of it runs on **one** thread,
``hub.storage``:

- SQLite's rule "one connection, one thread" holds: the outbox's connection is opened, used
  and closed there only.
- A PKCS#11 session is not shared across threads: the key provider is opened, used (signing,
  unwrapping the data key) and closed on that thread only.

:class:`StorageThread` is the async facade: :meth:`StorageThread.call` runs a function on the
thread and awaits its result without blocking the loop. Calls run one at a time (in the order
below); each caller awaits its own call, so there are never more queued calls than tasks that
use storage (ingest, publisher, acknowledgements: a handful), which bounds the queue.

Order: calls made with :meth:`StorageThread.call` run first, in the order they were made;
calls made with :meth:`StorageThread.call_low` (the publisher's reads, deletes and refusal
marks) run in their order when no ``call`` waits, so a reading that arrives while a delete
is queued is committed first and does not wait for the delete's fsync too. A ``call_low``
never starves: each caller awaits its call, so between two stores of the ingest task the
queue of ``call`` is empty for at least one round of the event loop.

Idle work: when no call waits, the thread runs the function given to
:meth:`StorageThread.when_idle` (the daemon gives the outbox's
:meth:`~agent.outbox.Outbox.checkpoint_if_due`), once after each run of calls: WAL
checkpoints happen between readings instead of inside a reading's commit. "No call waits"
includes the moment right after a :meth:`StorageThread.call`: idle work starts only once the
event loop has run the caller's next step, in which the ingest task hands in the readings
that arrived during the commit (``call`` again). Without that hand-back the checkpoint
started in exactly that instant, before those readings could be handed in, and they waited
for it (≈ 3 ms, every time a checkpoint fell due after a commit a reading arrived during).

Cancellation: a call already running on the thread cannot be interrupted; cancelling the
awaiting task only stops waiting (the commit still completes or fails on the thread). The
daemon therefore never cancels a storing task; it stops them in order (agent/daemon.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

import structlog

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME: Final = "hub.storage"

log = structlog.get_logger(__name__)

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]", asyncio.AbstractEventLoop | None]
"""The call, its future, and for a :meth:`StorageThread.call` its caller's loop (through which
the thread is handed back before idle work, module docstring)."""


class StorageThread:
    """One named worker thread and an async facade over it. Use as an async context manager
    (or :meth:`start` / :meth:`close`)."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Condition()
        self._calls: deque[_Job] = deque()
        self._low_calls: deque[_Job] = deque()
        self._closing = False
        self._idle: Callable[[], object] | None = None
        #: The loops of calls run whose caller has not had its next step yet (module
        #: docstring, Idle work): one entry per call, removed through that loop.
        self._hand_backs: list[asyncio.AbstractEventLoop] = []

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._ready:
            if self._thread is not None:
                return
            self._closing = False
            # Not a daemon thread: the interpreter waits for the call under way (a commit).
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=False)
            self._thread.start()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the storage thread; return (or raise) its outcome."""
        return await self._submit(
            self._calls, functools.partial(fn, *args, **kwargs), asyncio.get_running_loop()
        )

    async def call_low(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`call` at low priority: it runs only when no :meth:`call` waits."""
        return await self._submit(self._low_calls, functools.partial(fn, *args, **kwargs), None)

    def when_idle(self, work: Callable[[], object] | None) -> None:
        """Run ``work`` on the thread when no call waits, once after each run of calls
        (``None``: nothing). It must be short: a call made meanwhile waits for it. What it
        raises is logged (``storage_idle_work_failed``), never propagated."""
        with self._ready:
            self._idle = work

    def on_thread(self) -> bool:
        """Whether the caller runs on the storage thread (for assertions and tests)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def close(self) -> None:
        """Wait for the calls already made, then end the thread (idempotent)."""
        with self._ready:
            thread = self._thread
            if thread is None:
                return
            self._closing = True
            self._ready.notify()
        thread.join()
        with self._ready:
            self._thread = None

    async def __aenter__(self) -> StorageThread:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        # Joining waits at most for the call under way (one commit): short, and it must end
        # before the process does, or an fsync'd transaction could be cut off.
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def _submit(
        self, queue: deque[_Job], fn: Callable[[], T], loop: asyncio.AbstractEventLoop | None
    ) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._ready:
            if self._thread is None or self._closing:
                raise RuntimeError("the storage thread is not running")
            queue.append((fn, future, loop))
            self._ready.notify()
        # Cancelling the awaiting task cancels a call that has not started (it never runs);
        # one under way completes on the thread.
        return await asyncio.wrap_future(future)

    def _work(self) -> None:
        idle_due = False
        while True:
            with self._ready:
                while not self._calls and not self._low_calls:
                    if idle_due and self._idle is not None and self._handed_back():
                        break
                    if self._closing:
                        return
                    self._ready.wait()
                job = (
                    self._calls.popleft()
                    if self._calls
                    else self._low_calls.popleft()
                    if self._low_calls
                    else None
                )
                idle = self._idle
            if job is None:
                idle_due = False
                if idle is not None:
                    _run_idle(idle)
                continue
            idle_due = True
            fn, future, loop = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)
            if loop is not None:
                self._hand_back(loop)
            del fn, future, job, loop  # drop references to the call's arguments and result

    def _handed_back(self) -> bool:
        """Whether every caller has had its next step (under the lock; module docstring, Idle
        work). A loop that stopped hands nothing back (its callers are gone), nor does a
        closing thread wait for one."""
        return self._closing or not any(loop.is_running() for loop in self._hand_backs)

    def _hand_back(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a call: hold idle work until ``loop`` has run the caller's next step. The
        future's completion queued the step's wake-up on the loop before this; the callback
        queued here queues :meth:`_back` behind the step."""
        with self._ready:
            self._hand_backs = [other for other in self._hand_backs if not other.is_closed()]
            self._hand_backs.append(loop)
        try:
            loop.call_soon_threadsafe(loop.call_soon, self._back, loop)
        except RuntimeError:  # the loop is closed: nobody will call again from it
            self._back(loop)

    def _back(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._ready:
            if loop in self._hand_backs:
                self._hand_backs.remove(loop)
            self._ready.notify()


def _run_idle(work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - housekeeping: logged, the thread serves on
        log.error(
            "storage_idle_work_failed",
            error=type(exc).__name__,
            reason=str(getattr(exc, "reason", exc)),
        )


__all__ = ["THREAD_NAME", "StorageThread"]
