"""A bleak backend over Google's Bumble host stack: :class:`BumbleScanner`, :class:`BumbleClient`.

The hub's code only ever talks to ``bleak.BleakScanner`` and ``bleak.BleakClient``; with
``ble.stack = "bumble:<transport>"`` it passes these classes as bleak's documented
``backend=`` argument (see :func:`agent.ble.stack.backends_for`), so the same session code runs
over BlueZ on a Pi and over Bumble on any HCI transport (a USB dongle, a serial HCI board, or
the virtual radio of ``hil/``).

Each class is bound to one transport spec (:func:`backend_classes`) and uses the shared
:class:`~agent.ble.bumble_host.BumbleHost` opened for it.

Behaviour, following bleak's BlueZ backend where bleak's interface leaves room:

- **Scanner**: active scan by default; every advertisement (merged with its scan response)
  becomes a ``BLEDevice`` (key and address ``AA:BB:CC:DD:EE:FF``, ``details`` a
  :class:`BumbleDeviceDetails` holding the typed address) and an ``AdvertisementData``; the
  ``service_uuids`` filter is honoured; ``seen_devices`` is cleared at each start.
- **Client**: ``connect`` creates the LE connection (bounded by bleak's ``timeout``, which
  also bounds the set-up), encrypts with the stored keys when the peer is bonded (as BlueZ
  does; never pairing a bonded peer again), pairs when asked and the host's pairing policy
  allows a new bond with the peer, exchanges the ATT MTU (up to :data:`ATT_MTU_MAX`) and discovers
  every service, characteristic and descriptor into bleak's collection. ``start_notify``
  writes the CCCD for notifications, or for indications when the characteristic only
  indicates (Core Spec Vol 3 Part G §4.10, §4.11); Bumble confirms each indication after
  the callback returned, as BlueZ does. The disconnected callback fires on unsolicited
  disconnections only, as ``BaseBleakClient`` documents.
- **Errors**: callers of bleak expect bleak's exceptions. ATT error responses become
  ``BleakGATTProtocolError`` (its ``code``); any other Bumble failure becomes
  :class:`BumbleBackendError`, a ``BleakError`` carrying the operation, the HCI/SMP/ATT
  namespace and code as fields; a link that cannot be secured as the bond or the policy
  demands is :class:`BumbleLinkSecurityError` (an impersonator at a bonded address: HCI
  0x06 "PIN or Key Missing"; a failed pairing: the SMP reason; no bond and none allowed:
  :class:`BumbleNotBondedError`); a connect that does not complete in time raises
  ``TimeoutError``, as bleak's BlueZ backend does. Messages, fields and logs name a peer by
  its label (last two octets), never by its full address, and never include Bumble's own
  exception text (which does).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, NoReturn, TypeVar, cast

import structlog
from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakError,
    BleakGATTProtocolError,
)
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.att import ATT_Error
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy

from agent.ble.advertising import parse_ad_structures
from agent.ble.bumble_host import BumbleHost, registered_host
from agent.ble.uuids import CLIENT_CHARACTERISTIC_CONFIGURATION, from_le_bytes
from agent.errors import BleLinkError
from agent.logs import device_label

log = structlog.get_logger(__name__)


def from_bumble(value: core.UUID) -> str:
    """bleak's string for a Bumble UUID."""
    return from_le_bytes(value.to_bytes(force_128=True))


T = TypeVar("T")

ATT_MTU_DEFAULT: Final = 23
"""ATT_MTU before any exchange (Core Spec Vol 3 Part F §3.2.8)."""

ATT_MTU_MAX: Final = 517
"""The ATT_MTU the hub asks for: the longest attribute value (512 octets, Vol 3 Part F §3.2.9)
plus the 5 header octets of a Prepare Write/Read Blob; BlueZ asks for the same."""

CONNECT_CANCEL_GRACE_S: Final = 2.0
"""After the connect timeout, Bumble sends LE Create Connection Cancel and waits for the
controller's LE Connection Complete (status 0x02, Vol 4 Part E §7.8.13); a controller answers
within milliseconds, so 2 s bounds a controller that never does."""

DISCONNECT_TIMEOUT_S: Final = 5.0
"""HCI Disconnect to Disconnection Complete: a few connection events (≤ 4 s intervals) or
the supervision timeout at worst; we give up waiting (and call it disconnected) after 5 s."""

RSSI_UNKNOWN_DBM: Final = -127
"""bleak's ``rssi`` is an int; a controller without RSSI (HCI 127) is reported as -127 dBm."""

_MAX_CHARACTERISTIC_PROPERTY_BIT: Final = 0x80
"""Properties octet bits (Vol 3 Part G §3.3.1.1); higher bleak names are extended properties."""


class BumbleBackendError(BleakError):
    """A Bumble failure, raised as bleak's ``BleakError`` with the facts as fields.

    Attributes:
        operation: what the client or scanner was doing (``"connect"``, ``"read"``, …).
        reason: what went wrong, e.g. the HCI or SMP error name.
        device: the peer's label (last two address octets), never the full address.
        namespace: ``"hci"``, ``"smp"``, ``"att"`` … when Bumble named one.
        error_code: the protocol's error code, when there is one.
    """

    def __init__(
        self,
        operation: str,
        reason: str,
        *,
        device: str,
        namespace: str | None = None,
        error_code: int | None = None,
    ) -> None:
        self.operation = operation
        self.reason = reason
        self.device = device
        self.namespace = namespace
        self.error_code = error_code
        super().__init__(f"{operation} {device}: {reason}")


class BumbleLinkLostError(BumbleBackendError):
    """The connection ended while an operation was pending or before it started.

    Attributes:
        hci_reason: the Disconnection Complete reason (Vol 1 Part F), ``0`` when the HCI
            transport itself was lost.
    """

    def __init__(self, operation: str, *, device: str, hci_reason: int) -> None:
        self.hci_reason = hci_reason
        super().__init__(
            operation,
            f"disconnected ({_hci_error_name(hci_reason)})",
            device=device,
            namespace="hci",
            error_code=hci_reason,
        )


class BumbleLinkSecurityError(BumbleBackendError):
    """The link could not be secured with the peer as the bond or the pairing policy demands.

    Raised by ``connect``/``pair`` instead of a silent fallback, and never after touching
    the stored bond:

    - ``operation="encrypt"``: the peer is bonded but encryption with the stored keys
      failed: it lacks them (HCI 0x06 "PIN or Key Missing", its LTK Negative Reply), holds
      other ones (0x3D "MIC failure", the link ends) or refused (0x05 "Authentication
      Failure"): an impersonator at a bonded address, or a device that lost its bond;
    - ``operation="pair"``, ``namespace="smp"``: pairing failed (``error_code`` the SMP
      Pairing Failed reason, e.g. passkey entry failed, numeric comparison refused);
    - ``operation="pair"``, ``namespace="policy"``: no bond exists and the pairing policy
      forbids a new one (a ``required`` device that only ``homehub pair`` may bond).

    Attributes:
        declined: the question the hub's side said no to (``"passkey"``,
            ``"confirmation"``), when the pairing failed by our refusal; ``None`` otherwise.
    """

    declined: str | None = None


class BumbleNotBondedError(BumbleLinkSecurityError):
    """No bond with the peer, and the pairing policy forbids making one now."""

    def __init__(self, operation: str, *, device: str) -> None:
        super().__init__(
            operation, "not bonded; pairing not allowed", device=device, namespace="policy"
        )


ENCRYPTION_FAILURES: Final = frozenset(
    {
        hci.HCI_ErrorCode.PIN_OR_KEY_MISSING_ERROR,
        hci.HCI_ErrorCode.AUTHENTICATION_FAILURE_ERROR,
        hci.HCI_ErrorCode.CONNECTION_TERMINATED_DUE_TO_MIC_FAILURE_ERROR,
        hci.HCI_ErrorCode.INSUFFICIENT_SECURITY_ERROR,
    }
)
"""HCI reasons that say the peer does not hold the bond's keys (Vol 1 Part F): an
encryption that ends with one of these is a security failure, not a radio one."""


def _hci_error_name(code: int) -> str:
    return "TRANSPORT_LOST" if code == 0 else hci.HCI_ErrorCode(code).name


def _translate(operation: str, label: str, exc: BaseException) -> BleakError:
    """bleak's exception for a Bumble one; logs the structured detail (never Bumble's text)."""
    if isinstance(exc, ATT_Error):
        log.info("ble_att_error", operation=operation, device=label, att_error=exc.error_code)
        return BleakGATTProtocolError(exc.error_code)
    if isinstance(exc, core.BaseError):
        error = BumbleBackendError(
            operation,
            exc.error_name or "error",
            device=label,
            namespace=exc.error_namespace or None,
            error_code=exc.error_code,
        )
    elif isinstance(exc, TimeoutError | core.TimeoutError | core.CommandTimeoutError):
        error = BumbleBackendError(operation, "timed out", device=label)
    else:
        error = BumbleBackendError(operation, type(exc).__name__, device=label)
    log.info(
        "ble_backend_error",
        operation=operation,
        device=label,
        reason=error.reason,
        namespace=error.namespace,
        error_code=error.error_code,
    )
    return error


def _host_for(transport_spec: str) -> BumbleHost:
    host = registered_host(transport_spec)
    if host is None:
        raise BleakBluetoothNotAvailableError(
            "no Bumble host is open for this transport (open it with BleStack.open)",
            BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
        )
    return host


async def _ready_device(host: BumbleHost) -> Device:
    try:
        return await host.ensure_ready()
    except BleLinkError:
        raise BleakBluetoothNotAvailableError(
            "the Bumble HCI transport is unavailable",
            BleakBluetoothNotAvailableReason.POWERED_OFF,
        ) from None


def _properties(flags: int) -> list[CharacteristicPropertyName]:
    return [
        name
        for bit, name in CHARACTERISTIC_PROPERTIES.items()
        if bit <= _MAX_CHARACTERISTIC_PROPERTY_BIT and flags & bit
    ]


@dataclass(frozen=True, slots=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` of this backend: the peer's address with its type."""

    address: hci.Address = field(repr=False)


# ---------------------------------------------------------------------------------------
# Scanner
# ---------------------------------------------------------------------------------------


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend over a :class:`BumbleHost` (use :func:`backend_classes`)."""

    transport_spec: ClassVar[str] = ""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        if self._service_uuids is not None:
            # bleak compares strings; accept the 16-/32-bit short forms BlueZ accepts.
            self._service_uuids = [normalize_uuid_str(u) for u in self._service_uuids]
        self._active = scanning_mode != "passive"
        self._host: BumbleHost | None = None

    async def start(self) -> None:
        """Start scanning (shares the host's scan with any other scanner)."""
        host = _host_for(self.transport_spec)
        await _ready_device(host)
        self.seen_devices = {}
        try:
            await host.add_scan_listener(self._on_advertisement, active=self._active)
        except BleLinkError:
            raise BleakBluetoothNotAvailableError(
                "the Bumble HCI transport is unavailable",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            ) from None
        except core.BaseBumbleError as exc:
            raise _translate("scan", "-", exc) from None
        self._host = host

    async def stop(self) -> None:
        """Stop scanning (the host's scan stops when its last scanner stops)."""
        host, self._host = self._host, None
        if host is not None:
            try:
                await host.remove_scan_listener(self._on_advertisement)
            except core.BaseBumbleError as exc:
                raise _translate("scan", "-", exc) from None

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        host = self._host
        fields = parse_ad_structures(advertisement.data.ad_structures)
        if host is not None:
            host.remember(advertisement.address, fields.local_name)
        if not self.is_allowed_uuid(fields.service_uuids):
            return
        address = advertisement.address.to_string(with_type_qualifier=False)
        rssi = advertisement.rssi
        data = AdvertisementData(
            local_name=fields.local_name,
            manufacturer_data=fields.manufacturer_data,
            service_data=fields.service_data,
            service_uuids=fields.service_uuids,
            tx_power=fields.tx_power,
            rssi=RSSI_UNKNOWN_DBM if rssi == Advertisement.RSSI_NOT_AVAILABLE else rssi,
            platform_data=(advertisement,),
        )
        name = fields.local_name
        if name is None and host is not None and (known := host.known_peer(address)):
            name = known[1]
        device = self.create_or_update_device(
            address, address, name, BumbleDeviceDetails(advertisement.address), data
        )
        self.call_detection_callbacks(device, data)


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Link:
    """One LE connection of a client; ``lost`` resolves with the disconnection reason."""

    connection: Connection
    peer: Peer
    lost: asyncio.Future[int]


class BumbleClient(BaseBleakClient):
    """bleak client backend over a :class:`BumbleHost` (use :func:`backend_classes`)."""

    transport_spec: ClassVar[str] = ""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        self.address = self.address.upper()
        self._label = device_label(self.address)
        self._details: BumbleDeviceDetails | None = None
        self._device_name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            self._device_name = address_or_ble_device.name
            if isinstance(address_or_ble_device.details, BumbleDeviceDetails):
                self._details = address_or_ble_device.details
        self._requested_services = services
        self._link: _Link | None = None
        self._disconnecting = False
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        #: The association model of this client's last pairing (``"just_works"``,
        #: ``"passkey_entry"``, ``"numeric_comparison"``, ...), ``None`` before one.
        self.pairing_method: str | None = None

    # -- identity ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The advertised name when known, else the address with dashes (as bleak does)."""
        if self._device_name:
            return self._device_name
        host = registered_host(self.transport_spec)
        known = host.known_peer(self.address) if host is not None else None
        if known is not None and known[1]:
            return known[1]
        return self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT_MTU (23 until exchanged or when not connected)."""
        link = self._link
        return link.connection.att_mtu if link is not None else ATT_MTU_DEFAULT

    @property
    def is_connected(self) -> bool:
        """Whether the LE connection is up."""
        link = self._link
        return link is not None and not link.lost.done()

    def _peer_address(self, host: BumbleHost) -> hci.Address:
        """The typed address to connect to: from the scan, else remembered, else inferred.

        An address string alone does not say public or random. A random static address has
        its two most significant bits set (Vol 6 Part B §1.3.2.1); any other address not
        seen in an advertisement is taken as public.
        """
        if self._details is not None:
            return self._details.address
        known = host.known_peer(self.address)
        if known is not None:
            return known[0]
        try:
            candidate = hci.Address(self.address, hci.Address.RANDOM_DEVICE_ADDRESS)
        except (core.InvalidArgumentError, ValueError):
            raise BumbleBackendError("connect", "not a Bluetooth address", device="..?") from None
        if candidate.is_static:
            return candidate
        return hci.Address(self.address, hci.Address.PUBLIC_DEVICE_ADDRESS)

    # -- connection -------------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, secure (encrypt if bonded, pair if asked), exchange MTU, discover.

        Raises:
            TimeoutError: not connected and set up within bleak's ``timeout``.
            BleakBluetoothNotAvailableError: no host open, or its transport is down.
            BleakError: the controller or the peer refused (see :class:`BumbleBackendError`).
        """
        if self.is_connected:
            return
        host = _host_for(self.transport_spec)
        device = await _ready_device(host)
        peer_address = self._peer_address(host)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout

        connection = await self._create_connection(host, device, peer_address)
        lost: asyncio.Future[int] = loop.create_future()
        link = _Link(connection, Peer(connection), lost)
        connection.on(
            Connection.EVENT_DISCONNECTION, functools.partial(self._on_disconnection, link)
        )
        self._link = link
        try:
            async with asyncio.timeout_at(deadline):
                await self._secure(link, device, peer_address, pair)
                await self._run("exchange_mtu", link.peer.request_mtu(ATT_MTU_MAX))
                self.services = await self._discover(link)
        except TimeoutError:
            log.info("ble_connect_setup_timeout", device=self._label, limit_s=self._timeout)
            await self.disconnect()
            raise TimeoutError(f"connection set-up with {self._label} timed out") from None
        except BaseException:
            await self.disconnect()
            raise
        log.info(
            "ble_connected",
            device=self._label,
            mtu=connection.att_mtu,
            encrypted=connection.is_encrypted,
            services=len(self.services.services),
        )

    async def _create_connection(
        self, host: BumbleHost, device: Device, peer_address: hci.Address
    ) -> Connection:
        try:
            async with asyncio.timeout(self._timeout + CONNECT_CANCEL_GRACE_S):
                async with host.connect_lock:
                    connection = await device.connect(
                        peer_address,
                        transport=core.PhysicalTransport.LE,
                        own_address_type=hci.OwnAddressType.RANDOM,
                        timeout=self._timeout,
                    )
        except (TimeoutError, core.TimeoutError):
            log.info("ble_connect_timeout", device=self._label, limit_s=self._timeout)
            raise TimeoutError(f"connecting to {self._label} timed out") from None
        except core.BaseBumbleError as exc:
            raise _translate("connect", self._label, exc) from None
        host.claim(connection)
        return connection

    async def _secure(
        self, link: _Link, device: Device, peer_address: hci.Address, pair: bool
    ) -> None:
        """Encrypt with the bond's keys when bonded (BlueZ does the same); else pair if asked
        and the pairing policy allows a new bond with this peer.

        Raises:
            BumbleLinkSecurityError: encryption with the bond failed, pairing failed, or no
                bond and the policy forbids one (then :class:`BumbleNotBondedError`).
        """
        keystore = device.keystore
        bonded = keystore is not None and await keystore.get(str(peer_address)) is not None
        if bonded:
            await self._encrypt(link)
        elif pair:
            await self._pair(link)

    async def _encrypt(self, link: _Link) -> None:
        """Encrypt with the stored keys; a failure that says the peer lacks them is a
        :class:`BumbleLinkSecurityError` (the bond is left as it is: never re-paired)."""
        try:
            await self._run("encrypt", link.connection.encrypt())
        except BumbleLinkLostError as exc:
            if exc.hci_reason not in ENCRYPTION_FAILURES:
                raise
            self._security_failure("encrypt", "hci", exc.hci_reason)
        except BumbleBackendError as exc:
            if exc.namespace == "hci" and exc.error_code in ENCRYPTION_FAILURES:
                self._security_failure("encrypt", "hci", exc.error_code)
            raise
        log.info("ble_encrypted", device=self._label, bonded=True)

    def _security_failure(self, operation: str, namespace: str, code: int | None) -> NoReturn:
        reason = hci.HCI_ErrorCode(code).name if namespace == "hci" and code else "failed"
        log.warning(
            "ble_link_security_failed",
            operation=operation,
            device=self._label,
            namespace=namespace,
            error_code=code,
            reason=reason,
        )
        raise BumbleLinkSecurityError(
            operation, reason, device=self._label, namespace=namespace, error_code=code
        )

    async def _pair(self, link: _Link) -> None:
        """Pair (and bond) when the host's policy allows a new bond with this peer."""
        host = _host_for(self.transport_spec)
        address = link.connection.peer_address.to_string(with_type_qualifier=False)
        if not await host.may_bond(address, initiated_by="hub"):
            raise BumbleNotBondedError("pair", device=self._label)
        try:
            await self._run("pair", link.connection.pair())
        except BumbleLinkLostError:
            raise
        except BumbleBackendError as exc:
            log.warning(
                "ble_pairing_failed",
                device=self._label,
                namespace=exc.namespace,
                reason=exc.reason,
            )
            error = BumbleLinkSecurityError(
                "pair",
                exc.reason,
                device=self._label,
                namespace=exc.namespace,
                error_code=exc.error_code,
            )
            error.declined = host.pairing_declined(link.connection)
            raise error from None
        self.pairing_method = host.pairing_method(link.connection)
        log.info(
            "ble_paired",
            device=self._label,
            secure_connections=link.connection.sc,
            method=self.pairing_method,
        )

    async def _discover(self, link: _Link) -> BleakGATTServiceCollection:
        """Every primary service, characteristic and descriptor (Vol 3 Part G §4.4-§4.7)."""
        collection = BleakGATTServiceCollection()
        for service in await self._run("discover_services", link.peer.discover_services()):
            service_uuid = from_bumble(service.uuid)
            if self._requested_services is not None and (
                service_uuid not in self._requested_services
            ):
                continue
            bleak_service = BleakGATTService(service, service.handle, service_uuid)
            collection.add_service(bleak_service)
            characteristics = await self._run(
                "discover_characteristics", link.peer.discover_characteristics(service=service)
            )
            for characteristic in characteristics:
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    from_bumble(characteristic.uuid),
                    _properties(int(characteristic.properties)),
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                descriptors = await self._run(
                    "discover_descriptors", link.peer.discover_descriptors(characteristic)
                )
                for descriptor in descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor,
                            descriptor.handle,
                            from_bumble(descriptor.type),
                            bleak_characteristic,
                        )
                    )
        return collection

    def _on_disconnection(self, link: _Link, reason: int) -> None:
        if not link.lost.done():
            link.lost.set_result(reason)
        if self._link is not link:
            return
        self._link = None
        self.services = None
        self._subscriptions.clear()
        solicited = self._disconnecting
        log.info(
            "ble_disconnected",
            device=self._label,
            reason=_hci_error_name(reason),
            hci_reason=reason,
            solicited=solicited,
        )
        if not solicited and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        """Disconnect; ``is_connected`` is False afterwards even if the controller never answers."""
        link = self._link
        if link is None:
            return
        self._disconnecting = True
        try:
            if not link.lost.done():
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await link.connection.disconnect()
        except (TimeoutError, core.BaseBumbleError) as exc:
            log.warning("ble_disconnect_incomplete", device=self._label, error=type(exc).__name__)
        finally:
            self._disconnecting = False
            if self._link is link:
                self._link = None
                self.services = None
                self._subscriptions.clear()
                if not link.lost.done():
                    link.lost.set_result(hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair (and bond) with Bumble's SMP under the host's :class:`PairingPolicy`.

        A bonded peer is not paired again: its link is encrypted with the stored keys (as
        BlueZ answers "already paired"), and a peer without them fails.

        Raises:
            BumbleLinkSecurityError: as :meth:`connect` with ``pair=True``.
        """
        link = self._require_link("pair")
        host = _host_for(self.transport_spec)
        address = link.connection.peer_address.to_string(with_type_qualifier=False)
        if await host.is_bonded(address):
            if not link.connection.is_encrypted:
                await self._encrypt(link)
            return
        await self._pair(link)

    async def unpair(self) -> None:
        """Forget the bond's keys and disconnect."""
        host = _host_for(self.transport_spec)
        if host.device is not None and await host.remove_bond(self.address):
            log.info("ble_unpaired", device=self._label)
        await self.disconnect()

    # -- GATT -------------------------------------------------------------------------

    def _require_link(self, operation: str) -> _Link:
        link = self._link
        if link is None or link.lost.done():
            raise BumbleBackendError(operation, "not connected", device=self._label)
        return link

    async def _run(self, operation: str, operation_coro: Coroutine[Any, Any, T]) -> T:
        """Run a Bumble operation, ending it early (with a typed error) if the link drops.

        Bumble cancels a pending ATT request when the connection ends; that cancellation
        is the link's loss, not ours, and is reported as :class:`BumbleLinkLostError`.
        """
        link = self._link
        if link is None or link.lost.done():
            operation_coro.close()
            raise BumbleBackendError(operation, "not connected", device=self._label)
        task = asyncio.create_task(operation_coro, name=f"ble.{operation}[{self._label}]")
        try:
            await asyncio.wait((task, link.lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done() or task.cancelled():
            task.cancel()
            reason = link.lost.result() if link.lost.done() else 0
            raise BumbleLinkLostError(operation, device=self._label, hci_reason=reason)
        error = task.exception()
        if error is not None:
            raise _translate(operation, self._label, error) from None
        return task.result()

    @staticmethod
    def _characteristic_proxy(
        characteristic: BleakGATTCharacteristic,
    ) -> CharacteristicProxy[bytes]:
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError("characteristic was not discovered by this backend")
        return cast(CharacteristicProxy[bytes], proxy)

    @staticmethod
    def _descriptor_proxy(descriptor: BleakGATTDescriptor) -> DescriptorProxy:
        proxy = descriptor.obj
        if not isinstance(proxy, DescriptorProxy):
            raise BleakError("descriptor was not discovered by this backend")
        return proxy

    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        """Read a characteristic value (Read, then Read Blob for long values)."""
        link = self._require_link("read")
        proxy = self._characteristic_proxy(characteristic)
        if use_cached:
            cached = link.peer.gatt_client.cached_values.get(proxy.handle)
            if cached is not None:
                return bytearray(cached[1])
        return bytearray(await self._run("read", link.peer.read_value(proxy)))

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        """Read a descriptor value."""
        link = self._require_link("read_descriptor")
        proxy = self._descriptor_proxy(descriptor)
        if use_cached:
            cached = link.peer.gatt_client.cached_values.get(proxy.handle)
            if cached is not None:
                return bytearray(cached[1])
        return bytearray(await self._run("read_descriptor", link.peer.read_value(proxy)))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        """Write a characteristic value, as a request (``response``) or a command."""
        link = self._require_link("write")
        proxy = self._characteristic_proxy(characteristic)
        value = bytes(cast(Any, data))
        await self._run("write", link.peer.write_value(proxy, value, with_response=response))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        """Write a descriptor value (always a Write Request)."""
        link = self._require_link("write_descriptor")
        proxy = self._descriptor_proxy(descriptor)
        value = bytes(cast(Any, data))
        await self._run("write_descriptor", link.peer.write_value(proxy, value, with_response=True))

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        """Subscribe: notifications when offered, else indications (each then confirmed).

        Raises:
            BleakError: the characteristic neither notifies nor indicates, or has no CCCD.
        """
        link = self._require_link("subscribe")
        proxy = self._characteristic_proxy(characteristic)
        properties = characteristic.properties
        if "notify" not in properties and "indicate" not in properties:
            raise BumbleBackendError(
                "subscribe", "characteristic neither notifies nor indicates", device=self._label
            )
        if characteristic.get_descriptor(CLIENT_CHARACTERISTIC_CONFIGURATION) is None:
            raise BumbleBackendError("subscribe", "characteristic has no CCCD", device=self._label)
        label = self._label

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception as exc:  # a callback bug must not stall the stack
                log.error(
                    "ble_notify_callback_failed",
                    device=label,
                    error=type(exc).__name__,
                    exc_info=exc,
                )

        self._subscriptions[proxy.handle] = on_value
        try:
            await self._run("subscribe", link.peer.subscribe(proxy, on_value, prefer_notify=True))
        except BaseException:
            self._subscriptions.pop(proxy.handle, None)
            raise
        mode = "notify" if "notify" in properties else "indicate"
        log.info("ble_subscribed", device=label, characteristic=characteristic.uuid, mode=mode)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe (writes 0x0000 to the CCCD when no subscriber is left)."""
        link = self._require_link("unsubscribe")
        proxy = self._characteristic_proxy(characteristic)
        subscriber = self._subscriptions.pop(proxy.handle, None)
        await self._run("unsubscribe", link.peer.unsubscribe(proxy, subscriber))


# ---------------------------------------------------------------------------------------
# Binding to a transport
# ---------------------------------------------------------------------------------------


@functools.cache
def backend_classes(transport_spec: str) -> tuple[type[BumbleScanner], type[BumbleClient]]:
    """The scanner and client classes bound to the host of ``transport_spec`` (cached)."""
    scanner = cast(
        type[BumbleScanner],
        type(
            "BumbleScanner",
            (BumbleScanner,),
            {"transport_spec": transport_spec, "__module__": __name__},
        ),
    )
    client = cast(
        type[BumbleClient],
        type(
            "BumbleClient",
            (BumbleClient,),
            {"transport_spec": transport_spec, "__module__": __name__},
        ),
    )
    return scanner, client
