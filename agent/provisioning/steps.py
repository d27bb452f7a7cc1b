"""The provisioning steps, what each one reports, and how a failure names its step and fix.

Sans-I/O: the step plan is data, so the command's output, its JSON and the technician's guide
(docs/provisioning.md) name the same steps with the same numbers.

A failed step raises one of two errors, both carrying the step, what was wrong and the fix:
:class:`ProvisionRefusedError` (a :class:`~agent.errors.LocalError`: the input or the hub's
files are wrong, exit code 2) and :class:`ProvisionFailedError` (a
:class:`~agent.errors.TransportError`: the broker or the platform did not do its part, exit
code 1). Neither message ever holds a patient reference or key material.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from agent.errors import LocalError, TransportError


class Step(enum.Enum):
    """The steps in the order they run: ``(number, name, title)``."""

    IDENTITY = (1, "identity", "hub id")
    KEY = (2, "key", "hub key")
    CSR = (3, "csr", "certificate request")
    CERTIFICATE = (4, "certificate", "import certificate")
    PLATFORM = (5, "platform", "platform profile and endpoint")
    PATIENT = (6, "patient", "patient reference")
    CONFIGURATION = (7, "configuration", "write configuration")
    HANDSHAKE = (8, "handshake", "TLS handshake")
    CHECK = (9, "check", "signed check")

    @property
    def number(self) -> int:
        return int(self.value[0])

    @property
    def label(self) -> str:
        """The step's name in JSON (``"certificate"``)."""
        return str(self.value[1])

    @property
    def title(self) -> str:
        """How a person reads it: ``step 4 (import certificate)``."""
        return f"step {self.number} ({self.value[2]})"


class Outcome(enum.StrEnum):
    """What a step did. The ones in :data:`UNCHANGED` changed nothing on the hub."""

    CREATED = "created"
    KEPT = "kept"
    ROTATED = "rotated"
    WRITTEN = "written"
    IMPORTED = "imported"
    UNCHANGED = "unchanged"
    SET = "set"
    BOUND = "bound"
    PENDING = "pending"
    CHECKED = "checked"
    SKIPPED = "skipped"


UNCHANGED = frozenset({Outcome.KEPT, Outcome.UNCHANGED, Outcome.CHECKED, Outcome.SKIPPED})
"""Outcomes of a step that wrote nothing (a second run reports only these)."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step's line: what it did and a detail without PHI or key material."""

    step: Step
    outcome: Outcome
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.number,
            "name": self.step.label,
            "result": self.outcome.value,
            "detail": self.detail,
        }


class _StepFailure:
    """The fields both provisioning errors carry."""

    step: Step
    reason: str
    fix: str

    def _describe(self) -> str:
        return f"{self.step.title}: {self.reason}: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.number,
            "name": self.step.label,
            "reason": self.reason,
            "fix": self.fix,
        }


class ProvisionRefusedError(_StepFailure, LocalError):
    """A step refused its input or the hub's files (exit code 2).

    Attributes:
        step: the step that refused.
        reason: what was wrong and where (a file, an argument, a bundle field).
        fix: what the technician does about it.
    """

    def __init__(self, step: Step, reason: str, fix: str) -> None:
        self.step = step
        self.reason = reason
        self.fix = fix
        super().__init__(self._describe())


class ProvisionFailedError(_StepFailure, TransportError):
    """A step failed at run time: the broker unreachable or refusing, the platform silent or
    answering wrongly (exit code 1).

    Attributes:
        step: the step that failed.
        reason: what happened.
        fix: what the technician checks or does.
    """

    def __init__(self, step: Step, reason: str, fix: str) -> None:
        self.step = step
        self.fix = fix
        super().__init__("provisioning", reason)
        self.reason = reason
        self.args = (self._describe(),)

    def __str__(self) -> str:
        return self._describe()


ProvisionError = ProvisionRefusedError | ProvisionFailedError


__all__ = [
    "UNCHANGED",
    "Outcome",
    "ProvisionError",
    "ProvisionFailedError",
    "ProvisionRefusedError",
    "Step",
    "StepResult",
]
