"""``homehub factory-reset``: everything of the patient's goes (agent/hub_reset.py): the
outbox crypto-erased (data key, database, KEK), the bonds, the state files, the patient and
the allow-list of the configuration; with ``--depot`` the hub's identity too. Refused while
the daemon runs (exit 2). Prints what it removed as a table, or ``--json``; exit 1 when
something could not be removed (the rest was)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.errors import UsageError


def add_parser(sub: Any) -> None:
    """Add the ``factory-reset`` subcommand to the ``homehub`` parser."""
    reset = sub.add_parser(
        "factory-reset",
        help="erase the readings, bonds, patient and allow-list (stop the daemon first)",
    )
    reset.add_argument("--config", type=Path, required=True)
    reset.add_argument("--yes", action="store_true", help="confirm: every stored reading is lost")
    reset.add_argument(
        "--depot",
        action="store_true",
        help="also destroy the hub's identity (signing and TLS keys): a hub leaving service",
    )
    reset.add_argument("--json", action="store_true", help="print what was removed as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``homehub factory-reset``."""
    from agent import logs
    from agent.hub_reset import load_for_reset, reset_hub

    if not args.yes:
        raise UsageError("--yes", "required: a factory reset makes every stored reading unreadable")
    cfg = load_for_reset(args.config)
    logs.configure("error")  # the report is the output
    report = reset_hub(cfg, depot=args.depot)
    for removal in report.removals:
        if removal.failed:
            sys.stderr.write(f"homehub: factory-reset: {removal.what}: {removal.result}\n")
    if args.json:
        body: dict[str, Any] = asdict(report.crypto) if report.crypto is not None else {}
        body["removed"] = [asdict(r) for r in report.removals]
        body["nothing_left"] = report.nothing_left
        sys.stdout.write(json.dumps(body) + "\n")
    else:
        table = Table(title="homehub factory-reset")
        for column in ("what", "where", "result"):
            table.add_column(column, overflow="fold")
        for r in report.removals:
            style = "bold red" if r.failed else ("green" if r.removed_something else "")
            table.add_row(Text(r.what), Text(r.where), Text(r.result, style=style))
        console = Console(highlight=False)
        console.print(table)
        if report.nothing_left:
            console.print("nothing left: the hub was already reset")
    return 1 if report.failed else 0
