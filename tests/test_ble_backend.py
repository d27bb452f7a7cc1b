"""Our bleak backend over Bumble, driven only through ``bleak.BleakScanner``/``BleakClient``.

Real parts throughout: Bumble virtual controllers on a ``LocalLink`` (hil.virtual_radio), the
hub's controller reached over a real HCI-over-TCP transport on loopback, the emulated cuff
(hil.emulators.cuff) and a small test peripheral ("gadget") for the GATT operations the cuff
does not offer. No mocks, no sleeps: every wait is on an event with a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak.uuids import normalize_uuid_16
from bumble.core import UUID
from bumble.device import Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.pairing import PairingConfig, PairingDelegate

from agent.ble import uuids
from agent.ble.advertising import AdvertisementFields, parse_ad_structures
from agent.ble.bumble_backend import (
    ATT_MTU_MAX,
    BumbleBackendError,
    BumbleClient,
    BumbleDeviceDetails,
    BumbleScanner,
    backend_classes,
)
from agent.ble.bumble_host import PairingPolicy
from agent.ble.stack import BleStack, StackSpec, backends_for, parse_stack
from agent.errors import BleLinkError, ConfigError
from hil.emulators.cuff import EmulatedCuff, example_readings
from hil.emulators.peripheral import DeviceInformation
from hil.virtual_radio import VirtualRadio
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL

WAIT_S = 5.0  # every await on the virtual radio completes in milliseconds; this catches hangs
CUFF_INFO = DeviceInformation(serial_number=DEVICE_SERIAL, system_id=(0x12FFFE34F0, 0xCA7A00))
GADGET_ADDRESS = "F1:00:00:00:0A:0B"
GADGET_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
GADGET_WRITABLE = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
GADGET_NOTIFIER = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
#: Gadget advertising: flags; 16-bit UUID 0x180F; TX power -8 dBm; manufacturer 0x0059 data
#: 01 02 03; service data for 0x180F: 0x64 (CSS Part A §1.1, §1.3, §1.4, §1.5, §1.11).
GADGET_ADVERTISING = bytes.fromhex("02010603030f18020af806ff590001020304160f1864")


@pytest.fixture
async def cuff(radio: VirtualRadio) -> EmulatedCuff:
    """The emulated cuff with the suite's canary identity, holding three readings."""
    return await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS, info=CUFF_INFO)


@dataclass
class Gadget:
    """A test peripheral: a writable characteristic with a writable descriptor, a notifier."""

    device: Device
    notifier: Characteristic[bytes]
    writes: asyncio.Queue[bytes]
    description: Descriptor


async def start_gadget(radio: VirtualRadio) -> Gadget:
    """Power on and advertise the gadget."""
    device = await radio.add_peripheral_device(GADGET_ADDRESS, "gadget")
    writes: asyncio.Queue[bytes] = asyncio.Queue()
    writable: Characteristic[bytes] = Characteristic(
        UUID(GADGET_WRITABLE),
        Characteristic.Properties.READ
        | Characteristic.Properties.WRITE
        | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
        Characteristic.READABLE | Characteristic.WRITEABLE,
        CharacteristicValue(read=lambda _c: b"\x2a", write=lambda _c, v: writes.put_nowait(v)),
        descriptors=[
            Descriptor(
                UUID.from_16_bits(0x2901), Descriptor.READABLE | Descriptor.WRITEABLE, b"knob"
            )
        ],
    )
    notifier: Characteristic[bytes] = Characteristic(
        UUID(GADGET_NOTIFIER), Characteristic.Properties.NOTIFY, Characteristic.Permissions(0)
    )
    device.add_service(Service(UUID(GADGET_SERVICE), [writable, notifier]))
    await device.power_on()
    await device.start_advertising(
        advertising_data=GADGET_ADVERTISING,
        advertising_interval_min=50,
        advertising_interval_max=50,
    )
    return Gadget(device, notifier, writes, writable.descriptors[0])


async def find(ble: BleStack, address: str, **kwargs: Any) -> tuple[BLEDevice, AdvertisementData]:
    """Scan through bleak until ``address`` advertises."""
    async with BleakScanner(backend=ble.scanner_backend, **kwargs) as scanner:
        async with asyncio.timeout(WAIT_S):
            async for device, advertisement in scanner.advertisement_data():
                if device.address == address:
                    return device, advertisement
    raise AssertionError("unreachable: advertisement_data() never ends")


# ---------------------------------------------------------------------------------------
# Configuration and pure helpers
# ---------------------------------------------------------------------------------------


class TestStackConfiguration:
    """``ble.stack`` parsing and the classes handed to bleak."""

    def test_bluez_uses_bleaks_default_backends(self) -> None:
        """'bluez' gives (None, None): bleak picks its platform backend."""
        assert backends_for("bluez") == (None, None)
        assert StackSpec("bluez") == parse_stack("bluez")

    def test_bumble_transport_is_kept_verbatim(self) -> None:
        """'bumble:<transport>' keeps the whole Bumble transport spec, colons included."""
        spec = parse_stack("bumble:tcp-client:127.0.0.1:7001")
        assert StackSpec("bumble", "tcp-client:127.0.0.1:7001") == spec
        assert spec.transport_kind == "tcp-client"

    def test_bumble_backends_are_bound_to_their_transport_and_cached(self) -> None:
        """The classes carry their transport and are the same objects on every call."""
        scanner, client = backends_for("bumble:tcp-client:127.0.0.1:7001")
        assert scanner is not None
        assert client is not None
        assert issubclass(scanner, BumbleScanner)
        assert issubclass(client, BumbleClient)
        assert "tcp-client:127.0.0.1:7001" == scanner.transport_spec == client.transport_spec
        assert (scanner, client) == backend_classes("tcp-client:127.0.0.1:7001")

    @pytest.mark.parametrize("stack", ["", "bumble", "bumble:", "BlueZ", "hci0"])
    def test_invalid_stack_names_the_key(self, stack: str) -> None:
        """Anything but 'bluez' or 'bumble:<transport>' is a ConfigError on ble.stack."""
        with pytest.raises(ConfigError) as caught:
            parse_stack(stack)
        assert caught.value.key == "ble.stack"

    async def test_scanner_without_open_host_is_not_available(self) -> None:
        """A Bumble scanner used before BleStack.open raises bleak's not-available error."""
        scanner_cls, _ = backends_for("bumble:tcp-client:127.0.0.1:9")
        assert scanner_cls is not None
        with pytest.raises(BleakBluetoothNotAvailableError):
            async with BleakScanner(backend=scanner_cls):
                pass

    async def test_unreachable_transport_is_a_ble_link_error(self) -> None:
        """Opening a transport nobody serves fails with the hub's transient BleLinkError."""
        async with VirtualRadio() as radio:
            stack = radio.stack
        with pytest.raises(BleLinkError) as caught:
            async with BleStack.open(stack):
                pass
        assert caught.value.retryable


class TestAdvertisingParser:
    """AD structures to bleak's advertisement fields (CSS Part A)."""

    def test_all_supported_types(self) -> None:
        """Names, UUID lists of each width, TX power, manufacturer and service data map."""
        fields = parse_ad_structures(
            [
                (0x01, b"\x06"),
                (0x08, b"short"),
                (0x09, b"Complete"),
                (0x03, bytes.fromhex("10180a18")),
                (0x05, bytes.fromhex("78563412")),
                (0x07, bytes.fromhex("9eca dc24 0ee5 a9e0 93f3 a3b5 0100 406e".replace(" ", ""))),
                (0x0A, b"\xf8"),
                (0xFF, bytes.fromhex("59000102")),
                (0x16, bytes.fromhex("0f1864")),
            ]
        )
        assert (
            AdvertisementFields(
                local_name="Complete",
                service_uuids=[
                    normalize_uuid_16(0x1810),
                    normalize_uuid_16(0x180A),
                    "12345678-0000-1000-8000-00805f9b34fb",
                    GADGET_SERVICE,
                ],
                manufacturer_data={0x0059: b"\x01\x02"},
                service_data={normalize_uuid_16(0x180F): b"\x64"},
                tx_power=-8,
            )
            == fields
        )

    def test_malformed_structures_are_skipped(self) -> None:
        """Too-short data, a ragged UUID list and bad UTF-8 never raise."""
        fields = parse_ad_structures(
            [
                (0x03, b"\x10\x18\x0a"),  # one full 16-bit UUID and a stray octet
                (0xFF, b"\x59"),  # no room for a company identifier
                (0x16, b"\x0f"),  # no room for a service UUID
                (0x0A, b""),  # TX power without its octet
                (0x08, b"\xff\xfe"),  # not UTF-8
            ]
        )
        assert AdvertisementFields("\ufffd\ufffd", [normalize_uuid_16(0x1810)]) == fields


# ---------------------------------------------------------------------------------------
# Scanner
# ---------------------------------------------------------------------------------------


class TestScanner:
    """BleakScanner with our backend over the virtual radio."""

    async def test_finds_cuff_by_address_and_service(
        self, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """The cuff is reported with its name, service 0x1810 and the link's RSSI."""
        device, advertisement = await find(ble, DEVICE_ADDRESS, service_uuids=["1810"])
        assert device.name == "HH BP Cuff"
        assert isinstance(device.details, BumbleDeviceDetails)
        assert advertisement.local_name == "HH BP Cuff"
        assert advertisement.service_uuids == [uuids.BLOOD_PRESSURE_SERVICE]
        assert (
            advertisement.manufacturer_data,
            advertisement.service_data,
            advertisement.tx_power,
        ) == ({}, {}, None)
        assert advertisement.rssi == -50  # Bumble's virtual controller reports -50 dBm

    async def test_service_filter_excludes_other_devices(
        self, radio: VirtualRadio, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """A scanner filtering on 0x1810 never reports a device without it; one without a
        filter does, with its manufacturer data, service data and TX power."""
        await start_gadget(radio)
        filtered = BleakScanner(
            service_uuids=[uuids.BLOOD_PRESSURE_SERVICE], backend=ble.scanner_backend
        )
        async with filtered:
            _, advertisement = await find(ble, GADGET_ADDRESS)
            # Both scanners share one host scan: the gadget's advertisement reached both.
            assert GADGET_ADDRESS not in filtered.discovered_devices_and_advertisement_data
        assert [normalize_uuid_16(0x180F)] == advertisement.service_uuids
        assert advertisement.manufacturer_data == {0x0059: b"\x01\x02\x03"}
        assert {normalize_uuid_16(0x180F): b"\x64"} == advertisement.service_data
        assert advertisement.tx_power == -8

    async def test_seen_devices_cleared_on_start(self, ble: BleStack, cuff: EmulatedCuff) -> None:
        """A restarted scanner starts with no devices (BaseBleakScanner contract)."""
        scanner = BleakScanner(backend=ble.scanner_backend)
        async with scanner:
            async with asyncio.timeout(WAIT_S):
                async for device, _ in scanner.advertisement_data():
                    if device.address == DEVICE_ADDRESS:
                        break
        assert [d.address for d in scanner.discovered_devices] == [DEVICE_ADDRESS]
        await scanner.start()
        try:
            assert scanner.discovered_devices == []
        finally:
            await scanner.stop()


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def cuff_client(ble: BleStack, cuff: EmulatedCuff) -> AsyncIterator[BleakClient]:
    """A connected BleakClient on the cuff, from a scanned BLEDevice."""
    device, _ = await find(ble, DEVICE_ADDRESS)
    client = BleakClient(device, timeout=WAIT_S, backend=ble.client_backend)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


class TestClientDiscovery:
    """Connection set-up: MTU exchange and discovery into bleak's collection."""

    async def test_discovers_bps_and_dis(self, cuff_client: BleakClient) -> None:
        """0x1810 holds 0x2A35 (indicate, with CCCD) and 0x2A49 (read); 0x180A is there."""
        services = cuff_client.services
        bps = services.get_service(uuids.BLOOD_PRESSURE_SERVICE)
        assert bps is not None
        measurement = bps.get_characteristic(uuids.BLOOD_PRESSURE_MEASUREMENT)
        feature = bps.get_characteristic(uuids.BLOOD_PRESSURE_FEATURE)
        assert measurement is not None
        assert feature is not None
        assert measurement.properties == ["indicate"]
        assert [d.uuid for d in measurement.descriptors] == [
            uuids.CLIENT_CHARACTERISTIC_CONFIGURATION
        ]
        assert feature.properties == ["read"]
        dis = services.get_service(uuids.DEVICE_INFORMATION_SERVICE)
        assert dis is not None
        assert sorted(
            [
                uuids.SYSTEM_ID,
                uuids.MODEL_NUMBER_STRING,
                uuids.SERIAL_NUMBER_STRING,
                uuids.FIRMWARE_REVISION_STRING,
                uuids.MANUFACTURER_NAME_STRING,
            ]
        ) == sorted(c.uuid for c in dis.characteristics)

    async def test_connection_state(self, cuff_client: BleakClient) -> None:
        """Connected, MTU exchanged to the maximum the cuff accepts, named as advertised."""
        assert cuff_client.is_connected
        assert cuff_client.mtu_size == ATT_MTU_MAX
        assert cuff_client.name == "HH BP Cuff"
        assert cuff_client.backend_id == "BumbleClient"

    async def test_requested_services_filter(self, ble: BleStack, cuff: EmulatedCuff) -> None:
        """BleakClient(services=[...]) keeps only those services in the collection."""
        device, _ = await find(ble, DEVICE_ADDRESS)
        async with BleakClient(
            device, services=["1810"], timeout=WAIT_S, backend=ble.client_backend
        ) as client:
            assert [s.uuid for s in client.services] == [uuids.BLOOD_PRESSURE_SERVICE]

    async def test_connect_by_address_string(self, ble: BleStack, cuff: EmulatedCuff) -> None:
        """An address string alone connects (random static inferred from its top bits)."""
        async with BleakClient(DEVICE_ADDRESS, timeout=WAIT_S, backend=ble.client_backend) as c:
            assert c.is_connected


class TestClientReadWrite:
    """Reads and writes of characteristics and descriptors."""

    async def test_dis_values_read_back_exactly(
        self, cuff_client: BleakClient, cuff: EmulatedCuff
    ) -> None:
        """Every DIS characteristic reads back the exact octets the cuff holds."""
        dis = cuff_client.services.get_service(uuids.DEVICE_INFORMATION_SERVICE)
        assert dis is not None
        read = {
            int(c.uuid[4:8], 16): bytes(await cuff_client.read_gatt_char(c))
            for c in dis.characteristics
        }
        assert cuff.info.values() == read
        assert DEVICE_SERIAL.encode() == read[0x2A25]
        assert bytes.fromhex("f034feff12007aca") == read[0x2A23]

    async def test_feature_reads_as_configured(self, cuff_client: BleakClient) -> None:
        """0x2A49 reads the cuff's feature word, uint16 little-endian."""
        assert bytearray(b"\x05\x00") == await cuff_client.read_gatt_char(
            uuids.BLOOD_PRESSURE_FEATURE
        )

    async def test_att_errors_become_gatt_protocol_errors(self, cuff_client: BleakClient) -> None:
        """Reading indicate-only 0x2A35 and writing read-only 0x2A49 give bleak's typed codes."""
        with pytest.raises(BleakGATTProtocolError) as read_error:
            await cuff_client.read_gatt_char(uuids.BLOOD_PRESSURE_MEASUREMENT)
        assert read_error.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as write_error:
            await cuff_client.write_gatt_char(uuids.BLOOD_PRESSURE_FEATURE, b"\x00", response=True)
        assert write_error.value.code == BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED

    async def test_writes_with_and_without_response(
        self, radio: VirtualRadio, ble: BleStack
    ) -> None:
        """Write requests and write commands reach the peripheral with the exact bytes."""
        gadget = await start_gadget(radio)
        async with BleakClient(GADGET_ADDRESS, timeout=WAIT_S, backend=ble.client_backend) as c:
            assert bytearray(b"\x2a") == await c.read_gatt_char(GADGET_WRITABLE)
            await c.write_gatt_char(GADGET_WRITABLE, b"\x01\x02", response=True)
            await c.write_gatt_char(GADGET_WRITABLE, bytearray(b"\x03"), response=False)
            async with asyncio.timeout(WAIT_S):
                assert [
                    await gadget.writes.get(),
                    await gadget.writes.get(),
                ] == [b"\x01\x02", b"\x03"]

    async def test_descriptor_read_and_write(self, radio: VirtualRadio, ble: BleStack) -> None:
        """A writable descriptor (0x2901) reads, is written, and reads back the new value."""
        gadget = await start_gadget(radio)
        async with BleakClient(GADGET_ADDRESS, timeout=WAIT_S, backend=ble.client_backend) as c:
            characteristic = c.services.get_characteristic(GADGET_WRITABLE)
            assert characteristic is not None
            descriptor = characteristic.get_descriptor(normalize_uuid_16(0x2901))
            assert descriptor is not None
            assert bytearray(b"knob") == await c.read_gatt_descriptor(descriptor)
            await c.write_gatt_descriptor(descriptor, b"dial")
            assert bytearray(b"dial") == await c.read_gatt_descriptor(descriptor)
            assert gadget.description.value == b"dial"


class TestClientSubscriptions:
    """start_notify/stop_notify for indications and notifications."""

    async def test_indications_arrive_in_order_and_are_confirmed(
        self, cuff_client: BleakClient, cuff: EmulatedCuff
    ) -> None:
        """Subscribing to indicate-only 0x2A35 writes CCCD 0x0002; every reading arrives as a
        bytearray, in order, and the cuff sees each confirmed."""
        expected = cuff.encoded()
        received: list[bytearray] = []
        await cuff_client.start_notify(
            uuids.BLOOD_PRESSURE_MEASUREMENT, lambda _c, data: received.append(data)
        )
        async with asyncio.timeout(WAIT_S):
            await cuff.all_confirmed.wait()
        assert expected == [bytes(r) for r in received]
        assert all(type(r) is bytearray for r in received)
        assert (cuff.confirmations, cuff.indications_sent, cuff.stored) == (3, 3, ())

    async def test_cccd_follows_subscription(
        self, cuff_client: BleakClient, cuff: EmulatedCuff
    ) -> None:
        """The CCCD reads 0x0000, then 0x0002 (indications) after start_notify, then 0x0000."""
        characteristic = cuff_client.services.get_characteristic(uuids.BLOOD_PRESSURE_MEASUREMENT)
        assert characteristic is not None
        cccd = characteristic.get_descriptor(uuids.CLIENT_CHARACTERISTIC_CONFIGURATION)
        assert cccd is not None
        assert bytearray(b"\x00\x00") == await cuff_client.read_gatt_descriptor(cccd)
        await cuff_client.start_notify(characteristic, lambda _c, _d: None)
        assert bytearray(b"\x02\x00") == await cuff_client.read_gatt_descriptor(cccd)
        await cuff_client.stop_notify(characteristic)
        assert bytearray(b"\x00\x00") == await cuff_client.read_gatt_descriptor(cccd)

    async def test_notifications(self, radio: VirtualRadio, ble: BleStack) -> None:
        """A notify characteristic is subscribed with CCCD 0x0001 and its values arrive."""
        gadget = await start_gadget(radio)
        received: asyncio.Queue[bytearray] = asyncio.Queue()
        async with BleakClient(GADGET_ADDRESS, timeout=WAIT_S, backend=ble.client_backend) as c:
            await c.start_notify(GADGET_NOTIFIER, lambda _c, data: received.put_nowait(data))
            await gadget.device.notify_subscribers(gadget.notifier, b"\x10\x20")
            async with asyncio.timeout(WAIT_S):
                assert bytearray(b"\x10\x20") == await received.get()

    async def test_subscribing_to_a_plain_characteristic_fails(
        self, cuff_client: BleakClient
    ) -> None:
        """start_notify on a read-only characteristic raises a BleakError naming the reason."""
        with pytest.raises(BumbleBackendError) as caught:
            await cuff_client.start_notify(uuids.BLOOD_PRESSURE_FEATURE, lambda _c, _d: None)
        assert (
            caught.value.operation,
            caught.value.reason,
        ) == ("subscribe", "characteristic neither notifies nor indicates")


class TestClientLinkLife:
    """Disconnections, timeouts and pairing."""

    async def test_peer_drop_calls_disconnected_callback(
        self, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """An unsolicited drop calls the callback once; later operations raise BleakError."""
        dropped = asyncio.Event()
        calls: list[BleakClient] = []

        def on_disconnect(client: BleakClient) -> None:
            calls.append(client)
            dropped.set()

        device, _ = await find(ble, DEVICE_ADDRESS)
        client = BleakClient(device, on_disconnect, timeout=WAIT_S, backend=ble.client_backend)
        await client.connect()
        await cuff.drop_link()
        async with asyncio.timeout(WAIT_S):
            await dropped.wait()
        assert [client] == calls
        assert not client.is_connected
        with pytest.raises(BleakError):
            await client.read_gatt_char(uuids.BLOOD_PRESSURE_FEATURE)
        await client.disconnect()  # harmless when already disconnected
        assert [client] == calls

    async def test_own_disconnect_does_not_call_back(
        self, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """disconnect() ends the link without calling the unsolicited-disconnect callback."""
        calls: list[BleakClient] = []
        device, _ = await find(ble, DEVICE_ADDRESS)
        client = BleakClient(device, calls.append, timeout=WAIT_S, backend=ble.client_backend)
        await client.connect()
        await client.disconnect()
        async with asyncio.timeout(WAIT_S):
            await cuff.disconnected.wait()
        assert (calls, client.is_connected) == ([], False)

    async def test_connect_timeout_then_controller_still_usable(
        self, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """Connecting to an absent device times out (TimeoutError, as bleak's BlueZ backend);
        the pending connection is cancelled, so the next connect succeeds."""
        absent = BleakClient("F0:00:00:00:99:99", timeout=0.2, backend=ble.client_backend)
        with pytest.raises(TimeoutError):
            await absent.connect()
        assert not absent.is_connected
        device, _ = await find(ble, DEVICE_ADDRESS)
        async with BleakClient(device, timeout=WAIT_S, backend=ble.client_backend) as client:
            assert client.is_connected

    async def test_pair_bonds_and_reconnection_is_encrypted(
        self, ble: BleStack, cuff: EmulatedCuff
    ) -> None:
        """Just Works pairing bonds both sides; the next connection is encrypted with the
        stored keys (as BlueZ does for a bonded device); unpair forgets the keys."""
        assert ble.host is not None
        hub = ble.host.device
        assert hub is not None
        assert hub.keystore is not None
        device, _ = await find(ble, DEVICE_ADDRESS)
        async with BleakClient(device, timeout=WAIT_S, backend=ble.client_backend) as client:
            await client.pair()
        assert await hub.keystore.get(DEVICE_ADDRESS) is not None
        assert cuff.device.keystore is not None
        assert await cuff.device.keystore.get_all() != []

        client = BleakClient(device, timeout=WAIT_S, backend=ble.client_backend)
        await client.connect()
        (cuff_side,) = cuff.device.connections.values()
        assert cuff_side.is_encrypted
        await client.unpair()
        assert not client.is_connected
        assert await hub.keystore.get(DEVICE_ADDRESS) is None

    async def test_radio_restart_reopens_the_transport(self) -> None:
        """When the HCI transport goes away the link is reported lost; once the radio is
        back on the same port, the host reopens it on the next scan."""
        first = VirtualRadio()
        await first.__aenter__()
        try:
            port = first.hci_port
            await first.add_cuff(example_readings(), address=DEVICE_ADDRESS)
            async with BleStack.open(first.stack) as ble:
                device, _ = await find(ble, DEVICE_ADDRESS)
                lost = asyncio.Event()
                client = BleakClient(
                    device, lambda _c: lost.set(), timeout=WAIT_S, backend=ble.client_backend
                )
                await client.connect()
                await first.__aexit__(None, None, None)
                async with asyncio.timeout(WAIT_S):
                    await lost.wait()
                assert not client.is_connected
                async with VirtualRadio(port=port) as second:
                    await second.add_cuff(example_readings(), address=DEVICE_ADDRESS)
                    device, _ = await find(ble, DEVICE_ADDRESS)
                    async with BleakClient(
                        device, timeout=WAIT_S, backend=ble.client_backend
                    ) as again:
                        assert again.is_connected
        finally:
            await first.__aexit__(None, None, None)


class _DisplayingCuffDelegate(PairingDelegate):
    """The cuff's side of passkey entry: it shows a passkey (here: hands it to the test)."""

    def __init__(self, shown: asyncio.Future[int]) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY)
        self._shown = shown

    async def display_number(self, number: int, digits: int) -> None:
        if not self._shown.done():
            self._shown.set_result(number)


async def test_passkey_hook_answers_passkey_entry(radio: VirtualRadio) -> None:
    """With a keyboard I/O capability and MITM, pairing asks the policy's passkey hook for
    the number the device displays; the right number authenticates the link."""
    shown: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cuff = await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS)
    cuff.device.pairing_config_factory = lambda _c: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=_DisplayingCuffDelegate(shown)
    )
    asked: list[int] = []

    async def passkey() -> int:
        number = await shown  # a person reads it off the cuff's display and types it in
        asked.append(number)
        return number

    policy = PairingPolicy(
        io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY, passkey=passkey, mitm=True
    )
    async with BleStack.open(radio.stack, pairing=policy) as ble:
        device, _ = await find(ble, DEVICE_ADDRESS)
        async with BleakClient(device, timeout=WAIT_S, backend=ble.client_backend) as client:
            await client.pair()
            (cuff_side,) = cuff.device.connections.values()
            assert [shown.result()] == asked
            assert cuff_side.is_encrypted
            assert cuff_side.authenticated


async def test_passkey_request_without_hook_fails_pairing(radio: VirtualRadio) -> None:
    """Without a passkey hook a passkey request is refused: pair() raises a BleakError."""
    shown: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cuff = await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS)
    cuff.device.pairing_config_factory = lambda _c: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=_DisplayingCuffDelegate(shown)
    )
    policy = PairingPolicy(
        io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY, mitm=True
    )
    async with BleStack.open(radio.stack, pairing=policy) as ble:
        device, _ = await find(ble, DEVICE_ADDRESS)
        async with BleakClient(device, timeout=WAIT_S, backend=ble.client_backend) as client:
            with pytest.raises(BumbleBackendError) as caught:
                await client.pair()
    assert (
        caught.value.operation,
        caught.value.namespace,
        caught.value.reason,
    ) == ("pair", "smp", "PASSKEY_ENTRY_FAILED")


async def test_unclaimed_connection_is_dropped(ble: BleStack, cuff: EmulatedCuff) -> None:
    """A connection no client owns (a connect cancelled as it completed) does not linger:
    the host disconnects it after its grace period."""
    assert ble.host is not None
    hub = ble.host.device
    assert hub is not None
    await find(ble, DEVICE_ADDRESS)  # remember the address type, as a scan before a connect
    known = ble.host.known_peer(DEVICE_ADDRESS)
    assert known is not None
    async with asyncio.timeout(WAIT_S):
        await hub.connect(known[0], timeout=WAIT_S)
        await cuff.disconnected.wait()
    assert {} == hub.connections
