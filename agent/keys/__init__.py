"""Key providers: where the KEK that wraps the data key, and the hub's signing key, live.

:func:`open_provider` builds the provider ``[keys]`` names (:mod:`agent.keys.provider`
describes the interface and both providers); :func:`open_data_key` loads the outbox's data
key through it, creating key and KEK on a fresh hub; :mod:`agent.keys.reset` holds the
factory reset (crypto-erase).
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from agent.config import Config
from agent.errors import KeyMaterialError
from agent.keys.file_provider import FileKeyProvider, read_pin_file
from agent.keys.provider import KeyProvider
from agent.sealing import (
    DataKey,
    KeyProtection,
    KeyWrapper,
    check_key_placement,
    create_data_key,
    load_data_key,
)

log = structlog.get_logger(__name__)

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
"""Set by systemd for a unit with ``LoadCredential=``/``LoadCredentialEncrypted=``."""


def kek_path(cfg: Config) -> tuple[Path | None, bool]:
    """The file provider's KEK path and whether it is a systemd credential.

    Raises :class:`KeyMaterialError` for a credential without ``$CREDENTIALS_DIRECTORY``
    and for a KEK file inside the state directory or beside the database.
    """
    keys = cfg.keys
    if keys.kek_credential is not None:
        directory = os.environ.get(CREDENTIALS_ENV)
        if not directory:
            raise KeyMaterialError(
                f"KEK credential {keys.kek_credential!r}",
                f"${CREDENTIALS_ENV} is not set (run under systemd with LoadCredential=)",
            )
        return Path(directory) / keys.kek_credential, True
    if keys.kek_file is None:
        return None, False
    resolved = keys.kek_file.resolve()
    for place in (cfg.hub.state_dir.resolve(), cfg.outbox.path.resolve().parent):
        if resolved.is_relative_to(place):
            raise KeyMaterialError(
                f"KEK file {keys.kek_file}", f"lies inside {place}, with the data it protects"
            )
    return keys.kek_file, False


def open_provider(cfg: Config) -> KeyProvider:
    """The key provider ``[keys] provider`` names, opened (pkcs11: logged in to the token)."""
    keys = cfg.keys
    if keys.provider == "pkcs11":
        from agent.keys.pkcs11_provider import Pkcs11KeyProvider

        assert keys.pkcs11_module is not None  # enforced by agent.config
        assert keys.pkcs11_token is not None
        assert keys.pkcs11_pin_file is not None
        return Pkcs11KeyProvider(
            keys.pkcs11_module,
            keys.pkcs11_token,
            read_pin_file(keys.pkcs11_pin_file),
            kek_label=keys.pkcs11_kek_label,
            signing_key_label=keys.pkcs11_signing_label,
        )
    path, is_credential = kek_path(cfg)
    return FileKeyProvider(path, cfg.signing.key_file, kek_is_credential=is_credential)


def wrapper_of(provider: KeyProvider) -> KeyWrapper | None:
    """The provider as the data key file's wrapper, or ``None`` for a plain key file."""
    return None if provider.protection is KeyProtection.PLAIN else provider


def open_data_key(cfg: Config, provider: KeyProvider) -> DataKey:
    """Load the data key through ``provider``; on a fresh hub create it (and the KEK).

    A missing data key is created only when no outbox exists yet: a new key for an existing
    database would strand every record in it, so that case is refused. A missing KEK is
    created only together with a new data key.
    """
    key_file = cfg.outbox.key_file
    wrapper = wrapper_of(provider)
    if not key_file.exists():
        if cfg.outbox.path.exists():
            raise KeyMaterialError(
                f"data key file {key_file}",
                "missing while the outbox exists; refusing to create a new key for old records",
            )
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not provider.has_kek():
            provider.create_kek()
        data_key = create_data_key(key_file, wrapper)
    else:
        data_key = load_data_key(key_file, wrapper)
    cfg.outbox.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not check_key_placement(key_file, cfg.outbox.path):
        # Allowed (a dev box has one disk) but not the safe-harbor layout: say so once.
        log.warning("data_key_on_same_filesystem", key_file=str(key_file))
    log.info("data_key_opened", provider=provider.name, key_id=data_key.key_id)
    return data_key


__all__ = ["KeyProvider", "kek_path", "open_data_key", "open_provider", "wrapper_of"]
