"""The certificate request for a signing key that never leaves its PKCS#11 token.

cryptography signs a CSR only with a key it holds, so the request is built here: the
CertificationRequestInfo (RFC 2986 §4.1) in DER with asn1crypto (python-pkcs11's own ASN.1
library, pinned in constraints.txt), signed by the token (ES256: SHA-256 then ECDSA P-256,
whose ``r || s`` becomes the DER ECDSA-Sig-Value of RFC 3279 §2.2.3), then read back and
its signature verified with cryptography before it is written.

The request says what it is for: CN = the hub id (as the TLS request), and an
extensionRequest (PKCS#9) for keyUsage digitalSignature alone, critical, with no
extendedKeyUsage (:data:`SIGNING_KEY_USAGE`). The TLS request asks for nothing
(:func:`agent.cert_rotation.make_csr`); the files' names differ too (``<hub>.csr`` and
``<hub>-signing.csr``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from asn1crypto import csr as asn1_csr  # type: ignore[import-untyped]  # no stubs
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from agent.errors import KeyMaterialError

SIGNATURE_BYTES: Final = 64
"""ES256's ``r || s``: two 32-byte big-endian integers."""

SIGNING_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
"""What the signing request asks for: it signs the hub's messages, nothing else."""


def signing_csr(
    public_key: ec.EllipticCurvePublicKey, hub_id: str, sign: Callable[[bytes], bytes]
) -> bytes:
    """A PKCS#10 request (DER) for ``public_key`` with CN ``hub_id``, signed by ``sign``
    (ES256 over the message: the 64-byte ``r || s``, e.g. a token provider's ``sign``).

    Raises :class:`KeyMaterialError` when the result does not verify with ``public_key``
    (a token signing with another key than the one it reports).
    """
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    usage = asn1_x509.KeyUsage({"digital_signature"})
    extensions = asn1_x509.Extensions(
        [{"extn_id": "key_usage", "critical": True, "extn_value": usage}]
    )
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": asn1_x509.Name.build({"common_name": hub_id}),
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
            "attributes": asn1_csr.CRIAttributes(
                [{"type": "extension_request", "values": [extensions]}]
            ),
        }
    )
    info_der = bytes(info.dump())
    raw = sign(info_der)
    if len(raw) != SIGNATURE_BYTES:
        raise KeyMaterialError("signing key", f"signed the request with {len(raw)} bytes")
    half = SIGNATURE_BYTES // 2
    signature = encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )
    request = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    )
    der = bytes(request.dump())
    if not is_signing_request(x509.load_der_x509_csr(der), public_key, hub_id):
        raise KeyMaterialError("signing key", "its certificate request does not verify")
    return der


def is_signing_request(
    request: x509.CertificateSigningRequest, public_key: ec.EllipticCurvePublicKey, hub_id: str
) -> bool:
    """Whether ``request`` is this module's request for ``public_key`` and ``hub_id``: the
    key, the one CN, keyUsage digitalSignature alone, and a valid signature."""
    try:
        key = request.public_key()
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        usage = request.extensions.get_extension_for_class(x509.KeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return (
        isinstance(key, ec.EllipticCurvePublicKey)
        and _spki(key) == _spki(public_key)
        and [n.value for n in names] == [hub_id]
        and usage == SIGNING_KEY_USAGE
        and request.is_signature_valid
    )


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


__all__ = ["SIGNING_KEY_USAGE", "is_signing_request", "signing_csr"]
