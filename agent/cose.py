"""COSE_Sign1 envelopes signed with ES256: the hub's signature over every payload it sends.

The envelope (RFC 9052 §4.2) is the CBOR tag 18 around a four-element array::

    COSE_Sign1 = #6.18([protected: bstr .cbor header_map, unprotected: {}, payload: bstr,
                        signature: bstr])

with the protected header ``{1: -7, 3: content type, 4: kid}`` (alg ES256, RFC 9052 §3.1) in
deterministic encoding (RFC 8949 §4.2.1), the signature computed over the ``Sig_structure``
``["Signature1", protected, h'', payload]`` (RFC 9052 §4.4) as the 64-byte ``r || s`` of
RFC 9053 §2.1, and ECDSA made deterministic by RFC 6979, so signing the same payload twice gives
the same bytes (the outbox can re-sign after a crash and the platform sees an identical copy).

The ``kid`` is the first 16 bytes of SHA-256 over the public key's DER SubjectPublicKeyInfo
(:func:`key_id`): the receiver finds the hub's certificate by the topic's hub id and checks that
its key has this id.

Compression (docs/platform-protocol.md "Compression"): two private-use labels of the protected
header say that the payload is one zstd frame (``-70001: "zstd"``) and with which dictionary it
was compressed (``-70002: id``). They are written only when asked for (:func:`sign1_with`'s
``payload_encoding``), so an envelope without them is byte for byte what it always was, and
accepted by :func:`verify1` only when the caller says it can decompress (``allow_compression``):
a caller that expects a plain payload never gets compressed bytes by mistake. The signature is
over the payload as sent (compressed); decompressing is the caller's (:mod:`agent.envelopes`).

Decoding is strict because the bytes come from the network: the size is bounded, nesting is
bounded, duplicate map keys and indefinite lengths are refused, no CBOR tag is turned into an
object (only the outer tag 18 is accepted, and only in its one-byte form), trailing bytes are
refused and the envelope must be in deterministic encoding. Every failure raises
:class:`~agent.errors.IntegrityError` whose ``reason`` names what was wrong.

Sans-I/O except :func:`load_signing_key` and :func:`check_key_file`, which read a key file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agent.errors import IntegrityError, KeyMaterialError
from agent.payload import CONTENT_TYPE, MAX_PAYLOAD_BYTES

# ---------------------------------------------------------------------------
# Constants (RFC 9052 / RFC 9053 names)
# ---------------------------------------------------------------------------

COSE_SIGN1_TAG: Final = 18
"""CBOR tag of a tagged COSE_Sign1 (RFC 9052 §2, Table 1)."""

_TAG18_HEAD: Final = bytes([0xC0 | COSE_SIGN1_TAG])
"""Tag 18 in its shortest (deterministic) form: major type 6, value in the initial byte."""

HEADER_ALG: Final = 1
HEADER_CONTENT_TYPE: Final = 3
HEADER_KID: Final = 4
"""Common header parameter labels (RFC 9052 §3.1, Table 2)."""

HEADER_PAYLOAD_ENCODING: Final = -70001
"""Private-use label (below -65536, RFC 9052 §3.1): how the payload is encoded, ``"zstd"``."""
HEADER_ZSTD_DICTIONARY: Final = -70002
"""Private-use label: the id of the zstd dictionary the payload was compressed with (uint)."""

ENCODING_ZSTD: Final = "zstd"
"""The one payload encoding: a single zstd frame (RFC 8878)."""

MAX_DICTIONARY_ID: Final = 2**31 - 1
"""zstd dictionary ids are 32-bit; ids of 2^31 and above are reserved by the zstd format."""

_KNOWN_LABELS: Final = frozenset(
    (HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID, HEADER_PAYLOAD_ENCODING, HEADER_ZSTD_DICTIONARY)
)

ALG_ES256: Final = -7
"""ECDSA w/ SHA-256 on P-256 (RFC 9053 §2.1, Table 1)."""

KID_BYTES: Final = 16
"""Our key id: SHA-256(SubjectPublicKeyInfo DER)[:16]; 128 bits make accidental clashes moot."""

SIGNATURE_BYTES: Final = 64
"""ES256 signature: r and s, each left-padded to the 32-byte group order length (RFC 9053 §2.1)."""

_COORDINATE_BYTES: Final = 32

SIG_CONTEXT: Final = "Signature1"
"""Context string of the Sig_structure for COSE_Sign1 (RFC 9052 §4.4)."""

MAX_MESSAGE_BYTES: Final = MAX_PAYLOAD_BYTES + 1024
"""Largest envelope accepted: the largest payload (agent/payload.py) plus a generous bound on
the fixed overhead (tag, array, protected header with a 36-byte content type and a 16-byte kid,
64-byte signature: about 130 bytes)."""

MAX_BATCH_MESSAGE_BYTES: Final = 1024 * 1024 + 1024
"""Largest envelope a caller may allow (:func:`verify1`'s ``max_message_bytes``): a batch's
payload of at most 1 MiB (agent/envelopes.py) plus the fixed overhead."""

_ENVELOPE_MAX_DEPTH: Final = 3
"""array -> unprotected map -> (nothing: it must be empty). One level of slack, no more."""

_HEADER_MAX_DEPTH: Final = 2
"""The protected header map holds only scalars and byte strings."""

_MAX_KEY_FILE_BYTES: Final = 16 * 1024
"""A PEM P-256 key is ~250 bytes; anything near this bound is not a key."""

_KNOWN_SEMANTIC_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
    43000, 55799,
)  # fmt: skip
"""Tags cbor2 6.3 would decode into objects by itself (datetimes, bignums, decimals, shared
references, regular expressions, MIME, sets, IP addresses…), found by probing cbor2 6.3.0.
Each is overridden with a refusal; every other tag reaches ``tag_hook``, which refuses too."""

# ---------------------------------------------------------------------------
# The decoded envelope
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sign1Message:
    """A COSE_Sign1 whose signature verified (RFC 9052 §4.2).

    ``payload`` is the exact signed byte string; it is kept out of ``repr`` because it holds
    a patient's reading.
    """

    alg: int
    kid: bytes
    content_type: str
    payload: bytes = field(repr=False)
    encoding: str | None = None
    """``"zstd"`` when the payload is a zstd frame (label -70001), else ``None``."""
    dictionary_id: int | None = None
    """The zstd dictionary's id (label -70002), ``None`` when none was used."""


# ---------------------------------------------------------------------------
# Signing and verifying
# ---------------------------------------------------------------------------


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The ``kid`` of a public key: SHA-256 over its DER SubjectPublicKeyInfo, first 16 bytes."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:KID_BYTES]


Es256Sign = Callable[[bytes], bytes]
"""An ES256 signing operation: message in (hashed with SHA-256 by the callee), the 64-byte
``r || s`` out. A key provider (:mod:`agent.keys`) supplies one whose key may never leave a
token; :func:`es256_sign` is the in-memory one."""


def es256_sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ES256 over ``message`` with an in-memory key: deterministic (RFC 6979), ``r || s``."""
    _require_p256(key, "signing key")
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")


def sign1(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    kid: bytes,
    content_type: str = CONTENT_TYPE,
) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1 (RFC 9052 §4.2, §4.4; ES256 per RFC 9053 §2.1).

    Deterministic: the same payload, key, kid and content type always give the same bytes.
    Raises :class:`KeyMaterialError` if ``key`` is not a P-256 key, and ``ValueError`` for a
    kid of the wrong length or a payload larger than the receiver accepts (both are the
    caller's bugs, not conditions to handle).
    """
    _require_p256(key, "signing key")
    return sign1_with(payload, functools.partial(es256_sign, key), kid, content_type)


def sign1_with(
    payload: bytes,
    sign: Es256Sign,
    kid: bytes,
    content_type: str = CONTENT_TYPE,
    *,
    payload_encoding: str | None = None,
    dictionary_id: int | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> bytes:
    """Like :func:`sign1`, with the ES256 operation supplied by the caller (a key provider).

    Deterministic only if ``sign`` is: a PKCS#11 token draws a fresh ECDSA nonce, so signing
    the same payload twice gives two different, equally valid envelopes. That is harmless
    because the outbox stores the signed bytes and re-sends exactly those. Raises
    :class:`KeyMaterialError` if ``sign`` returns something that is not a 64-byte ``r || s``.

    ``payload_encoding="zstd"`` (the payload is a zstd frame the caller made) and
    ``dictionary_id`` add labels -70001 and -70002 to the protected header; a dictionary id
    without the encoding, an unknown encoding or an id outside 1..2^31-1 is a ``ValueError``.
    ``max_payload_bytes`` raises the payload bound for a batch (at most the payload bound of
    :data:`MAX_BATCH_MESSAGE_BYTES`).
    """
    if len(kid) != KID_BYTES:
        raise ValueError(f"kid must be {KID_BYTES} bytes, got {len(kid)}")
    if not 0 < max_payload_bytes <= MAX_BATCH_MESSAGE_BYTES - 1024:
        raise ValueError(f"max_payload_bytes {max_payload_bytes} out of range")
    if len(payload) > max_payload_bytes:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {max_payload_bytes}")
    if payload_encoding not in (None, ENCODING_ZSTD):
        raise ValueError(f"unknown payload encoding {payload_encoding!r}")
    if dictionary_id is not None:
        if payload_encoding is None:
            raise ValueError("a dictionary id needs payload_encoding='zstd'")
        if type(dictionary_id) is not int or not 0 < dictionary_id <= MAX_DICTIONARY_ID:
            raise ValueError(f"dictionary id {dictionary_id!r} out of 1..{MAX_DICTIONARY_ID}")
    protected = _encode_protected(content_type, kid, payload_encoding, dictionary_id)
    signature = sign(_to_be_signed(protected, payload))
    if len(signature) != SIGNATURE_BYTES:
        raise KeyMaterialError(
            "signing key", f"signature of {len(signature)} bytes, ES256 needs {SIGNATURE_BYTES}"
        )
    return cbor2.dumps(
        cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]), canonical=True
    )


def verify1(
    message: bytes,
    public_key: ec.EllipticCurvePublicKey,
    *,
    expected_content_type: str | None = None,
    allow_compression: bool = False,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Sign1Message:
    """Check a tagged COSE_Sign1 against ``public_key`` and return its verified content.

    Raises :class:`IntegrityError` (``what="COSE_Sign1"``) with a ``reason`` naming the fault
    for a malformed envelope, a wrong header, a kid that is not ``public_key``'s, or a signature
    that does not verify; :class:`KeyMaterialError` if ``public_key`` is not a P-256 key.

    A compressed payload (labels -70001/-70002) is refused unless ``allow_compression``; then
    the payload returned is the signed zstd frame, still compressed. ``max_message_bytes``
    (at most :data:`MAX_BATCH_MESSAGE_BYTES`) raises the size bound for a batch.
    """
    _require_p256(public_key, "verification key")
    if not 0 < max_message_bytes <= MAX_BATCH_MESSAGE_BYTES:
        raise ValueError(f"max_message_bytes {max_message_bytes} out of range")
    protected, payload, signature = _split_envelope(message, max_message_bytes)
    alg, content_type, kid, encoding, dictionary_id = _parse_protected(protected)
    if encoding is not None and not allow_compression:
        _reject("compressed payload where a plain one is expected")
    if expected_content_type is not None and content_type != expected_content_type:
        _reject(f"content type {content_type!r}, expected {expected_content_type!r}")
    if kid != key_id(public_key):
        _reject("kid does not match the verification key")
    r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s),
            _to_be_signed(protected, payload),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        _reject("signature does not verify")
    return Sign1Message(
        alg=alg,
        kid=kid,
        content_type=content_type,
        payload=payload,
        encoding=encoding,
        dictionary_id=dictionary_id,
    )


def split1(message: bytes, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Sign1Message:
    """The content of a COSE_Sign1 **without checking its signature**: for envelopes this hub
    made and stored itself (the outbox's seal authenticates them), never for received ones.

    As strict as :func:`verify1` about structure and header (compression labels allowed);
    raises :class:`IntegrityError` the same way.
    """
    protected, payload, _signature = _split_envelope(message, max_message_bytes)
    alg, content_type, kid, encoding, dictionary_id = _parse_protected(protected)
    return Sign1Message(
        alg=alg,
        kid=kid,
        content_type=content_type,
        payload=payload,
        encoding=encoding,
        dictionary_id=dictionary_id,
    )


def protected_header(
    content_type: str,
    kid: bytes,
    *,
    payload_encoding: str | None = None,
    dictionary_id: int | None = None,
) -> bytes:
    """The protected header's bytes as :func:`sign1_with` writes them (deterministic CBOR);
    for sizing an envelope before signing it."""
    return _encode_protected(content_type, kid, payload_encoding, dictionary_id)


def _encode_protected(
    content_type: str, kid: bytes, encoding: str | None = None, dictionary_id: int | None = None
) -> bytes:
    header: dict[int, object] = {
        HEADER_ALG: ALG_ES256,
        HEADER_CONTENT_TYPE: content_type,
        HEADER_KID: kid,
    }
    if encoding is not None:
        header[HEADER_PAYLOAD_ENCODING] = encoding
    if dictionary_id is not None:
        header[HEADER_ZSTD_DICTIONARY] = dictionary_id
    return cbor2.dumps(header, canonical=True)


def _to_be_signed(protected: bytes, payload: bytes) -> bytes:
    """ToBeSigned: the deterministic encoding of the Sig_structure (RFC 9052 §4.4), no AAD."""
    return cbor2.dumps([SIG_CONTEXT, protected, b"", payload], canonical=True)


def _require_p256(key: object, what: str) -> None:
    ok = isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    )
    if not ok:
        raise KeyMaterialError(what, "not a P-256 (secp256r1) key, ES256 needs one")


# ---------------------------------------------------------------------------
# Strict decoding
# ---------------------------------------------------------------------------


def _reject(reason: str) -> NoReturn:
    raise IntegrityError("COSE_Sign1", reason)


class _RefusedTagError(Exception):
    """Raised inside cbor2 when a tag appears; carries the tag number out."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        super().__init__(tag)


def _refuse_semantic(tag: int, _value: object, _immutable: bool) -> NoReturn:
    raise _RefusedTagError(tag)


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool) -> NoReturn:
    raise _RefusedTagError(tag.tag)


_REFUSALS: Final[Mapping[int, Any]] = {
    t: functools.partial(_refuse_semantic, t) for t in _KNOWN_SEMANTIC_TAGS
}


TAG_DECIMAL_FRACTION: Final = 4
"""RFC 8949 §3.4.4: the one tag a reading's payload holds (measured values, agent/payload.py)."""

_REFUSALS_BUT_DECIMALS: Final[Mapping[int, Any]] = {
    t: f for t, f in _REFUSALS.items() if t != TAG_DECIMAL_FRACTION
}


def strict_cbor(
    data: bytes,
    part: str,
    *,
    max_depth: int,
    decimal_fractions: bool = False,
    deterministic: bool = True,
) -> object:
    """Decode a payload as strictly as the envelope: exactly one item, no duplicate keys, no
    indefinite lengths, no tags (but decimal fractions, tag 4, with ``decimal_fractions``),
    nesting within ``max_depth``, in deterministic encoding (RFC 8949 §4.2.1) unless
    ``deterministic`` is false (a compacted reading, version 2 or 3, whose receiver makes the
    deterministic version 1 from it: docs/platform-protocol.md).

    Raises :class:`IntegrityError` (``what="COSE_Sign1"``) whose reason starts with ``part``.
    """
    value = _strict_loads(data, part, max_depth, decimal_fractions=decimal_fractions)
    if not deterministic:
        return value
    try:
        canonical = cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        _reject(f"{part}: not in deterministic CBOR encoding")
    if canonical != data:
        _reject(f"{part}: not in deterministic CBOR encoding")
    return value


def strict_loads(data: bytes, part: str, max_depth: int) -> object:
    """Exactly one CBOR item without tags, duplicate keys or indefinite lengths, nesting
    within ``max_depth``, *without* the deterministic-encoding rule of :func:`strict_cbor`:
    for reading a message that did not verify far enough to say why (receipts, commands).

    Raises :class:`IntegrityError` whose reason starts with ``part``.
    """
    return _strict_loads(data, part, max_depth)


def _strict_loads(
    data: bytes, part: str, max_depth: int, *, decimal_fractions: bool = False
) -> object:
    """Decode exactly one CBOR item from ``data`` without building any tagged object."""
    decoder = cbor2.CBORDecoder(
        io.BytesIO(data),
        tag_hook=_refuse_tag,
        semantic_decoders=_REFUSALS_BUT_DECIMALS if decimal_fractions else _REFUSALS,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeEOF:
        _reject(f"{part}: truncated CBOR")
    except cbor2.CBORDecodeError as exc:
        _reject(f"{part}: {_describe(exc)}")
    consumed = decoder.fp.tell()
    if consumed != len(data):
        _reject(f"{part}: {len(data) - consumed} trailing bytes after the CBOR item")
    return value


def _describe(exc: cbor2.CBORDecodeError) -> str:
    """A fixed reason for a cbor2 failure; cbor2's own text is used only to pick it."""
    if isinstance(exc.__cause__, _RefusedTagError):
        return f"CBOR tag {exc.__cause__.tag} not allowed"
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return "text string is not valid UTF-8"
    text = str(exc).lower()
    for needle, reason in (
        ("duplicate map key", "duplicate map keys"),
        ("nesting depth", "CBOR nested too deeply"),
        ("indefinite length", "indefinite-length CBOR item"),
    ):
        if needle in text:
            return reason
    return "malformed CBOR"


def _split_envelope(
    message: bytes, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[bytes, bytes, bytes]:
    """Tag, array shape and types of a COSE_Sign1; returns (protected, payload, signature)."""
    if len(message) > max_message_bytes:
        _reject(f"envelope of {len(message)} bytes exceeds {max_message_bytes}")
    if message[:1] != _TAG18_HEAD:
        _reject("not a tagged COSE_Sign1 (CBOR tag 18 expected)")
    body = _strict_loads(message[1:], "envelope", _ENVELOPE_MAX_DEPTH)
    if not isinstance(body, list):
        _reject(f"tag 18 must wrap an array, not {_cbor_type(body)}")
    if len(body) != 4:
        _reject(f"array of {len(body)} elements, COSE_Sign1 has 4")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        _reject(f"protected header is {_cbor_type(protected)}, not a byte string")
    if not isinstance(unprotected, dict):
        _reject(f"unprotected header is {_cbor_type(unprotected)}, not a map")
    if unprotected:
        _reject("unprotected header must be empty")
    if payload is None:
        _reject("detached payload not supported")
    if not isinstance(payload, bytes):
        _reject(f"payload is {_cbor_type(payload)}, not a byte string")
    if not isinstance(signature, bytes):
        _reject(f"signature is {_cbor_type(signature)}, not a byte string")
    if len(signature) != SIGNATURE_BYTES:
        _reject(f"signature is {len(signature)} bytes, ES256 needs {SIGNATURE_BYTES}")
    canonical = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body), canonical=True)
    if canonical != message:
        _reject("envelope not in deterministic CBOR encoding")
    return protected, payload, signature


def _parse_protected(protected: bytes) -> tuple[int, str, bytes, str | None, int | None]:
    """The protected header map: exactly alg, content type and kid (RFC 9052 §3.1), and the
    compression labels when present; returns them with the encoding and dictionary id."""
    if not protected:
        _reject("protected header is empty (alg is required)")
    header = _strict_loads(protected, "protected header", _HEADER_MAX_DEPTH)
    if not isinstance(header, dict):
        _reject(f"protected header is {_cbor_type(header)}, not a map")
    for label in (HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID):
        if label not in header:
            _reject(f"protected header lacks label {label}")
    unknown = sorted(repr(k) for k in header if k not in _KNOWN_LABELS)
    if unknown:
        _reject(f"unknown protected header label(s) {', '.join(unknown)}")
    alg, content_type, kid = header[HEADER_ALG], header[HEADER_CONTENT_TYPE], header[HEADER_KID]
    if type(alg) is not int or alg != ALG_ES256:
        _reject(f"unknown alg {alg!r}, only ES256 ({ALG_ES256}) is accepted")
    if not isinstance(content_type, str):
        _reject(f"content type is {_cbor_type(content_type)}, not a text string")
    if not isinstance(kid, bytes):
        _reject(f"kid is {_cbor_type(kid)}, not a byte string")
    if len(kid) != KID_BYTES:
        _reject(f"kid is {len(kid)} bytes, expected {KID_BYTES}")
    encoding: str | None = None
    if HEADER_PAYLOAD_ENCODING in header:
        value = header[HEADER_PAYLOAD_ENCODING]
        if not isinstance(value, str):
            _reject(f"payload encoding is {_cbor_type(value)}, not a text string")
        if value != ENCODING_ZSTD:
            _reject(f"unknown payload encoding {value[:40]!r}")
        encoding = value
    dictionary_id: int | None = None
    if HEADER_ZSTD_DICTIONARY in header:
        dictionary_id = header[HEADER_ZSTD_DICTIONARY]
        if encoding is None:
            _reject(f"label {HEADER_ZSTD_DICTIONARY} (zstd dictionary) without payload encoding")
        if type(dictionary_id) is not int:
            _reject(f"zstd dictionary id is {_cbor_type(dictionary_id)}, not an unsigned integer")
        if not 0 < dictionary_id <= MAX_DICTIONARY_ID:
            _reject(f"zstd dictionary id {dictionary_id} out of 1..{MAX_DICTIONARY_ID}")
    if cbor2.dumps(header, canonical=True) != protected:
        _reject("protected header not in deterministic CBOR encoding")
    return alg, content_type, kid, encoding, dictionary_id


def _cbor_type(value: object) -> str:
    """A CBOR-ish name of a decoded value's type, for reasons (never the value itself)."""
    names: dict[type, str] = {
        bytes: "a byte string",
        str: "a text string",
        int: "an integer",
        bool: "a boolean",
        float: "a float",
        list: "an array",
        dict: "a map",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------


def check_key_file(path: Path, what: str) -> None:
    """Refuse a private key file that is missing, not a regular file, or open to others.

    Raises :class:`KeyMaterialError` unless ``path`` is a regular file (not a symlink) with no
    group or other permission bits (0600 or 0400), owned by this process's user or root.
    """
    fd = _open_key_file(path, what)
    os.close(fd)


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the hub's ES256 signing key: an unencrypted PEM file passing :func:`check_key_file`.

    Raises :class:`KeyMaterialError` for a missing or unreadable file, a wrong mode or owner,
    a file that is not a PEM private key, or a key that is not P-256.
    """
    what = "signing key"
    fd = _open_key_file(path, what)
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_KEY_FILE_BYTES + 1)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyMaterialError(what, f"{path}: larger than {_MAX_KEY_FILE_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyMaterialError(what, f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(what, f"{path}: not an EC key, ES256 needs P-256")
    _require_p256(key, what)
    return key


def _open_key_file(path: Path, what: str) -> int:
    """Open ``path`` read-only without following a symlink and check it with fstat (no race)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyMaterialError(what, f"{path}: file not found") from None
    except OSError as exc:
        raise KeyMaterialError(what, f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyMaterialError(what, f"{path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyMaterialError(
                what, f"{path}: mode {mode:04o} lets group or others read it, must be 0600"
            )
        if st.st_uid not in (os.geteuid(), 0):
            raise KeyMaterialError(what, f"{path}: owned by uid {st.st_uid}, not by this user")
    except BaseException:
        os.close(fd)
        raise
    return fd
