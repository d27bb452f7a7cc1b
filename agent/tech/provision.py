"""``homehub provision``: not built yet (issue 11)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.errors import UsageError


def add_parser(sub: Any) -> None:
    """Add the ``provision`` subcommand to the ``homehub`` parser."""
    sub.add_parser("provision", help="(not built yet)")


def run(args: argparse.Namespace) -> int:
    """Run ``homehub provision``."""
    raise UsageError("provision", "not built yet")
