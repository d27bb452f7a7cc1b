"""The HIL scenarios: the whole chain under faults on the virtual home (issue 12).

Each module declares one :class:`~hil.scenarios.base.Scenario` as ``SCENARIO``;
:data:`SCENARIOS` lists them in the order ``make hil`` runs them. ``python -m hil list``
shows them, ``python -m hil run NAME...`` runs some, ``python -m hil all`` every one
(``--quick``: the subset ``make test`` runs). hil/README.md says what each checks.
"""

from __future__ import annotations

from typing import Final

from hil.scenarios import (
    broker_restart,
    clock_2000,
    disk_full_outage,
    flapping_link,
    forged_receipt,
    glucose_cut_halfway,
    impostor_cuff,
    modem_registration,
    oximetry_night,
    power_cut_download,
    sigkill,
    simultaneous,
    unknown_neighbour,
    week_outage,
)
from hil.scenarios.base import Scenario

SCENARIOS: Final[tuple[Scenario, ...]] = (
    broker_restart.SCENARIO,
    sigkill.SCENARIO,
    impostor_cuff.SCENARIO,
    unknown_neighbour.SCENARIO,
    clock_2000.SCENARIO,
    simultaneous.SCENARIO,
    forged_receipt.SCENARIO,
    glucose_cut_halfway.SCENARIO,
    power_cut_download.SCENARIO,
    modem_registration.SCENARIO,
    flapping_link.SCENARIO,
    disk_full_outage.SCENARIO,
    week_outage.SCENARIO,
    oximetry_night.SCENARIO,
)


def by_name(name: str) -> Scenario:
    """The scenario called ``name`` (KeyError naming the known ones)."""
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    known = ", ".join(s.name for s in SCENARIOS)
    raise KeyError(f"no scenario {name!r}; known: {known}")
