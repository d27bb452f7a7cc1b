"""The configuration keys provisioning sets, written in one edit that keeps the file's
comments (tomlkit, as :mod:`agent.config_edit`).

The keys: ``[hub] id``, ``[patient] id``, ``[mqtt] host``, ``port``, ``profile``,
``[signing] key_file`` (the hub key: the platform verifies what the hub signs with the
certificate's key), ``[signing] cert_file`` (the certificate of a signing key kept in a
PKCS#11 token), ``[platform] cert_file`` and ``client_ca_file``. :func:`apply` compares
each with the file's value, and writes only when one differs: the edited document is
validated as the daemon would (:func:`agent.config.from_mapping`) before the file is replaced
atomically (:func:`agent.config_edit.write_atomically`), so provisioning never leaves a
configuration the daemon refuses.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from agent import config
from agent.config import Config
from agent.config_edit import write_atomically
from agent.errors import ConfigError
from agent.provisioning.steps import ProvisionRefusedError, Step

Value = str | int


def current(cfg: Config, key: str) -> Value | Path | None:
    """The value the loaded configuration has for a dotted key provisioning sets."""
    values: dict[str, Value | Path | None] = {
        "hub.id": cfg.hub.id,
        "patient.id": cfg.patient.id,
        "mqtt.host": cfg.mqtt.host,
        "mqtt.port": cfg.mqtt.port,
        "mqtt.profile": cfg.mqtt.profile.name,
        "signing.key_file": cfg.signing.key_file,
        "signing.cert_file": cfg.signing.cert_file,
        "platform.cert_file": cfg.platform.cert_file,
        "platform.client_ca_file": cfg.platform.client_ca_file,
    }
    return values[key]


def differing(cfg: Config, wanted: Mapping[str, Value]) -> dict[str, Value]:
    """The keys of ``wanted`` whose value the configuration does not have yet (paths are
    compared resolved: a relative path in the file names the same file)."""
    changes: dict[str, Value] = {}
    for key, value in wanted.items():
        have = current(cfg, key)
        if isinstance(have, Path):
            if have.resolve() == Path(str(value)).resolve():
                continue
        elif have == value:
            continue
        changes[key] = value
    return changes


def apply(path: Path, changes: Mapping[str, Value]) -> Config:
    """Write ``changes`` (dotted key -> value) into the configuration file at ``path``,
    keeping its comments; returns the configuration as the daemon will read it.

    Raises :class:`ProvisionRefusedError` (step 7) when the file cannot be read or written,
    or when the result would not be a valid configuration: nothing is written then. The
    reason names the key, never a patient reference's value.
    """
    step = Step.CONFIGURATION
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ProvisionRefusedError(
            step, f"{path} cannot be read as TOML ({type(exc).__name__})", "check the file"
        ) from None
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        _table(doc, section)[key] = value
    new_text = tomlkit.dumps(doc)
    try:
        parsed: dict[str, Any] = tomllib.loads(new_text)
        updated = config.from_mapping(parsed, path)
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        where = exc.key if isinstance(exc, ConfigError) and exc.key else "the file"
        why = exc.reason if isinstance(exc, ConfigError) else "not TOML"
        raise ProvisionRefusedError(
            step,
            f"the new configuration would be refused ({where}: {why})",
            "correct the value given for it (an argument or a bundle field); nothing was written",
        ) from None
    try:
        write_atomically(path, new_text.encode("utf-8"))
    except ConfigError as exc:
        raise ProvisionRefusedError(
            step,
            f"{path} cannot be written ({exc.reason})",
            f"run as a user who may write {path.parent}, e.g. with sudo",
        ) from None
    return updated


def _table(doc: TOMLDocument, section: str) -> Table:
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc.add(section, table)
    if not isinstance(table, Table):
        raise ProvisionRefusedError(
            Step.CONFIGURATION,
            f"[{section}] is not written as a table",
            f"write [{section}] as a table header in the file",
        )
    return table


__all__ = ["Value", "apply", "current", "differing"]
