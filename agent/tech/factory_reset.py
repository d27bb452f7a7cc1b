"""``homehub factory-reset``: crypto-erase (agent/keys/reset.py): destroy the data key, the
KEK and the outbox. Stop the daemon first."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.errors import UsageError


def add_parser(sub: Any) -> None:
    """Add the ``factory-reset`` subcommand to the ``homehub`` parser."""
    reset = sub.add_parser(
        "factory-reset", help="destroy the data key, the KEK and the outbox (stop the daemon first)"
    )
    reset.add_argument("--config", type=Path, required=True)
    reset.add_argument("--yes", action="store_true", help="confirm: every stored reading is lost")


def run(args: argparse.Namespace) -> int:
    """Run ``homehub factory-reset``."""
    from agent import config
    from agent.keys.reset import factory_reset

    if not args.yes:
        raise UsageError("--yes", "required: a factory reset makes every stored reading unreadable")
    cfg = config.load(args.config)
    sys.stdout.write(json.dumps(asdict(factory_reset(cfg))) + "\n")
    return 0
