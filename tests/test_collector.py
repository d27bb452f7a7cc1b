"""The advertisement-driven collector in the daemon's own Hub (issue 8, "Collection driven by
advertisements" and "Security").

Each test runs :class:`agent.daemon.Hub` with its BLE collector on the Bumble virtual radio
(emulated cuff, glucometer, oximeter; tests/conftest.py), its real encrypted outbox, the
TLS mosquitto and the reference receiver. Nothing sleeps to synchronise: every wait is for
a condition (a reading at the receiver, an emulator's event) under a timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest
from structlog.testing import capture_logs

from agent.ble import identity
from agent.ble.gatt_session import DisValues, device_facts
from agent.outbox import peek_counts
from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, example_records
from hil.emulators.oximeter import EmulatedOximeter, example_spot_checks
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import expected, summarize
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.collector_home import (
    CUFF_ADDRESS,
    WAIT_S,
    arrive,
    cuff_entry,
    events_named,
    hub_config,
    running,
)
from tests.test_end_to_end_glucose import expected as expected_glucose
from tests.test_end_to_end_glucose import seen as seen_glucose

pytestmark = pytest.mark.timeout(120)

METER_ADDRESS: Final = "F0:00:00:00:20:01"
OXIMETER_ADDRESS: Final = "F0:00:00:00:30:01"
STRANGER_ADDRESS: Final = "F0:00:00:00:99:99"

CUFF_INFO: Final = DeviceInformation(
    serial_number=phi_canaries.DEVICE_SERIAL, system_id=(0x12FFFE34F0, 0xCA7A00)
)
IMPOSTOR_INFO: Final = DeviceInformation(serial_number="SN-0000-6666", system_id=(0x1, 0x2))

READING: Final = BpReading(128, 82, 97, pulse_rate=71, time_stamp=DateTime(2026, 11, 30, 8, 0, 0))
LATER: Final = BpReading(131, 84, 99, pulse_rate=70, time_stamp=DateTime(2026, 11, 30, 20, 0, 0))


async def test_a_silent_device_never_delays_another(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """Three devices; the glucometer and the oximeter are switched off (listed first, each
    with a 20 s scan timeout: visited in turn they would outlast the cuff's window). The cuff
    measures and advertises for 30 s: its reading reaches the platform inside that window.
    Then the glucometer comes on and syncs: every record arrives once, values exact."""
    async with VirtualRadio() as radio:
        cfg = hub_config(
            tmp_path,
            radio,
            dev_pki,
            broker,
            [
                {"kind": "glucose", "address": METER_ADDRESS, "label": "meter"},
                {"kind": "pulse_oximeter", "address": OXIMETER_ADDRESS, "label": "oximeter"},
                cuff_entry(),
            ],
        )
        async with running(cfg) as hub:
            cuff = await radio.add_cuff(
                [], address=CUFF_ADDRESS, info=CUFF_INFO, advertise_for_s=30.0
            )
            await cuff.add_reading(READING)
            (bp,) = await arrive(receiver, 1)
            assert cuff.windows_missed == 0
            assert cuff.connections >= 1

            device = await radio.add_peripheral_device(METER_ADDRESS, "glucometer")
            records = example_records()
            meter = Glucometer(device, records)
            await meter.start()
            try:
                synced = await arrive(receiver, len(records))
            finally:
                await meter.stop()
            assert hub.stored == 1 + len(records)
            assert hub.security_events == 0

    assert summarize(bp) == expected(READING)
    assert sorted((seen_glucose(r) for r in synced), key=lambda s: s.effective) == sorted(
        (expected_glucose(r) for r in records), key=lambda s: s.effective
    )
    assert len({r.id for r in [bp, *synced]}) == 1 + len(records)
    assert receiver.stats.rejected_total == 0
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (counts.pending, counts.refused) == (0, 0)


async def test_an_unknown_device_is_never_connected(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """A glucometer next door advertising GLS with records is never connected and yields
    nothing; it is reported once, by label; the allow-listed cuff is collected meanwhile."""
    async with VirtualRadio() as radio:
        stranger_device = await radio.add_peripheral_device(STRANGER_ADDRESS, "glucometer")
        stranger = Glucometer(stranger_device, example_records())
        await stranger.start()
        cfg = hub_config(tmp_path, radio, dev_pki, broker, [cuff_entry()])
        try:
            with capture_logs() as events:
                async with running(cfg) as hub:
                    cuff = await radio.add_cuff([READING], address=CUFF_ADDRESS, info=CUFF_INFO)
                    await arrive(receiver, 1)
                    await cuff.add_reading(LATER)
                    await arrive(receiver, 1)
                    assert hub.stored == 2
        finally:
            await stranger.stop()
    assert stranger.connections == 0
    assert stranger.requests == []
    seen = events_named(events, "ble_unknown_device_seen")
    assert [(e["device"], e["kinds"]) for e in seen] == [("..:99:99", ["glucose"])]
    assert receiver.readings.empty()


@pytest.mark.parametrize("pinned_by", ["config", "first_contact"])
async def test_an_impostor_at_a_known_address_yields_nothing(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver, pinned_by: str
) -> None:
    """The cuff's identity is pinned (by ``homehub pair`` into the configuration, or by the
    daemon at the first contact). A second device at the cuff's address, with another serial
    and System ID and a reading of its own, yields zero readings and one ``security`` event;
    its reading is never even indicated to the hub."""
    entry = cuff_entry()
    if pinned_by == "config":
        values = CUFF_INFO.values()
        facts = device_facts(
            CUFF_ADDRESS,
            DisValues(
                manufacturer_name=values.get(0x2A29),
                model_number=values.get(0x2A24),
                serial_number=values.get(0x2A25),
                system_id=values.get(0x2A23),
            ),
            "..:12:34",
        )
        entry["identity"] = identity.identity_pin(facts)
    async with VirtualRadio() as radio:
        cfg = hub_config(tmp_path, radio, dev_pki, broker, [entry])
        with capture_logs() as events:
            async with running(cfg) as hub:
                cuff = await radio.add_cuff([READING], address=CUFF_ADDRESS, info=CUFF_INFO)
                await arrive(receiver, 1)
                await cuff.stop()

                impostor = await radio.add_cuff(
                    [LATER], address=CUFF_ADDRESS, info=IMPOSTOR_INFO, local_name="cuff"
                )
                async with asyncio.timeout(WAIT_S):
                    await hub.security_noticed.wait()
                assert impostor.connections == 1
                assert hub.stored == 1
    assert impostor.confirmed_values == []
    assert impostor.stored == (LATER,)
    security = events_named(events, "security")
    assert len(security) == 1
    assert security[0]["check"] == "identity"
    assert security[0]["source"] == pinned_by
    assert security[0]["device"] == "..:12:34"
    assert receiver.readings.empty()


async def test_an_impostor_without_the_bond_keys_yields_nothing(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """The glucometer bonds (Just Works) at its first contact and syncs. A second meter at
    the same address, without the keys, holding records of its own: the encryption with the
    stored bond fails, zero readings, one ``security`` event (check ``encryption``), and the
    stored bond is left exactly as it was (reliability-catalogue B5)."""
    records = example_records()
    async with VirtualRadio() as radio:
        cfg = hub_config(
            tmp_path,
            radio,
            dev_pki,
            broker,
            [{"kind": "glucose", "address": METER_ADDRESS, "label": "meter"}],
        )
        bonds = cfg.hub.state_dir / "bonds.json"
        with capture_logs() as events:
            async with running(cfg) as hub:
                device = await radio.add_peripheral_device(METER_ADDRESS, "glucometer")
                meter = Glucometer(device, records, require_encryption=True)
                await meter.start()
                await arrive(receiver, len(records))
                await meter.stop()
                bonded = bonds.read_bytes()

                device = await radio.add_peripheral_device(METER_ADDRESS, "glucometer")
                impostor = Glucometer(device, example_records(), require_encryption=True)
                await impostor.start()
                try:
                    async with asyncio.timeout(WAIT_S):
                        await hub.security_noticed.wait()
                finally:
                    await impostor.stop()
                assert hub.stored == len(records)
    assert bonds.read_bytes() == bonded
    assert impostor.requests == []
    security = events_named(events, "security")
    assert [(e["check"], e["device"]) for e in security] == [("encryption", "..:20:01")]
    assert receiver.readings.empty()


async def test_a_required_device_without_a_bond_is_not_paired_by_the_daemon(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """A cuff configured ``pairing = "required"`` that ``homehub pair`` never bonded: the
    daemon does not bond it, takes no reading, and raises one ``security`` event (``bond``)."""
    async with VirtualRadio() as radio:
        cfg = hub_config(tmp_path, radio, dev_pki, broker, [cuff_entry(pairing="required")])
        with capture_logs() as events:
            async with running(cfg) as hub:
                cuff = await radio.add_cuff([READING], address=CUFF_ADDRESS, info=CUFF_INFO)
                async with asyncio.timeout(WAIT_S):
                    await hub.security_noticed.wait()
                assert hub.stored == 0
    assert cuff.confirmed_values == []
    assert (
        not (cfg.hub.state_dir / "bonds.json").exists()
        or b"F0:CA" not in (cfg.hub.state_dir / "bonds.json").read_bytes().upper()
    )
    assert [e["check"] for e in events_named(events, "security")] == ["bond"]
    assert receiver.readings.empty()


async def test_one_slot_serves_every_device_in_turn(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """``ble.max_connections = 1`` with a cuff and an oximeter advertising at the same time
    (reliability-catalogue B10: adapter slots exhausted): no deadlock, each device's
    readings arrive once, one after the other."""
    spot_checks = example_spot_checks()
    async with VirtualRadio() as radio:
        cfg = hub_config(
            tmp_path,
            radio,
            dev_pki,
            broker,
            [
                cuff_entry(),
                {"kind": "pulse_oximeter", "address": OXIMETER_ADDRESS, "label": "oximeter"},
            ],
            max_connections=1,
        )
        async with running(cfg) as hub:
            device = await radio.add_peripheral_device(OXIMETER_ADDRESS, "oximeter")
            oximeter = EmulatedOximeter(device, spot_checks)
            await oximeter.start()
            cuff = await radio.add_cuff([READING, LATER], address=CUFF_ADDRESS, info=CUFF_INFO)
            try:
                got = await arrive(receiver, 2 + len(spot_checks))
            finally:
                await oximeter.stop()
            assert hub.stored == 2 + len(spot_checks)
    assert sorted(r.kind for r in got).count("observation") == len(got)
    assert len({r.id for r in got}) == len(got)
    assert cuff.stored == ()
    assert oximeter.stored == ()
    assert receiver.stats.rejected_total == 0
