"""How an emulated peripheral pairs: Just Works, passkey it displays, numeric comparison.

Core Spec Vol 3 Part H §2.3.5.1 picks the association model from both sides' I/O
capabilities (and whether either asks for MITM protection); the emulator's side is one of:

- :attr:`PairingMethod.JUST_WORKS`: no input, no output (most cuffs and oximeters).
- :attr:`PairingMethod.PASSKEY`: a display only: the meter shows a 6-digit passkey
  (:attr:`EmulatedPairing.displayed`) that the person at the hub must type; MITM asked.
- :attr:`PairingMethod.NUMERIC_COMPARISON`: a display and yes/no buttons, LE Secure
  Connections: both sides show the same 6 digits; the device "presses yes" when
  ``accept_comparison`` (the hub's technician answers for the hub's side).

Use :func:`configure` on a peripheral before its ``start()``: it installs the pairing
config on the Bumble device and says whether it advertises in *pairing mode* (the LE
General Discoverable flag; a device not in pairing mode advertises no discoverable flag,
Core Spec Supplement Part A §1.3). A passkey can be fixed (``passkey=``) or drawn at random
per pairing, as a real meter does; either way it is handed to the test through
:attr:`EmulatedPairing.displayed` (never logged).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from bumble.device import Connection, Device
from bumble.pairing import PairingConfig, PairingDelegate

if TYPE_CHECKING:
    from hil.emulators.gatt_peripheral import GattPeripheral

AD_FLAGS: Final = 0x01
FLAG_LE_LIMITED_DISCOVERABLE: Final = 0x01
FLAG_LE_GENERAL_DISCOVERABLE: Final = 0x02
FLAG_BR_EDR_NOT_SUPPORTED: Final = 0x04
"""Flags AD type and bits (Core Spec Supplement Part A §1.3)."""


class PairingMethod(enum.Enum):
    """The emulated device's side of pairing (module docstring)."""

    JUST_WORKS = "just_works"
    PASSKEY = "passkey"
    NUMERIC_COMPARISON = "numeric_comparison"


_IO: Final = {
    PairingMethod.JUST_WORKS: PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT,
    PairingMethod.PASSKEY: PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY,
    PairingMethod.NUMERIC_COMPARISON: (
        PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT
    ),
}


@dataclass(eq=False)
class EmulatedPairing:
    """A peripheral's pairing behaviour and what it saw (for tests; never sleep).

    Attributes:
        method: its association model.
        pairing_mode: advertise LE General Discoverable (the device is in pairing mode).
        passkey: the passkey it displays (``None``: a random one per pairing).
        accept_comparison: its answer to numeric comparison ("yes" pressed).
        displayed: each passkey it displayed, in order (the test reads and types it).
        compared: each number it showed for numeric comparison, in order.
    """

    method: PairingMethod = PairingMethod.JUST_WORKS
    pairing_mode: bool = True
    passkey: int | None = None
    accept_comparison: bool = True
    displayed: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    compared: list[int] = field(default_factory=list)

    @classmethod
    def just_works(cls, *, pairing_mode: bool = True) -> EmulatedPairing:
        """No I/O: Just Works."""
        return cls(PairingMethod.JUST_WORKS, pairing_mode)

    @classmethod
    def passkey_display(
        cls, *, passkey: int | None = None, pairing_mode: bool = True
    ) -> EmulatedPairing:
        """A display only: it shows a passkey the hub's side must type."""
        return cls(PairingMethod.PASSKEY, pairing_mode, passkey)

    @classmethod
    def numeric_comparison(
        cls, *, accept: bool = True, pairing_mode: bool = True
    ) -> EmulatedPairing:
        """A display and yes/no: LE Secure Connections numeric comparison."""
        return cls(PairingMethod.NUMERIC_COMPARISON, pairing_mode, accept_comparison=accept)

    @property
    def flags(self) -> int:
        """The Flags AD value it advertises."""
        discoverable = FLAG_LE_GENERAL_DISCOVERABLE if self.pairing_mode else 0
        return discoverable | FLAG_BR_EDR_NOT_SUPPORTED

    def config(self, _connection: Connection) -> PairingConfig:
        """Bumble's pairing config for one pairing (the device's ``pairing_config_factory``)."""
        return PairingConfig(
            sc=True,
            mitm=self.method is not PairingMethod.JUST_WORKS,
            bonding=True,
            delegate=_EmulatedDelegate(self),
        )


class _EmulatedDelegate(PairingDelegate):
    def __init__(self, pairing: EmulatedPairing) -> None:
        super().__init__(io_capability=_IO[pairing.method])
        self._pairing = pairing

    async def confirm(self, auto: bool = False) -> bool:
        # Just Works was negotiated. A device with a display asks for MITM protection and
        # refuses an unauthenticated pairing, as a meter that shows a passkey does.
        return self._pairing.method is PairingMethod.JUST_WORKS

    async def generate_passkey(self) -> int:
        fixed = self._pairing.passkey
        return fixed if fixed is not None else await super().generate_passkey()

    async def display_number(self, number: int, digits: int) -> None:
        self._pairing.displayed.put_nowait(number)

    async def compare_numbers(self, number: int, digits: int) -> bool:
        self._pairing.compared.append(number)
        return self._pairing.accept_comparison


def with_flags(advertising_data: bytes, flags: int) -> bytes:
    """``advertising_data`` with its Flags AD structure's value set to ``flags`` (added in
    front when it has none)."""
    out = bytearray()
    found = False
    offset = 0
    while offset < len(advertising_data):
        length = advertising_data[offset]
        if length == 0:
            break
        structure = advertising_data[offset : offset + 1 + length]
        if structure[1] == AD_FLAGS and length == 2:
            structure = bytes([2, AD_FLAGS, flags])
            found = True
        out += structure
        offset += 1 + length
    if not found:
        out[:0] = bytes([2, AD_FLAGS, flags])
    return bytes(out)


def configure(peripheral: GattPeripheral, pairing: EmulatedPairing) -> EmulatedPairing:
    """Make ``peripheral`` (not started yet) pair as ``pairing`` says; returns ``pairing``."""
    peripheral.pairing = pairing
    install(peripheral.device, pairing)
    return pairing


def install(device: Device, pairing: EmulatedPairing) -> None:
    """Set ``device``'s pairing config factory (for a Bumble device without a peripheral)."""
    device.pairing_config_factory = pairing.config


__all__ = [
    "EmulatedPairing",
    "PairingMethod",
    "configure",
    "install",
    "with_flags",
]
