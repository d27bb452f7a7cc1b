"""``homehub`` with one injected fault: SIGUSR1 blocks the event loop's thread.

``python -m tests.loop_blocker BLOCK_S ARGS...`` runs :func:`agent.cli.main` with ``ARGS``
(``run --config FILE``: the daemon, unchanged) after installing a SIGUSR1 handler that sleeps
``BLOCK_S`` seconds. Python runs signal handlers on the main thread, which is the daemon's
event loop's thread (asyncio's wakeup fd gets it out of its poll at once): for ``BLOCK_S``
the loop runs nothing, as a loop stuck in a blocking call would. The service test sees the
watchdog stop for that long and come back. No product code knows of this; it is the test's
named injection (tests/test_service_notify.py).
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType


def main(argv: list[str]) -> int:
    block_s = float(argv[0])

    def block(_signum: int, _frame: FrameType | None) -> None:
        time.sleep(block_s)  # on the loop's thread: the injected stall

    signal.signal(signal.SIGUSR1, block)
    from agent import cli

    return cli.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
