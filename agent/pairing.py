"""``homehub pair``: bond a health device in pairing mode and add it to the allow-list
(``homehub devices``, which lists, renames and removes them, is :mod:`agent.devices`).

Pairing, step by step (:func:`pair`):

1. **Scan** for at most ``scan_s`` seconds for devices in pairing mode (the Flags AD
   structure's LE General or Limited Discoverable bit, Core Spec Supplement Part A §1.3)
   that advertise the Blood Pressure (0x1810), Glucose (0x1808) or Pulse Oximeter (0x1822)
   service; devices already on the allow-list are left out.
2. **Show** them in a table: row number, name, kind, signal (dBm) and the address
   shortened to its last two octets. The technician picks a row (or gave ``--address``):
   the full address is never written, only typed.
3. **Bond** through the stack's :class:`Bonder`: the method the two sides' I/O capabilities
   negotiate (Just Works; passkey entry, typed at the terminal; LE Secure Connections
   numeric comparison, confirmed y/n), asked through a :class:`~agent.ble.prompts.Prompter`.
4. **Read** the Device Information Service (DIS 1.1) over the now encrypted link and compute
   the identity pin (:func:`agent.ble.identity.identity_pin`).
5. **Add** the device to the configuration's allow-list (:mod:`agent.config_edit`: comments
   kept, written atomically) with ``pairing = "required"`` and the pin.

A refused or failed step leaves nothing behind: no allow-list entry, and any bond the
attempt made is removed. An existing bond with a device that is not on the allow-list (a
stale one) is removed first, with a notice; one that is on it is refused (remove the device
first: ``homehub devices remove LABEL``).

Stacks plug in through :class:`Bonder` (four operations): :class:`BumbleBonder` over the
hub's Bumble host (``ble.stack = "bumble:..."``, the virtual home or an HCI dongle; the
daemon must be stopped, it holds the transport), and :class:`BluezBonder` over BlueZ's D-Bus
API with our Agent1 (:mod:`agent.ble.bluez_devices`).

Nothing here logs or prints a full address, a passkey, a serial number or key material.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from agent import config
from agent.ble.gatt_session import DisValues, device_facts
from agent.ble.identity import identity_pin
from agent.ble.prompts import Prompter
from agent.ble.stack import BONDS_FILE, BleStack, parse_stack
from agent.ble.uuids import (
    BLOOD_PRESSURE_SERVICE,
    DEVICE_INFORMATION_SERVICE,
    FIRMWARE_REVISION_STRING,
    GLUCOSE_SERVICE,
    HARDWARE_REVISION_STRING,
    MANUFACTURER_NAME_STRING,
    MODEL_NUMBER_STRING,
    PULSE_OXIMETER_SERVICE,
    SERIAL_NUMBER_STRING,
    SOFTWARE_REVISION_STRING,
    SYSTEM_ID,
)
from agent.config_edit import NewDevice, add_device, unique_label
from agent.errors import (
    BleLinkError,
    DeviceProtocolError,
    HubError,
    PairingError,
    PairingFailure,
    UsageError,
)
from agent.logs import device_label
from agent.normalize.device import DeviceFacts

log = structlog.get_logger(__name__)

KIND_BY_SERVICE: Final = {
    BLOOD_PRESSURE_SERVICE: "blood_pressure",
    GLUCOSE_SERVICE: "glucose",
    PULSE_OXIMETER_SERVICE: "pulse_oximeter",
}
"""The services ``homehub pair`` looks for, and the ``devices.kind`` each one means."""

SCAN_S_DEFAULT: Final = 10.0
SCAN_S_MAX: Final = 120.0
"""A device stays in pairing mode for 30 s to a few minutes; 10 s of scanning sees one
that advertises every 100 ms-1.28 s many times over."""

CONNECT_TIMEOUT_S: Final = 60.0
"""Connection, pairing (with the technician's answers, each up to 30 s) and discovery."""

AD_FLAGS: Final = 0x01
FLAGS_DISCOVERABLE: Final = 0x01 | 0x02
"""LE Limited and LE General Discoverable Mode (CSS Part A §1.3): the device is pairable."""


SMP_FAILURES: Final = {
    0x01: (PairingFailure.DECLINED, "passkey"),  # Passkey Entry Failed: no passkey typed
    0x03: (PairingFailure.REJECTED, None),  # Authentication Requirements not met
    0x04: (PairingFailure.FAILED, None),  # Confirm Value Failed: a mistyped passkey
    0x05: (PairingFailure.REJECTED, None),  # Pairing Not Supported
    0x09: (PairingFailure.REJECTED, None),  # Repeated Attempts
    0x0B: (PairingFailure.FAILED, None),  # DHKey Check Failed
    0x0C: (PairingFailure.DECLINED, "confirmation"),  # Numeric Comparison Failed
}
"""SMP Pairing Failed reasons (Core Spec Vol 3 Part H §3.5.5) as the hub's
:class:`~agent.errors.PairingFailure`; any other reason is ``failed``."""


def smp_failure(code: int | None) -> tuple[PairingFailure, str | None]:
    """The :class:`PairingFailure` (and the question refused) of an SMP reason."""
    return SMP_FAILURES.get(code or 0, (PairingFailure.FAILED, None))


# ---------------------------------------------------------------------------------------
# What a scan found
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device seen in pairing mode offering one of :data:`KIND_BY_SERVICE`.

    ``address`` is needed to pair and to write the allow-list; it is never shown (the
    repr hides it): :attr:`label` is.
    """

    address: str = field(repr=False)
    name: str | None
    kind: str
    rssi: int
    device: BLEDevice = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """The address shortened to its last two octets."""
        return device_label(self.address)

    @property
    def shown(self) -> str:
        """How prompts name it: its name and shortened address."""
        return f"{self.name} ({self.label})" if self.name else self.label


def advertised_flags(advertisement: AdvertisementData) -> int | None:
    """The Flags AD value, from the backend's own record of the advertisement; ``None``
    when the backend does not say (taken as in pairing mode)."""
    for item in advertisement.platform_data:
        data = getattr(item, "data", None)  # Bumble's Advertisement
        structures = getattr(data, "ad_structures", None)
        if isinstance(structures, list):
            for ad_type, value in structures:
                if ad_type == AD_FLAGS and len(value) >= 1:
                    return int(value[0])
            return 0
        if isinstance(item, dict) and "AdvertisingFlags" in item:  # BlueZ Device1
            flags = bytes(item["AdvertisingFlags"])
            return flags[0] if flags else 0
    return None


def candidate_of(device: BLEDevice, advertisement: AdvertisementData) -> Candidate | None:
    """A :class:`Candidate` when the advertisement is in pairing mode with a health service."""
    flags = advertised_flags(advertisement)
    if flags is not None and not flags & FLAGS_DISCOVERABLE:
        return None
    kind = next(
        (KIND_BY_SERVICE[u] for u in advertisement.service_uuids if u in KIND_BY_SERVICE), None
    )
    if kind is None:
        return None
    return Candidate(
        device.address.upper(),
        advertisement.local_name or None,
        kind,
        advertisement.rssi,
        device,
    )


async def scan(stack: BleStack, scan_s: float, *, exclude: Collection[str] = ()) -> list[Candidate]:
    """Every candidate seen within ``scan_s``, strongest signal first (last seen values)."""
    found: dict[str, Candidate] = {}

    def on_advertisement(device: BLEDevice, advertisement: AdvertisementData) -> None:
        candidate = candidate_of(device, advertisement)
        if candidate is not None and candidate.address not in exclude:
            found[candidate.address] = candidate
        elif candidate is None and device.address.upper() in found:
            del found[device.address.upper()]  # left pairing mode

    scanner = BleakScanner(
        on_advertisement,
        service_uuids=list(KIND_BY_SERVICE),
        backend=stack.scanner_backend,
    )
    log.info("pair_scan_started", limit_s=scan_s)
    try:
        async with scanner:
            await asyncio.sleep(scan_s)
    except BleakError as exc:
        raise BleLinkError(f"scan failed ({type(exc).__name__})") from None
    log.info("pair_scan_done", candidates=len(found))
    return sorted(found.values(), key=lambda c: -c.rssi)


def table(candidates: Sequence[Candidate]) -> list[str]:
    """The technician's table: row, name, kind, signal, shortened address."""
    rows = [("#", "name", "kind", "signal", "address")]
    rows += [
        (str(i), c.name or "-", c.kind, f"{c.rssi} dBm", c.label)
        for i, c in enumerate(candidates, 1)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# ---------------------------------------------------------------------------------------
# The stacks: what pairing needs of each
# ---------------------------------------------------------------------------------------


class Bonder(Protocol):
    """One Bluetooth stack's pairing operations (Bumble's host, or BlueZ over D-Bus)."""

    stack: BleStack
    """The opened stack: its bleak backends scan and connect."""

    async def is_bonded(self, address: str) -> bool:
        """Whether the stack holds a bond with ``address``."""

    async def bond(self, candidate: Candidate, prompter: Prompter) -> BleakClient:
        """Pair and bond with ``candidate``; returns a connected, encrypted client.

        Raises:
            PairingError: refused, failed or timed out; nothing of it is kept.
        """

    async def remove_bond(self, address: str) -> bool:
        """Delete the bond with ``address``; whether there was one."""


class BumbleBonder:
    """Pairing on the hub's Bumble host: its SMP with the technician's prompter."""

    def __init__(self, stack: BleStack) -> None:
        self.stack = stack

    async def is_bonded(self, address: str) -> bool:
        """Whether Bumble's key store holds a bond with ``address``."""
        return await self.stack.is_bonded(address)

    async def bond(self, candidate: Candidate, prompter: Prompter) -> BleakClient:
        """Connect with ``pair=True``: the host's technician policy pairs and bonds."""
        from agent.ble.bumble_backend import BumbleLinkSecurityError

        client = BleakClient(
            candidate.device,
            timeout=CONNECT_TIMEOUT_S,
            pair=True,
            backend=self.stack.client_backend,
        )
        try:
            await client.connect()
        except BumbleLinkSecurityError as exc:
            question: str | None
            if exc.declined is not None:
                failure, question = PairingFailure.DECLINED, exc.declined
            elif exc.namespace == "smp":
                failure, question = smp_failure(exc.error_code)
            else:
                failure, question = PairingFailure.FAILED, None
            raise PairingError(candidate.label, failure, question=question) from None
        except (BleakError, TimeoutError) as exc:
            raise BleLinkError(f"connect failed ({type(exc).__name__})", candidate.label) from None
        return client

    async def remove_bond(self, address: str) -> bool:
        """Delete the key store's bond with ``address``."""
        return await self.stack.remove_bond(address)


class BluezBonder:
    """Pairing on BlueZ: our Agent1 answers with the technician's prompter, ``Pair()``,
    ``Trusted``; removal with ``Adapter1.RemoveDevice`` (:mod:`agent.ble.bluez_devices`)."""

    def __init__(self, stack: BleStack, adapter: Any) -> None:
        self.stack = stack
        self._adapter = adapter

    async def is_bonded(self, address: str) -> bool:
        """Whether BlueZ holds a bond with ``address``."""
        return bool(await self._adapter.is_bonded(address))

    async def bond(self, candidate: Candidate, prompter: Prompter) -> BleakClient:
        """``Pair()`` through BlueZ with our agent, then connect (encrypted by the bond)."""
        await self._adapter.pair(candidate.address, prompter)  # PairingError as it is
        client = BleakClient(candidate.device, timeout=CONNECT_TIMEOUT_S)
        try:
            await client.connect()
        except (BleakError, TimeoutError) as exc:
            raise BleLinkError(f"connect failed ({type(exc).__name__})", candidate.label) from None
        return client

    async def remove_bond(self, address: str) -> bool:
        """``RemoveDevice``: BlueZ forgets the device and its keys."""
        return bool(await self._adapter.remove(address))


@asynccontextmanager
async def open_bonder(cfg: config.Config, prompter: Prompter) -> AsyncIterator[Bonder]:
    """The configured stack opened for pairing (the technician's policy), as a :class:`Bonder`.

    Raises:
        BleStackUnavailableError: BlueZ pairing needs :mod:`agent.ble.bluez_devices`.
        BleLinkError: the Bumble transport cannot be opened (is the daemon running?).
    """
    spec = parse_stack(cfg.ble.stack)
    if spec.kind == "bumble":
        from agent.ble.bumble_host import PairingPolicy

        async with BleStack.open(
            cfg.ble.stack,
            bonds_path=cfg.hub.state_dir / BONDS_FILE,
            pairing=PairingPolicy.technician(prompter),
        ) as stack:
            yield BumbleBonder(stack)
        return
    from agent.ble.bluez_devices import open_adapter

    async with open_adapter() as adapter, BleStack.open(cfg.ble.stack) as stack:
        yield BluezBonder(stack, adapter)


# ---------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------


class Chooser(Protocol):
    """Asks the technician which row to pair (the terminal prompter does)."""

    async def ask_line(self, question: str) -> str | None:
        """The answer line, or ``None`` (no answer)."""

    def say(self, text: str) -> None:
        """Tell the technician something."""


@dataclass(frozen=True, slots=True)
class PairResult:
    """What ``homehub pair`` did (``--json`` prints it; nothing identifying in it)."""

    label: str
    kind: str
    device: str
    pairing: str
    method: str
    identity_pinned: bool
    config: str


async def read_device_facts(client: BleakClient, address: str) -> DeviceFacts:
    """DIS 0x180A, every characteristic optional, decoded as the sessions decode it."""
    label = device_label(address)
    dis = client.services.get_service(DEVICE_INFORMATION_SERVICE)

    async def read(uuid: str) -> bytes | None:
        characteristic = dis.get_characteristic(uuid) if dis is not None else None
        if characteristic is None or "read" not in characteristic.properties:
            return None
        try:
            return bytes(await client.read_gatt_char(characteristic))
        except BleakError as exc:
            log.warning("pair_dis_unreadable", device=label, error=type(exc).__name__)
            return None

    values = DisValues(
        manufacturer_name=await read(MANUFACTURER_NAME_STRING),
        model_number=await read(MODEL_NUMBER_STRING),
        serial_number=await read(SERIAL_NUMBER_STRING),
        hardware_revision=await read(HARDWARE_REVISION_STRING),
        firmware_revision=await read(FIRMWARE_REVISION_STRING),
        software_revision=await read(SOFTWARE_REVISION_STRING),
        system_id=await read(SYSTEM_ID),
    )
    return device_facts(address, values, label)


def _normalise_address(address: str) -> str:
    upper = address.strip().upper()
    if not config.BD_ADDR_RE.match(upper):
        raise UsageError("--address", "must be a Bluetooth address AA:BB:CC:DD:EE:FF")
    return upper


async def choose(
    candidates: Sequence[Candidate], chooser: Chooser, address: str | None
) -> Candidate:
    """The candidate the technician picks: by ``address``, else by row number.

    Raises:
        UsageError: nothing found, no such row or address, or no answer.
    """
    if address is not None:
        wanted = _normalise_address(address)
        for candidate in candidates:
            if candidate.address == wanted:
                return candidate
        raise UsageError("--address", "no device in pairing mode at that address")
    if not candidates:
        raise UsageError("scan", "no health device in pairing mode found (put it in pairing mode)")
    answer = await chooser.ask_line(f"Pair which device? [1-{len(candidates)}] ")
    if answer is None or not answer.isdigit() or not 1 <= int(answer) <= len(candidates):
        raise UsageError("row", f"pick a row number from 1 to {len(candidates)}")
    return candidates[int(answer) - 1]


async def pair(
    cfg: config.Config,
    prompter: Prompter,
    chooser: Chooser,
    *,
    scan_s: float = SCAN_S_DEFAULT,
    address: str | None = None,
    label: str | None = None,
    show: Callable[[str], None] | None = None,
    bonder_factory: Callable[
        [config.Config, Prompter], AbstractAsyncContextManager[Bonder]
    ] = open_bonder,
) -> PairResult:
    """Scan, pick, bond, read DIS, pin, allow-list (see the module docstring).

    Raises:
        UsageError: a bad ``--label``/``--address``/``scan_s``, nothing found, no pick.
        ConfigError: the configuration cannot be edited (the bond is removed again).
        PairingError: the pairing did not bond.
        DeviceProtocolError: the bonded device does not offer the service it advertised.
        BleLinkError: the stack or the device could not be reached.
    """
    show = show or chooser.say
    if not 0 < scan_s <= SCAN_S_MAX:
        raise UsageError("--scan-s", f"must be > 0 and <= {SCAN_S_MAX:g}")
    taken = {d.label for d in cfg.devices}
    if label is not None:
        if not config.LABEL_RE.match(label):
            raise UsageError("--label", "must be [a-z0-9][a-z0-9_-], 1-32 characters")
        if label in taken:
            raise UsageError("--label", f"'{label}' is already used")
    allow_listed = {d.address.upper() for d in cfg.devices}
    if address is not None:
        wanted = _normalise_address(address)
        for device in cfg.devices:
            if device.address.upper() == wanted:
                raise UsageError("--address", f"already on the allow-list as '{device.label}'")

    async with bonder_factory(cfg, prompter) as bonder:
        candidates = await scan(bonder.stack, scan_s, exclude=allow_listed)
        for line in table(candidates):
            show(line)
        candidate = await choose(candidates, chooser, address)
        if await bonder.is_bonded(candidate.address):
            chooser.say(f"removing a stale bond with {candidate.label} (not on the allow-list)")
            await bonder.remove_bond(candidate.address)
        log.info("pair_started", device=candidate.label, kind=candidate.kind)
        try:
            client = await bonder.bond(candidate, prompter)
        except BaseException:
            await _forget(bonder, candidate)
            raise
        try:
            try:
                if client.services.get_service(_service_of(candidate.kind)) is None:
                    raise DeviceProtocolError(
                        candidate.label, "discover", f"no {candidate.kind} service"
                    )
                facts = await read_device_facts(client, candidate.address)
            finally:
                await client.disconnect()
            pin = identity_pin(facts)
            added = add_device(
                cfg.source,
                NewDevice(
                    kind=candidate.kind,
                    address=candidate.address,
                    label=label or unique_label(candidate.kind, taken),
                    pairing="required",
                    identity=pin,
                ),
            )
        except BaseException:
            await _forget(bonder, candidate)
            raise
    method = getattr(prompter, "method", None)
    result = PairResult(
        label=added.label,
        kind=added.kind,
        device=candidate.label,
        pairing=added.pairing_mode,
        method=method if isinstance(method, str) else "unknown",
        identity_pinned=pin is not None,
        config=str(cfg.source),
    )
    log.info(
        "pair_done",
        device=candidate.label,
        kind=added.kind,
        method=result.method,
        identity_pinned=result.identity_pinned,
    )
    return result


def _service_of(kind: str) -> str:
    return next(uuid for uuid, k in KIND_BY_SERVICE.items() if k == kind)


async def _forget(bonder: Bonder, candidate: Candidate) -> None:
    """Remove what a failed attempt may have bonded (shielded: runs even when cancelled)."""
    try:
        removed = await asyncio.shield(bonder.remove_bond(candidate.address))
    except (HubError, BleakError, OSError) as exc:
        log.warning("pair_cleanup_failed", device=candidate.label, error=type(exc).__name__)
        return
    if removed:
        log.info("pair_bond_removed", device=candidate.label)


__all__ = [
    "KIND_BY_SERVICE",
    "BluezBonder",
    "Bonder",
    "BumbleBonder",
    "Candidate",
    "PairResult",
    "open_bonder",
    "pair",
    "scan",
    "smp_failure",
    "table",
]
