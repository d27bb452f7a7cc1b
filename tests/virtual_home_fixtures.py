"""Scaffolding the end-to-end tests share: the virtual home's agent configuration with the
planted PHI canaries, and collecting verified readings at the receiver within a deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_home import write_agent_config
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries

ARRIVAL_TIMEOUT_S: Final = 30.0
"""Cold start of the agent process, scan, connect and the transfer take ~2 s here."""

_EXAMPLE_KIND: Final = 'kind = "blood_pressure"'


def canary_agent_config(
    tmp_path: Path,
    radio: VirtualRadio,
    pki: DevPki,
    port: int,
    *,
    kind: str = "blood_pressure",
    label: str | None = None,
) -> Path:
    """The virtual home's agent configuration, for the canary patient and device address,
    with the one allowlisted device of ``kind`` (and ``label``, when given)."""
    path = write_agent_config(
        tmp_path,
        stack=radio.stack,
        broker_port=port,
        pki=pki,
        hub_id=pki.hub_id,
        patient_id=phi_canaries.PATIENT_ID,
        device_address=phi_canaries.DEVICE_ADDRESS,
        quiet_period_s=1.0,
        cycle_interval_s=0.5,
    )
    if kind == "blood_pressure" and label is None:
        return path
    text = path.read_text()
    assert text.count(_EXAMPLE_KIND) == 1
    text = text.replace(_EXAMPLE_KIND, f'kind = "{kind}"')
    if label is not None:
        text = text.replace('label = "cuff"', f'label = "{label}"')
    path.write_text(text)
    return path


async def collect(
    receiver: Receiver, count: int, timeout_s: float | None = ARRIVAL_TIMEOUT_S
) -> list[VerifiedReading]:
    """The next ``count`` verified readings, in arrival order (None: the caller bounds it)."""
    got: list[VerifiedReading] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            got.append(await receiver.readings.get())
    return got
