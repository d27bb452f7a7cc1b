"""The hub's configuration: one TOML file, validated once at start into frozen dataclasses.

The schema lives here, as data (:data:`SCHEMA`), so that the error for a missing or wrong key
can name the key and the file, and so that ``homehub config-schema`` can print it.
``config/homehub.example.toml`` is a complete, commented example; a test loads it.

Paths given relative in the file are taken relative to the file's directory, so a
technician can keep a hub's whole configuration in one folder.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.errors import ConfigError

HUB_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""Hub ids name MQTT topics and the client certificate: a strict allowlisted charset."""

BD_ADDR_RE: Final = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
LABEL_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PATIENT_ID_RE: Final = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
"""A FHIR logical id (FHIR R4 §2.6.2 'id' type)."""

KEY_PROVIDERS: Final = ("file", "pkcs11")
CREDENTIAL_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""A systemd credential name: a file name in $CREDENTIALS_DIRECTORY (no '/')."""
TOKEN_LABEL_RE: Final = re.compile(r"^[\x20-\x7e]{1,32}$")
"""PKCS#11 labels: CK_TOKEN_INFO.label is 32 bytes; printable ASCII keeps logs clean."""

DEVICE_KINDS: Final = ("blood_pressure", "pulse_oximeter", "glucose")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """``[hub]``: who this hub is."""

    id: str
    timezone: str
    state_dir: Path


@dataclass(frozen=True, slots=True)
class PatientConfig:
    """``[patient]``: the logical id the service provider assigned (no other patient data)."""

    id: str


@dataclass(frozen=True, slots=True)
class BleConfig:
    """``[ble]``: which Bluetooth stack and how long to look and listen."""

    stack: str
    scan_timeout_s: float
    connect_timeout_s: float
    quiet_period_s: float
    session_timeout_s: float
    cycle_interval_s: float


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One ``[[devices]]`` entry: a bonded device this hub collects from (an allowlist)."""

    kind: str
    address: str
    label: str


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """``[outbox]``: the durable, encrypted store of readings not yet delivered."""

    path: Path
    key_file: Path
    quota_bytes: int = 256 * 1024 * 1024  #: agent.outbox.DEFAULT_QUOTA_BYTES


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """``[signing]``: the hub's ES256 signing key (PEM, mode 0600)."""

    key_file: Path


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """``[keys]``: the key provider holding the KEK and the signing key (agent/keys/)."""

    provider: str = "file"
    kek_file: Path | None = None
    kek_credential: str | None = None
    pkcs11_module: Path | None = None
    pkcs11_token: str | None = None
    pkcs11_pin_file: Path | None = None
    pkcs11_kek_label: str = "homehub-kek"
    pkcs11_signing_label: str = "homehub-signing"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """``[mqtt]``: the hospital platform's broker, reached over TLS with a client certificate."""

    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    keepalive_s: int
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration."""

    source: Path
    hub: HubConfig
    patient: PatientConfig
    ble: BleConfig
    devices: tuple[DeviceConfig, ...]
    outbox: OutboxConfig
    signing: SigningConfig
    mqtt: MqttConfig
    keys: KeysConfig = KeysConfig()


# ---------------------------------------------------------------------------
# Schema: (type, required, default, check) per key. A check returns an error text or None.
# ---------------------------------------------------------------------------

_Check = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class Field:
    """One key of the schema."""

    type: type
    default: Any = None
    required: bool = True
    check: _Check | None = None
    doc: str = ""


def _matches(regex: re.Pattern[str], what: str) -> _Check:
    def check(value: Any) -> str | None:
        return None if regex.fullmatch(value) else f"must be {what}"

    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port (1-65535)"


def _timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone name such as 'Europe/Berlin'"
    return None


def _stack(value: Any) -> str | None:
    if value == "bluez" or (value.startswith("bumble:") and len(value) > len("bumble:")):
        return None
    return "must be 'bluez' or 'bumble:<transport>' (e.g. 'bumble:tcp-client:127.0.0.1:7001')"


def _key_provider(value: Any) -> str | None:
    return None if value in KEY_PROVIDERS else f"must be one of {', '.join(KEY_PROVIDERS)}"


def _keys_config(where: str, values: dict[str, Any]) -> KeysConfig:
    """Cross-key checks of ``[keys]``: each provider takes only its own settings."""
    keys = KeysConfig(**values)
    file_only = ("kek_file", "kek_credential")
    pkcs11_only = ("pkcs11_module", "pkcs11_token", "pkcs11_pin_file")
    if keys.provider == "file":
        for name in pkcs11_only:
            if values[name] is not None:
                raise ConfigError(where, f"keys.{name}", "only for provider 'pkcs11'")
        if keys.kek_file is not None and keys.kek_credential is not None:
            raise ConfigError(where, "keys.kek_credential", "give kek_file or kek_credential")
    else:
        for name in file_only:
            if values[name] is not None:
                raise ConfigError(where, f"keys.{name}", "only for provider 'file'")
        for name in pkcs11_only:
            if values[name] is None:
                raise ConfigError(where, f"keys.{name}", "missing (provider 'pkcs11' needs it)")
    return keys


def _kind(value: Any) -> str | None:
    return None if value in DEVICE_KINDS else f"must be one of {', '.join(DEVICE_KINDS)}"


SCHEMA: Final[dict[str, dict[str, Field]]] = {
    "hub": {
        "id": Field(
            str,
            check=_matches(HUB_ID_RE, "lowercase letters, digits and '-'"),
            doc="names the MQTT topic and must equal the client certificate's CN",
        ),
        "timezone": Field(
            str,
            "UTC",
            False,
            _timezone,
            doc="the patient's time zone; devices report local time without one",
        ),
        "state_dir": Field(Path, Path("/var/lib/homehub"), False, doc="writable state"),
    },
    "patient": {
        "id": Field(
            str,
            check=_matches(PATIENT_ID_RE, "a FHIR logical id ([A-Za-z0-9-.], 1-64)"),
            doc="logical Patient id assigned by the service provider",
        ),
    },
    "ble": {
        "stack": Field(str, "bluez", False, _stack, doc="'bluez' or 'bumble:<transport>'"),
        "scan_timeout_s": Field(float, 20.0, False, _positive),
        "connect_timeout_s": Field(float, 20.0, False, _positive),
        "quiet_period_s": Field(
            float, 5.0, False, _positive, doc="session ends after this long without a measurement"
        ),
        "session_timeout_s": Field(
            float, 120.0, False, _positive, doc="hard cap on one device session (outer timeout)"
        ),
        "cycle_interval_s": Field(
            float, 30.0, False, _positive, doc="pause between two collection rounds"
        ),
    },
    "outbox": {
        "path": Field(Path, doc="SQLite database file"),
        "key_file": Field(Path, doc="data key file, mode 0600, outside the state directory"),
        "quota_bytes": Field(
            int,
            256 * 1024 * 1024,
            False,
            _positive,
            doc="bound on stored data; 'storage critical' at 90 %, clinical records never shed",
        ),
    },
    "signing": {
        "key_file": Field(Path, doc="the hub's P-256 signing key (PEM, mode 0600)"),
    },
    "keys": {
        "provider": Field(
            str, "file", False, _key_provider, doc="'file' or 'pkcs11' (KEK in a token)"
        ),
        "kek_file": Field(
            Path,
            None,
            False,
            doc="file: KEK (32 bytes, mode 0600, outside the state directory); absent = plain",
        ),
        "kek_credential": Field(
            str,
            None,
            False,
            _matches(CREDENTIAL_RE, "a systemd credential name"),
            doc="file: KEK from $CREDENTIALS_DIRECTORY/<name> (systemd LoadCredential)",
        ),
        "pkcs11_module": Field(
            Path, None, False, doc="pkcs11: module, e.g. /usr/lib/softhsm/libsofthsm2.so"
        ),
        "pkcs11_token": Field(
            str, None, False, _matches(TOKEN_LABEL_RE, "1-32 characters"), doc="token label"
        ),
        "pkcs11_pin_file": Field(Path, None, False, doc="pkcs11: user PIN (mode 0600)"),
        "pkcs11_kek_label": Field(
            str, "homehub-kek", False, _matches(TOKEN_LABEL_RE, "1-32 characters")
        ),
        "pkcs11_signing_label": Field(
            str, "homehub-signing", False, _matches(TOKEN_LABEL_RE, "1-32 characters")
        ),
    },
    "mqtt": {
        "host": Field(str),
        "port": Field(int, 8883, False, _port),
        "ca_file": Field(Path, doc="CA that signed the broker's certificate"),
        "cert_file": Field(Path, doc="the hub's client certificate"),
        "key_file": Field(Path, doc="the hub's client key (mode 0600)"),
        "keepalive_s": Field(int, 60, False, _positive),
        "backoff_max_s": Field(
            float, 120.0, False, _positive, doc="cap of the full-jitter reconnect backoff"
        ),
    },
}

DEVICE_SCHEMA: Final[dict[str, Field]] = {
    "kind": Field(str, check=_kind),
    "address": Field(str, check=_matches(BD_ADDR_RE, "a Bluetooth address AA:BB:CC:DD:EE:FF")),
    "label": Field(str, check=_matches(LABEL_RE, "a short label ([a-z0-9_-], 1-32)")),
}


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load(path: Path | str) -> Config:
    """Read and validate the configuration file; :class:`ConfigError` names the key and the file."""
    path = Path(path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(where, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(where, None, f"cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(where, None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, None, f"is not valid TOML: {exc}") from None
    return from_mapping(data, path)


def from_mapping(data: Mapping[str, Any], source: Path) -> Config:
    """Validate an already-parsed TOML document (``source`` names it in errors)."""
    where = str(source)
    base = source.parent
    known = set(SCHEMA) | {"devices"}
    for section in data:
        if section not in known:
            raise ConfigError(
                where, section, f"unknown section (known: {', '.join(sorted(known))})"
            )

    sections: dict[str, dict[str, Any]] = {}
    for name, fields in SCHEMA.items():
        table = data.get(name)
        if table is None:
            table = {}
            if any(f.required for f in fields.values()):
                first = next(k for k, f in fields.items() if f.required)
                raise ConfigError(
                    where, f"{name}.{first}", "missing (section [" + name + "] absent)"
                )
        if not isinstance(table, dict):
            raise ConfigError(where, name, "must be a table")
        sections[name] = _validate_table(where, name, table, fields, base)

    raw_devices = data.get("devices", [])
    if not isinstance(raw_devices, list) or not all(isinstance(d, dict) for d in raw_devices):
        raise ConfigError(where, "devices", "must be an array of tables ([[devices]])")
    devices = tuple(
        DeviceConfig(**_validate_table(where, f"devices[{i}]", d, DEVICE_SCHEMA, base))
        for i, d in enumerate(raw_devices)
    )
    labels = [d.label for d in devices]
    addresses = [d.address for d in devices]
    for i, d in enumerate(devices):
        if labels.index(d.label) != i:
            raise ConfigError(where, f"devices[{i}].label", "duplicates another device's label")
        if addresses.index(d.address) != i:
            raise ConfigError(where, f"devices[{i}].address", "duplicates another device's address")

    return Config(
        source=source,
        hub=HubConfig(**sections["hub"]),
        patient=PatientConfig(**sections["patient"]),
        ble=BleConfig(**sections["ble"]),
        devices=devices,
        outbox=OutboxConfig(**sections["outbox"]),
        signing=SigningConfig(**sections["signing"]),
        mqtt=MqttConfig(**sections["mqtt"]),
        keys=_keys_config(where, sections["keys"]),
    )


def _validate_table(
    where: str, name: str, table: Mapping[str, Any], fields: Mapping[str, Field], base: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in table:
        if key not in fields:
            raise ConfigError(
                where, f"{name}.{key}", f"unknown key (known: {', '.join(sorted(fields))})"
            )
    for key, field in fields.items():
        dotted = f"{name}.{key}"
        if key not in table:
            if field.required:
                raise ConfigError(where, dotted, "missing")
            out[key] = field.default
            continue
        out[key] = _coerce(where, dotted, table[key], field, base)
    return out


def _coerce(where: str, dotted: str, value: Any, field: Field, base: Path) -> Any:
    if field.type is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(where, dotted, "must be a non-empty path string")
        path = Path(value)
        return path if path.is_absolute() else (base / path)
    if field.type is float:
        # TOML has distinct int and float; a technician writing "20" means 20.0.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, dotted, f"must be a number, not {type(value).__name__}")
        value = float(value)
    elif field.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, dotted, f"must be an integer, not {type(value).__name__}")
    elif not isinstance(value, field.type):
        raise ConfigError(
            where, dotted, f"must be a {field.type.__name__}, not {type(value).__name__}"
        )
    if field.check is not None:
        problem = field.check(value)
        if problem:
            raise ConfigError(where, dotted, problem)
    return value


def schema_lines() -> list[str]:
    """The schema as text, one key a line, for ``homehub config-schema``."""
    lines: list[str] = []
    for name, fields in [*SCHEMA.items(), ("[devices]", DEVICE_SCHEMA)]:
        lines.append(f"[{name}]")
        for key, f in fields.items():
            need = "required" if f.required else f"default {f.default!s}"
            doc = f"  # {f.doc}" if f.doc else ""
            lines.append(f"  {key}: {f.type.__name__} ({need}){doc}")
    return lines
