"""agent.ble.identity: the pinned identity (issue 8, reliability-catalogue B5)."""

from __future__ import annotations

import dataclasses

from agent.ble.identity import IdentityMismatch, check_identity, identity_pin
from agent.normalize.device import DeviceFacts

FACTS = DeviceFacts(
    address="F0:00:00:00:10:01",
    system_id="0000BEEF00C0FFEE",
    manufacturer="Acme Medical",
    model="BP-1",
    serial="SN-000123",
    firmware="1.0",
)


def test_pin_is_a_digest_without_the_values() -> None:
    pin = identity_pin(FACTS)
    assert pin is not None
    assert pin.startswith("sha256:")
    assert len(pin) == len("sha256:") + 64
    assert "SN-000123" not in pin
    assert "BEEF" not in pin.upper()


def test_firmware_update_keeps_the_pin() -> None:
    updated = dataclasses.replace(FACTS, firmware="2.0", software="2.0", hardware="B")
    assert identity_pin(updated) == identity_pin(FACTS)


def test_each_pinned_field_changes_the_pin() -> None:
    pins = {identity_pin(FACTS)}
    for name, value in (
        ("system_id", "0000BEEF00C0FFEF"),
        ("manufacturer", "Acme Medica1"),
        ("model", "BP-2"),
        ("serial", "SN-000124"),
        ("serial", None),
    ):
        pins.add(identity_pin(dataclasses.replace(FACTS, **{name: value})))
    assert len(pins) == 6


def test_nothing_to_pin() -> None:
    assert identity_pin(DeviceFacts(address="F0:00:00:00:10:01", firmware="1.0")) is None


def test_check() -> None:
    pin = identity_pin(FACTS)
    assert check_identity(FACTS, pin, "config") is None
    assert check_identity(FACTS, None, "config") is None
    other = dataclasses.replace(FACTS, serial="SN-999999")
    assert check_identity(other, pin, "config") == IdentityMismatch("config", missing=False)
    bare = DeviceFacts(address=FACTS.address)
    assert check_identity(bare, pin, "first_contact") == IdentityMismatch(
        "first_contact", missing=True
    )
