"""The questions pairing asks a person, whichever stack asks them (BlueZ's Agent1, Bumble's
pairing delegate).

Core Spec Vol 3 Part H §2.3.5.1 picks the association model from both sides' I/O
capabilities; the hub's side is a technician at a terminal (``KeyboardDisplay``):

- **Just Works**: nothing is asked.
- **Passkey entry**, the device displays: the technician types the 6 digits the device shows
  (:meth:`Prompter.ask_passkey`; ``None`` refuses).
- **Passkey entry**, the hub displays: the technician types the shown digits on the device
  (:meth:`Prompter.show_passkey`).
- **Numeric comparison** (LE Secure Connections): both show a 6-digit number; the technician
  confirms they match (:meth:`Prompter.confirm_number`).

``device`` in every call is what the technician recognises (a name and the shortened
address), never the full address. A daemon has no technician: it pairs with
:class:`RefusingPrompter`, which answers every question with a refusal, so only Just Works
can complete unattended.
"""

from __future__ import annotations

from typing import Final, Protocol

PASSKEY_MAX: Final = 999_999
"""A passkey is a 6-digit decimal number, 000000-999999 (Core Vol 3 Part H §2.3.5.3)."""


class Prompter(Protocol):
    """Answers pairing's questions (see the module docstring)."""

    async def ask_passkey(self, device: str) -> int | None:
        """The passkey the device displays, as typed; ``None`` refuses the pairing."""

    async def confirm_number(self, device: str, number: int) -> bool:
        """Whether the number the device shows equals ``number`` (numeric comparison)."""

    async def show_passkey(self, device: str, passkey: int) -> None:
        """Show ``passkey`` for the technician to type on the device."""


class RefusingPrompter:
    """Nobody to ask (the daemon): every question is refused; Just Works still completes."""

    async def ask_passkey(self, device: str) -> int | None:
        return None

    async def confirm_number(self, device: str, number: int) -> bool:
        return False

    async def show_passkey(self, device: str, passkey: int) -> None:
        return None


__all__ = ["PASSKEY_MAX", "Prompter", "RefusingPrompter"]
