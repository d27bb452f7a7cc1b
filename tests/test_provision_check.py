"""The provisioning check on the wire (agent/provisioning/check.py): the hub's event as the
platform reads it with pycose, and the hub's judgement of confirmations built by the
reference platform's own signer (hil/platform_signing.py, pycose), not by the hub's code."""

from __future__ import annotations

import os
from typing import Any, Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.ingest import Signer
from agent.provisioning.check import (
    CLOCK_SKEW_S,
    CONFIRM_OP,
    ConfirmationError,
    Distrust,
    check_event,
    read_confirmation,
)
from hil.platform_console import CONFIRM_OP as PLATFORM_CONFIRM_OP
from hil.platform_signing import PlatformSigner, verify_platform_message

HUB: Final = "hub-0001"
NOW: Final = 1_800_000_000
CHECK: Final = bytes(range(16))


@pytest.fixture(scope="module")
def platform() -> PlatformSigner:
    return PlatformSigner(ec.generate_private_key(ec.SECP256R1()))


def _confirm(signer: PlatformSigner, **change: Any) -> bytes:
    values: dict[str, Any] = {
        "hub": HUB,
        "op": CONFIRM_OP,
        "args": {"check": CHECK},
        "iat": NOW,
        "exp": NOW + 300,
    }
    values.update(change)
    return signer.command(values.pop("hub"), values.pop("op"), values.pop("args"), **values)


def _read(message: bytes, platform: PlatformSigner, now: float = NOW) -> Any:
    return read_confirmation(message, platform.public_key, hub_id=HUB, check=CHECK, now=now)


def test_the_check_event_verifies_on_the_platform_side_and_carries_no_reading() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = Signer.from_key(key)
    message = check_event(HUB, NOW, CHECK, signer.sign, signer.kid)
    body = verify_platform_message(message, key.public_key(), "application/vnd.homehub.event+cbor")
    assert body == {"v": 1, "hub": HUB, "iat": NOW, "event": "provisioning_check", "check": CHECK}
    assert cbor2.dumps(body, canonical=True) == cbor2.loads(message).value[2]
    assert PLATFORM_CONFIRM_OP == CONFIRM_OP


def test_a_confirmation_of_this_check_is_accepted(platform: PlatformSigner) -> None:
    nonce = os.urandom(16)
    found = _read(_confirm(platform, nonce=nonce), platform, now=NOW + 10)
    assert found is not None
    assert found.nonce == nonce


@pytest.mark.parametrize(
    "change",
    [
        {"op": "sync_now", "args": {}},
        {"args": {"check": bytes(16)}},  # an earlier run's check
    ],
)
def test_other_commands_are_not_the_answer(platform: PlatformSigner, change: Any) -> None:
    assert _read(_confirm(platform, **change), platform) is None


def test_a_confirmation_signed_with_another_key_is_forged(platform: PlatformSigner) -> None:
    other = PlatformSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfirmationError) as caught:
        _read(_confirm(other), platform)
    assert caught.value.reason is Distrust.FORGED


def test_another_key_signing_an_unrelated_command_is_ignored(platform: PlatformSigner) -> None:
    other = PlatformSigner(ec.generate_private_key(ec.SECP256R1()))
    assert _read(_confirm(other, op="sync_now", args={}), platform) is None


@pytest.mark.parametrize(
    ("change", "now", "reason"),
    [
        ({"hub": "hub-0002"}, NOW, Distrust.WRONG_HUB),
        ({}, NOW + 301, Distrust.EXPIRED),
        ({}, NOW - CLOCK_SKEW_S - 1, Distrust.EXPIRED),
        ({"exp": NOW + 3601}, NOW, Distrust.MALFORMED),
        ({"args": {"check": CHECK, "more": 1}}, NOW, Distrust.MALFORMED),
        ({"nonce": b"short"}, NOW, Distrust.MALFORMED),
    ],
)
def test_an_untrustworthy_confirmation_is_refused_with_its_reason(
    platform: PlatformSigner, change: Any, now: int, reason: Distrust
) -> None:
    with pytest.raises(ConfirmationError) as caught:
        _read(_confirm(platform, **change), platform, now=now)
    assert caught.value.reason is reason
