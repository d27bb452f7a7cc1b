"""Factory reset: crypto-erase the outbox by destroying its data key and the KEK.

Order matters. First the wrapped data key file is overwritten and unlinked (so a reset that
stops half-way has already made the records unreadable), then the database files are
removed, then the KEK is destroyed (pkcs11: ``C_DestroyObject``; file: overwrite and
unlink; a systemd credential: its encrypted file in the credential store, when reset from a
shell, else kept and said so). Once the KEK is gone, even a copy
of the data key file (a backup, blocks that wear levelling kept on the SD card) cannot be
unwrapped, and every record sealed under the data key is unreadable, with or without the
database file. The hub's signing key is kept: it is the hub's identity, not patient data.

Stop the daemon first (``systemctl stop homehub``): a running daemon holds the data key in
memory until it exits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.config import Config
from agent.errors import KeyMaterialError
from agent.keys import CREDENTIALS_ENV, open_provider
from agent.keys.credstore import CREDSTORE_DIRS, encrypted_credentials
from agent.sealing import destroy_key_file

log = structlog.get_logger(__name__)

_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class ResetReport:
    """What :func:`factory_reset` did (printed as JSON by ``homehub factory-reset``)."""

    provider: str
    data_key_destroyed: bool
    kek_destroyed: bool
    kek_note: str
    outbox_files_removed: int


def factory_reset(cfg: Config, *, credstores: Sequence[Path] = CREDSTORE_DIRS) -> ResetReport:
    """Destroy the data key, the KEK and the outbox files; see the module docstring.

    A KEK that is a systemd credential, reset from a shell (no ``$CREDENTIALS_DIRECTORY``):
    its encrypted files in ``credstores`` are destroyed (agent/keys/credstore.py).

    Raises :class:`KeyMaterialError` when the provider cannot be opened (token absent, PIN
    refused) *after* destroying the data key file and the outbox, so that a reset never
    leaves more behind than it must.
    """
    data_key_destroyed = destroy_key_file(cfg.outbox.key_file)
    removed = _remove_outbox(cfg.outbox.path)
    name = cfg.keys.kek_credential
    if cfg.keys.provider == "file" and name is not None and not os.environ.get(CREDENTIALS_ENV):
        files = encrypted_credentials(name, credstores)
        for path in files:
            destroy_key_file(path, "KEK credential")
        note = f"destroyed: the encrypted credential {name!r}" if files else "none found"
        report = ResetReport(cfg.keys.provider, data_key_destroyed, bool(files), note, removed)
        log.warning(
            "factory_reset_done", kek_credential_files=len(files), outbox_files_removed=removed
        )
        return report
    try:
        provider = open_provider(cfg)
    except KeyMaterialError as exc:
        log.error("factory_reset_kek_unreachable", reason=exc.reason)
        raise
    try:
        kek_destroyed = provider.destroy_kek()
    finally:
        provider.close()
    if kek_destroyed:
        note = "destroyed"
    elif cfg.keys.provider == "file" and cfg.keys.kek_credential is not None:
        note = "kept: a systemd credential (remove it from the unit's credential store)"
    elif cfg.keys.provider == "file" and cfg.keys.kek_file is None:
        note = "none: the data key file was plain"
    else:
        note = "none found"
    report = ResetReport(cfg.keys.provider, data_key_destroyed, kek_destroyed, note, removed)
    log.warning(
        "factory_reset_done",
        provider=report.provider,
        data_key_destroyed=data_key_destroyed,
        kek_destroyed=kek_destroyed,
        outbox_files_removed=removed,
    )
    return report


def _remove_outbox(path: Path) -> int:
    removed = 0
    for suffix in _DB_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        try:
            candidate.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
