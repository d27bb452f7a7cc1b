"""Tidy edits of the configuration file's allow-list (``[[devices]]``) that keep its comments.

``homehub pair`` adds a device, ``homehub devices`` renames and removes one. Each edit:

1. reads the file and validates it as the daemon would (:func:`agent.config.load`): a file
   the daemon would refuse is not edited;
2. changes the parsed document with tomlkit, which keeps every comment, blank line and the
   order of keys and tables (a removed device's trailing comments, which usually describe
   the file rather than that device, are kept on the device before it);
3. validates the result again (:func:`agent.config.from_mapping`), so an edit can never
   write a configuration the daemon would refuse;
4. writes it atomically: a temporary file beside it with the original mode (and owner when
   run as root), fsynced, renamed over the original, the directory fsynced. A crash leaves
   the old file or the new one, never a mix.

Every refusal is a :class:`ConfigEditError` (a :class:`~agent.errors.ConfigError`: exit code
2 in the CLI) naming the file and what was wrong; nothing is written then.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomlkit
from tomlkit.items import AoT, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from agent import config
from agent.config import LABEL_RE, Config, DeviceConfig
from agent.errors import ConfigError

DEVICES: Final = "devices"
MAX_LABEL_SUFFIX: Final = 99
"""``glucose``, ``glucose-2`` … ``glucose-99``: more of one kind is not a home."""


class ConfigEditError(ConfigError):
    """An edit of the configuration file was refused or could not be written."""


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A ``[[devices]]`` entry to add (what ``homehub pair`` learned)."""

    kind: str
    address: str
    label: str
    pairing: str = "required"
    identity: str | None = None


def _read(path: Path) -> tuple[Config, TOMLDocument]:
    cfg = config.load(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigEditError(str(path), None, f"cannot be read ({exc.strerror})") from None
    return cfg, tomlkit.parse(text)


def _devices(path: Path, doc: TOMLDocument) -> AoT | None:
    devices = doc.get(DEVICES)
    if devices is None:
        return None
    if isinstance(devices, list) and not devices:
        del doc[DEVICES]  # ``devices = []``: no device yet; tables are added instead
        return None
    if not isinstance(devices, AoT):
        raise ConfigEditError(
            str(path), DEVICES, "is not written as [[devices]] tables; edit it by hand"
        )
    return devices


def _index(cfg: Config, label: str) -> int:
    for i, device in enumerate(cfg.devices):
        if device.label == label:
            return i
    known = ", ".join(d.label for d in cfg.devices) or "none"
    raise ConfigEditError(
        str(cfg.source), DEVICES, f"no device labelled '{label}' (known: {known})"
    )


def _check_label(path: Path, cfg: Config, label: str) -> None:
    if not LABEL_RE.match(label):
        raise ConfigEditError(
            str(path), "devices.label", f"'{label}' is not a label ([a-z0-9][a-z0-9_-], 1-32)"
        )
    if any(d.label == label for d in cfg.devices):
        raise ConfigEditError(str(path), "devices.label", f"'{label}' is already used")


def unique_label(base: str, taken: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3`` … the first not in ``taken``."""
    if base not in taken:
        return base
    for n in range(2, MAX_LABEL_SUFFIX + 1):
        candidate = f"{base[:28]}-{n}"
        if candidate not in taken:
            return candidate
    raise ConfigEditError("(labels)", "devices.label", f"no free label for '{base}'")


def add_device(path: Path, new: NewDevice) -> DeviceConfig:
    """Append ``new`` as a ``[[devices]]`` table; returns it as the daemon will read it.

    Raises:
        ConfigError: the file is invalid, the label or the address is taken, or the file
            cannot be written (nothing is written then).
    """
    cfg, doc = _read(path)
    _check_label(path, cfg, new.label)
    if any(d.address == new.address.upper() for d in cfg.devices):
        taken = next(d.label for d in cfg.devices if d.address == new.address.upper())
        raise ConfigEditError(
            str(path), "devices.address", f"the device is already on the list as '{taken}'"
        )
    table = tomlkit.table()
    table.add("kind", new.kind)
    table.add("address", new.address.upper())
    table.add("label", new.label)
    table.add("pairing", new.pairing)
    if new.identity is not None:
        table.add("identity", new.identity)
    table.add(tomlkit.nl())
    devices = _devices(path, doc)
    if devices is None:
        first = tomlkit.aot()
        first.append(table)
        doc.add(DEVICES, first)  # at the end of the file: TOML allows tables anywhere
    else:
        _end_with_blank_line(devices)
        devices.append(table)
    updated = _write(path, doc)
    return next(d for d in updated.devices if d.label == new.label)


def _end_with_blank_line(devices: AoT) -> None:
    """The last table ends with a blank line, so a table appended after it stands apart."""
    if devices.body:
        _end_with_blank_line_table(devices.body[-1])


def _end_with_blank_line_table(table: Table) -> None:
    body = table.value.body
    if body and isinstance(body[-1][1], Whitespace) and "\n" in body[-1][1].as_string():
        return
    table.add(tomlkit.nl())


def rename_device(path: Path, old: str, new: str) -> DeviceConfig:
    """Relabel the device ``old`` as ``new``; returns it as the daemon will read it.

    Raises:
        ConfigError: unknown ``old``, ``new`` taken or not a label, or the file cannot be
            written (nothing is written then).
    """
    cfg, doc = _read(path)
    i = _index(cfg, old)
    _check_label(path, cfg, new)
    devices = _devices(path, doc)
    assert devices is not None
    devices[i]["label"] = new
    updated = _write(path, doc)
    return updated.devices[i]


def remove_device(path: Path, label: str) -> DeviceConfig:
    """Remove the device ``label`` from the allow-list; returns what was removed.

    Raises:
        ConfigError: unknown ``label``, or the file cannot be written (nothing written).
    """
    cfg, doc = _read(path)
    i = _index(cfg, label)
    removed = cfg.devices[i]
    devices = _devices(path, doc)
    assert devices is not None
    tables: list[Table] = list(devices.body)
    kept_comments = _trailing_comments(tables[i])
    if kept_comments and len(tables) > 1:
        # On the device before it; the first device's go to the last one (after the list,
        # where a "more devices" example block stood). The only device's go with it.
        keeper = tables[i - 1] if i > 0 else tables[-1]
        _end_with_blank_line_table(keeper)
        for item in kept_comments:
            keeper.value.body.append((None, item))
    del devices[i]
    if not devices.body:
        del doc[DEVICES]  # tomlkit would write an empty list of tables as ``devices = []``
    _write(path, doc)
    return removed


def _trailing_comments(table: Table) -> list[Comment | Whitespace]:
    """The comments and blank lines after a table's last key (comments about the file, or
    commented-out examples, more often than about the table)."""
    body = table.value.body
    last_key = max((n for n, (key, _item) in enumerate(body) if key is not None), default=-1)
    tail = [item for _key, item in body[last_key + 1 :]]
    if not any(isinstance(item, Comment) for item in tail):
        return []
    return [item for item in tail if isinstance(item, Comment | Whitespace)]


def _write(path: Path, doc: TOMLDocument) -> Config:
    """Validate ``doc`` as a configuration, then replace ``path`` with it atomically."""
    text = tomlkit.dumps(doc)
    try:
        parsed: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - tomlkit wrote it
        raise ConfigEditError(str(path), None, f"the edit is not valid TOML: {exc}") from None
    updated = config.from_mapping(parsed, path)
    write_atomically(path, text.encode("utf-8"))
    return updated


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: same mode (and owner, as root), fsync, rename, fsync
    the directory.

    Raises:
        ConfigEditError: the file or its directory cannot be written (the file is unchanged).
    """
    where = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigEditError(where, None, f"cannot be read ({exc.strerror})") from None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
    except OSError as exc:
        raise ConfigEditError(
            where, None, f"cannot be written: its directory refused a new file ({exc.strerror})"
        ) from None
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigEditError(where, None, f"cannot be written ({exc.strerror})") from None
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # the rename is done; a directory that refuses fsync (some FUSE) is rare
        pass


__all__ = [
    "ConfigEditError",
    "NewDevice",
    "add_device",
    "remove_device",
    "rename_device",
    "unique_label",
    "write_atomically",
]
