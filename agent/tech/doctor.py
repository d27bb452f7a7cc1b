"""``homehub doctor``: not built yet (issue 11)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.errors import UsageError


def add_parser(sub: Any) -> None:
    """Add the ``doctor`` subcommand to the ``homehub`` parser."""
    sub.add_parser("doctor", help="(not built yet)")


def run(args: argparse.Namespace) -> int:
    """Run ``homehub doctor``."""
    raise UsageError("doctor", "not built yet")
