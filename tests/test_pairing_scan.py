"""agent/pairing.py, the pure parts: which advertisements are candidates, the table, SMP
reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from agent.ble.uuids import GLUCOSE_SERVICE, PULSE_OXIMETER_SERVICE, sig_uuid
from agent.errors import PairingFailure
from agent.pairing import Candidate, candidate_of, smp_failure, table

ADDRESS: Final = "F0:CA:7A:00:12:34"
BATTERY_SERVICE: Final = sig_uuid(0x180F)


@dataclass
class _Data:
    ad_structures: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class _BumbleAdvertisement:
    """What Bumble's ``Advertisement`` offers the pairing scan: its AD structures."""

    data: _Data


def advertisement(
    uuids: list[str], flags: int | None, *, bluez: bool = False, rssi: int = -60
) -> AdvertisementData:
    """An advertisement as one of our backends reports it, with ``flags`` (``None``: absent)."""
    if bluez:
        props = {} if flags is None else {"AdvertisingFlags": bytes([flags])}
        platform: tuple[object, ...] = ("/org/bluez/hci0/dev_x", props)
    else:
        structures = [] if flags is None else [(0x01, bytes([flags]))]
        platform = (_BumbleAdvertisement(_Data(structures)),)
    return AdvertisementData(
        local_name="HH Glucometer",
        manufacturer_data={},
        service_data={},
        service_uuids=uuids,
        tx_power=None,
        rssi=rssi,
        platform_data=platform,
    )


def device() -> BLEDevice:
    return BLEDevice(ADDRESS.lower(), "HH Glucometer", None)


@pytest.mark.parametrize("bluez", [False, True])
@pytest.mark.parametrize(
    ("flags", "listed"),
    [(0x06, True), (0x05, True), (0x04, False), (0x00, False)],
)
def test_pairing_mode_is_the_discoverable_flag(bluez: bool, flags: int, listed: bool) -> None:
    """General (0x02) or Limited (0x01) Discoverable: in pairing mode; neither: not."""
    found = candidate_of(device(), advertisement([GLUCOSE_SERVICE], flags, bluez=bluez))
    assert listed == (found is not None)


def test_bumble_advertisement_without_flags_is_not_discoverable() -> None:
    """Bumble reports every AD structure: no Flags structure means not discoverable."""
    assert candidate_of(device(), advertisement([GLUCOSE_SERVICE], None)) is None


def test_backend_that_does_not_say_is_taken_as_pairing_mode() -> None:
    """BlueZ without AdvertisingFlags: listed (the technician decides)."""
    found = candidate_of(device(), advertisement([GLUCOSE_SERVICE], None, bluez=True))
    assert found is not None


def test_kind_from_the_first_health_service_and_others_ignored() -> None:
    """The kind comes from the health service advertised; a battery service alone is not
    a candidate."""
    found = candidate_of(device(), advertisement([BATTERY_SERVICE, PULSE_OXIMETER_SERVICE], 6))
    assert found is not None
    assert ("pulse_oximeter", ADDRESS, "..:12:34") == (found.kind, found.address, found.label)
    assert candidate_of(device(), advertisement([BATTERY_SERVICE], 6)) is None


def test_table_shows_the_shortened_address_only() -> None:
    """Row, name, kind, signal and the last two octets; never the full address."""
    rows = table([Candidate(ADDRESS, "HH Glucometer", "glucose", -48, device())])
    assert [
        "#  name           kind     signal   address",
        "1  HH Glucometer  glucose  -48 dBm  ..:12:34",
    ] == rows
    assert ADDRESS not in repr(Candidate(ADDRESS, None, "glucose", -48, device()))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0x01, (PairingFailure.DECLINED, "passkey")),
        (0x04, (PairingFailure.FAILED, None)),
        (0x05, (PairingFailure.REJECTED, None)),
        (0x0C, (PairingFailure.DECLINED, "confirmation")),
        (0x08, (PairingFailure.FAILED, None)),
        (None, (PairingFailure.FAILED, None)),
    ],
)
def test_smp_reasons(code: int | None, expected: tuple[PairingFailure, str | None]) -> None:
    """SMP Pairing Failed reasons (Vol 3 Part H §3.5.5) as the hub's PairingFailure."""
    assert expected == smp_failure(code)
