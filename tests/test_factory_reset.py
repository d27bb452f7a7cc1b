"""Factory reset (``homehub factory-reset``): crypto-erase for the file and pkcs11 providers.

The proof is made against an attacker's copy: the database and the wrapped data key file are
copied before the reset. After it, the copy of the key file no longer unwraps (the KEK is
gone) and the copied records open under no key the hub can make.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import cose, keys
from agent.daemon import open_outbox
from agent.errors import IntegrityError, KeyMaterialError
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.keys.provider import KeyProvider
from agent.outbox import Outbox
from agent.sealing import DataKey, Sealer, load_data_key, record_aad
from tests import keyhub

KIND = b"observation"
PLAIN_PREFIX = bytes([len(KIND)]) + KIND
"""A record's plaintext is ``u8 len ‖ kind ‖ body``, sealed under ``record_aad(hub, seq,
class)`` (agent/outbox.py)."""

pytestmark = [
    pytest.mark.skipif(
        not keyhub.softhsm_available(), reason="softhsm2 missing: run `make system-deps`"
    ),
]

READING = b"reading 128/82 canary-7f3c"
HOMEHUB = Path(sys.executable).with_name("homehub")


@pytest.fixture(params=keyhub.PROVIDERS)
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> keyhub.Hub:
    """A hub with one stored record; the pkcs11 token gets its signing key provisioned."""
    hub = keyhub.make_hub(tmp_path / "hub", request.param)
    provider = keys.open_provider(hub.cfg)
    if isinstance(provider, Pkcs11KeyProvider):
        provider.generate_signing_key()
    provider.close()
    outbox, signer = open_outbox(hub.cfg)
    try:
        outbox.append("observation", "dedup-1", lambda seq: READING + bytes([seq]))
        outbox.append("observation", "dedup-2", lambda seq: READING + bytes([seq]))
        assert len(signer.kid) == 16
    finally:
        outbox.close()
    provider = keys.open_provider(hub.cfg)
    try:
        keyhub.plant_hub_secrets(hub, provider)
    finally:
        provider.close()
    return hub


def reset(
    config: Path, *args: str, yes: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``homehub factory-reset`` in its own process, as a technician runs it (in-process, the
    command's logging setup would outlive the test in the loggers it caches)."""
    return subprocess.run(
        [
            str(HOMEHUB),
            "factory-reset",
            "--config",
            str(config),
            *(["--yes"] if yes else []),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _copy(hub: keyhub.Hub, dest: Path) -> tuple[Path, Path]:
    """The attacker's copy: database (checkpointed, so one file) and wrapped key file."""
    dest.mkdir()
    db = dest / "outbox.db"
    src = sqlite3.connect(hub.cfg.outbox.path)
    try:
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        src.close()
    shutil.copy2(hub.cfg.outbox.path, db)
    key = dest / "data.key"
    shutil.copy2(hub.cfg.outbox.key_file, key)
    return db, key


def _rows(db: Path) -> list[tuple[int, str, bytes]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT seq, class, sealed FROM records ORDER BY seq").fetchall()
    finally:
        conn.close()


def _provider(hub: keyhub.Hub, opened: list[KeyProvider]) -> KeyProvider:
    provider = keys.open_provider(hub.cfg)
    opened.append(provider)
    return provider


@pytest.fixture
def opened() -> Iterator[list[KeyProvider]]:
    """Providers opened by a test, closed at its end."""
    providers: list[KeyProvider] = []
    yield providers
    for provider in providers:
        provider.close()


def test_copy_opens_before_the_reset(
    hub: keyhub.Hub, tmp_path: Path, opened: list[KeyProvider]
) -> None:
    """Control: before a reset, the copied key file unwraps and opens the copied records."""
    db, key = _copy(hub, tmp_path / "copy")
    sealer = Sealer(load_data_key(key, _provider(hub, opened)))
    rows = _rows(db)
    assert [(seq, klass) for seq, klass, _ in rows] == [(1, "clinical"), (2, "clinical")]
    for seq, klass, sealed in rows:
        plain = sealer.open(sealed, aad=record_aad("hub-keys-1", seq, klass))
        assert plain == PLAIN_PREFIX + READING + bytes([seq])


def test_reset_makes_old_records_unreadable(
    hub: keyhub.Hub,
    tmp_path: Path,
    opened: list[KeyProvider],
) -> None:
    """After factory-reset the copied key file no longer unwraps and no key opens a record."""
    db, key = _copy(hub, tmp_path / "copy")
    done = reset(hub.config_file, "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    removed = report.pop("removed")
    assert report == {
        "provider": hub.cfg.keys.provider,
        "data_key_destroyed": True,
        "kek_destroyed": True,
        "kek_note": "destroyed",
        "outbox_files_removed": report["outbox_files_removed"],
        "nothing_left": False,
    }
    assert report["outbox_files_removed"] >= 1
    assert [(r["what"], r["result"]) for r in removed[:3]] == [
        ("data key", "destroyed"),
        ("outbox (readings, sync state)", f"removed ({report['outbox_files_removed']} files)"),
        ("KEK", "destroyed"),
    ]
    assert not hub.cfg.outbox.key_file.exists()
    assert not hub.cfg.outbox.path.exists()
    provider = _provider(hub, opened)
    assert not provider.has_kek()
    if hub.cfg.keys.provider == "file":
        assert not (hub.root / "kek" / "kek.bin").exists()

    # The copy of the wrapped key cannot be unwrapped: the KEK is gone. A KEK made anew
    # (the next first start) does not unwrap it either.
    with pytest.raises(KeyMaterialError):
        load_data_key(key, provider)
    provider.create_kek()
    with pytest.raises(KeyMaterialError) as info:
        load_data_key(key, provider)
    assert info.value.reason == "authentication failed: another KEK, or the file was altered"

    # The copied records open under no key the hub can now have.
    fresh = Sealer(DataKey.generate())
    for seq, klass, sealed in _rows(db):
        with pytest.raises(IntegrityError):
            fresh.open(sealed, aad=record_aad("hub-keys-1", seq, klass))
    with Outbox.open(db, fresh, "hub-keys-1") as outbox:
        with capture_logs() as events:
            assert outbox.pending_after(0, 10) == []
        (event,) = [e for e in events if e["event"] == "outbox_record_damaged"]
        assert (event["seqs"], event["count"]) == ([1, 2], 2)
        counts = outbox.counts()
        assert (counts.pending, counts.damaged) == (0, 2)


def test_hub_starts_fresh_after_reset(hub: keyhub.Hub) -> None:
    """After a reset the next start creates a new KEK, data key and an empty outbox."""
    old = hub.cfg.outbox.key_file.read_bytes()
    assert reset(hub.config_file).returncode == 0
    outbox, _signer = open_outbox(hub.cfg)
    try:
        counts = outbox.counts()
        assert (counts.pending, counts.refused, counts.damaged) == (0, 0, 0)
    finally:
        outbox.close()
    assert hub.cfg.outbox.key_file.read_bytes()[:10] == old[:10]
    assert hub.cfg.outbox.key_file.read_bytes()[10:] != old[10:]


def test_reset_needs_yes(hub: keyhub.Hub) -> None:
    """Without --yes nothing is destroyed and the exit code is 2 (bad input)."""
    before = hub.cfg.outbox.key_file.read_bytes()
    done = reset(hub.config_file, yes=False)
    assert done.returncode == 2
    assert done.stderr == (
        "homehub: --yes: required: a factory reset makes every stored reading unreadable\n"
    )
    assert hub.cfg.outbox.key_file.read_bytes() == before
    assert hub.cfg.outbox.path.exists()


def test_reset_is_idempotent(hub: keyhub.Hub) -> None:
    """A second reset finds nothing left to destroy and still succeeds."""
    first = reset(hub.config_file)
    assert first.returncode == 0
    assert "nothing left: the hub was already reset" not in first.stdout
    again = reset(hub.config_file, "--json")
    assert again.returncode == 0
    report = json.loads(again.stdout)
    removed = report.pop("removed")
    assert report == {
        "provider": hub.cfg.keys.provider,
        "data_key_destroyed": False,
        "kek_destroyed": False,
        "kek_note": "none found",
        "outbox_files_removed": 0,
        "nothing_left": True,
    }
    assert {r["result"] for r in removed} == {
        "nothing left",
        "kept: the hub's, not the patient's (--depot destroys it)",
    }
    third = reset(hub.config_file)
    assert third.returncode == 0
    assert "nothing left: the hub was already reset" in third.stdout


def test_daemon_signs_through_the_provider(hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
    """The daemon's signer is the provider's key: envelopes verify with its public key."""
    outbox, signer = open_outbox(hub.cfg)
    outbox.close()
    public = _provider(hub, opened).public_key()
    assert signer.kid == cose.key_id(public)
    envelope = cose.sign1_with(b"payload", signer.sign, signer.kid)
    assert cose.verify1(envelope, public).payload == b"payload"
    deterministic = signer.sign(b"m") == signer.sign(b"m")
    assert deterministic == (hub.cfg.keys.provider == "file")


def test_destroy_overwrites_in_place_before_unlinking(tmp_path: Path) -> None:
    """destroy_key_file overwrites the file's own blocks: a hard link sees random bytes."""
    from agent.sealing import create_data_key, destroy_key_file

    (tmp_path / "keys").mkdir()
    path = tmp_path / "keys" / "data.key"
    create_data_key(path)
    original = path.read_bytes()
    witness = tmp_path / "witness"
    os.link(path, witness)
    assert destroy_key_file(path) is True
    assert not path.exists()
    after = witness.read_bytes()
    assert len(after) == len(original) == 50
    assert after != original
    assert original[10:42] not in after
    assert destroy_key_file(path) is False


def test_reset_with_an_unreachable_token_still_erases_the_data_key(
    tmp_path: Path,
) -> None:
    """Token refused (wrong PIN): exit 1, yet the data key file and the outbox are gone."""
    hub = keyhub.make_hub(tmp_path / "hub", "pkcs11")
    provider = keys.open_provider(hub.cfg)
    try:
        assert isinstance(provider, Pkcs11KeyProvider)
        provider.generate_signing_key()
        keys.open_data_key(hub.cfg, provider)
        hub.cfg.outbox.path.write_bytes(b"")
        assert hub.token is not None
        hub.token.pin_file.write_text("wrong-pin\n")
        done = reset(hub.config_file)
        assert done.returncode == 1
        assert "cannot log in: PKCS#11 PinIncorrect" in done.stderr
        assert not hub.cfg.outbox.key_file.exists()
        assert not hub.cfg.outbox.path.exists()
        assert provider.has_kek()  # left in the token: the report says the reset failed
    finally:
        provider.close()
