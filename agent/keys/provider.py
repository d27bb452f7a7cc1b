"""The key provider interface: where the hub's key-encryption key and signing key live.

A *key provider* holds two secrets the hub must never write to its state directory:

- the **key-encryption key** (KEK) that wraps the outbox's data key
  (:mod:`agent.sealing`: the data key file holds the key only in wrapped form), and
- the hub's **ES256 signing key**, which signs every COSE_Sign1 envelope (:mod:`agent.cose`).

Two providers implement it:

``file`` (:mod:`agent.keys.file_provider`)
    The KEK is 32 random bytes in a file (mode 0600, outside the state directory) or a
    systemd credential (``LoadCredential=``/``LoadCredentialEncrypted=``, read from
    ``$CREDENTIALS_DIRECTORY``); the signing key is a PEM file. Signing is deterministic
    (RFC 6979), so an envelope re-signed after a crash is byte-identical.
``pkcs11`` (:mod:`agent.keys.pkcs11_provider`)
    Both keys are objects in a PKCS#11 token created *sensitive* and *non-extractable*:
    wrapping (AES-256-GCM) and signing (CKM_ECDSA) run inside the token, and neither key
    exists on disk in clear. Tested against SoftHSM2; a TPM (tpm2-pkcs11) or a secure
    element's PKCS#11 module takes the same path. ECDSA in a token is randomised, so a
    re-signature differs in bytes (still valid); the outbox stores signed bytes, so a
    record is always re-sent exactly as first signed.

Factory reset (:func:`agent.keys.reset.factory_reset`) crypto-erases the outbox by
destroying the data key file and the KEK (:meth:`KeyProvider.destroy_kek`).

Nothing here puts key material or PINs into a log line, an exception message or a repr.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec

from agent.sealing import KeyProtection


@runtime_checkable
class KeyProvider(Protocol):
    """What the hub asks of a key provider. Implementations are not thread-safe.

    ``wrap``/``unwrap`` satisfy :class:`agent.sealing.KeyWrapper`: pass the provider to
    :func:`agent.sealing.create_data_key` / :func:`agent.sealing.load_data_key`.
    """

    @property
    def name(self) -> str:
        """The configuration name: ``"file"`` or ``"pkcs11"``."""
        ...

    @property
    def protection(self) -> KeyProtection:
        """The protection byte the wrapped data key file carries."""
        ...

    def has_kek(self) -> bool:
        """Whether the KEK exists (a fresh hub has none yet)."""
        ...

    def create_kek(self) -> None:
        """Create the KEK; :class:`KeyMaterialError` if one exists (never replaced)."""
        ...

    def destroy_kek(self) -> bool:
        """Destroy the KEK (crypto-erase); ``False`` when it cannot be (e.g. a read-only
        systemd credential: the caller then relies on destroying the wrapped key file)."""
        ...

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """AES-256-GCM ``key`` under the KEK: nonce (12) ‖ ciphertext ‖ tag (16)."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Reverse :meth:`wrap`; :class:`KeyMaterialError` when the KEK is missing or the
        wrapped bytes or ``aad`` were altered."""
        ...

    def sign(self, message: bytes) -> bytes:
        """ES256 over ``message`` (SHA-256 then ECDSA P-256): the 64-byte ``r || s``."""
        ...

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The signing key's public half (for the kid and the hub's certificate)."""
        ...

    def close(self) -> None:
        """Release the provider (log out of the token). Idempotent."""
        ...
