"""The whole chain for a pulse oximeter: emulated oximeter → homehub run → TLS mosquitto → receiver.

As tests/test_end_to_end.py, nothing mocked: Bumble virtual controllers, the agent as its own
process configured with ``kind = "pulse_oximeter"``, mosquitto with TLS, the verifying
reference receiver. The values at the receiver must equal what the oximeter sent: each
spot-check, and the first continuous sample (the session's thinning policy hands on one per
60 s; the others are dropped by design).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest

from agent.outbox import peek_counts
from drivers.device_information import SystemId
from hil.broker import Broker
from hil.emulators.encoding import DateTime
from hil.emulators.oximeter import (
    ContinuousSample,
    EmulatedOximeter,
    Features,
    SpotCheck,
    SupportedFeatures,
)
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import agent_process, stop
from tests.virtual_home_fixtures import ARRIVAL_TIMEOUT_S, canary_agent_config, collect

pytestmark = pytest.mark.timeout(90)

SYSTEM_ID: Final = (0x0012FFFE35, 0xCA7A00)
SYSTEM_ID_EUI64: Final = SystemId(*SYSTEM_ID).eui64.replace("-", "")
phi_canaries.plant("oximeter system id (EUI-64)", SYSTEM_ID_EUI64)

SPOT_CHECKS: Final = (
    SpotCheck(97, 64, timestamp=DateTime(2026, 11, 20, 7, 45, 10),
              pulse_amplitude_index=Decimal("4.2")),
    SpotCheck(Decimal("93.5"), 81, timestamp=DateTime(2026, 11, 21, 19, 2, 0)),
)  # fmt: skip
CONTINUOUS: Final = (
    ContinuousSample(95, 77, fast=(94, 78)),
    ContinuousSample(96, 76, fast=(96, 75)),
    ContinuousSample(96, 75, fast=(97, 74)),
)
MDC_SPO2, MDC_PULSE, MDC_PAI = "150456", "149530", "150448"
MODALITY_SPOT, MODALITY_FAST = "150588", "150580"


def _values(reading: VerifiedReading) -> dict[tuple[str, str | None], str]:
    """(MDC code, modality) → value text of every numeric Observation in the reading."""
    out: dict[tuple[str, str | None], str] = {}
    for entry in reading.payload["fhir"]["entry"]:
        resource: dict[str, Any] = entry["resource"]
        if resource["resourceType"] != "Observation" or "valueQuantity" not in resource:
            continue
        modality = None
        for component in resource.get("component", []):
            if component["code"]["coding"][0]["code"] == "68193":
                modality = component["valueCodeableConcept"]["coding"][0]["code"]
        key = (resource["code"]["coding"][0]["code"], modality)
        assert key not in out
        out[key] = str(resource["valueQuantity"]["value"])
    return out


async def test_oximeter_readings_arrive_exact(
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """Both spot-checks and the first continuous sample arrive once, exact, IG-identified."""
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(phi_canaries.DEVICE_ADDRESS, "oximeter")
        oximeter = EmulatedOximeter(
            device,
            SPOT_CHECKS,
            CONTINUOUS,
            info=DeviceInformation(
                model_number="HH-PLX-1",
                serial_number=phi_canaries.DEVICE_SERIAL,
                system_id=SYSTEM_ID,
            ),
            continuous_interval_s=0.05,
        )
        await oximeter.start()
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port, kind="pulse_oximeter")
        async with agent_process(config, request.node.nodeid) as agent:
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                got = await collect(receiver, 3, timeout_s=None)
                await oximeter.spot_checks_confirmed.wait()
                await oximeter.continuous_done.wait()
            assert 0 == await stop(agent)

    prefix = f"{SYSTEM_ID_EUI64}-{phi_canaries.PATIENT_ID}-{MDC_SPO2}-"
    by_id = {_ig_id(r): r for r in got}
    spot_ids = [prefix + "848475910-150588", prefix + "848602920-150588"]  # seconds since 2000
    assert set(spot_ids) <= by_id.keys()
    assert _values(by_id[spot_ids[0]]) == {
        (MDC_SPO2, MODALITY_SPOT): "97",
        (MDC_PULSE, MODALITY_SPOT): "64",
        (MDC_PAI, None): "4.2",
    }
    assert _values(by_id[spot_ids[1]]) == {
        (MDC_SPO2, MODALITY_SPOT): "93.5",
        (MDC_PULSE, MODALITY_SPOT): "81",
    }
    (continuous,) = [r for r in got if _ig_id(r) not in spot_ids]
    assert continuous.id.startswith(prefix + "sha256:")  # content and receipt time
    assert _values(continuous) == {
        (MDC_SPO2, None): "95",
        (MDC_PULSE, None): "77",
        (MDC_SPO2, MODALITY_FAST): "94",
        (MDC_PULSE, MODALITY_FAST): "78",
    }
    assert [1, 2, 3] == sorted(r.seq for r in got)
    assert 0 == receiver.stats.rejected_total
    assert receiver.readings.empty()
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (0, 0) == (counts.pending, counts.refused)
    assert () == oximeter.stored


def _ig_id(reading: Any) -> str:
    """The primary Observation's first identifier (the IG's conditional-create one, when the
    reading has a trusted time stamp; otherwise the hub's)."""
    value: str = reading.payload["fhir"]["entry"][0]["resource"]["identifier"][0]["value"]
    return value


STORED: Final = (
    SpotCheck(96, 61, timestamp=DateTime(2026, 11, 18, 8, 0, 0), measurement_status=0x0200),
    SpotCheck(94, 66, timestamp=DateTime(2026, 11, 19, 8, 0, 0), measurement_status=0x0200),
)


async def test_stored_records_reported_every_session_arrive_once(
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """PLXS RACP reports the whole store each session; each stored reading arrives once."""
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(phi_canaries.DEVICE_ADDRESS, "oximeter")
        oximeter = EmulatedOximeter(
            device,
            stored_records=STORED,
            features=Features(
                SupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE
                | SupportedFeatures.SPOT_CHECK_TIMESTAMP
            ),
            info=DeviceInformation(serial_number=phi_canaries.DEVICE_SERIAL, system_id=SYSTEM_ID),
        )
        await oximeter.start()
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port, kind="pulse_oximeter")
        async with agent_process(config, request.node.nodeid) as agent:
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                got = await collect(receiver, len(STORED), timeout_s=None)
                # Two more complete sessions: the same records reported twice more.
                while len(oximeter.racp_responses) < 3:
                    await oximeter.disconnected.wait()
                    oximeter.disconnected.clear()
            assert 0 == await stop(agent)

    prefix = f"{SYSTEM_ID_EUI64}-{phi_canaries.PATIENT_ID}-{MDC_SPO2}-"
    assert sorted(_ig_id(r) for r in got) == [  # 2026-11-18/19 08:00:00, seconds since 2000
        prefix + "848304000-150588",
        prefix + "848390400-150588",
    ]
    assert oximeter.racp_responses[:3] == [bytes.fromhex("06000101")] * 3
    assert len(oximeter.confirmed_values) >= 3 * len(STORED)
    # Everything the agent stored was delivered, and no copy was queued behind it.
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (0, 0) == (counts.pending, counts.refused)
    assert receiver.readings.empty()
    assert 0 == receiver.stats.conflicting_duplicates
