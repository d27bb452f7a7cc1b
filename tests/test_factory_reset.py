"""Factory reset (``homehub factory-reset``): crypto-erase for the file and pkcs11 providers.

The proof is made against an attacker's copy: the database and the wrapped data key file are
copied before the reset. After it, the copy of the key file no longer unwraps (the KEK is
gone) and the copied records open under no key the hub can make.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest
from bumble.keys import PairingKeys
from structlog.testing import capture_logs

from agent import config, cose, keys
from agent.ble.bumble_host import DEFAULT_STATIC_ADDRESS, PrivateJsonKeyStore
from agent.ble.stack import BONDS_FILE
from agent.daemon import open_outbox
from agent.errors import ConfigError, IntegrityError, KeyMaterialError
from agent.instance_lock import LOCK_FILE
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.keys.provider import KeyProvider
from agent.keys.reset import ResetReport, factory_reset
from agent.modem import state_file
from agent.modem.status import ModemStatus
from agent.outbox import Outbox
from agent.sealing import DataKey, Sealer, load_data_key, record_aad
from tests import keyhub, phi_canaries
from tests.dbus_bluez import BluezMock
from tests.phi_canaries import DEVICE_ADDRESS, PATIENT_ID
from tests.test_bluez_agent import bluez, system_bus  # noqa: F401 - fixtures

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


# ---------------------------------------------------------------------------
# Everything of the patient's: bonds, state files, patient and allow-list
# ---------------------------------------------------------------------------

ADDRESS_FORMS: Final = (
    DEVICE_ADDRESS,
    DEVICE_ADDRESS.replace(":", ""),
    DEVICE_ADDRESS.replace(":", "_"),
    DEVICE_ADDRESS.replace(":", "-"),
)
SYNC_MARK: Final = b"racp-mark canary-91d2"


def _serve_patient(hub: keyhub.Hub, stack: str) -> None:
    """The hub as a patient's: a device allow-listed (and named in a comment), its sync
    state stored, a bond in Bumble's key store, the modem's figures written."""
    with hub.config_file.open("a") as f:
        f.write(
            f'\n# the cuff of {PATIENT_ID}, {DEVICE_ADDRESS}\n[ble]\nstack = "{stack}"\n\n'
            f'[[devices]]\nkind = "blood_pressure"\naddress = "{DEVICE_ADDRESS}"\nlabel = "cuff"\n'
        )
    outbox, _signer = open_outbox(hub.cfg)
    try:
        outbox.set_sync_state("cuff", "racp", SYNC_MARK)
    finally:
        outbox.close()
    store = PrivateJsonKeyStore(hub.cfg.hub.state_dir / BONDS_FILE, DEFAULT_STATIC_ADDRESS)
    ltk = PairingKeys.Key(value=secrets.token_bytes(16))
    asyncio.run(store.update(DEVICE_ADDRESS, PairingKeys(ltk=ltk)))
    phi_canaries.plant(f"bond key of {hub.root}", ltk.value.hex())
    state_file.write(
        hub.cfg.hub.state_dir / state_file.STATE_FILE,
        ModemStatus(sim="ready", registration="home"),
        datetime.now(UTC),
    )


def _canaries_in(paths: list[Path]) -> list[str]:
    """Every (file, canary) where a readable file holds a reading, the patient id, the
    device's address (any spelling) or the sync mark."""
    canaries = [READING, SYNC_MARK, PATIENT_ID.encode()] + [a.encode() for a in ADDRESS_FORMS]
    found = []
    for top in paths:
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for path in files:
            data = path.read_bytes().lower()
            found += [f"{path}: {c!r}" for c in canaries if c.lower() in data]
    return found


def test_reset_leaves_nothing_readable(hub: keyhub.Hub, tmp_path: Path) -> None:
    """A hub that stored readings and bonded a device: after the reset no file of the state
    directory, the key directories or the configuration holds any of the patient's data, the
    outbox is gone, a copy of the data key no longer unwraps, and the daemon would refuse
    the configuration until the hub is provisioned again."""
    _serve_patient(hub, "bumble:tcp-client:127.0.0.1:9")
    places = [hub.root / "state", hub.root / "keys", hub.root / "kek", hub.config_file]
    assert len(_canaries_in(places)) >= 3  # control: they are there before
    _db, key = _copy(hub, tmp_path / "copy")

    done = reset(hub.config_file, "--json")
    assert done.returncode == 0, done.stderr
    for text in (done.stdout, done.stderr):
        assert PATIENT_ID not in text
        assert not any(form in text for form in ADDRESS_FORMS)
    removed = {
        (r["what"], Path(r["where"]).name): r["result"] for r in json.loads(done.stdout)["removed"]
    }
    assert removed[("bonds (Bumble key store)", BONDS_FILE)] == "removed"
    assert removed[("state file", state_file.STATE_FILE)] == "removed"
    assert removed[("configuration: patient and allow-list", "homehub.toml")] == "removed"

    assert _canaries_in(places) == []
    assert [p.name for p in (hub.root / "state").iterdir()] == [LOCK_FILE]
    assert not hub.cfg.outbox.path.exists()
    provider = keys.open_provider(hub.cfg)
    try:
        with pytest.raises(KeyMaterialError):
            load_data_key(key, provider)
    finally:
        provider.close()
    with pytest.raises(ConfigError) as refused:
        config.load(hub.config_file)
    assert refused.value.key == "patient.id"
    kept = tomllib.loads(hub.config_file.read_text())
    assert kept["mqtt"]["host"] == "127.0.0.1"
    assert "devices" not in kept

    again = reset(hub.config_file, "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["nothing_left"] is True


def _hold_lock(state_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the hub's lock as ``homehub run`` does; it says "held" once it
    holds it and lets go when its stdin closes."""
    code = (
        "import sys; from pathlib import Path; from agent.instance_lock import hold\n"
        "with hold(Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    return holder


def test_reset_refused_while_the_daemon_runs(tmp_path: Path) -> None:
    """The lock held by another process: exit 2 naming it, nothing touched; once it is gone
    the reset runs."""
    hub = keyhub.make_hub(tmp_path / "hub", "file")
    outbox, _signer = open_outbox(hub.cfg)
    outbox.close()
    before = hub.config_file.read_bytes()
    holder = _hold_lock(hub.cfg.hub.state_dir)
    try:
        done = reset(hub.config_file)
        assert done.returncode == 2
        assert done.stderr == (
            f"homehub: {hub.cfg.hub.state_dir / LOCK_FILE}: held by pid {holder.pid}: the homehub"
            " daemon is running (stop it first: systemctl stop homehub)\n"
        )
        assert hub.cfg.outbox.key_file.exists()
        assert hub.cfg.outbox.path.exists()
        assert hub.config_file.read_bytes() == before
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert reset(hub.config_file).returncode == 0
    assert not hub.cfg.outbox.key_file.exists()


def test_depot_reset_destroys_the_identity(tmp_path: Path) -> None:
    """--depot: the signing key, the TLS key and certificate go too; without it they stay."""
    hub = keyhub.make_hub(tmp_path / "hub", "file")
    secrets_dir = hub.root / "secrets"
    for name in ("hub.key", "hub.pem"):
        (secrets_dir / name).write_text("placeholder\n")
        (secrets_dir / name).chmod(0o600)
    assert reset(hub.config_file).returncode == 0
    assert (secrets_dir / "hub-signing.pem").exists()
    done = reset(hub.config_file, "--depot", "--json")
    assert done.returncode == 0
    results = {r["what"]: r["result"] for r in json.loads(done.stdout)["removed"]}
    assert results["signing key"] == "destroyed"
    assert results["TLS client key"] == "destroyed"
    assert results["TLS client certificate"] == "removed"
    assert sorted(p.name for p in secrets_dir.iterdir()) == []


def test_depot_reset_destroys_the_token_signing_key(tmp_path: Path) -> None:
    """--depot on a PKCS#11 hub: the signing key pair goes from the token, and its own
    certificate ([signing] cert_file) from the disk; the token and its PIN stay."""
    hub = keyhub.make_hub(tmp_path / "hub", "pkcs11")
    provider = keys.open_provider(hub.cfg)
    try:
        assert isinstance(provider, Pkcs11KeyProvider)
        provider.generate_signing_key()
        assert provider.has_signing_key()
    finally:
        provider.close()
    signing_cert = hub.root / "secrets" / "signing.pem"
    signing_cert.write_text("placeholder\n")
    text = hub.config_file.read_text()
    assert text.count("[signing]\n") == 1
    hub.config_file.write_text(
        text.replace("[signing]\n", f'[signing]\ncert_file = "{signing_cert}"\n')
    )
    kept = reset(hub.config_file, "--json")
    assert kept.returncode == 0, kept.stderr
    assert signing_cert.exists()
    done = reset(hub.config_file, "--depot", "--json")
    assert done.returncode == 0, done.stderr
    results = {r["what"]: r["result"] for r in json.loads(done.stdout)["removed"]}
    assert ("destroyed", "removed") == (results["signing key"], results["signing certificate"])
    assert not signing_cert.exists()
    provider = keys.open_provider(hub.cfg)
    try:
        assert isinstance(provider, Pkcs11KeyProvider)
        assert not provider.has_signing_key()
    finally:
        provider.close()
    again = reset(hub.config_file, "--depot", "--json")
    results = {r["what"]: r["result"] for r in json.loads(again.stdout)["removed"]}
    assert ("nothing left", "nothing left") == (
        results["signing key"],
        results["signing certificate"],
    )


async def test_reset_removes_the_bluez_bonds(bluez: BluezMock, tmp_path: Path) -> None:  # noqa: F811
    """On BlueZ the allow-listed devices are removed from the adapter, bond and all."""
    hub = keyhub.make_hub(tmp_path / "hub", "file")
    with hub.config_file.open("a") as f:
        f.write(
            f'\n[ble]\nstack = "bluez"\n\n[[devices]]\nkind = "glucose"\n'
            f'address = "{DEVICE_ADDRESS}"\nlabel = "meter"\n'
        )
    path = await bluez.add_device(DEVICE_ADDRESS, "Glucometer")
    await bluez.call(path, "org.bluez.Device1", "Pair")
    assert (await bluez.properties(path))["Paired"] is True
    done = await asyncio.to_thread(
        reset, hub.config_file, "--json", env={"DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address}
    )
    assert done.returncode == 0, done.stderr
    results = {r["what"]: r["result"] for r in json.loads(done.stdout)["removed"]}
    assert results["bonds (BlueZ)"] == "removed (1 devices)"
    assert await bluez.method_calls("/org/bluez/hci0", "RemoveDevice") == [[path]]
    (objects,) = await bluez.call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert path not in objects


def test_reset_from_a_shell_destroys_the_kek_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KEK kept as a systemd credential: the unit sees it decrypted, a technician's shell
    does not; the reset destroys its encrypted file in the credential store."""
    hub = keyhub.make_hub(tmp_path / "hub", "file")
    text = hub.config_file.read_text().replace(
        f'kek_file = "{hub.root / "kek" / "kek.bin"}"', 'kek_credential = "homehub-kek"'
    )
    hub.config_file.write_text(text)
    cfg = config.load(hub.config_file)
    unit_view = tmp_path / "credentials"  # what systemd hands the unit
    unit_view.mkdir(mode=0o700)
    (unit_view / "homehub-kek").write_bytes(secrets.token_bytes(32))
    (unit_view / "homehub-kek").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(unit_view))
    outbox, _signer = open_outbox(cfg)
    outbox.close()
    store = tmp_path / "credstore.encrypted"
    store.mkdir()
    (store / "homehub-kek").write_bytes(secrets.token_bytes(96))  # sealed to the host key

    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    report = factory_reset(cfg, credstores=[tmp_path / "absent", store])
    assert report == ResetReport(
        "file",
        True,
        True,
        "destroyed: the encrypted credential 'homehub-kek'",
        report.outbox_files_removed,
    )
    assert not (store / "homehub-kek").exists()
    assert not cfg.outbox.key_file.exists()
    again = factory_reset(cfg, credstores=[store])
    assert (again.kek_destroyed, again.kek_note) == (False, "none found")


def test_reset_on_a_read_only_state_directory_touches_nothing(tmp_path: Path) -> None:
    """The lock cannot be taken (a read-only filesystem: what a failing SD card becomes):
    exit 1 naming why, and nothing is destroyed (no reset half done on a hub that may still
    be running). Skipped where this user may not mount."""
    hub = keyhub.make_hub(tmp_path / "hub", "file")
    outbox, _signer = open_outbox(hub.cfg)
    outbox.close()
    state = hub.cfg.hub.state_dir
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        done = reset(hub.config_file)
    finally:
        subprocess.run(["umount", str(state)], timeout=10, check=True)
    assert done.returncode == 1
    assert done.stderr == (
        f"homehub: StorageError: {state}: factory_reset: cannot take the hub's lock:"
        " Read-only file system\n"
    )
    assert hub.cfg.outbox.key_file.exists()
    assert hub.cfg.outbox.path.exists()  # under the mount, untouched
