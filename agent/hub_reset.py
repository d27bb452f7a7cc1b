"""The factory reset of a hub: everything of the patient's goes, the hub's identity stays.

``homehub factory-reset`` (agent/tech/factory_reset.py) calls :func:`reset_hub`, which holds
the hub's lock for the whole reset (:mod:`agent.instance_lock`: refused while the daemon
runs, and no daemon can start during it) and then, in this order:

1. crypto-erases the outbox (agent/keys/reset.py): the data key file, the database (readings,
   the devices' sync state, the ``seen`` digests), the KEK. First, because it is what must
   never be left half done;
2. removes every other file of the state directory (the Bumble key store ``bonds.json`` with
   the bonds' keys and the devices' addresses, the modem's figures, the command nonces, the
   platform link's state), each overwritten before it is unlinked (small files; the outbox
   is made unreadable by step 1, not by overwriting); the lock file stays (it holds a pid);
3. on ``[ble] stack = "bluez"`` removes the allow-listed devices from BlueZ
   (``Adapter1.RemoveDevice``: the bond with it), bounded by :data:`BLUEZ_TIMEOUT_S`;
4. rewrites the configuration without ``[patient]`` and the ``[[devices]]`` allow-list, and
   without its comments (a technician's comment may name the patient or a device). The rest
   (broker, paths, keys, modem) is kept, so re-provisioning needs only a patient and
   devices; until then the daemon refuses to start (``patient.id`` is required), which is
   the point: a reset hub must never collect for the previous patient's devices.

The hub's identity (signing key, TLS key and certificate) is kept: it names the hub, not the
patient, and the platform already trusts it, so a hub can go to the next patient without a
new certificate. ``depot=True`` (``--depot``: a hub leaving service) destroys it too: the
signing key file and the TLS key are overwritten and unlinked, the certificate unlinked; a
signing key inside a PKCS#11 token is destroyed there, and its own certificate unlinked.

Every step runs even when an earlier one failed; each says what it did in a
:class:`Removal`, and the report says whether anything failed (exit code 1 then). Running a
reset again is safe: every step then finds nothing left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
import tomlkit

from agent import config
from agent.ble.stack import parse_stack
from agent.config import Config
from agent.config_edit import write_atomically
from agent.errors import ConfigError, HubError, KeyMaterialError, StorageError
from agent.instance_lock import LOCK_FILE, hold
from agent.keys.reset import ResetReport, factory_reset
from agent.sealing import destroy_key_file

log = structlog.get_logger(__name__)

BLUEZ_TIMEOUT_S: Final = 15.0
OVERWRITE_MAX_BYTES: Final = 1024 * 1024
"""State files up to this size are overwritten before they are unlinked (they are small:
bonds, nonces, figures); a larger one (an outbox placed there under another name) is only
unlinked."""
CONFIG_MAX_BYTES: Final = 1024 * 1024
MAX_STATE_FILES: Final = 10_000
"""A state directory holds a handful of files; a walk stops here rather than run forever."""
RESET_HEADER: Final = "# factory reset "
"""How a configuration written by a reset begins."""
UNPROVISIONED_PATIENT: Final = "reset"
"""Stands in for the removed ``[patient]`` when a reset hub's configuration is loaded by the
reset itself (a second reset): the configuration it wrote has no patient on purpose."""


@dataclass(frozen=True, slots=True)
class Removal:
    """One thing the reset removed, kept, or failed to remove.

    Attributes:
        what: what it is (``"outbox"``, ``"bonds (Bumble key store)"``).
        where: its path (or BlueZ's adapter), never a device's address.
        result: ``"destroyed"``, ``"removed"``, ``"nothing left"``, ``"kept: …"`` or
            ``"failed: …"``.
    """

    what: str
    where: str
    result: str

    @property
    def failed(self) -> bool:
        return self.result.startswith("failed")

    @property
    def removed_something(self) -> bool:
        return self.result in ("destroyed", "removed") or self.result.startswith("removed")


@dataclass(frozen=True, slots=True)
class HubResetReport:
    """What :func:`reset_hub` did: the crypto-erase's report (``None`` when the key provider
    could not be opened) and every removal, in order."""

    crypto: ResetReport | None
    removals: tuple[Removal, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.removals)

    @property
    def nothing_left(self) -> bool:
        """Whether the reset found nothing to remove (a reset run again)."""
        return not self.failed and not any(r.removed_something for r in self.removals)


def load_for_reset(path: Path) -> Config:
    """The configuration, also when a previous reset removed its patient (the daemon refuses
    that file; a second reset must not).

    Raises:
        ConfigError: the file does not load, with or without the stand-in patient.
    """
    try:
        return config.load(path)
    except ConfigError as first:
        try:
            with path.open("rb") as f:
                data = tomllib.loads(f.read(CONFIG_MAX_BYTES).decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raise first from None
        if "patient" in data:
            raise
        data["patient"] = {"id": UNPROVISIONED_PATIENT}
        try:
            return config.from_mapping(data, path)
        except ConfigError:
            raise first from None


def reset_hub(cfg: Config, *, depot: bool = False) -> HubResetReport:
    """Reset the hub (module docstring); ``depot``: destroy its identity too.

    Raises:
        InstanceRunningError: the daemon runs (nothing was touched).
        StorageError: the state directory cannot hold the lock (read-only, not ours):
            nothing was touched.
    """
    removals: list[Removal] = []
    crypto: ResetReport | None = None
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(hold(cfg.hub.state_dir))
        except (FileNotFoundError, NotADirectoryError):
            pass  # no state directory: no daemon can run on it, no lock to take
        except OSError as exc:  # read-only, or not ours: nothing there could be removed
            raise StorageError(
                str(cfg.hub.state_dir),
                "factory_reset",
                f"cannot take the hub's lock: {exc.strerror}",
            ) from None
        try:
            crypto = factory_reset(cfg)
        except (KeyMaterialError, OSError) as exc:
            # What failed is named (the data key file, the outbox, or the KEK's provider);
            # whatever came before it in agent/keys/reset.py's order is gone.
            reason = str(exc) if isinstance(exc, KeyMaterialError) else exc.strerror
            what = "crypto-erase (data key, outbox, KEK)"
            removals.append(Removal(what, str(cfg.outbox.path), f"failed: {reason}"))
        else:
            removals.extend(_crypto_removals(cfg, crypto))
        removals.extend(_remove_state_files(cfg.hub.state_dir))
        if parse_stack(cfg.ble.stack).kind == "bluez":
            removals.append(asyncio.run(_remove_bluez_bonds(cfg)))
        removals.append(_reset_configuration(cfg.source))
        if depot:
            removals.extend(_destroy_identity(cfg))
        else:
            removals.append(
                Removal(
                    "hub identity (signing and TLS keys)",
                    str(cfg.mqtt.key_file),
                    "kept: the hub's, not the patient's (--depot destroys it)",
                )
            )
    report = HubResetReport(crypto, tuple(removals))
    log.warning(
        "hub_reset_done",
        depot=depot,
        removed=sum(1 for r in removals if r.removed_something),
        failed=sum(1 for r in removals if r.failed),
    )
    return report


def _crypto_removals(cfg: Config, crypto: ResetReport) -> list[Removal]:
    """The crypto-erase's report as removals; a KEK that was not there is "nothing left",
    one that is kept says why (agent/keys/reset.py's note)."""
    files = crypto.outbox_files_removed
    if crypto.kek_destroyed:
        kek = "destroyed"
    elif crypto.kek_note.startswith("kept"):
        kek = crypto.kek_note
    else:
        kek = "nothing left"
    where = cfg.keys.kek_credential or cfg.keys.kek_file or cfg.keys.pkcs11_token or "-"
    return [
        Removal(
            "data key",
            str(cfg.outbox.key_file),
            "destroyed" if crypto.data_key_destroyed else "nothing left",
        ),
        Removal(
            "outbox (readings, sync state)",
            str(cfg.outbox.path),
            f"removed ({files} files)" if files else "nothing left",
        ),
        Removal("KEK", str(where), kek),
    ]


def _state_files(state_dir: Path) -> list[Path]:
    """Every file under the state directory but the lock (``os.walk`` skips what it cannot
    read; a missing directory has none)."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(state_dir):
        for name in files:
            path = Path(root) / name
            if path != state_dir / LOCK_FILE:
                found.append(path)
            if len(found) >= MAX_STATE_FILES:
                return sorted(found)
    return sorted(found)


def _remove_state_files(state_dir: Path) -> list[Removal]:
    """Every file of the state directory but the lock (module docstring, step 2)."""
    files = _state_files(state_dir)
    if not files:
        return [Removal("state files (bonds, modem, nonces)", str(state_dir), "nothing left")]
    removals = []
    for path in files:
        what = "bonds (Bumble key store)" if path.name == "bonds.json" else "state file"
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size <= OVERWRITE_MAX_BYTES:
                destroy_key_file(path, what)
            else:
                path.unlink()
        except (OSError, KeyMaterialError) as exc:
            reason = exc.reason if isinstance(exc, KeyMaterialError) else exc.strerror
            removals.append(Removal(what, str(path), f"failed: {reason}"))
            continue
        removals.append(Removal(what, str(path), "removed"))
    return removals


async def _remove_bluez_bonds(cfg: Config) -> Removal:
    """Remove the allow-listed devices (and their bonds) from BlueZ."""
    from agent.ble.bluez_devices import DEFAULT_ADAPTER, open_adapter

    what, where = "bonds (BlueZ)", f"adapter {DEFAULT_ADAPTER}"
    if not cfg.devices:
        return Removal(what, where, "nothing left")
    removed = 0
    try:
        async with asyncio.timeout(BLUEZ_TIMEOUT_S):
            async with open_adapter() as adapter:
                for device in cfg.devices:
                    removed += bool(await adapter.remove(device.address))
    except (HubError, TimeoutError) as exc:
        reason = str(exc) if isinstance(exc, HubError) else "BlueZ did not answer"
        return Removal(
            what,
            where,
            f"failed: {reason} (remove them with bluetoothctl devices / bluetoothctl remove)",
        )
    return Removal(what, where, f"removed ({removed} devices)" if removed else "nothing left")


def _reset_configuration(path: Path) -> Removal:
    """The configuration without ``[patient]``, ``[[devices]]`` and comments (step 4)."""
    what = "configuration: patient and allow-list"
    try:
        with path.open("rb") as f:
            text = f.read(CONFIG_MAX_BYTES).decode("utf-8")
        data: dict[str, Any] = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return Removal(what, str(path), f"failed: cannot be read ({type(exc).__name__})")
    had = [key for key in ("patient", "devices") if key in data]
    if not had and text.startswith(RESET_HEADER):
        return Removal(what, str(path), "nothing left")
    kept = {key: value for key, value in data.items() if key not in ("patient", "devices")}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"{RESET_HEADER}{stamp}: [patient] and [[devices]] removed, comments too.\n"
        "# Re-provision the hub (a patient, then `homehub pair`) before the daemon starts.\n"
    )
    try:
        write_atomically(path, (header + tomlkit.dumps(kept)).encode("utf-8"))
    except ConfigError as exc:
        return Removal(what, str(path), f"failed: {exc.reason}")
    return Removal(what, str(path), "removed")


def _destroy_identity(cfg: Config) -> list[Removal]:
    """``--depot``: the hub's signing key (a file, or the pair in the PKCS#11 token), TLS key
    and certificate, and the signing certificate when it has its own."""
    removals = []
    keys: list[tuple[str, Path]] = [("TLS client key", cfg.mqtt.key_file)]
    if cfg.keys.provider == "file":
        keys.insert(0, ("signing key", cfg.signing.key_file))
    else:
        removals.append(_destroy_token_signing_key(cfg))
    for what, path in keys:
        try:
            result = "destroyed" if destroy_key_file(path, what) else "nothing left"
        except KeyMaterialError as exc:
            result = f"failed: {exc.reason}"
        removals.append(Removal(what, str(path), result))
    removals.append(_remove_file("TLS client certificate", cfg.mqtt.cert_file))
    if cfg.signing.cert_file is not None:
        removals.append(_remove_file("signing certificate", cfg.signing.cert_file))
    return removals


def _remove_file(what: str, path: Path) -> Removal:
    try:
        path.unlink()
    except FileNotFoundError:
        return Removal(what, str(path), "nothing left")
    except OSError as exc:
        return Removal(what, str(path), f"failed: {exc.strerror}")
    return Removal(what, str(path), "removed")


def _destroy_token_signing_key(cfg: Config) -> Removal:
    """``--depot`` on a PKCS#11 hub: the signing key pair in the token (every object with its
    label), through the provider the daemon uses."""
    from agent.keys import open_provider
    from agent.keys.pkcs11_provider import Pkcs11KeyProvider

    where = f"PKCS#11 token {cfg.keys.pkcs11_token}"
    try:
        provider = open_provider(cfg)
    except KeyMaterialError as exc:
        return Removal("signing key", where, f"failed: {exc.reason}")
    try:
        if not isinstance(provider, Pkcs11KeyProvider):  # pragma: no cover - config says pkcs11
            return Removal("signing key", where, "failed: not a PKCS#11 provider")
        destroyed = provider.destroy_signing_key()
    except KeyMaterialError as exc:
        return Removal("signing key", where, f"failed: {exc.reason}")
    finally:
        provider.close()
    return Removal("signing key", where, "destroyed" if destroyed else "nothing left")
