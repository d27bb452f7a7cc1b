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
thread and awaits its result without blocking the loop. Calls run one at a time, in the order
they were made; each caller awaits its own call, so there are never more queued calls than
tasks that use storage (ingest, publisher, acknowledgements: a handful), which bounds the queue.

Cancellation: a call already running on the thread cannot be interrupted; cancelling the
awaiting task only stops waiting (the commit still completes or fails on the thread). The
daemon therefore never cancels a storing task; it stops them in order (agent/daemon.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME: Final = "hub.storage"


class StorageThread:
    """One named worker thread and an async facade over it. Use as an async context manager
    (or :meth:`start` / :meth:`close`)."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self.name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread_id: int | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=self.name
            )
            self._thread_id = self._executor.submit(threading.get_ident).result()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the storage thread; return (or raise) its outcome."""
        if self._executor is None:
            raise RuntimeError("the storage thread is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def on_thread(self) -> bool:
        """Whether the caller runs on the storage thread (for assertions and tests)."""
        return self._thread_id is not None and threading.get_ident() == self._thread_id

    def close(self) -> None:
        """Wait for the calls already made, then end the thread (idempotent)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> StorageThread:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        # Joining waits at most for the call under way (one commit): short, and it must end
        # before the process does, or an fsync'd transaction could be cut off.
        await asyncio.get_running_loop().run_in_executor(None, self.close)


__all__ = ["THREAD_NAME", "StorageThread"]
