"""``homehub`` with a stepped wall clock: a named injection of hil/faults/clock.py.

``python -m hil.faults.clock_child [--step-s N] [--signal-step-s M] [--after-s T
--after-step-s K] -- ARGS...`` steps this process's wall clock by ``N`` seconds, installs a
:data:`hil.faults.clock.STEP_SIGNAL` handler that adds ``M`` each time, arms a timer (thread
``hil.clock.after``) that adds ``K`` once ``T`` seconds after start, and only then imports and
runs :func:`agent.cli.main` with ``ARGS`` (``run --config FILE``: the daemon, unchanged). No
product code knows of it; what the step reaches and does not is in hil/faults/clock.py.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from hil.faults import clock


def build_parser() -> argparse.ArgumentParser:
    """The wrapper's own options; everything after ``--`` is homehub's."""
    parser = argparse.ArgumentParser(prog="python -m hil.faults.clock_child", description=__doc__)
    parser.add_argument("--step-s", type=float, default=0.0, help="offset from the start (s)")
    parser.add_argument("--signal-step-s", type=float, default=0.0, help="added on SIGUSR2 (s)")
    parser.add_argument("--after-s", type=float, default=None, help="when the timed step comes")
    parser.add_argument("--after-step-s", type=float, default=0.0, help="the timed step (s)")
    parser.add_argument("homehub_args", nargs=argparse.REMAINDER, help="-- then homehub's args")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Install the steps, then run homehub; its exit code."""
    args = build_parser().parse_args(argv)
    rest = list(args.homehub_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    stepped = clock.install()
    if args.step_s:
        stepped.step(args.step_s)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stepped.step(args.signal_step_s)  # on the main thread: the daemon's loop's thread

    signal.signal(clock.STEP_SIGNAL, on_signal)
    if args.after_s is not None:
        timer = threading.Timer(args.after_s, stepped.step, (args.after_step_s,))
        timer.name = "hil.clock.after"
        timer.daemon = True
        timer.start()
    from agent import cli  # after the patch: every module of the agent sees the stepped clock

    return cli.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
