"""The patient status indicator: an LED (or LED ring) saying whether the patient must act.

:func:`state_of` folds what the daemon knows (:class:`HubCondition`) into one of five states
(:class:`IndicatorState`, rules in :mod:`agent.indicator.rules`); :func:`open_indicator`
gives the configured backend, whose ``show()`` the daemon calls as the condition changes.
docs/indicator.md tells the patient and the care team what each state means.
"""

from __future__ import annotations

from agent.indicator.backends import (
    Indicator,
    LogIndicator,
    NullIndicator,
    open_indicator,
    wiring_of,
)
from agent.indicator.rules import OFFLINE_ATTENTION_S, HubCondition, IndicatorState, state_of

__all__ = [
    "OFFLINE_ATTENTION_S",
    "HubCondition",
    "Indicator",
    "IndicatorState",
    "LogIndicator",
    "NullIndicator",
    "open_indicator",
    "state_of",
    "wiring_of",
]
