"""The hub's signing key in a PKCS#11 token (``[keys] provider = "pkcs11"``): opened through
the hub's own provider (:class:`agent.keys.pkcs11_provider.Pkcs11KeyProvider`, the object the
daemon signs with), found by ``[keys] pkcs11_signing_label``, created when absent, kept when
present, replaced only with ``--rotate-key``.

The key pair is generated inside the token, its private half sensitive and never extractable:
no byte of it reaches this process. The TLS client key stays a file (Python's TLS cannot use
a token's key), so such a hub has two keys and two certificates (docs/provisioning.md,
"PKCS#11").
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from agent import keys
from agent.config import Config
from agent.errors import KeyMaterialError
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.provisioning.steps import Outcome, ProvisionRefusedError, Step


@dataclass(frozen=True, slots=True)
class TokenKey:
    """The token's signing key, what :func:`ensure_token_key` did, and where it lives."""

    public_key: ec.EllipticCurvePublicKey
    outcome: Outcome
    label: str
    token: str


def open_token(cfg: Config) -> Pkcs11KeyProvider:
    """The hub's PKCS#11 provider, logged in (close it when done)."""
    try:
        provider = keys.open_provider(cfg)
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            Step.KEY,
            f"the PKCS#11 token cannot be used ({exc})",
            "check [keys] pkcs11_module, pkcs11_token and pkcs11_pin_file (the token's user"
            " PIN, mode 0600, owned by the user running provisioning); the token's own tool"
            " lists its label (softhsm2-util --show-slots, tpm2_ptool listtokens)",
        ) from None
    if not isinstance(provider, Pkcs11KeyProvider):  # [keys] provider is checked by the caller
        provider.close()
        raise ProvisionRefusedError(
            Step.KEY, "[keys] provider is not pkcs11", 'set [keys] provider = "pkcs11"'
        )
    return provider


def ensure_token_key(provider: Pkcs11KeyProvider, cfg: Config, *, rotate: bool) -> TokenKey:
    """The signing key pair in the token: kept when it is there, created when not, replaced
    by a new pair only with ``rotate``."""
    label = cfg.keys.pkcs11_signing_label
    token = cfg.keys.pkcs11_token or "?"
    fix = (
        f"check the token {token!r}; a key pair that is damaged or half there is replaced with"
        " --rotate-key (both certificates are then issued again)"
    )
    try:
        exists = provider.has_signing_key()
    except KeyMaterialError as exc:
        if not rotate:
            raise ProvisionRefusedError(
                Step.KEY, f"the token's signing key cannot be used ({exc})", fix
            ) from None
        exists = True  # half a pair: replaced below
    try:
        if exists and not rotate:
            return TokenKey(provider.public_key(), Outcome.KEPT, label, token)
        if exists:
            provider.destroy_signing_key()
        public = provider.generate_signing_key()
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            Step.KEY, f"the token's signing key cannot be used ({exc})", fix
        ) from None
    return TokenKey(public, Outcome.ROTATED if exists else Outcome.CREATED, label, token)


__all__ = ["TokenKey", "ensure_token_key", "open_token"]
