"""Bonds on the Bumble stack: persisted in the state directory, the pairing policy (who may
be bonded, by whom), and an impersonator at a bonded address (reliability-catalogue B5)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Final

import pytest
from bleak import BleakClient

from agent.ble.bumble_backend import BumbleLinkSecurityError, BumbleNotBondedError
from agent.ble.bumble_host import PairingPolicy
from agent.ble.stack import BleStack, first_contact_pairing
from agent.config import DeviceConfig
from agent.errors import KeyMaterialError
from hil.emulators.pairing import EmulatedPairing
from hil.virtual_radio import VirtualRadio
from tests.pairing_home import WAIT_S, find, hci_client_watch, start_meter
from tests.phi_canaries import DEVICE_ADDRESS

HCI_PIN_OR_KEY_MISSING: Final = 0x06


async def connect(ble: BleStack, *, pair: bool) -> BleakClient:
    """Connect to the meter through bleak with ``pair``."""
    client = BleakClient(await find(ble), timeout=WAIT_S, pair=pair, backend=ble.client_backend)
    await client.connect()
    return client


class TestPersistedBonds:
    """Bumble's JSON key store in the state directory."""

    async def test_bond_survives_a_restart_without_pairing_again(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """A bond made once is in bonds.json (0600, directory 0700); a new stack opened on
        the same file encrypts with it and the meter sees no second pairing."""
        bonds = tmp_path / "state" / "bonds.json"
        meter = await start_meter(radio)
        async with BleStack.open(radio.stack, bonds_path=bonds) as ble:
            client = await connect(ble, pair=True)
            await client.disconnect()
            gone = hci_client_watch(radio)
        async with asyncio.timeout(WAIT_S):
            await gone.wait()
        assert 1 == meter.pairings
        assert 0o600 == stat.S_IMODE(os.stat(bonds).st_mode)
        assert 0o700 == stat.S_IMODE(os.stat(bonds.parent).st_mode)
        stored = bonds.read_bytes()

        async with BleStack.open(radio.stack, bonds_path=bonds) as ble:
            assert await ble.is_bonded(DEVICE_ADDRESS)
            client = await connect(ble, pair=True)
            (meter_side,) = meter.device.connections.values()
            assert meter_side.is_encrypted
            await client.disconnect()
        assert 1 == meter.pairings
        assert stored == bonds.read_bytes()

    async def test_remove_bond(self, radio: VirtualRadio, tmp_path: Path) -> None:
        """remove_bond deletes the keys from the file; a second removal finds none."""
        bonds = tmp_path / "bonds.json"
        await start_meter(radio)
        async with BleStack.open(radio.stack, bonds_path=bonds) as ble:
            client = await connect(ble, pair=True)
            await client.disconnect()
            assert await ble.remove_bond(DEVICE_ADDRESS)
            assert not await ble.remove_bond(DEVICE_ADDRESS)
            assert not await ble.is_bonded(DEVICE_ADDRESS)
        assert DEVICE_ADDRESS not in bonds.read_text()

    @pytest.mark.parametrize("mode", [0o644, 0o640])
    async def test_a_readable_bond_file_is_refused(
        self, radio: VirtualRadio, tmp_path: Path, mode: int
    ) -> None:
        """A bonds file others can read is refused at open, naming the file and the mode."""
        bonds = tmp_path / "bonds.json"
        bonds.write_text("{}")
        bonds.chmod(mode)
        with pytest.raises(KeyMaterialError, match=f"mode {mode:04o}"):
            async with BleStack.open(radio.stack, bonds_path=bonds):
                pass

    async def test_a_broken_bond_file_is_refused(self, radio: VirtualRadio, tmp_path: Path) -> None:
        """A bonds file that is not a JSON object is refused at open (content never shown)."""
        bonds = tmp_path / "bonds.json"
        bonds.write_text("[1, 2")
        bonds.chmod(0o600)
        with pytest.raises(KeyMaterialError, match="not valid JSON"):
            async with BleStack.open(radio.stack, bonds_path=bonds):
                pass


class TestPairingPolicy:
    """Who may be bonded: the daemon's ``may_pair`` from the devices' ``pairing`` mode."""

    def test_first_contact_predicate(self) -> None:
        """Only first_contact devices may be bonded by the daemon; unknown addresses never."""
        devices = [
            DeviceConfig("glucose", "F0:00:00:00:20:01", "meter"),  # glucose: first_contact
            DeviceConfig("glucose", "F0:00:00:00:20:02", "meter2", pairing="required"),
            DeviceConfig("blood_pressure", "F0:00:00:00:10:01", "cuff"),  # none
        ]
        may_pair = first_contact_pairing(devices)
        assert [True, False, False, False] == [
            may_pair("f0:00:00:00:20:01"),
            may_pair("F0:00:00:00:20:02"),
            may_pair("F0:00:00:00:10:01"),
            may_pair("F0:00:00:00:99:99"),
        ]

    async def test_required_device_is_never_bonded_by_the_daemon(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """No bond and a policy that forbids one: connect(pair=True) fails with
        BumbleNotBondedError before any SMP exchange; nothing is stored."""
        bonds = tmp_path / "bonds.json"
        meter = await start_meter(radio)
        required = [DeviceConfig("glucose", DEVICE_ADDRESS, "meter", pairing="required")]
        async with BleStack.open(
            radio.stack, bonds_path=bonds, may_pair=first_contact_pairing(required)
        ) as ble:
            with pytest.raises(BumbleNotBondedError) as caught:
                await connect(ble, pair=True)
            assert not await ble.is_bonded(DEVICE_ADDRESS)
        assert ("pair", "policy") == (caught.value.operation, caught.value.namespace)
        assert isinstance(caught.value, BumbleLinkSecurityError)
        assert (0, []) == (meter.pairings, meter.pairing_failures)

    async def test_daemon_refuses_passkey_but_bonds_just_works(self, radio: VirtualRadio) -> None:
        """The daemon's policy (nobody to ask) bonds a Just Works meter, and a passkey meter's
        pairing fails with an SMP reason: a BumbleLinkSecurityError, no bond kept."""
        meter = await start_meter(radio, EmulatedPairing.passkey_display())
        async with BleStack.open(radio.stack, pairing=PairingPolicy(mitm=True)) as ble:
            with pytest.raises(BumbleLinkSecurityError) as caught:
                await connect(ble, pair=True)
            assert not await ble.is_bonded(DEVICE_ADDRESS)
        assert ("pair", "smp") == (caught.value.operation, caught.value.namespace)
        assert 0 == meter.pairings


class TestImpersonator:
    """Another device at a bonded address, without the keys."""

    async def test_encrypted_connect_fails_and_the_bond_is_unchanged(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """Bonded with the meter; an impostor with its address and no keys: connect(pair=True)
        raises BumbleLinkSecurityError (encrypt, HCI 0x06 PIN or Key Missing); no pairing
        happens and bonds.json is byte for byte the same."""
        bonds = tmp_path / "bonds.json"
        meter = await start_meter(radio)
        async with BleStack.open(radio.stack, bonds_path=bonds) as ble:
            client = await connect(ble, pair=True)
            await client.disconnect()
            await meter.stop()
            stored = bonds.read_bytes()

            impostor = await start_meter(radio)
            with pytest.raises(BumbleLinkSecurityError) as caught:
                await connect(ble, pair=True)
            assert await ble.is_bonded(DEVICE_ADDRESS)
        error = caught.value
        assert ("encrypt", "hci", HCI_PIN_OR_KEY_MISSING) == (
            error.operation,
            error.namespace,
            error.error_code,
        )
        assert DEVICE_ADDRESS not in str(error)
        assert (0, []) == (impostor.pairings, impostor.pairing_failures)
        assert stored == bonds.read_bytes()
        await impostor.stop()
