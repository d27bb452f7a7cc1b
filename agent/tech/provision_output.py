"""What ``homehub provision`` prints: a row per step as it ends (rich), or one JSON object.

Rows go out as each step ends, so a technician sees the run advance (step 9 waits for the
platform: its row comes last). No row or JSON field ever holds a patient reference or key
material: the steps' details are written without them (agent/provisioning/runner.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from agent.provisioning.steps import (
    UNCHANGED,
    ProvisionFailedError,
    ProvisionRefusedError,
    StepResult,
)

_STYLE: Final = {True: "green", False: "yellow"}
_WIDTHS: Final = (3, 40, 10)


class StepPrinter:
    """Prints each step's row on stdout (or collects them for ``--json``)."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.results: list[StepResult] = []
        self._console = Console(file=sys.stdout, highlight=False, soft_wrap=True)

    def show(self, result: StepResult) -> None:
        self.results.append(result)
        if self.json_mode:
            return
        table = Table(show_header=not self._shown_header(), box=None, pad_edge=False)
        table.add_column("#", width=_WIDTHS[0], justify="right")
        table.add_column("step", width=_WIDTHS[1] - 12)
        table.add_column("result", width=_WIDTHS[2])
        table.add_column("detail", overflow="fold")
        style = _STYLE[result.outcome in UNCHANGED]
        table.add_row(
            str(result.step.number),
            result.step.value[2],
            f"[{style}]{result.outcome.value}[/{style}]",
            result.detail,
        )
        self._console.print(table)
        sys.stdout.flush()

    def _shown_header(self) -> bool:
        return len(self.results) > 1

    def failed(self, exc: ProvisionRefusedError | ProvisionFailedError) -> None:
        if self.json_mode:
            self._emit(ok=False, failed=exc.to_json())
            return
        self._console.print(
            f"[red]{exc.step.number:>3}[/red]  {exc.step.value[2]}  [red]failed[/red]  {exc.reason}"
        )
        self._console.print(f"     fix: {exc.fix}", markup=False)

    def done(self, results: list[StepResult]) -> None:
        if self.json_mode:
            self._emit(ok=True, failed=None)
            return
        changed = sum(1 for r in results if r.outcome not in UNCHANGED)
        self._console.print(
            f"provisioned: {changed} step(s) changed the hub"
            if changed
            else "provisioned: nothing changed"
        )

    def _emit(self, *, ok: bool, failed: dict[str, Any] | None) -> None:
        body = {
            "ok": ok,
            "steps": [r.to_json() for r in self.results],
            "changed": any(r.outcome not in UNCHANGED for r in self.results),
            "failed": failed,
        }
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
        sys.stdout.flush()


__all__ = ["StepPrinter"]
