"""``homehub doctor``'s results and how they are shown (sans-I/O but for the console given).

A check ends in one :class:`CheckResult`: its name, :class:`Outcome`, a one-line finding and,
for a failure, the fix a technician types or does. The command prints them as a rich table or,
with ``--json``, as a list of objects, and exits with the number of failures, capped at
:data:`MAX_EXIT_CODE` (an exit code is one byte, and 2 must not be mistaken for "bad input"
by a script that only counts: it reads the JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

MAX_EXIT_CODE: Final = 100


class Outcome(StrEnum):
    """What a check concluded."""

    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    SKIP = "skip"
    """Not checked, for the reason given as the finding (no modem configured, no
    systemd-analyze, a configuration that does not load)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the checklist.

    Attributes:
        check: the check's name (``"key file: data key"``).
        outcome: pass, fail or skip.
        finding: what was seen, one line, never a reading, a patient id, a full device
            address or key material.
        fix: what to do about a failure (``"chmod 600 /etc/homehub/keys/data.key"``);
            ``None`` unless failed.
    """

    check: str
    outcome: Outcome
    finding: str
    fix: str | None = None

    @classmethod
    def passed(cls, check: str, finding: str) -> CheckResult:
        return cls(check, Outcome.PASS, finding)

    @classmethod
    def failed(cls, check: str, finding: str, fix: str) -> CheckResult:
        return cls(check, Outcome.FAIL, finding, fix)

    @classmethod
    def skipped(cls, check: str, reason: str) -> CheckResult:
        return cls(check, Outcome.SKIP, reason)

    def to_dict(self) -> dict[str, str | None]:
        """The JSON object of ``--json``: check, result, finding, fix."""
        return {
            "check": self.check,
            "result": self.outcome.value,
            "finding": self.finding,
            "fix": self.fix,
        }


def exit_code(results: Sequence[CheckResult]) -> int:
    """The number of failures, at most :data:`MAX_EXIT_CODE`."""
    return min(MAX_EXIT_CODE, sum(1 for r in results if r.outcome is Outcome.FAIL))


def to_json(results: Sequence[CheckResult]) -> str:
    """One line: a JSON list of :meth:`CheckResult.to_dict` objects, in check order."""
    return json.dumps([r.to_dict() for r in results])


_STYLE: Final = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.SKIP: "yellow"}


def print_table(results: Sequence[CheckResult], console: Console) -> None:
    """The checklist as a table (check, result, finding, fix) and a summary line."""
    table = Table(title="homehub doctor", show_lines=False)
    for column in ("check", "result", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for r in results:
        # Text, not markup: findings and fixes name "[modem]" and "[outbox]" sections.
        table.add_row(
            Text(r.check),
            Text(r.outcome.value, style=_STYLE[r.outcome]),
            Text(r.finding),
            Text(r.fix or ""),
        )
    console.print(table)
    failures = sum(1 for r in results if r.outcome is Outcome.FAIL)
    skipped = sum(1 for r in results if r.outcome is Outcome.SKIP)
    console.print(f"{failures} failed, {skipped} skipped, {len(results)} checks")
