"""The provisioning check on the wire (docs/platform-protocol.md, "Provisioning check"):
the hub's signed ``provisioning_check`` event and the platform's signed confirmation.

Sans-I/O. The hub publishes on ``events``::

    {"v": 1, "hub": <hub id>, "iat": uint, "event": "provisioning_check", "check": bstr(16)}

signed with its key. A platform that verifies it with the hub's certificate answers on the
hub's ``commands`` topic with the command ``confirm_provisioning`` (``args: {"check": <the
same 16 bytes>}``), signed with the platform key; the hub answers that with an ``ok`` reply.
So one round trip proves: the hub's certificate is accepted by the broker (TLS), the
platform knows it (it verified the event), and the hub holds the right platform certificate
(it verified the confirmation). Nothing goes to the patient's record: no reading is sent.

:func:`read_confirmation` judges one message from the ``commands`` topic: a confirmation of
this check (:class:`Confirmation`), ``None`` for anything else (another command, an older
check's confirmation), or :class:`ConfirmationError` for a confirmation of this check that
cannot be trusted (another key's signature, another hub, outside its time window).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.commands import COMMAND_CONTENT_TYPE
from agent.errors import IntegrityError
from agent.receipts import CLOCK_SKEW_S as RECEIPT_CLOCK_SKEW_S
from agent.status_messages import EVENT_CONTENT_TYPE

EVENT_KIND: Final = "provisioning_check"
CONFIRM_OP: Final = "confirm_provisioning"
CHECK_BYTES: Final = 16
NONCE_BYTES: Final = 16
PROTOCOL_VERSION: Final = 1
MAX_VALIDITY_S: Final = 3600
CLOCK_SKEW_S: Final = RECEIPT_CLOCK_SKEW_S
"""The hub's clock may be 20 minutes behind the platform's (as for receipts and commands)."""
_FIELDS: Final = frozenset({"v", "hub", "nonce", "iat", "exp", "op", "args"})
_MAX_DEPTH: Final = 3


def check_event(hub_id: str, iat: int, check: bytes, sign: cose.Es256Sign, kid: bytes) -> bytes:
    """The signed ``provisioning_check`` event (COSE_Sign1, the event content type)."""
    if len(check) != CHECK_BYTES:
        raise ValueError(f"a check id is {CHECK_BYTES} bytes")
    body = {"v": PROTOCOL_VERSION, "hub": hub_id, "iat": iat, "event": EVENT_KIND, "check": check}
    return cose.sign1_with(cbor2.dumps(body, canonical=True), sign, kid, EVENT_CONTENT_TYPE)


class Distrust(enum.StrEnum):
    """Why a confirmation of this check was not trusted."""

    FORGED = "forged"
    """It does not verify with ``[platform] cert_file``: that file is not this platform's."""
    WRONG_HUB = "wrong_hub"
    EXPIRED = "expired"
    """Outside ``iat - 1200 .. exp`` by the hub's clock: one of the two clocks is wrong."""
    MALFORMED = "malformed"


class ConfirmationError(ValueError):
    """A confirmation of this hub's check that cannot be trusted (:class:`Distrust`)."""

    def __init__(self, reason: Distrust, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A verified confirmation: its command nonce (the hub's reply names it)."""

    nonce: bytes
    iat: int


def read_confirmation(
    message: bytes,
    platform_key: ec.EllipticCurvePublicKey,
    *,
    hub_id: str,
    check: bytes,
    now: float,
) -> Confirmation | None:
    """Judge one message from the hub's ``commands`` topic (see the module doc)."""
    try:
        verified = cose.verify1(message, platform_key, expected_content_type=COMMAND_CONTENT_TYPE)
    except IntegrityError:
        claimed = _unverified_body(message)
        if claimed is not None and _names_check(claimed, check):
            raise ConfirmationError(
                Distrust.FORGED, "the confirmation does not verify with the platform certificate"
            ) from None
        return None
    body = _strict_body(verified.payload)
    if body is None or not _FIELDS <= set(body) or set(body) != _FIELDS:
        if body is not None and _names_check(body, check):
            raise ConfirmationError(Distrust.MALFORMED, "not a command of the contract")
        return None
    if not _names_check(body, check):
        return None
    if body["v"] != PROTOCOL_VERSION or set(body["args"]) != {"check"}:
        raise ConfirmationError(Distrust.MALFORMED, "unknown version or arguments")
    nonce, iat, exp = body["nonce"], body["iat"], body["exp"]
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ConfirmationError(Distrust.MALFORMED, f"nonce is not {NONCE_BYTES} bytes")
    if type(iat) is not int or type(exp) is not int or not 0 <= exp - iat <= MAX_VALIDITY_S:
        raise ConfirmationError(Distrust.MALFORMED, f"exp - iat is not 0..{MAX_VALIDITY_S} s")
    if body["hub"] != hub_id:
        raise ConfirmationError(Distrust.WRONG_HUB, "the confirmation names another hub")
    if not iat - CLOCK_SKEW_S <= now <= exp:
        raise ConfirmationError(
            Distrust.EXPIRED, "the confirmation is outside its time window by the hub's clock"
        )
    return Confirmation(nonce=nonce, iat=iat)


def _names_check(body: Mapping[Any, Any], check: bytes) -> bool:
    args = body.get("args")
    return body.get("op") == CONFIRM_OP and isinstance(args, dict) and args.get("check") == check


def _strict_body(payload: bytes) -> dict[Any, Any] | None:
    try:
        body = cose.strict_loads(payload, "command", _MAX_DEPTH)
    except (IntegrityError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _unverified_body(message: bytes) -> dict[Any, Any] | None:
    """The payload map of a COSE_Sign1 without checking it: only to tell a confirmation of
    this check signed with another key (a wrong platform certificate) from an unrelated
    command. Nothing read here is trusted."""
    if message[:1] != b"\xd2":  # tag 18, COSE_Sign1
        return None
    try:
        outer = cose.strict_loads(message[1:], "COSE_Sign1", _MAX_DEPTH)
    except (IntegrityError, RecursionError):
        return None
    if not isinstance(outer, list) or len(outer) != 4 or not isinstance(outer[2], bytes):
        return None
    return _strict_body(outer[2])


__all__ = [
    "CHECK_BYTES",
    "CONFIRM_OP",
    "EVENT_KIND",
    "Confirmation",
    "ConfirmationError",
    "Distrust",
    "check_event",
    "read_confirmation",
]
