"""``homehub status``: outbox depth and age, refused and damaged records, storage use and
the cellular link, as JSON (agent/daemon.py ``status``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.tech.output import json_default


def add_parser(sub: Any) -> None:
    """Add the ``status`` subcommand to the ``homehub`` parser."""
    status = sub.add_parser("status", help="outbox state as JSON")
    status.add_argument("--config", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    """Run ``homehub status``."""
    from agent import config, daemon

    cfg = config.load(args.config)
    sys.stdout.write(json.dumps(daemon.status(cfg), default=json_default) + "\n")
    return 0
