"""Verify a captured envelope, for integrators: ``homehub verify`` and its Python API.

    from agent.verify import verify_envelope
    result = verify_envelope(captured, hub_cert_pem, ca_pem=ca_pem)
    result.readings[0].content["fhir"]   # the FHIR Bundle of the first reading

:func:`verify_envelope` takes what was captured (the MQTT payload as raw CBOR, or as hex or
base64 text: recognised by itself), the hub's certificate (PEM or DER) and, optionally, the CA
that issued it and the zstd dictionaries (default: the ones shipped with the hub). It checks,
in order: the input's size and encoding; the certificate (a P-256 key, valid now, issued and
signed by the CA when one is given, and the CA valid now); the envelope with the
certificate's key (:func:`agent.envelopes.open_envelope`: structure, header, kid, signature,
bounded decompression, every reading's payload); and that the readings' hub is the
certificate's CN. A version-3 reading naming its Devices by digest (docs/platform-protocol.md
"Devices by reference") is expanded with the Devices of earlier envelopes of the same hub that
carried them (``devices_from``); without them it says so
(:class:`~agent.errors.UnknownDevicesError`). It returns the decoded content
(:class:`VerifiedEnvelope`, :meth:`VerifiedEnvelope.to_json`) or raises
:class:`~agent.errors.IntegrityError` whose ``what`` and ``reason`` name the first check that
failed.

Sans-I/O: bytes in, a typed result out (the CLI reads the files).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.dictionaries import Dictionary
from agent.envelopes import OpenedEnvelope, OpenedReading, device_sets_of, open_envelope
from agent.errors import IntegrityError, UnknownDevicesError

MAX_INPUT_BYTES: Final = 4 * 1024 * 1024
"""Largest captured input: the largest envelope (about 1 MiB) as hex is about 2 MiB."""
MAX_CERTIFICATE_BYTES: Final = 64 * 1024
MAX_DEVICES_FROM: Final = 16
"""Earlier envelopes given for their Devices at most (one carrying them in full is enough)."""

_TEXT_SPACE: Final = re.compile(rb"\s+")
_HEX: Final = re.compile(rb"[0-9a-fA-F]+")
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """A verified envelope: who signed it (the certificate's CN) and what it holds."""

    signer: str | None
    """The hub certificate's subject CN (the hub id), ``None`` when it has none."""
    ca_checked: bool
    """Whether the certificate was checked against a CA."""
    input_format: str
    """How the input was given: ``"cbor"``, ``"hex"`` or ``"base64"``."""
    envelope: OpenedEnvelope = field(repr=False)

    @property
    def readings(self) -> tuple[OpenedReading, ...]:
        """The readings, in the envelope's order."""
        return self.envelope.readings

    def to_json(self, indent: int | None = 2) -> str:
        """The decoded content as JSON: byte strings as hex, decimal fractions as numbers
        with exactly the digits sent (``17.0`` stays ``17.0``), map keys as strings."""
        e = self.envelope
        doc = {
            "verified": True,
            "signer": self.signer,
            "ca_checked": self.ca_checked,
            "input_format": self.input_format,
            "content_type": e.content_type,
            "kid": e.kid,
            "hub": e.hub,
            "compression": e.encoding,
            "dictionary": e.dictionary_id,
            "envelope_bytes": e.envelope_bytes,
            "payload_bytes": e.payload_bytes,
            "digest": e.digest,
            "readings": [r.content for r in e.readings],
        }
        return _to_json(doc, indent)


def decode_input(data: bytes) -> tuple[bytes, str]:
    """The envelope's bytes from what was captured, and the format found: raw CBOR (it starts
    with tag 18, ``0xd2``), else hex (``0x`` prefix and white space allowed), else base64
    (standard or URL-safe alphabet, padding optional). Raises :class:`IntegrityError`."""
    if len(data) > MAX_INPUT_BYTES:
        raise IntegrityError("input", f"{len(data)} bytes exceeds {MAX_INPUT_BYTES}")
    if not data:
        raise IntegrityError("input", "empty")
    if data[:1] == b"\xd2":
        return data, "cbor"
    text = _TEXT_SPACE.sub(b"", data)
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text.decode("ascii")), "hex"
    if _BASE64.fullmatch(text):
        padded = text.rstrip(b"=") + b"=" * (-len(text.rstrip(b"=")) % 4)
        try:
            decoded = base64.b64decode(
                padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True
            )
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded[:1] == b"\xd2":
            return decoded, "base64"
    raise IntegrityError("input", "not a COSE_Sign1 as raw CBOR, hex or base64")


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """A certificate from PEM or DER bytes; raises :class:`IntegrityError` naming ``what``."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise IntegrityError(what, f"larger than {MAX_CERTIFICATE_BYTES} bytes")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise IntegrityError(what, "not a PEM or DER X.509 certificate") from None


def check_certificate(
    cert: x509.Certificate, ca: x509.Certificate | None, now: dt.datetime
) -> ec.EllipticCurvePublicKey:
    """The hub certificate's key after checking it: P-256, valid at ``now``; issued by ``ca``
    (issuer name and signature), itself a CA valid at ``now``, when one is given."""
    what = "hub certificate"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IntegrityError(what, "its key is not P-256, ES256 needs one")
    _check_validity(cert, now, what)
    if ca is not None:
        _check_validity(ca, now, "CA certificate")
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise IntegrityError("CA certificate", "not a CA (basicConstraints CA:TRUE missing)")
        try:
            cert.verify_directly_issued_by(ca)
        except ValueError:
            raise IntegrityError(what, "not issued by the CA given (issuer differs)") from None
        except (InvalidSignature, TypeError):
            raise IntegrityError(what, "its signature does not verify with the CA's key") from None
    return key


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise IntegrityError(
            what, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise IntegrityError(what, f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def verify_envelope(
    data: bytes,
    cert_pem: bytes,
    *,
    ca_pem: bytes | None = None,
    dictionaries: Mapping[int, Dictionary] | None = None,
    now: dt.datetime | None = None,
    devices_from: Sequence[bytes] = (),
) -> VerifiedEnvelope:
    """Verify a captured envelope (see the module docstring); ``dictionaries`` defaults to
    the hub's shipped ones, ``now`` to the current UTC time. ``devices_from``: earlier
    captured envelopes of the same hub (as ``data`` is given), each verified the same way and
    in order, whose readings' Devices a version-3 reading may name by digest. Raises
    :class:`IntegrityError` (:class:`~agent.errors.UnknownDevicesError` when a reading names
    Devices none of ``devices_from`` carried)."""
    message, input_format = decode_input(data)
    if len(devices_from) > MAX_DEVICES_FROM:
        raise IntegrityError("devices-from", f"more than {MAX_DEVICES_FROM} envelopes")
    cert = load_certificate(cert_pem, "hub certificate")
    ca = load_certificate(ca_pem, "CA certificate") if ca_pem is not None else None
    key = check_certificate(cert, ca, now or dt.datetime.now(dt.UTC))
    if dictionaries is None:
        from agent import dictionaries as shipped

        dictionaries = shipped.load()
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    signer = str(names[0].value) if names else None
    sets: dict[bytes, tuple[Mapping[str, Any], ...]] = {}
    for n, earlier in enumerate(devices_from, 1):
        try:
            opened = _open(decode_input(earlier)[0], key, dictionaries, sets, signer)
        except IntegrityError as exc:
            raise IntegrityError(f"devices-from {n}: {exc.what}", exc.reason) from None
        sets.update(device_sets_of(opened))
    try:
        opened = _open(message, key, dictionaries, sets, signer)
    except UnknownDevicesError as exc:
        raise UnknownDevicesError(
            exc.what,
            f"{exc.reason}: verifying it needs an earlier envelope of this hub that carried"
            " them in full (--devices-from FILE)",
            exc.digest,
        ) from None
    return VerifiedEnvelope(signer, ca is not None, input_format, opened)


def _open(
    message: bytes,
    key: ec.EllipticCurvePublicKey,
    dictionaries: Mapping[int, Dictionary],
    sets: Mapping[bytes, Sequence[Mapping[str, Any]]],
    signer: str | None,
) -> OpenedEnvelope:
    opened = open_envelope(message, key, dictionaries, sets)
    if signer is not None and opened.hub != signer:
        raise IntegrityError("envelope", "its hub is not the certificate's CN")
    return opened


# ---------------------------------------------------------------------------
# JSON with exact decimals
# ---------------------------------------------------------------------------


def _to_json(value: Any, indent: int | None, level: int = 0) -> str:
    """JSON of decoded CBOR: a Decimal as a number with its own digits, bytes as hex, map
    keys as strings; laid out like ``json.dumps(indent=...)``."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise IntegrityError("envelope", "a decimal fraction is not finite")
        return str(value)  # '17.0', '1E+1', '0.000004': all JSON numbers
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    if isinstance(value, float):
        try:
            return json.dumps(value, allow_nan=False)
        except ValueError:
            return json.dumps(str(value))
    if isinstance(value, Mapping):
        items = [(json.dumps(str(k), ensure_ascii=False), v) for k, v in value.items()]
        parts = [f"{k}: {_to_json(v, indent, level + 1)}" for k, v in items]
        return _container("{", "}", parts, indent, level)
    if isinstance(value, list | tuple):
        parts = [_to_json(v, indent, level + 1) for v in value]
        return _container("[", "]", parts, indent, level)
    return json.dumps(value, ensure_ascii=False)


def _container(open_: str, close: str, parts: list[str], indent: int | None, level: int) -> str:
    if not parts:
        return open_ + close
    if indent is None:
        return open_ + ", ".join(parts) + close
    inner = "\n" + " " * (indent * (level + 1))
    return open_ + inner + ("," + inner).join(parts) + "\n" + " " * (indent * level) + close
