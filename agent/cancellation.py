"""A guard against cancellations that Python 3.11's ``asyncio.wait_for`` swallows.

Python 3.11's ``wait_for`` (used inside Bumble for connections and ATT requests, and by
bleak) returns the result when a cancellation arrives in the same loop iteration as the
awaited operation completes (fixed in 3.12); the task still reports ``cancelling()``. A
SIGTERM landing on that moment would be lost: the collector would run sessions forever while
the hub waits for it to stop, until systemd's stop timeout kills it. Every BLE session and
the collector call :func:`raise_if_cancelled` after each radio operation.

Also :func:`first_of`: wait for the first of several awaitables, the others cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def raise_if_cancelled() -> None:
    """Re-raise a cancellation requested of the current task but swallowed on the way."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of ``waits`` completes; the others are cancelled."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()
