"""``python -m hil.fleet``: the fleet scenario (hil/fleet/README.md), its report, one JSON line.

    python -m hil.fleet [--hubs 200] [--per-process 25] [--backlog 100] [--down-s 10]
                        [--restart persistent|forgetful] [--plot PNG | --no-plot] [--dir DIR]

The last line printed is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog

from hil.fleet.figures import failures, report
from hil.fleet.plan import FleetOptions, RestartMode
from hil.fleet.plot import plot_connections, title
from hil.fleet.scenario import run_fleet

DEFAULT_PLOT: Final = Path("build/fleet/reconnects.png")


def build_parser() -> argparse.ArgumentParser:
    defaults = FleetOptions()
    p = argparse.ArgumentParser(prog="python -m hil.fleet", description=__doc__)
    p.add_argument("--hubs", type=int, default=defaults.hubs, help="hubs in the fleet")
    p.add_argument(
        "--per-process", type=int, default=defaults.per_process, help="hubs per worker process"
    )
    p.add_argument("--backlog", type=int, default=defaults.backlog, help="readings per hub")
    p.add_argument(
        "--batch",
        type=int,
        default=defaults.batch_max_readings,
        help="readings per batch at most ([mqtt] batch_max_readings)",
    )
    p.add_argument(
        "--boot-jitter-s",
        type=float,
        default=defaults.boot_jitter_s,
        help="[mqtt] first_connect_jitter_s of every hub",
    )
    p.add_argument(
        "--backoff-base-s",
        type=float,
        default=defaults.backoff_base_s,
        help="first full-jitter ceiling (agent.retry's, 1 s)",
    )
    p.add_argument(
        "--restart",
        choices=[m.value for m in RestartMode],
        default=defaults.restart.value,
        help="the broker keeps its sessions (persistent) or forgets them",
    )
    p.add_argument(
        "--down-s", type=float, default=defaults.down_s, help="how long the broker stays down"
    )
    p.add_argument(
        "--restart-at",
        type=float,
        default=defaults.restart_at,
        help="share of every reading at the platform when the broker restarts",
    )
    p.add_argument("--seed", type=int, default=None, help="seed the hubs' backoff RNGs")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG of connections over time")
    p.add_argument("--no-plot", action="store_true", help="draw no PNG")
    p.add_argument("--dir", type=Path, default=None, help="where to put the run's files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fleet scenario, print the report, then one JSON line."""
    args = build_parser().parse_args(argv)
    try:
        options = FleetOptions(
            hubs=args.hubs,
            per_process=args.per_process,
            backlog=args.backlog,
            batch_max_readings=args.batch,
            boot_jitter_s=args.boot_jitter_s,
            backoff_base_s=args.backoff_base_s,
            restart=RestartMode(args.restart),
            down_s=args.down_s,
            restart_at=args.restart_at,
            seed=args.seed,
        )
    except ValueError as exc:
        build_parser().error(str(exc))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    def progress(line: str) -> None:
        print(f"  .. {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="homehub-fleet-", dir=args.dir) as tmp:
        run = run_fleet(options, Path(tmp), progress)
    figures = run.figures
    if not args.no_plot:
        drawn = plot_connections(
            args.plot, run.boot_offsets_s, run.reconnect_offsets_s, title(figures)
        )
        figures["plot"] = str(args.plot) if drawn else None
        if not drawn:
            progress("matplotlib is not installed: no plot")
    report(figures)
    for line in failures(figures):
        print(f"FAILED {line}")
    print(json.dumps(figures, sort_keys=True))
    return 0 if not failures(figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
