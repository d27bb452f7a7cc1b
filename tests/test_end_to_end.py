"""The whole chain: emulated cuff → homehub run (a real process) → TLS mosquitto → receiver.

Nothing is mocked: Bumble virtual controllers linked in software carry the BLE traffic, the
agent runs as its own process with a generated configuration, mosquitto runs with TLS and
per-run client certificates, and the reference receiver verifies every envelope. The test
identities are PHI canaries (tests/phi_canaries.py): none of them may show up in any log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.outbox import peek_counts
from agent.payload import CONTENT_TYPE
from drivers.device_information import SystemId
from hil.broker import Broker
from hil.emulators.cuff import BpReading, EmulatedCuff
from hil.emulators.encoding import DateTime
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import expected, summarize
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import agent_process, stop
from tests.virtual_home_fixtures import ARRIVAL_TIMEOUT_S, canary_agent_config, collect

pytestmark = pytest.mark.timeout(90)

SYSTEM_ID: Final = (0x0012FFFE34, 0xCA7A00)
"""(Manufacturer Identifier, OUI): the canonical EUI-64 is CA-7A-00-00-12-FF-FE-34."""
SYSTEM_ID_EUI64: Final = SystemId(*SYSTEM_ID).eui64.replace("-", "")
phi_canaries.plant("system id (EUI-64)", SYSTEM_ID_EUI64)

CANARY_DIS: Final = DeviceInformation(
    serial_number=phi_canaries.DEVICE_SERIAL,
    system_id=SYSTEM_ID,
)

READINGS: Final = (
    BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71),
    BpReading(141, 88, 106, time_stamp=DateTime(2026, 11, 21, 19, 2, 0), pulse_rate=77),
    BpReading(119, 76, 90, time_stamp=DateTime(2026, 11, 22, 8, 3, 5), pulse_rate=64),
)
LATER: Final = (  # in the past: a reading after its receipt would be flagged, effective = receipt
    BpReading(131, 84, 99, time_stamp=DateTime(2026, 11, 22, 19, 40, 0), pulse_rate=70),
    BpReading(126, 80, 95, time_stamp=DateTime(2026, 11, 22, 21, 15, 30), pulse_rate=66),
)


@dataclass
class Home:
    """A running virtual home around one agent configuration."""

    radio: VirtualRadio
    cuff: EmulatedCuff
    config: Path
    state_db: Path


def _hub_public_key(pki: DevPki) -> ec.EllipticCurvePublicKey:
    cert = x509.load_pem_x509_certificate(pki.hub_cert.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


async def _home(
    radio: VirtualRadio, tmp_path: Path, pki: DevPki, port: int, readings: tuple[BpReading, ...]
) -> Home:
    cuff = await radio.add_cuff(readings, address=phi_canaries.DEVICE_ADDRESS, info=CANARY_DIS)
    config = canary_agent_config(tmp_path, radio, pki, port)
    return Home(radio, cuff, config, tmp_path / "state" / "outbox.db")


class TestChain:
    async def test_readings_arrive_exact_signed_identified_and_outbox_empties(
        self,
        tmp_path: Path,
        dev_pki: DevPki,
        receiver: Receiver,
        broker: Broker,
        request: pytest.FixtureRequest,
    ) -> None:
        """Every cuff reading arrives once, exact, validly signed, with its IG identifier."""
        async with VirtualRadio() as radio:
            home = await _home(radio, tmp_path, dev_pki, broker.port, READINGS)
            async with agent_process(home.config, request.node.nodeid) as agent:
                got = await collect(receiver, len(READINGS))
                async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                    await home.cuff.wait_for_confirmations(len(READINGS))
                assert 0 == await stop(agent)

        by_time = sorted(got, key=lambda r: summarize(r).effective)
        assert [expected(r) for r in READINGS] == [summarize(r) for r in by_time]
        # Independent check of every signature against the hub's certificate.
        public_key = _hub_public_key(dev_pki)
        for reading in got:
            message = cose.verify1(reading.envelope, public_key, expected_content_type=CONTENT_TYPE)
            assert cose.key_id(public_key) == message.kid
            assert -7 == message.alg
        # The PHD IG conditional-create identifier: SYSID-patient-MDC-device time (seconds
        # since 2000-01-01: 2026-11-20 07:45:10, 2026-11-21 19:02:00, 2026-11-22 08:03:05);
        # the payload id is the hub identifier (the reading's identity).
        panels = [r.payload["fhir"]["entry"][0]["resource"] for r in by_time]
        assert [
            f"{SYSTEM_ID_EUI64}-{phi_canaries.PATIENT_ID}-150020-848475910",
            f"{SYSTEM_ID_EUI64}-{phi_canaries.PATIENT_ID}-150020-848602920",
            f"{SYSTEM_ID_EUI64}-{phi_canaries.PATIENT_ID}-150020-848649785",
        ] == [p["identifier"][0]["value"] for p in panels]
        assert [p["identifier"][1]["value"] for p in panels] == [r.id for r in by_time]
        assert [1, 2, 3] == sorted(r.seq for r in got)
        assert {dev_pki.hub_id} == {r.hub_id for r in got}
        assert 0 == receiver.stats.rejected_total
        counts = peek_counts(home.state_db)
        assert (0, 0) == (counts.pending, counts.refused)
        assert () == home.cuff.stored  # the cuff forgot what it delivered

    async def test_broker_stopped_mid_run_every_reading_arrives_once(
        self,
        tmp_path: Path,
        dev_pki: DevPki,
        persistent_broker: Broker,
        request: pytest.FixtureRequest,
    ) -> None:
        """Readings taken while the broker is down are delivered after it returns, none twice."""
        broker = persistent_broker
        async with Receiver.for_dev_pki(dev_pki, broker.port) as receiver, VirtualRadio() as radio:
            async with asyncio.timeout(10):
                await receiver.subscribed.wait()
            home = await _home(radio, tmp_path, dev_pki, broker.port, READINGS)
            async with agent_process(home.config, request.node.nodeid):
                first = await collect(receiver, len(READINGS))
                await broker.astop()
                for reading in LATER:
                    await home.cuff.add_reading(reading)
                async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                    await home.cuff.wait_for_confirmations(len(READINGS) + len(LATER))
                await broker.astart()
                later = await collect(receiver, len(LATER))
                # Anything still in flight has had its chance: nothing else may arrive.
                assert receiver.readings.empty()

        everything = [*first, *later]
        ids = [r.id for r in everything]
        assert len(set(ids)) == len(ids) == len(READINGS) + len(LATER)
        wanted = sorted((expected(r) for r in (*READINGS, *LATER)), key=lambda s: s.effective)
        assert wanted == sorted((summarize(r) for r in everything), key=lambda s: s.effective)
        assert 0 == receiver.stats.conflicting_duplicates
        assert 0 == receiver.stats.rejected_total
        counts = peek_counts(home.state_db)
        assert (0, 0) == (counts.pending, counts.refused)
