"""``homehub devices``: the allow-list, what is known of each device, renaming and removing.

- ``list``: label, kind, the address shortened to its last two octets, the pairing mode,
  whether the stack holds a bond (Bumble's key store file, or BlueZ over D-Bus), the age of
  the device's newest committed sync state and its last battery level (sealed: the data key
  is opened only when there is one).
- ``rename``: the configuration's entry and the device's sync state (RACP mark, identity pin,
  battery) move together, in one outbox transaction (:func:`agent.outbox.move_sync_state`).
- ``remove``: the entry and the sync state go together (:func:`agent.outbox.forget_sync_state`),
  then the bond is deleted.

Renaming and removing take the outbox for themselves: refused while the daemon runs. Nothing
here prints a full address.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent import config, keys
from agent.ble.gatt_session import BATTERY_SYNC_KEY
from agent.ble.stack import BONDS_FILE, parse_stack
from agent.config_edit import remove_device, rename_device
from agent.errors import BondNotDeletedError, DecodeError, HubError
from agent.logs import device_label
from agent.outbox import forget_sync_state, move_sync_state, peek_sync_state
from agent.sealing import Sealer
from drivers.battery import BatteryLevel

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One line of ``homehub devices list``.

    ``bonded`` is ``None`` when the stack cannot say (BlueZ unreachable).
    ``last_sync_age_s`` is the age of the device's newest committed sync state in the
    outbox (a glucometer's RACP mark moves with each stored record; any device's first
    contact pins its identity there): ``None`` when it has none. ``battery_percent`` is
    the Battery Level a session last read and committed with a reading
    (:data:`agent.ble.gatt_session.BATTERY_SYNC_KEY`): ``None`` when the device exposes
    none, no session read it yet, or the outbox's key cannot be opened here.
    """

    label: str
    kind: str
    device: str
    pairing: str
    bonded: bool | None
    last_sync_age_s: float | None
    battery_percent: int | None = None


def _last_sync(outbox: Path, now: float) -> dict[str, float]:
    """``label → age in s`` of each device's newest sync state (read-only, no key)."""
    if not outbox.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"{outbox.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute(
            "SELECT device, MAX(updated_at) FROM sync_state GROUP BY device"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {str(d): max(0.0, now - float(t)) for d, t in rows if t is not None}


async def list_devices(cfg: config.Config, *, now: float | None = None) -> list[DeviceRow]:
    """The allow-list with what is cheap to know about each device."""
    if parse_stack(cfg.ble.stack).kind == "bumble":
        bonded: set[str] | None = await _bumble_bonds(cfg)
    else:
        bonded = await _bluez_bonds(cfg)
    ages = _last_sync(cfg.outbox.path, time.time() if now is None else now)
    batteries = _battery_levels(cfg)
    return [
        DeviceRow(
            label=d.label,
            kind=d.kind,
            device=device_label(d.address),
            pairing=d.pairing_mode,
            bonded=None if bonded is None else d.address.upper() in bonded,
            last_sync_age_s=ages.get(d.label),
            battery_percent=batteries.get(d.label),
        )
        for d in cfg.devices
    ]


def _battery_levels(cfg: config.Config) -> dict[str, int]:
    """``label → %`` of each device's last committed Battery Level. Sealed like all sync
    state: the key is opened when there is one (and when it cannot be, the levels are
    unknown, logged ``devices_battery_unknown``)."""
    if not cfg.outbox.path.is_file():
        return {}
    try:
        values = peek_sync_state(
            cfg.outbox.path, cfg.hub.id, BATTERY_SYNC_KEY, lambda: _open_sealer(cfg)
        )
    except (HubError, OSError) as exc:
        log.info("devices_battery_unknown", error=type(exc).__name__)
        return {}
    levels: dict[str, int] = {}
    for label, value in values.items():
        try:
            levels[label] = BatteryLevel.from_bytes(value).level_pct
        except DecodeError:
            continue
    return levels


def rename(cfg: config.Config, old: str, new: str) -> config.DeviceConfig:
    """Relabel a device in the configuration file, and move its sync state in the outbox
    with it (a glucometer's RACP mark, the first contact's identity pin, the battery level):
    the renamed device resumes where it was instead of syncing all again and being pinned
    anew. Both in one outbox transaction (:func:`agent.outbox.move_sync_state`): the file is
    edited before it commits, and nothing is moved when the edit fails.

    Refused while the daemon runs (it holds the outbox open, and would go on using the old
    label until restarted): stop it, rename, start it.

    Raises:
        ConfigError: unknown ``old``, ``new`` taken or not a label, the file not writable.
        StorageError: the outbox is open in another process (the daemon), or failed.
        HubError: the outbox's key cannot be opened (nothing changed).
    """
    labels = {d.label for d in cfg.devices}
    if old not in labels or new in labels or not config.LABEL_RE.match(new):
        return rename_device(cfg.source, old, new)  # refuses, naming what is wrong
    renamed: list[config.DeviceConfig] = []
    moved = move_sync_state(
        cfg.outbox.path,
        cfg.hub.id,
        old,
        new,
        lambda: _open_sealer(cfg),
        then=lambda: renamed.append(rename_device(cfg.source, old, new)),
    )
    log.info("device_renamed", sync_state_moved=moved)
    return renamed[0]


async def remove_and_forget(cfg: config.Config, label: str) -> tuple[config.DeviceConfig, bool]:
    """Remove ``label`` from the allow-list, then delete its bond; ``(device, bond_deleted)``.

    The configuration goes first, with the device's sync state deleted in the same outbox
    transaction (:func:`agent.outbox.forget_sync_state`: a device added later under the
    label must not inherit its RACP mark or identity pin); once off the allow-list the daemon
    never connects to the device, so a bond left by a failure after it harms nothing (and
    is reported). Refused while the daemon runs, as :func:`rename` is.

    Raises:
        ConfigError: unknown label, or the file cannot be written (the bond is kept then).
        StorageError: the outbox is open in another process (the daemon), or failed.
        BondNotDeletedError: off the allow-list, but the bond could not be deleted.
    """
    removed: list[config.DeviceConfig] = []
    forgotten = forget_sync_state(
        cfg.outbox.path, label, then=lambda: removed.append(remove_device(cfg.source, label))
    )
    device = removed[0]
    log.info("device_removed", sync_state_deleted=forgotten)
    try:
        return device, await _delete_bond(cfg, device.address)
    except HubError as exc:
        raise BondNotDeletedError(device.label, str(exc)) from None


def _open_sealer(cfg: config.Config) -> Sealer:
    """The outbox's data key through the configured provider (never a new one: it is only
    asked for when the outbox holds a value sealed with it)."""
    provider = keys.open_provider(cfg)
    try:
        return Sealer(keys.open_data_key(cfg, provider))
    finally:
        provider.close()


async def _bumble_bonds(cfg: config.Config) -> set[str]:
    """Addresses bonded in the Bumble key store file (read without the radio)."""
    from agent.ble.bumble_host import DEFAULT_STATIC_ADDRESS, PrivateJsonKeyStore

    path = cfg.hub.state_dir / BONDS_FILE
    if not path.exists():
        return set()
    store = PrivateJsonKeyStore(path, DEFAULT_STATIC_ADDRESS)
    return {name.split("/", 1)[0].upper() for name, _keys in await store.get_all()}


async def _delete_bond(cfg: config.Config, address: str) -> bool:
    if parse_stack(cfg.ble.stack).kind == "bumble":
        from agent.ble.bumble_host import (
            DEFAULT_STATIC_ADDRESS,
            PrivateJsonKeyStore,
            bond_names,
        )

        path = cfg.hub.state_dir / BONDS_FILE
        deleted = False
        if path.exists():
            store = PrivateJsonKeyStore(path, DEFAULT_STATIC_ADDRESS)
            for name in bond_names(address):
                if await store.get(name) is not None:
                    await store.delete(name)
                    deleted = True
        return deleted
    from agent.ble.bluez_devices import open_adapter

    async with open_adapter() as adapter:
        return bool(await adapter.remove(address))


async def _bluez_bonds(cfg: config.Config) -> set[str] | None:
    """Addresses BlueZ holds a bond with, among the allow-listed ones; ``None`` when BlueZ
    cannot be asked (no D-Bus, no BlueZ, no adapter)."""
    from agent.ble.bluez_devices import open_adapter

    try:
        async with open_adapter() as adapter:
            return {d.address.upper() for d in cfg.devices if await adapter.is_bonded(d.address)}
    except HubError as exc:
        log.info("devices_bluez_unavailable", error=type(exc).__name__)
        return None


__all__ = ["DeviceRow", "list_devices", "remove_and_forget", "rename"]
