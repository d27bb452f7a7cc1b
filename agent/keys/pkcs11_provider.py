"""The ``pkcs11`` key provider: KEK and signing key inside a PKCS#11 token (PKCS#11 v2.40).

Objects (found by ``CKA_LABEL`` in the configured token):

- KEK: ``CKO_SECRET_KEY``, ``CKK_AES``, 256 bits, ``CKA_TOKEN``, ``CKA_PRIVATE``,
  ``CKA_SENSITIVE`` and not ``CKA_EXTRACTABLE`` (PKCS#11 v2.40 §4.10: its ``CKA_VALUE`` can
  never be read, nor can it be wrapped out). Used only for ``CKM_AES_GCM``
  ``C_Encrypt``/``C_Decrypt`` of the 32-byte data key, with a 96-bit nonce we draw and a
  128-bit tag; the associated data binds the key file's header.
- Signing key: ``CKK_EC`` on P-256, private half sensitive and non-extractable. We hash
  with SHA-256 and sign the digest with ``CKM_ECDSA`` (the mechanism every token has,
  TPMs and secure elements included, unlike ``CKM_ECDSA_SHA256``); the token returns
  ``r || s`` (PKCS#11 v2.40 §2.3.1), exactly COSE's ES256 form. Each signature is checked
  against the public key before use, so a token fault cannot publish a bad envelope.

The GCM nonce is drawn here (``os.urandom``) and passed in ``CK_GCM_PARAMS``; a token in a
FIPS mode that insists on generating the IV itself (PKCS#11 v3.0 ``CKM_AES_GCM`` with a
generator) would need that path added. Wraps are rare (once per data key), so nonce reuse
under the KEK is not a practical concern either way.

The user PIN comes from a private file (``pin_file``) and is never logged. The session is
opened once and kept for the life of the process; ``close`` logs out.

Tested with SoftHSM2 2.6 (Debian ``softhsm2``), which stores token objects encrypted under
a key derived from the user PIN: no KEK material is on disk in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pkcs11
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin, SignMixin
from pkcs11.util.ec import encode_named_curve_parameters

from agent.errors import KeyMaterialError
from agent.sealing import DATA_KEY_BYTES, WRAP_NONCE_BYTES, WRAPPED_KEY_BYTES, KeyProtection

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Lib

log = structlog.get_logger(__name__)

KEK_BITS: Final = 256
GCM_TAG_BITS: Final = 128
_COORDINATE_BYTES: Final = 32
_P256_POINT_BYTES: Final = 65
"""Uncompressed SEC 1 point: 0x04 ‖ x (32) ‖ y (32)."""

_PRIVATE_TEMPLATE: Final[dict[Attribute, Any]] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}


def _fail(what: str, action: str, exc: PKCS11Error) -> KeyMaterialError:
    """A KeyMaterialError naming the PKCS#11 error class (never a PIN or key byte)."""
    return KeyMaterialError(what, f"{action}: PKCS#11 {type(exc).__name__}")


class Pkcs11KeyProvider:
    """KEK and signing key in a PKCS#11 token, found by label.

    Raises :class:`KeyMaterialError` when the module cannot be loaded, the token is not
    there, or the PIN is refused.
    """

    __slots__ = ("_kek_label", "_module", "_public", "_session", "_signing_label", "_token_label")

    def __init__(
        self,
        module: Path,
        token_label: str,
        pin: str,
        *,
        kek_label: str = "homehub-kek",
        signing_key_label: str = "homehub-signing",
    ) -> None:
        self._module: Final = module
        self._token_label: Final = token_label
        self._kek_label: Final = kek_label
        self._signing_label: Final = signing_key_label
        self._public: ec.EllipticCurvePublicKey | None = None
        what = f"PKCS#11 token {token_label!r}"
        try:
            lib = pkcs11.lib(str(module))
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise KeyMaterialError(
                f"PKCS#11 module {module}", f"cannot load: {type(exc).__name__}"
            ) from None
        try:
            self._session: pkcs11.Session | None = _acquire(lib, str(module), token_label, pin)
        except pkcs11.NoSuchToken:
            raise KeyMaterialError(what, "not present") from None
        except PKCS11Error as exc:
            raise _fail(what, "cannot log in", exc) from None

    def __repr__(self) -> str:
        return f"Pkcs11KeyProvider(token={self._token_label!r}, kek={self._kek_label!r})"

    def __reduce__(self) -> tuple[object, ...]:
        """Refuse pickling: a session handle means nothing in another process."""
        raise TypeError("Pkcs11KeyProvider cannot be pickled")

    @property
    def name(self) -> str:
        """``"pkcs11"``."""
        return "pkcs11"

    @property
    def protection(self) -> KeyProtection:
        """The key file says: wrapped inside a PKCS#11 token."""
        return KeyProtection.WRAPPED_PKCS11

    @property
    def session(self) -> pkcs11.Session:
        """The open session (tests inspect objects through it)."""
        if self._session is None:
            raise KeyMaterialError(f"PKCS#11 token {self._token_label!r}", "provider closed")
        return self._session

    # -- the KEK -------------------------------------------------------------------------

    def _kek(self) -> EncryptMixin:
        """The KEK object (its type offers both C_Encrypt and C_Decrypt)."""
        what = f"KEK {self._kek_label!r}"
        try:
            key = self.session.get_key(
                object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self._kek_label
            )
        except pkcs11.NoSuchKey:
            raise KeyMaterialError(what, "not in the token") from None
        except pkcs11.MultipleObjectsReturned:
            raise KeyMaterialError(what, "more than one object has this label") from None
        except PKCS11Error as exc:
            raise _fail(what, "lookup failed", exc) from None
        if not isinstance(key, EncryptMixin):
            raise KeyMaterialError(what, "the object cannot encrypt")
        return key

    def has_kek(self) -> bool:
        """Whether the token holds an AES key with the KEK label."""
        try:
            self._kek()
        except KeyMaterialError:
            return False
        return True

    def create_kek(self) -> None:
        """Generate the KEK inside the token: AES-256, sensitive, never extractable."""
        what = f"KEK {self._kek_label!r}"
        if self.has_kek():
            raise KeyMaterialError(what, "already exists; refusing to replace a KEK")
        try:
            self.session.generate_key(
                KeyType.AES,
                KEK_BITS,
                label=self._kek_label,
                store=True,
                template={
                    **_PRIVATE_TEMPLATE,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )
        except PKCS11Error as exc:
            raise _fail(what, "cannot generate", exc) from None
        log.info("kek_created", provider="pkcs11", token=self._token_label)

    def destroy_kek(self) -> bool:
        """``C_DestroyObject`` on every object with the KEK label; ``False`` if none."""
        destroyed = 0
        try:
            for obj in list(self.session.get_objects({Attribute.LABEL: self._kek_label})):
                obj.destroy()
                destroyed += 1
        except PKCS11Error as exc:
            raise _fail(f"KEK {self._kek_label!r}", "cannot destroy", exc) from None
        log.info("kek_destroyed", provider="pkcs11", token=self._token_label, objects=destroyed)
        return destroyed > 0

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """``C_Encrypt`` with CKM_AES_GCM inside the token: nonce ‖ ciphertext ‖ tag."""
        if len(key) != DATA_KEY_BYTES:
            raise KeyMaterialError("data key wrap", f"key must be {DATA_KEY_BYTES} bytes")
        nonce = os.urandom(WRAP_NONCE_BYTES)
        try:
            body = self._kek().encrypt(
                key,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad, GCM_TAG_BITS),
            )
        except PKCS11Error as exc:
            raise _fail("data key wrap", "token refused", exc) from None
        if not isinstance(body, bytes):
            raise KeyMaterialError("data key wrap", "token returned a stream, not bytes")
        return nonce + body

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """``C_Decrypt`` with CKM_AES_GCM; :class:`KeyMaterialError` if the tag fails."""
        if len(wrapped) != WRAPPED_KEY_BYTES:
            raise KeyMaterialError(
                "data key unwrap", f"{len(wrapped)} bytes, not {WRAPPED_KEY_BYTES}"
            )
        kek = self._kek()
        if not isinstance(kek, DecryptMixin):
            raise KeyMaterialError(f"KEK {self._kek_label!r}", "the object cannot decrypt")
        nonce, body = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
        try:
            key = kek.decrypt(
                body,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad, GCM_TAG_BITS),
            )
        except PKCS11Error:
            raise KeyMaterialError(
                "data key unwrap", "authentication failed: another KEK, or the file was altered"
            ) from None
        if not isinstance(key, bytes) or len(key) != DATA_KEY_BYTES:
            raise KeyMaterialError("data key unwrap", "token returned no 32-byte key")
        return key

    # -- signing -------------------------------------------------------------------------

    def has_signing_key(self) -> bool:
        """Provisioning: whether the token holds the signing key pair (private and public
        objects with the label). Half a pair (one of the two) raises
        :class:`KeyMaterialError`: it cannot sign, or cannot be checked, and is not replaced
        silently."""
        what = f"signing key {self._signing_label!r}"
        try:
            found = {
                obj[Attribute.CLASS]
                for obj in self.session.get_objects({Attribute.LABEL: self._signing_label})
            }
        except PKCS11Error as exc:
            raise _fail(what, "lookup failed", exc) from None
        pair = {ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY}
        if not found & pair:
            return False
        if not pair <= found:
            half = "public" if ObjectClass.PUBLIC_KEY in found else "private"
            raise KeyMaterialError(what, f"only its {half} key object is in the token")
        return True

    def destroy_signing_key(self) -> int:
        """Provisioning's ``--rotate-key``: destroy every object with the signing key's label
        (the pair it replaces); how many were destroyed."""
        what = f"signing key {self._signing_label!r}"
        self._public = None
        try:
            objects = list(self.session.get_objects({Attribute.LABEL: self._signing_label}))
            for obj in objects:
                obj.destroy()
        except PKCS11Error as exc:
            raise _fail(what, "cannot destroy", exc) from None
        if objects:
            log.info("signing_key_destroyed", provider="pkcs11", token=self._token_label)
        return len(objects)

    def generate_signing_key(self) -> ec.EllipticCurvePublicKey:
        """Provisioning: create the P-256 signing key pair inside the token; its public key.

        Refuses (:class:`KeyMaterialError`) when a key with the label exists.
        """
        what = f"signing key {self._signing_label!r}"
        if list(self.session.get_objects({Attribute.LABEL: self._signing_label})):
            raise KeyMaterialError(what, "already exists; refusing to replace it")
        try:
            params = self.session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(
                store=True,
                label=self._signing_label,
                public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
                private_template={**_PRIVATE_TEMPLATE, Attribute.SIGN: True},
            )
        except PKCS11Error as exc:
            raise _fail(what, "cannot generate", exc) from None
        log.info("signing_key_created", provider="pkcs11", token=self._token_label)
        return self.public_key()

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The signing key's public half, read from the token's public key object."""
        if self._public is None:
            what = f"signing key {self._signing_label!r}"
            try:
                obj = self.session.get_key(
                    object_class=ObjectClass.PUBLIC_KEY,
                    key_type=KeyType.EC,
                    label=self._signing_label,
                )
                point = _der_octet_string(bytes(obj[Attribute.EC_POINT]))
            except pkcs11.NoSuchKey:
                raise KeyMaterialError(what, "no public key object in the token") from None
            except PKCS11Error as exc:
                raise _fail(what, "cannot read the public key", exc) from None
            try:
                self._public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except ValueError:
                raise KeyMaterialError(what, "public key is not a P-256 point") from None
        return self._public

    def sign(self, message: bytes) -> bytes:
        """SHA-256 here, CKM_ECDSA in the token; the ``r || s`` is verified before return."""
        what = f"signing key {self._signing_label!r}"
        public = self.public_key()
        digest = hashlib.sha256(message).digest()
        try:
            private = self.session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=self._signing_label
            )
            if not isinstance(private, SignMixin):
                raise KeyMaterialError(what, "the private key object cannot sign")
            signature = bytes(private.sign(digest, mechanism=Mechanism.ECDSA))
        except pkcs11.NoSuchKey:
            raise KeyMaterialError(what, "no private key object in the token") from None
        except PKCS11Error as exc:
            raise _fail(what, "token refused to sign", exc) from None
        if len(signature) != 2 * _COORDINATE_BYTES:
            raise KeyMaterialError(what, f"token returned a {len(signature)}-byte signature")
        r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
        try:
            public.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise KeyMaterialError(what, "token's signature does not verify") from None
        return signature

    def close(self) -> None:
        """Release the shared session; the last provider of a token logs out. Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            _release(str(self._module), self._token_label, session)


# PKCS#11 login state belongs to the application, not to a session (PKCS#11 v2.40 §5.6,
# C_Login: a second login gives CKR_USER_ALREADY_LOGGED_IN). So every provider of one token
# in this process shares one logged-in session, counted; the last ``close`` logs out. A
# provider joining it must present the same PIN (compared as SHA-256 digests): a shared
# session must not let a wrong PIN in.
_SESSIONS: dict[tuple[str, str], tuple[pkcs11.Session, int, bytes]] = {}


def _acquire(lib: Pkcs11Lib, module: str, label: str, pin: str) -> pkcs11.Session:
    """The process's logged-in session on token ``label``, opening it if needed.

    A label not found triggers one rescan (``C_Finalize``/``C_Initialize``: a token
    initialised after the module was loaded); that ends every open session, so the shared
    sessions are forgotten.
    """
    key = (module, label)
    pin_digest = hashlib.sha256(pin.encode("utf-8")).digest()
    shared = _SESSIONS.get(key)
    if shared is not None:
        session, count, digest = shared
        if not hmac.compare_digest(digest, pin_digest):
            raise pkcs11.PinIncorrect()
        _SESSIONS[key] = (session, count + 1, digest)
        return session
    try:
        token = lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        _SESSIONS.clear()
        lib.reinitialize()
        token = lib.get_token(token_label=label)
    session = token.open(user_pin=pin, rw=True)
    _SESSIONS[key] = (session, 1, pin_digest)
    log.info("pkcs11_token_opened", token=label)
    return session


def _release(module: str, label: str, session: pkcs11.Session) -> None:
    key = (module, label)
    shared = _SESSIONS.get(key)
    if shared is None or shared[0] is not session:
        return  # forgotten by a rescan: the module already closed it
    if shared[1] > 1:
        _SESSIONS[key] = (session, shared[1] - 1, shared[2])
        return
    del _SESSIONS[key]
    try:
        session.close()
    except PKCS11Error as exc:
        log.warning("pkcs11_close_failed", error=type(exc).__name__)


def _der_octet_string(der: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the SEC 1 point (PKCS#11 v2.40 §2.3.3);
    a few tokens return the bare point, which is accepted too."""
    if len(der) == _P256_POINT_BYTES and der[0] == 0x04:
        return der
    if len(der) == 2 + _P256_POINT_BYTES and der[0] == 0x04 and der[1] == _P256_POINT_BYTES:
        return der[2:]
    raise KeyMaterialError("signing key", "CKA_EC_POINT is not a P-256 point")
