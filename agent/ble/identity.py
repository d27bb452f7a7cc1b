"""A device's identity, pinned at pairing: who is behind an allow-listed address.

An address is easy to copy (a BLESA-style impersonator advertises the bonded cuff's address);
what the Device Information Service says (DIS 1.1: Manufacturer Name 0x2A29, Model Number
0x2A24, Serial Number 0x2A25, System ID 0x2A23) is what a clone must also fake, and together
with the bond's keys (the link's encryption) it is what the hub checks before it accepts a
single reading (reliability-catalogue B5).

The pin is a digest, not the values: a serial number is a HIPAA identifier (reliability
catalogue finding 11), so the configuration (``devices.identity``) and the outbox's sync state
hold ``sha256:<hex>`` of the canonical identity, never the serial itself, and a mismatch is
reported without either value.

Sans-I/O: :func:`identity_pin` maps decoded :class:`DeviceFacts` to the pin string and
:func:`check_identity` compares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from agent.normalize.device import DeviceFacts

PIN_PREFIX: Final = "sha256:"
PIN_FIELDS: Final = ("manufacturer", "model", "serial", "system_id")
"""The DIS values the pin covers: what names the physical unit. Firmware and software
revisions are left out, because an update must not look like an impersonation."""

SYNC_KEY: Final = "identity_pin"
"""The outbox sync-state key under which the daemon keeps the identity first seen at an
address whose configuration pins none (trust on first use, then pinned)."""


@dataclass(frozen=True, slots=True)
class IdentityMismatch:
    """The device at an allow-listed address is not the one pinned (no values: PHI).

    Attributes:
        source: where the pin came from: ``"config"`` (written by ``homehub pair``) or
            ``"first_contact"`` (kept by the daemon the first time it saw the device).
        missing: the device exposes none of the pinned fields any more.
    """

    source: str
    missing: bool


def identity_pin(facts: DeviceFacts) -> str | None:
    """``sha256:<hex>`` of the device's identity; ``None`` when DIS exposed none of
    :data:`PIN_FIELDS` (nothing to pin: only the bond then tells devices apart)."""
    values = {name: getattr(facts, name) for name in PIN_FIELDS}
    if all(value is None for value in values.values()):
        return None
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return PIN_PREFIX + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def check_identity(facts: DeviceFacts, pin: str | None, source: str) -> IdentityMismatch | None:
    """``None`` when ``facts`` match ``pin`` (or nothing is pinned), else the mismatch."""
    if pin is None:
        return None
    seen = identity_pin(facts)
    if seen == pin:
        return None
    return IdentityMismatch(source=source, missing=seen is None)


__all__ = ["PIN_FIELDS", "SYNC_KEY", "IdentityMismatch", "check_identity", "identity_pin"]
