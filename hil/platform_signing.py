"""The platform's signed messages to a hub: receipts and commands (docs/platform-protocol.md).

Built with pycose, not with the hub's code (agent/cose.py), so that a misreading of RFC 9052 in
either cannot pass both sides' tests. Every message is a tagged COSE_Sign1, ES256, protected
header ``{1: -7, 3: <content type>, 4: kid}`` in deterministic encoding, empty unprotected map,
payload a deterministic CBOR map (RFC 8949 §4.2.1, ``cbor2.dumps(..., canonical=True)``).

:class:`PlatformSigner` holds the platform key; tests use it to build valid messages and then
alter them (a forged, expired, replayed or mismatched receipt is built with the same call and
other arguments). :func:`envelope_digest` names an envelope in a receipt.

:func:`verify_platform_message` is the same check a hub makes on the signature and the
structure (kid, alg, content type), with pycose; the hub's own checks live in agent/.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys.cosekey import CoseKey
from pycose.messages.sign1message import Sign1Message

ALG_ES256: Final = -7
HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID = 1, 3, 4
KID_BYTES: Final = 16
DIGEST_BYTES: Final = 16
RID_BYTES: Final = 16
NONCE_BYTES: Final = 16
PROTOCOL_VERSION: Final = 1
MAX_VALIDITY_S: Final = 3600
"""``exp - iat`` of a receipt or a command is at most an hour."""
MAX_RECEIPT_ITEMS: Final = 1000
"""``held`` and ``refused`` together."""

RECEIPT_CONTENT_TYPE: Final = "application/vnd.homehub.receipt+cbor"
COMMAND_CONTENT_TYPE: Final = "application/vnd.homehub.command+cbor"
REPLY_CONTENT_TYPE: Final = "application/vnd.homehub.reply+cbor"

COMMAND_OPS: Final = frozenset(
    {
        "sync_now",
        "report_status",
        "set_config",
        "announce",
        "rotate_certificate",
        "install_certificate",
        "confirm_provisioning",
    }
)
"""The ops docs/platform-protocol.md names (the signer does not refuse others: a test sends an
unknown op on purpose)."""


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """kid = SHA-256(DER SubjectPublicKeyInfo)[:16]."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:KID_BYTES]


def envelope_digest(message: bytes) -> bytes:
    """How a receipt names an envelope: SHA-256 over the MQTT payload as received, first 16 B."""
    return hashlib.sha256(message).digest()[:DIGEST_BYTES]


def _check_window(iat: int, exp: int) -> None:
    if type(iat) is not int or type(exp) is not int or iat < 0 or exp < 0:
        raise ValueError("iat and exp are Unix seconds (non-negative int)")


class PlatformSigner:
    """Signs receipts and commands with the platform key (a P-256 private key).

    The signer checks types (what would not encode as the contract's CBOR) but not the
    contract's limits (``exp - iat`` ≤ 3,600, 1-1,000 items), so that tests can build messages
    a hub must refuse; :meth:`receipt` and :meth:`command` take ``strict=True`` to check them.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise TypeError("the platform key must be a P-256 private key")
        self._private_key = private_key
        self._kid = key_id(private_key.public_key())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self._cose_key = CoseKey.from_pem_private_key(pem)
        del pem

    @classmethod
    def from_pem_file(cls, path: os.PathLike[str] | str) -> PlatformSigner:
        """A signer from a PEM (PKCS#8 or SEC1) private key file, e.g. ``DevPki.platform_key``."""
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the platform key must be a P-256 private key")
        return cls(key)

    def __repr__(self) -> str:
        return f"PlatformSigner(kid={self._kid.hex()})"

    @property
    def kid(self) -> bytes:
        """The platform key's id (16 bytes)."""
        return self._kid

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The platform's public key (what a hub's ``[platform] cert_file`` certifies)."""
        return self._private_key.public_key()

    # -- messages -----------------------------------------------------------------------

    def receipt(
        self,
        hub: str,
        held: Sequence[tuple[bytes, Sequence[int]]],
        refused: Sequence[tuple[bytes, Sequence[int], str]] = (),
        *,
        iat: int,
        exp: int,
        rid: bytes | None = None,
        strict: bool = False,
    ) -> bytes:
        """A signed receipt for ``hub``: ``held`` ``[(digest, seqs)]``, ``refused``
        ``[(digest, seqs, reason)]``; ``rid`` random when None. The ``refused`` key is left
        out when there is none."""
        _check_window(iat, exp)
        if rid is None:
            rid = os.urandom(RID_BYTES)
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "hub": hub,
            "rid": bytes(rid),
            "iat": iat,
            "exp": exp,
            "held": [[bytes(d), [int(s) for s in seqs]] for d, seqs in held],
        }
        if refused:
            body["refused"] = [
                [bytes(d), [int(s) for s in seqs], str(reason)] for d, seqs, reason in refused
            ]
        if strict:
            items = len(held) + len(refused)
            if not 1 <= items <= MAX_RECEIPT_ITEMS:
                raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_ITEMS} envelopes")
            if not 0 <= exp - iat <= MAX_VALIDITY_S or len(rid) != RID_BYTES:
                raise ValueError("receipt outside the contract (exp - iat, rid length)")
        return self.sign(RECEIPT_CONTENT_TYPE, body)

    def command(
        self,
        hub: str,
        op: str,
        args: Mapping[str, Any],
        *,
        iat: int,
        exp: int,
        nonce: bytes | None = None,
        strict: bool = False,
    ) -> bytes:
        """A signed command for ``hub``; ``nonce`` random when None."""
        _check_window(iat, exp)
        if nonce is None:
            nonce = os.urandom(NONCE_BYTES)
        if strict and (
            op not in COMMAND_OPS or not 0 <= exp - iat <= MAX_VALIDITY_S or len(nonce) != 16
        ):
            raise ValueError("command outside the contract (op, exp - iat, nonce length)")
        body = {
            "v": PROTOCOL_VERSION,
            "hub": hub,
            "nonce": bytes(nonce),
            "iat": iat,
            "exp": exp,
            "op": op,
            "args": dict(args),
        }
        return self.sign(COMMAND_CONTENT_TYPE, body)

    def sign(self, content_type: str, body: Mapping[str, Any] | bytes) -> bytes:
        """One COSE_Sign1 over ``body`` (a map, encoded deterministically, or payload bytes
        as they are) under ``content_type``: the building block of the messages above."""
        payload = body if isinstance(body, bytes) else cbor2.dumps(dict(body), canonical=True)
        # Inserted in label order 1, 3, 4: pycose encodes the protected map in insertion
        # order, which is then the deterministic order (keys sorted by their encoded bytes).
        message = Sign1Message(
            phdr={Algorithm: ALG_ES256, ContentType: content_type, KID: self._kid},
            uhdr={},
            payload=payload,
        )
        message.key = self._cose_key
        encoded: bytes = message.encode(tag=True)
        return encoded


def verify_platform_message(
    message: bytes, public_key: ec.EllipticCurvePublicKey, content_type: str
) -> dict[str, Any]:
    """The payload of a platform message, after pycose verified it with ``public_key``.

    For tests of this module and for tools; raises ValueError naming the fault. Not a
    substitute for the hub's checks (time window, replay, digests)."""
    outer = cbor2.loads(message)
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != 18 or len(outer.value) != 4:
        raise ValueError("not a tagged COSE_Sign1")
    protected, unprotected, payload, signature = outer.value
    header = cbor2.loads(protected)
    if header != {
        HEADER_ALG: ALG_ES256,
        HEADER_CONTENT_TYPE: content_type,
        HEADER_KID: key_id(public_key),
    }:
        raise ValueError("protected header is not {alg ES256, content type, platform kid}")
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    msg.key = CoseKey.from_pem_public_key(pem)
    if not msg.verify_signature():
        raise ValueError("signature does not verify")
    body = cbor2.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("payload is not a map")
    return body
