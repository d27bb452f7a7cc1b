"""What ``homehub provision`` prints: one row per step as it ends (rich), or one JSON object.

Rows go out as each step ends, so the technician sees the run advance (step 9 waits for the
platform: its row comes last); a failure is the failed step's row and its fix. No row or
JSON field ever holds a patient reference or key material: the steps' details are written
without them (agent/provisioning/runner.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from rich.console import Console
from rich.markup import escape

from agent.provisioning.steps import (
    UNCHANGED,
    Outcome,
    ProvisionFailedError,
    ProvisionRefusedError,
    Step,
    StepResult,
)

_STEP_WIDTH: Final = max(len(step.value[2]) for step in Step)
_RESULT_WIDTH: Final = max(len(outcome.value) for outcome in Outcome)


class StepPrinter:
    """Prints each step's row on stdout (or collects them for ``--json``)."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.results: list[StepResult] = []
        self._console = Console(file=sys.stdout, highlight=False, soft_wrap=True)

    def show(self, result: StepResult) -> None:
        """One step ended: its row (the header before the first)."""
        self.results.append(result)
        if self.json_mode:
            return
        if len(self.results) == 1:
            self._row("#", "step", "result", "detail", "bold")
        changed = result.outcome not in UNCHANGED and result.outcome is not Outcome.PENDING
        style = "yellow" if result.outcome is Outcome.PENDING else "green" if changed else ""
        self._row(
            str(result.step.number),
            result.step.value[2],
            result.outcome.value,
            result.detail,
            style,
        )

    def failed(self, exc: ProvisionRefusedError | ProvisionFailedError) -> None:
        """The run stopped at ``exc.step``: its row, and the fix below it."""
        if self.json_mode:
            self._emit(ok=False, failed=exc.to_json())
            return
        if not self.results:
            self._row("#", "step", "result", "detail", "bold")
        self._row(str(exc.step.number), exc.step.value[2], "failed", exc.reason, "red")
        self._console.print(f"{'':>3}  fix: {escape(exc.fix)}")

    def done(self, results: list[StepResult]) -> None:
        """Every step ran: one closing line (or the JSON object)."""
        if self.json_mode:
            self._emit(ok=True, failed=None)
            return
        changed = sum(1 for r in results if r.outcome not in UNCHANGED | {Outcome.PENDING})
        if not _complete(results):
            closing = "[yellow]not finished[/yellow]: see the pending or skipped steps"
        elif changed:
            closing = f"[green]provisioned[/green]: {changed} step(s) changed the hub"
        else:
            closing = "[green]provisioned[/green]: nothing changed"
        self._console.print(closing)
        if _complete(results):
            # The unit starts only once the hub holds its certificate (ConditionPathExists):
            # after a first provisioning nothing else starts it.
            self._console.print("next: systemctl start homehub (then: homehub status)")

    def _row(self, number: str, step: str, result: str, detail: str, style: str) -> None:
        cells = f"{number:>3}  {step:<{_STEP_WIDTH}}  {result:<{_RESULT_WIDTH}}"
        cells = f"[{style}]{escape(cells)}[/{style}]" if style else escape(cells)
        self._console.print(f"{cells}  {escape(detail)}")

    def _emit(self, *, ok: bool, failed: dict[str, Any] | None) -> None:
        body = {
            "ok": ok,
            "complete": ok and _complete(self.results),
            "changed": any(r.outcome not in UNCHANGED for r in self.results),
            "steps": [r.to_json() for r in self.results],
            "failed": failed,
        }
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
        sys.stdout.flush()


def _complete(results: list[StepResult]) -> bool:
    """Every step through the check ran and none waits (pending) or was skipped."""
    return (
        bool(results)
        and results[-1].step is Step.CHECK
        and all(r.outcome not in (Outcome.PENDING, Outcome.SKIPPED) for r in results)
    )


__all__ = ["StepPrinter"]
