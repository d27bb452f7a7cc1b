"""Bonds on BlueZ: pair, trust, check and remove a device, and power-cycle the adapter, over
BlueZ's D-Bus API (``org.bluez.Adapter1``, ``org.bluez.Device1``) with dbus-fast.

The pairing CLI and the daemon call this module; it is BlueZ's side of what Bumble's key
store does for the virtual home. One :class:`BluezAdapter` wraps one adapter (``hci0`` by
default) over one D-Bus connection; :func:`open_adapter` connects to the system bus (or a
given address) and checks the adapter is there::

    async with open_adapter("hci0") as adapter:
        bond = await adapter.pair(address, prompter)      # agent, Pair(), Trusted=true
        await adapter.is_bonded(address)                  # Bonded (or Paired) property
        await adapter.remove(address)                     # Adapter1.RemoveDevice: bond gone
        await adapter.power_cycle()                       # Powered false, then true

**Pairing** (:meth:`BluezAdapter.pair`), one at a time per adapter:

1. the device's object path is looked up by address among BlueZ's objects (the device must
   have been seen by a scan: BlueZ knows nothing else);
2. a :class:`~agent.ble.bluez_agent.PairingAgent` for that one path is registered on the same
   connection (BlueZ asks the agent of the connection that called ``Pair()``);
3. ``Device1.Pair()`` runs within the pairing deadline (:data:`PAIR_TIMEOUT_S`); past it
   ``CancelPairing()`` is sent;
4. on success ``Trusted`` is set and both properties are read back;
5. on any failure, and on cancellation, nothing of the attempt is left: a ``Trusted`` flag
   is cleared and a bond that BlueZ completed anyway (the deadline passed just after) is
   removed. A device already paired is not touched at all: it is checked before anything
   else (:class:`~agent.errors.BondExistsError`, as for BlueZ's ``AlreadyExists``).

**Errors** are mapped by type from BlueZ's D-Bus error names, in one place
(:func:`_pair_error`), never by reading their text:

==========================================  ================================================
BlueZ answer to ``Pair()``                  raised
==========================================  ================================================
our agent refused or got no answer          :class:`PairingError` ``declined``/``unanswered``
``AuthenticationRejected``                  :class:`PairingError` ``rejected``
``AuthenticationCanceled``                  :class:`PairingError` ``canceled``
``AuthenticationFailed``, ``Failed``…       :class:`PairingError` ``failed``
``AuthenticationTimeout``, our deadline     :class:`PairingError` ``timeout``
``AlreadyExists``                           :class:`BondExistsError`
``ConnectionAttemptFailed``, ``InProgress``  :class:`BleLinkError` (waiting can fix it)
``DoesNotExist``, unknown object            :class:`BleDeviceAbsentError`
``NotReady``, no BlueZ, no D-Bus            :class:`BleStackUnavailableError`
==========================================  ================================================

Nothing logged or raised here holds a full address or a device's object path (which spells
the address): devices appear as their label (:func:`agent.logs.device_label`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import structlog
from dbus_fast import BusType, DBusError, DBusFastError, Variant
from dbus_fast.aio import MessageBus

from agent.ble.bluez_agent import (
    BLUEZ_ROOT_PATH,
    DBUS_CALL_TIMEOUT_S,
    PROMPT_TIMEOUT_S,
    Capability,
    PairingAgent,
    bluez_call,
)
from agent.ble.prompts import Prompter
from agent.errors import (
    BleDeviceAbsentError,
    BleLinkError,
    BleStackUnavailableError,
    BondExistsError,
    HubError,
    PairingError,
    PairingFailure,
    UsageError,
)
from agent.logs import device_label

__all__ = [
    "ADAPTER_INTERFACE",
    "CANCEL_PAIRING_TIMEOUT_S",
    "DEFAULT_ADAPTER",
    "DEVICE_INTERFACE",
    "PAIR_CONNECT_S",
    "PAIR_TIMEOUT_S",
    "SMP_TIMEOUT_S",
    "BluezAdapter",
    "Bond",
    "open_adapter",
]

log = structlog.get_logger(__name__)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_ADAPTER: Final = "hci0"
ADAPTER_INTERFACE: Final = "org.bluez.Adapter1"
DEVICE_INTERFACE: Final = "org.bluez.Device1"
PROPERTIES_INTERFACE: Final = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_INTERFACE: Final = "org.freedesktop.DBus.ObjectManager"

PAIR_CONNECT_S: Final = 20.0
"""Room for BlueZ to connect before pairing (bleak-retry-connector's connect timeout)."""

SMP_TIMEOUT_S: Final = 30.0
"""The Security Manager's own transaction timeout (Core Vol 3 Part H §3.4)."""

PAIR_TIMEOUT_S: Final = PAIR_CONNECT_S + PROMPT_TIMEOUT_S + SMP_TIMEOUT_S
"""Deadline of one ``Pair()``: connect, one question to the technician (30 s at most), the
key exchange. 80 s: past it the device has left pairing mode anyway."""

CANCEL_PAIRING_TIMEOUT_S: Final = 5.0
"""Bound of the ``CancelPairing()`` sent when the deadline passed."""

_ADDRESS_RE: Final = re.compile(r"^[0-9A-F]{2}(?::[0-9A-F]{2}){5}$")

_ERROR_PREFIX: Final = "org.bluez.Error."

_STACK_ERRORS: Final = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.AccessDenied",
        _ERROR_PREFIX + "NotReady",
        _ERROR_PREFIX + "NotAvailable",
    }
)
"""Answers that say BlueZ (or the adapter) cannot be used, not that the device failed."""

_GONE_ERRORS: Final = frozenset(
    {_ERROR_PREFIX + "DoesNotExist", "org.freedesktop.DBus.Error.UnknownObject"}
)
"""Answers that say the device object is gone (removed meanwhile)."""

_PAIRING_FAILURES: Final = {
    "AuthenticationRejected": PairingFailure.REJECTED,
    "AuthenticationCanceled": PairingFailure.CANCELED,
    "AuthenticationFailed": PairingFailure.FAILED,
    "AuthenticationTimeout": PairingFailure.TIMEOUT,
}
"""``Pair()``'s authentication errors (BlueZ ``src/device.c`` from the kernel's status)."""


def _normalize(address: str) -> str:
    """``address`` upper-cased; :class:`UsageError` (without the value) if it is not one."""
    upper = address.strip().upper()
    if not _ADDRESS_RE.match(upper):
        raise UsageError("address", "not a Bluetooth address (AA:BB:CC:DD:EE:FF)")
    return upper


def _error_name(exc: BaseException) -> str:
    """A D-Bus error's name, or the exception's type: what may be logged of it."""
    return exc.type if isinstance(exc, DBusError) else type(exc).__name__


def _stack_error(operation: str, exc: BaseException) -> BleStackUnavailableError:
    return BleStackUnavailableError(f"BlueZ {operation} failed: {_error_name(exc)}")


def _bool(props: dict[str, Any], name: str) -> bool | None:
    value = props.get(name)
    if isinstance(value, Variant):
        value = value.value
    return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Bond:
    """A device's bond as BlueZ reports it.

    Attributes:
        device: the device's label (last two address octets).
        paired: ``Paired``: keys were exchanged.
        bonded: ``Bonded`` (BlueZ ≥ 5.68): the keys are stored and outlive the connection;
            ``Paired`` where BlueZ has no such property.
        trusted: ``Trusted``: BlueZ lets the device connect and use services without asking.
    """

    device: str
    paired: bool
    bonded: bool
    trusted: bool


class BluezAdapter:
    """One BlueZ adapter over one D-Bus connection (see the module docstring).

    Args:
        bus: a connected dbus-fast bus where BlueZ is (the system bus).
        name: the adapter's name, ``hci0`` by default.
    """

    def __init__(self, bus: MessageBus, name: str = DEFAULT_ADAPTER) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise UsageError("adapter", "not an adapter name (hci0)")
        self.bus = bus
        self.name = name
        self.path = f"{BLUEZ_ROOT_PATH}/{name}"
        self._pairing = asyncio.Lock()
        self._log = log.bind(adapter=name)

    # -- properties ----------------------------------------------------------

    async def _get_all(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await bluez_call(
            self.bus, path, PROPERTIES_INTERFACE, "GetAll", "s", [interface]
        )
        return dict(props)

    async def _set(self, path: str, interface: str, name: str, value: bool) -> None:
        await bluez_call(
            self.bus,
            path,
            PROPERTIES_INTERFACE,
            "Set",
            "ssv",
            [interface, name, Variant("b", value)],
        )

    async def check(self) -> None:
        """Make sure BlueZ answers and has this adapter.

        Raises:
            BleStackUnavailableError: no BlueZ on the bus, or no such adapter.
        """
        try:
            await self._get_all(self.path, ADAPTER_INTERFACE)
        except (DBusError, TimeoutError) as exc:
            raise _stack_error(f"adapter {self.name}", exc) from None

    async def device_path(self, address: str) -> str | None:
        """The BlueZ object path of the device at ``address`` under this adapter, or ``None``
        when BlueZ does not know it (never seen by a scan, or removed).

        Raises:
            UsageError: ``address`` is not a Bluetooth address.
            BleStackUnavailableError: BlueZ cannot be asked.
        """
        wanted = _normalize(address)
        try:
            (objects,) = await bluez_call(
                self.bus, "/", OBJECT_MANAGER_INTERFACE, "GetManagedObjects"
            )
        except (DBusError, TimeoutError) as exc:
            raise _stack_error("GetManagedObjects", exc) from None
        for path, interfaces in objects.items():
            props = interfaces.get(DEVICE_INTERFACE)
            if props is None:
                continue
            found = props.get("Address")
            adapter = props.get("Adapter")
            if (
                isinstance(found, Variant)
                and isinstance(adapter, Variant)
                and str(found.value).upper() == wanted
                and adapter.value == self.path
            ):
                return str(path)
        return None

    async def bond(self, address: str) -> Bond | None:
        """The device's bond as BlueZ reports it, or ``None`` when BlueZ does not know it."""
        path = await self.device_path(address)
        if path is None:
            return None
        try:
            return await self._bond_at(path, address)
        except DBusError as exc:
            if exc.type in _GONE_ERRORS:
                return None  # removed between the lookup and the read
            raise _stack_error("read device", exc) from None
        except TimeoutError as exc:
            raise _stack_error("read device", exc) from None

    async def _bond_at(self, path: str, address: str) -> Bond:
        props = await self._get_all(path, DEVICE_INTERFACE)
        paired = _bool(props, "Paired") or False
        bonded = _bool(props, "Bonded")
        return Bond(
            device=device_label(address),
            paired=paired,
            bonded=paired if bonded is None else bonded,
            trusted=_bool(props, "Trusted") or False,
        )

    async def is_bonded(self, address: str) -> bool:
        """Whether BlueZ holds a bond with the device (``Bonded``, or ``Paired`` on a BlueZ
        without ``Bonded``)."""
        found = await self.bond(address)
        return found is not None and found.bonded

    # -- pairing -----------------------------------------------------------------

    async def pair(
        self,
        address: str,
        prompter: Prompter,
        *,
        capability: Capability = Capability.KEYBOARD_DISPLAY,
        timeout_s: float = PAIR_TIMEOUT_S,
        prompt_timeout_s: float = PROMPT_TIMEOUT_S,
    ) -> Bond:
        """Pair with the device at ``address``, asking ``prompter`` what pairing asks, and
        trust it. Returns the bond as read back from BlueZ (paired and trusted).

        Raises:
            PairingError: the pairing was refused, failed or timed out; nothing is bonded or
                trusted by this attempt.
            BondExistsError: the device was already paired (left as it was).
            BleDeviceAbsentError: BlueZ does not know the device (scan first).
            BleLinkError: the device could not be connected (out of range, busy).
            BleStackUnavailableError: BlueZ or the adapter cannot be used.
            UsageError: ``address`` is not an address, or a timeout is out of range.
        """
        label = device_label(_normalize(address))
        if timeout_s <= 0:
            raise UsageError("timeout_s", "must be > 0")
        async with self._pairing:
            path = await self.device_path(address)
            if path is None:
                raise BleDeviceAbsentError("not known to BlueZ (scan for it first)", label)
            try:
                before = await self._bond_at(path, address)
            except (DBusError, TimeoutError) as exc:
                raise _stack_error("read device", exc) from None
            if before.paired:
                # Checked first so that cleaning up after a failed attempt can never drop a
                # bond that predates it (BlueZ would answer AlreadyExists anyway).
                raise BondExistsError(label)
            slog = self._log.bind(device=label)
            slog.info("bluez_pairing_started", capability=capability.value)
            agent = PairingAgent(
                self.bus,
                prompter,
                device_path=path,
                capability=capability,
                prompt_timeout_s=prompt_timeout_s,
            )
            async with agent:
                try:
                    await self._pair_within(agent, path, label, timeout_s)
                except PairingError as exc:
                    error = exc
                    refusal = agent.refusal
                    ours = exc.failure is PairingFailure.TIMEOUT and exc.bluez_error is None
                    if refusal is not None and not ours:
                        # Our agent's refusal says why better than BlueZ's answer to Pair().
                        error = PairingError(
                            label,
                            refusal.failure,
                            question=refusal.question.value,
                            bluez_error=exc.bluez_error,
                        )
                    await self._leave_nothing(path, label)
                    slog.warning(
                        "bluez_pairing_failed",
                        failure=error.failure.value,
                        question=error.question,
                        bluez_error=error.bluez_error,
                    )
                    raise error from None
                except BleLinkError as exc:
                    await self._leave_nothing(path, label)
                    slog.warning("bluez_pairing_failed", error=type(exc).__name__)
                    raise
                except asyncio.CancelledError:
                    # The technician gave up (Ctrl-C) or the hub is stopping: the attempt is
                    # undone like a failed one, then the cancellation goes on.
                    await self._leave_nothing(path, label)
                    slog.info("bluez_pairing_cancelled")
                    raise
            try:
                await self._set(path, DEVICE_INTERFACE, "Trusted", True)
                bond = await self._bond_at(path, address)
            except (DBusError, TimeoutError) as exc:
                await self._leave_nothing(path, label, remove=True)
                raise _stack_error("set Trusted", exc) from None
            if not (bond.paired and bond.trusted):
                await self._leave_nothing(path, label, remove=True)
                raise PairingError(label, PairingFailure.FAILED)
            slog.info("bluez_paired", bonded=bond.bonded, trusted=bond.trusted)
            return bond

    async def _pair_within(
        self, agent: PairingAgent, path: str, label: str, timeout_s: float
    ) -> None:
        """``Device1.Pair()`` within ``timeout_s``; BlueZ's answer mapped to the hub's
        errors. Past the deadline (or cancelled) the agent's open question is abandoned
        first, so that BlueZ is not left waiting on it, then ``CancelPairing()`` is sent."""
        try:
            async with asyncio.timeout(timeout_s):
                await bluez_call(self.bus, path, DEVICE_INTERFACE, "Pair", timeout_s=None)
        except TimeoutError:
            agent.abandon()
            await self._cancel_pairing(path)
            raise PairingError(label, PairingFailure.TIMEOUT) from None
        except asyncio.CancelledError:
            agent.abandon()
            await self._cancel_pairing(path)
            raise
        except DBusError as exc:
            raise _pair_error(label, exc) from None

    async def _cancel_pairing(self, path: str) -> None:
        try:
            await bluez_call(
                self.bus,
                path,
                DEVICE_INTERFACE,
                "CancelPairing",
                timeout_s=CANCEL_PAIRING_TIMEOUT_S,
            )
        except (DBusError, TimeoutError) as exc:
            self._log.info("bluez_cancel_pairing_failed", error=_error_name(exc))

    async def _leave_nothing(self, path: str, label: str, *, remove: bool = False) -> None:
        """After a failed attempt on a device that was not paired before it: no ``Trusted``
        flag, no bond.

        A bond is dropped when ``Paired`` turned true although ``Pair()`` failed (the deadline
        passed as BlueZ completed), or with ``remove`` (the attempt paired but could not be
        finished: trust not set)."""
        try:
            props = await self._get_all(path, DEVICE_INTERFACE)
            if remove or _bool(props, "Paired"):
                await bluez_call(
                    self.bus, self.path, ADAPTER_INTERFACE, "RemoveDevice", "o", [path]
                )
                log.info("bluez_pairing_undone", device=label, removed=True)
            elif _bool(props, "Trusted"):
                await self._set(path, DEVICE_INTERFACE, "Trusted", False)
                log.info("bluez_pairing_undone", device=label, trust_cleared=True)
        except (DBusError, TimeoutError) as exc:
            # Logged, not raised: the pairing's own error is what the caller must see.
            log.warning("bluez_pairing_undo_failed", device=label, error=_error_name(exc))

    # -- removal and the adapter -------------------------------------------------

    async def remove(self, address: str) -> bool:
        """Remove the device and its bond from BlueZ (``Adapter1.RemoveDevice``). Returns
        whether BlueZ knew it.

        Raises:
            BleStackUnavailableError: BlueZ cannot be asked or refused.
        """
        label = device_label(_normalize(address))
        path = await self.device_path(address)
        if path is None:
            return False
        try:
            await bluez_call(self.bus, self.path, ADAPTER_INTERFACE, "RemoveDevice", "o", [path])
        except DBusError as exc:
            if exc.type in {
                _ERROR_PREFIX + "DoesNotExist",
                "org.freedesktop.DBus.Error.UnknownObject",
            }:
                return False
            raise _stack_error("RemoveDevice", exc) from None
        except TimeoutError as exc:
            raise _stack_error("RemoveDevice", exc) from None
        self._log.info("bluez_device_removed", device=label)
        return True

    async def power_cycle(self) -> None:
        """Switch the adapter off and on again (``Powered`` false, then true) and check it
        came back: what the scan watchdog does to an adapter that went quiet.

        Raises:
            BleStackUnavailableError: BlueZ refused (rfkill-blocked, adapter gone) or the
                adapter did not come back powered.
        """
        try:
            await self._set(self.path, ADAPTER_INTERFACE, "Powered", False)
            await self._set(self.path, ADAPTER_INTERFACE, "Powered", True)
            props = await self._get_all(self.path, ADAPTER_INTERFACE)
        except (DBusError, TimeoutError) as exc:
            self._log.error("bluez_adapter_power_cycle_failed", error=_error_name(exc))
            raise _stack_error(f"power cycle of {self.name}", exc) from None
        if _bool(props, "Powered") is not True:
            self._log.error("bluez_adapter_power_cycle_failed", error="not powered")
            raise BleStackUnavailableError(f"adapter {self.name} did not power on again")
        self._log.info("bluez_adapter_power_cycled")


def _pair_error(label: str, exc: DBusError) -> HubError:
    """The hub's error for BlueZ's answer ``exc`` to ``Pair()`` (table in the module
    docstring); decided by the error's name alone."""
    name = exc.type
    short = name.removeprefix(_ERROR_PREFIX) if name.startswith(_ERROR_PREFIX) else None
    if short in _PAIRING_FAILURES:
        return PairingError(label, _PAIRING_FAILURES[short], bluez_error=short)
    if short == "AlreadyExists":
        return BondExistsError(label)
    if short in {"ConnectionAttemptFailed", "InProgress"}:
        return BleLinkError(f"pairing: BlueZ {short}", label)
    if short == "DoesNotExist":
        return BleDeviceAbsentError("pairing: BlueZ DoesNotExist", label)
    if name in _STACK_ERRORS:
        return BleStackUnavailableError(f"BlueZ Pair failed: {name}")
    return PairingError(label, PairingFailure.FAILED, bluez_error=short or name)


@asynccontextmanager
async def open_adapter(
    name: str = DEFAULT_ADAPTER, *, bus_address: str | None = None
) -> AsyncIterator[BluezAdapter]:
    """Connect to BlueZ (the system bus, or ``bus_address``) and yield the adapter ``name``;
    the connection is closed on exit.

    Raises:
        BleStackUnavailableError: no D-Bus, no BlueZ on it, or no such adapter.
    """
    try:
        bus = (
            MessageBus(bus_address=bus_address)
            if bus_address is not None
            else MessageBus(bus_type=BusType.SYSTEM)
        )
        async with asyncio.timeout(DBUS_CALL_TIMEOUT_S):
            await bus.connect()
    except (OSError, TimeoutError, DBusFastError) as exc:
        # No socket, refused, an address we cannot use, authentication refused.
        raise BleStackUnavailableError(f"no D-Bus: {_error_name(exc)}") from None
    try:
        adapter = BluezAdapter(bus, name)
        await adapter.check()
        yield adapter
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):  # a bus that died first ends the same way
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # untyped in 5.2
