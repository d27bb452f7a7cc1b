"""The hub's configuration: one TOML file, validated once at start into frozen dataclasses.

The schema lives here, as data (:data:`SCHEMA`), so that the error for a missing or wrong key
can name the key and the file, and so that ``homehub config-schema`` can print it.
``config/homehub.example.toml`` is a complete, commented example; a test loads it.

Paths given relative in the file are taken relative to the file's directory, so a
technician can keep a hub's whole configuration in one folder.
"""

from __future__ import annotations

import math
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.errors import ConfigError, UsageError
from agent.indicator.rules import OFFLINE_ATTENTION_S
from agent.profiles import (
    CELLULAR_KEEPALIVE_S,
    MQTT,
    PROFILES,
    AckMode,
    UplinkProfile,
    profile_named,
)

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
PAIRING_MODES: Final = ("required", "first_contact", "none")
"""``devices.pairing``: ``required`` (bonded by ``homehub pair``; the daemon only ever uses that
bond, never pairs, and refuses an unencrypted link), ``first_contact`` (the daemon bonds Just
Works on the first contact, then as ``required``), ``none`` (a device without link security:
the pinned identity is the only check)."""
DEFAULT_PAIRING: Final = {
    "blood_pressure": "none",
    "pulse_oximeter": "none",
    "glucose": "first_contact",
}
"""``devices.pairing`` when absent: what each kind did before the key existed (GLS 1.0 needs an
encrypted link, ble-spec-facts §4.5; many cuffs and oximeters never pair)."""
IDENTITY_PIN_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


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
    max_connections: int = 2
    adapter_quiet_s: float = 600.0
    set_device_clock: bool = True
    clock_set_threshold_s: float = 60.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One ``[[devices]]`` entry: a bonded device this hub collects from (an allowlist)."""

    kind: str
    address: str
    label: str
    pairing: str = ""
    """``required``, ``first_contact`` or ``none`` (:data:`PAIRING_MODES`); empty: the kind's
    default (:data:`DEFAULT_PAIRING`), resolved by :func:`from_mapping`."""
    identity: str | None = None
    """``sha256:<hex>`` of the identity read at pairing (:mod:`agent.ble.identity`): a device
    at this address presenting another identity is an impersonator."""

    @property
    def pairing_mode(self) -> str:
        """The effective ``pairing`` (the kind's default when not set)."""
        return self.pairing or DEFAULT_PAIRING[self.kind]


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
    cert_file: Path | None = None
    """PEM certificate of the signing key when it is not the TLS client key (a PKCS#11
    token's key): ``homehub provision`` installs it; the platform verifies the hub's messages
    with it. Unset: the client certificate is the signing key's."""


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
    first_connect_jitter_s: float = 30.0
    ack: AckMode = AckMode.PUBACK
    """What deletes a reading: the platform's signed receipt or the broker's PUBACK. Absent
    from the file: the profile's ``ack_default`` when ``[platform] cert_file`` is set, else
    ``puback`` (resolved by :func:`from_mapping`)."""
    receipt_timeout_s: float = 60.0
    daily_budget_bytes: int = 0
    """Bytes a day the uplink may spend on backfill; 0: no budget (fresh readings never wait
    for it)."""
    batch_max_readings: int = 50
    """Most readings in one batch envelope when a backlog drains."""
    profile: UplinkProfile = MQTT
    """The platform's rules (:mod:`agent.profiles`), from ``[mqtt] profile``."""


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """``[platform]``: the hospital platform's own identity (beside its broker's)."""

    cert_file: Path | None = None
    """PEM certificate of the platform signing key: receipts and commands must verify with
    it (docs/platform-protocol.md)."""
    client_ca_file: Path | None = None
    """PEM certificate of the CA that issues the hubs' client certificates: when set, a
    certificate sent by ``install_certificate`` must be issued by it and valid now."""


MODEM_BACKENDS: Final = ("none", "at", "modemmanager")
"""``[modem] backend``: ``none`` (Ethernet or Wi-Fi: no modem), ``at`` (the module's AT port
over pyserial, agent/modem/manager.py), ``modemmanager`` (the OS's ModemManager over D-Bus,
agent/modem/modemmanager.py: it holds the module; the hub reads its figures)."""


@dataclass(frozen=True, slots=True)
class ModemConfig:
    """``[modem]``: the cellular module the hub reaches the platform through (issue 10)."""

    backend: str = "none"
    port: str | None = None
    """The module's AT port (``/dev/ttyUSB2``, or a udev symlink)."""
    baudrate: int = 115200
    apn: str | None = None
    """The APN of the hub's data context; unset: the module's own."""
    pin_file: Path | None = None
    """The SIM PIN (a credential file, mode 0600); unset: no PIN is entered."""
    power_cycle_command: Path | None = None
    """An executable that cuts and restores the module's power (a GPIO line, a USB hub
    port): the ladder's last rung; unset: that rung does not apply."""


INDICATOR_BACKENDS: Final = ("none", "log", "gpiod")
"""``[indicator] backend``: ``none`` (no LED), ``log`` (a log line per state change: tests and
a bench without an LED), ``gpiod`` (an RGB LED on GPIO lines through libgpiod v2; needs the
optional ``gpiod`` bindings). agent/indicator/, docs/indicator.md."""

INDICATOR_COLOURS: Final = ("red", "green", "blue")
"""The colours ``[indicator] lines`` may wire, each to its own GPIO line."""

INDICATOR_MAX_LINE: Final = 1023
"""Largest line offset taken: past any SoC's (the Pi's header chip has 54-58 lines) or GPIO
expander's, so a larger one is a typo."""


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    """``[indicator]``: the patient status LED (issue 11)."""

    backend: str = "none"
    chip: Path = Path("/dev/gpiochip0")
    """The GPIO chip the LED's lines are on (the Raspberry Pi's 40-pin header: gpiochip0;
    on a Pi 5 with a kernel before 6.6.45, gpiochip4)."""
    lines: tuple[tuple[str, int], ...] = (("red", 17), ("green", 27), ("blue", 22))
    """(colour, line offset on ``chip``) of each wired colour; on the Pi's header chip the
    offset is the BCM GPIO number (17, 27 and 22 are header pins 11, 13 and 15). A colour left
    out is not wired (a single LED: one colour)."""
    active_low: bool = False
    """A common-anode LED: the line is driven low to light it (the kernel inverts)."""
    offline_attention_s: float = OFFLINE_ATTENTION_S


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
    platform: PlatformConfig = PlatformConfig()
    modem: ModemConfig = ModemConfig()
    indicator: IndicatorConfig = IndicatorConfig()


# ---------------------------------------------------------------------------
# Schema: (type, required, default, check) per key. A check returns an error text or None.
# ---------------------------------------------------------------------------

_Check = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class Field:
    """One key of the schema.

    A number (``int`` or ``float``) always has a closed range ``low``..``high``, and its ``doc``
    gives the reason for it; NaN and ±inf are refused for every number.
    """

    type: type
    default: Any = None
    required: bool = True
    check: _Check | None = None
    doc: str = ""
    low: int | float | None = None
    high: int | float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        if self.type in (int, float):
            if self.low is None or self.high is None or not self.low <= self.high:
                raise ValueError("a numeric field needs a range low <= high")
            if not self.required and not self.low <= self.default <= self.high:
                raise ValueError("a numeric field's default must lie in its range")

    def range_text(self) -> str:
        """``1..65535`` with the unit, or ``""`` when the key is not a number."""
        if self.low is None or self.high is None:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{_number(self.low)}..{_number(self.high)}{unit}"


def _number(value: int | float) -> str:
    """A range bound as a technician would write it (``20``, ``0.5``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _matches(regex: re.Pattern[str], what: str) -> _Check:
    def check(value: Any) -> str | None:
        return None if regex.fullmatch(value) else f"must be {what}"

    return check


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


def _signing_config(where: str, values: dict[str, Any], mqtt: dict[str, Any]) -> SigningConfig:
    """Cross-key check of ``[signing]``: its certificate is not the client certificate's file
    (installing one would replace the other)."""
    signing = SigningConfig(**values)
    cert_file = signing.cert_file
    if cert_file is not None and cert_file.resolve() == Path(mqtt["cert_file"]).resolve():
        raise ConfigError(
            where, "signing.cert_file", "must not be [mqtt] cert_file (each key has its own)"
        )
    return signing


def _ack(value: Any) -> str | None:
    modes = [m.value for m in AckMode]
    return None if value in modes else f"must be one of {', '.join(repr(m) for m in modes)}"


DAILY_BUDGET_MIN_BYTES: Final = 64 * 1024
"""The smallest daily byte budget: a day's keepalives (~19 KB at 900 s), a reconnect or two
(~5 KB each) and a few readings; less would starve fresh readings' own overhead."""

DAILY_BUDGET_MAX_BYTES: Final = 10 * 1024**3
"""10 GiB a day: far beyond any hub's traffic; a larger value is a typo."""


def _daily_budget(value: Any) -> str | None:
    if value == 0 or value >= DAILY_BUDGET_MIN_BYTES:
        return None
    return f"must be 0 (no budget) or at least {DAILY_BUDGET_MIN_BYTES} bytes (64 KiB)"


def _modem_backend(value: Any) -> str | None:
    return (
        None
        if value in MODEM_BACKENDS
        else f"must be one of {', '.join(map(repr, MODEM_BACKENDS))}"
    )


def _apn(value: Any) -> str | None:
    # Imported here: the modem package (pyserial) only when an APN is configured.
    from agent.modem.manager import validate_apn

    try:
        validate_apn(value)
    except UsageError as exc:
        return f"must be an APN ({exc.reason})"
    return None


def _modem_config(where: str, values: dict[str, Any]) -> ModemConfig:
    modem = ModemConfig(**values)
    if modem.backend == "at" and modem.port is None:
        raise ConfigError(where, "modem.port", "missing (backend 'at' needs the AT port)")
    if modem.backend == "none":
        for name in ("port", "apn", "pin_file", "power_cycle_command"):
            if values[name] is not None:
                raise ConfigError(where, f"modem.{name}", "only with a modem (backend 'at')")
    if modem.backend == "modemmanager":
        for name in ("port", "pin_file", "power_cycle_command"):
            if values[name] is not None:
                raise ConfigError(
                    where, f"modem.{name}", "only with backend 'at' (ModemManager has its own)"
                )
    return modem


def _indicator_backend(value: Any) -> str | None:
    return (
        None
        if value in INDICATOR_BACKENDS
        else f"must be one of {', '.join(map(repr, INDICATOR_BACKENDS))}"
    )


def _indicator_lines(value: Any) -> str | None:
    """``lines``: a table of colour = line offset, at least one, each on its own line."""
    if not value:
        return "must wire at least one colour, e.g. { green = 27 }"
    seen: dict[int, str] = {}
    for colour, offset in value.items():
        if colour not in INDICATOR_COLOURS:
            shown = _shown_key(str(colour))
            return f"has no colour '{shown}' (colours: {', '.join(INDICATOR_COLOURS)})"
        if isinstance(offset, bool) or not isinstance(offset, int):
            return f"{colour} must be a line offset (an integer), not {type(offset).__name__}"
        if not 0 <= offset <= INDICATOR_MAX_LINE:
            return f"{colour} must be in 0..{INDICATOR_MAX_LINE}, not {_shown(offset)}"
        if offset in seen:
            return f"{colour} is line {offset}, as {seen[offset]} (each colour needs its own line)"
        seen[offset] = colour
    return None


def _indicator_config(where: str, values: dict[str, Any]) -> IndicatorConfig:
    """``[indicator]`` with its ``lines`` table as (colour, offset) pairs, in colour order; the
    chip a device under /dev (a relative path would be taken from the file's directory)."""
    if values["chip"].parent != Path("/dev"):
        raise ConfigError(
            where, "indicator.chip", "must be a GPIO chip under /dev, e.g. '/dev/gpiochip0'"
        )
    lines = values["lines"]
    wired = tuple((c, lines[c]) for c in INDICATOR_COLOURS if c in lines)
    return IndicatorConfig(**{**values, "lines": wired})


def _profile(value: Any) -> str | None:
    return None if value in PROFILES else f"must be one of {', '.join(map(repr, PROFILES))}"


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
        "scan_timeout_s": Field(
            float,
            20.0,
            False,
            low=1.0,
            high=300.0,
            unit="s",
            doc="how long a session that must look for its device itself scans (the daemon's"
            " collector hears devices on its lifelong scan instead); >= 1 s spans several"
            " advertising events of a device a patient just switched on; <= 5 min",
        ),
        "connect_timeout_s": Field(
            float,
            20.0,
            False,
            low=1.0,
            high=120.0,
            unit="s",
            doc="how long a connection may take to come up; >= 1 s for a few connection events;"
            " <= 2 min, well past the LE supervision timeout's 32 s cap (Core 5.4 Vol 6 Part B"
            " §4.5.2), after which the device has gone",
        ),
        "quiet_period_s": Field(
            float,
            5.0,
            False,
            low=0.5,
            high=600.0,
            unit="s",
            doc="session ends after this long without a measurement; >= 0.5 s lets stored"
            " records arrive back to back; <= 10 min, and below session_timeout_s",
        ),
        "session_timeout_s": Field(
            float,
            120.0,
            False,
            low=3.0,
            high=3600.0,
            unit="s",
            doc="hard cap on one device session (outer timeout); must exceed scan_timeout_s +"
            " connect_timeout_s + quiet_period_s (the inner timeouts); <= 1 h, room for a"
            " glucometer's full RACP sync, while one stuck device cannot hold the radio longer",
        ),
        "cycle_interval_s": Field(
            float,
            30.0,
            False,
            low=0.5,
            high=3600.0,
            unit="s",
            doc="after a session, the same device is not connected again for this long (devices"
            " keep advertising for a while after a transfer); >= 0.5 s keeps a device that"
            " always advertises from spinning the radio; <= 1 h so a reading reaches the"
            " clinic within the hour",
        ),
        "max_connections": Field(
            int,
            2,
            False,
            low=1,
            high=4,
            doc="devices served at once on this adapter; a silent device never delays another;"
            " <= 4, what a Raspberry Pi's controller keeps up reliably beside scanning",
        ),
        "adapter_quiet_s": Field(
            float,
            600.0,
            False,
            low=30.0,
            high=86400.0,
            unit="s",
            doc="no advertisement at all for this long while devices are configured: scanning is"
            " restarted, then the adapter power-cycled; >= 30 s, many advertising intervals of"
            " any device nearby; <= 1 day",
        ),
        "set_device_clock": Field(
            bool,
            True,
            False,
            doc="write the hub's time to a device's Current Time (CTS) when it drifts past"
            " clock_set_threshold_s and the device allows it",
        ),
        "clock_set_threshold_s": Field(
            float,
            60.0,
            False,
            low=1.0,
            high=86400.0,
            unit="s",
            doc="drift that makes the hub set a device's clock; >= 1 s, the resolution of CTS;"
            " <= 1 day",
        ),
    },
    "outbox": {
        "path": Field(Path, doc="SQLite database file"),
        "key_file": Field(Path, doc="data key file, mode 0600, outside the state directory"),
        "quota_bytes": Field(
            int,
            256 * 1024 * 1024,
            False,
            low=1024 * 1024,
            high=4 * 1024 * 1024 * 1024,
            unit="bytes",
            doc="bound on stored data; 'storage critical' at 90 %, clinical records never shed;"
            " >= 1 MiB holds the empty database and ~180 readings (5.6 KB each); <= 4 GiB,"
            " half the smallest (8 GB) SD card, leaving the rest to the OS and the 64 MiB WAL",
        ),
    },
    "signing": {
        "key_file": Field(Path, doc="the hub's P-256 signing key (PEM, mode 0600)"),
        "cert_file": Field(
            Path,
            None,
            False,
            doc="the signing key's certificate (PEM) when it is not the client key (pkcs11);"
            " set by homehub provision; not [mqtt] cert_file",
        ),
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
        "port": Field(
            int, 8883, False, low=1, high=65535, doc="the broker's TCP port (1-65535; 0 is none)"
        ),
        "ca_file": Field(Path, doc="CA that signed the broker's certificate"),
        "cert_file": Field(Path, doc="the hub's client certificate"),
        "key_file": Field(Path, doc="the hub's client key (mode 0600)"),
        "profile": Field(
            str,
            "mqtt",
            False,
            _profile,
            doc="the platform's broker: 'mqtt' (MQTT 5: mosquitto, EMQX, HiveMQ),"
            " 'azure_iot_hub' or 'aws_iot_core' (agent/profiles.py: topics, limits, defaults)",
        ),
        "keepalive_s": Field(
            int,
            CELLULAR_KEEPALIVE_S,
            False,
            low=1,
            high=65535,
            unit="s",
            doc="MQTT Keep Alive, a Two Byte Integer (MQTT 5 §3.1.2.10); 0 would switch it off"
            " and leave a dead link unnoticed; default the profile's (900 s: ~19 KB an idle"
            " day on a metered link), within the profile's bounds (azure_iot_hub <= 1177 s,"
            " aws_iot_core 30-1200 s)",
        ),
        "backoff_max_s": Field(
            float,
            120.0,
            False,
            low=1.0,
            high=3600.0,
            unit="s",
            doc="cap of the full-jitter reconnect backoff; >= 1 s, the backoff's base"
            " (agent.uplink.UplinkSettings.backoff_base_s); <= 1 h, so every hub is back"
            " within the hour after a platform outage",
        ),
        "first_connect_jitter_s": Field(
            float,
            30.0,
            False,
            low=0.0,
            high=300.0,
            unit="s",
            doc="the first connection after a start waits uniform(0, this): hubs that boot"
            " together after a power cut do not all reach the platform in the same second;"
            " 0 in a lab, <= 5 min so a reading is never held long",
        ),
        "ack": Field(
            str,
            None,
            False,
            _ack,
            doc="what deletes a reading: 'receipt' (the platform's signed receipt; needs"
            " [platform] cert_file) or 'puback' (the broker's PUBACK, only where it is"
            " durable); default 'receipt' when [platform] cert_file is set, else 'puback'",
        ),
        "receipt_timeout_s": Field(
            float,
            60.0,
            False,
            low=5.0,
            high=3600.0,
            unit="s",
            doc="with ack 'receipt', a reading PUBACKed without a receipt this long is sent"
            " again; >= 5 s, past a platform's 100 ms gathering and two cellular round trips;"
            " <= 1 h, a receipt's longest lifetime",
        ),
        "daily_budget_bytes": Field(
            int,
            0,
            False,
            _daily_budget,
            low=0,
            high=DAILY_BUDGET_MAX_BYTES,
            unit="bytes",
            doc="bytes a day backfill may use on a metered link (fresh readings never wait);"
            " 0 = no budget, else >= 64 KiB (a day's keepalives and reconnects) and <= 10 GiB",
        ),
        "batch_max_readings": Field(
            int,
            50,
            False,
            low=1,
            high=500,
            unit="readings",
            doc="most readings in one batch envelope while a backlog drains (1 sends each"
            " alone); a batch is also kept under the profile's message size limit",
        ),
    },
    "modem": {
        "backend": Field(
            str,
            "none",
            False,
            _modem_backend,
            doc="'none' (Ethernet or Wi-Fi), 'at' (a cellular module's AT port) or"
            " 'modemmanager' (the OS's ModemManager holds the module)",
        ),
        "port": Field(str, None, False, doc="the module's AT port, e.g. /dev/ttyUSB2"),
        "baudrate": Field(
            int,
            115200,
            False,
            low=1200,
            high=4_000_000,
            doc="for a UART (a USB port ignores it); 1200-4000000: what serial ports support",
        ),
        "apn": Field(str, None, False, _apn, doc="the data context's APN; unset: the module's"),
        "pin_file": Field(
            Path, None, False, doc="the SIM PIN, a credential file (mode 0600); never logged"
        ),
        "power_cycle_command": Field(
            Path,
            None,
            False,
            doc="an executable that cuts and restores the module's power (GPIO, USB port),"
            " run without arguments as the ladder's last rung",
        ),
    },
    "platform": {
        "cert_file": Field(
            Path,
            None,
            False,
            doc="PEM certificate of the platform signing key (receipts, commands)",
        ),
        "client_ca_file": Field(
            Path,
            None,
            False,
            doc="PEM certificate of the CA issuing hub client certificates: an installed"
            " certificate must be issued by it and valid now",
        ),
    },
    "indicator": {
        "backend": Field(
            str,
            "none",
            False,
            _indicator_backend,
            doc="the patient status LED: 'none', 'log' (a log line per state change) or"
            " 'gpiod' (an RGB LED on GPIO lines, libgpiod v2; docs/indicator.md)",
        ),
        "chip": Field(
            Path,
            Path("/dev/gpiochip0"),
            False,
            doc="gpiod: the GPIO chip of the LED's lines (the Pi's 40-pin header: gpiochip0)",
        ),
        "lines": Field(
            dict,
            dict(IndicatorConfig().lines),
            False,
            _indicator_lines,
            doc="gpiod: the line offset on chip of each wired colour (red, green, blue; the"
            " Pi's header: BCM GPIO numbers, 0-1023); a colour left out is not wired",
        ),
        "active_low": Field(
            bool, False, False, doc="gpiod: lines driven low to light (a common-anode LED)"
        ),
        "offline_attention_s": Field(
            float,
            OFFLINE_ATTENTION_S,
            False,
            low=600.0,
            high=7 * 86400.0,
            unit="s",
            doc="offline this long shows 'needs attention'; default 6 h, past a router's reboot"
            " or a provider's night maintenance, within the same day; >= 10 min, several"
            " reconnect attempts; <= 7 days",
        ),
    },
}

DEVICE_SCHEMA: Final[dict[str, Field]] = {
    "kind": Field(str, check=_kind),
    "address": Field(str, check=_matches(BD_ADDR_RE, "a Bluetooth address AA:BB:CC:DD:EE:FF")),
    "label": Field(str, check=_matches(LABEL_RE, "a short label ([a-z0-9_-], 1-32)")),
    "pairing": Field(
        str,
        "",
        False,
        lambda v: None if v in PAIRING_MODES else f"must be one of {', '.join(PAIRING_MODES)}",
        doc="'required' (bonded by homehub pair; unencrypted links refused), 'first_contact'"
        " (bond Just Works on first contact) or 'none'; default: glucose first_contact,"
        " others none",
    ),
    "identity": Field(
        str,
        None,
        False,
        _matches(IDENTITY_PIN_RE, "'sha256:' and 64 lowercase hex digits (homehub pair writes it)"),
        doc="the identity pinned at pairing; another identity at this address is refused",
    ),
}


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

MAX_CONFIG_BYTES: Final = 256 * 1024
"""Largest configuration file read. The example is 4 KB; 256 KiB leaves room for many devices
and comments, and bounds what the loader (and the line locator) ever has to look at."""

_TOML_POSITION_RE: Final = re.compile(r"\(at line (\d+), column \d+\)")


def load(path: Path | str) -> Config:
    """Read and validate the configuration file.

    :class:`ConfigError` names the file, the key and, when it can be found, the line.
    """
    path = Path(path)
    where = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(where, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(where, None, f"cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(where, None, f"is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(where, None, "is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        position = _TOML_POSITION_RE.search(str(exc))
        line = int(position.group(1)) if position else None
        raise ConfigError(where, None, f"is not valid TOML: {exc}", line) from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through (a 5,000-digit number)
        raise ConfigError(where, None, f"is not valid TOML: {exc}") from None
    try:
        return from_mapping(data, path)
    except ConfigError as exc:
        if exc.line is not None or exc.key is None:
            raise
        raise ConfigError(exc.path, exc.key, exc.reason, locate_key(text, exc.key)) from None


def from_mapping(data: Mapping[str, Any], source: Path) -> Config:
    """Validate an already-parsed TOML document (``source`` names it in errors; no lines)."""
    where = str(source)
    base = source.parent
    known = set(SCHEMA) | {"devices"}
    for section in data:
        if section not in known:
            raise ConfigError(
                where, _shown_key(section), f"unknown section (known: {', '.join(sorted(known))})"
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

    platform = PlatformConfig(**sections["platform"])
    return Config(
        source=source,
        hub=HubConfig(**sections["hub"]),
        patient=PatientConfig(**sections["patient"]),
        ble=_ble_config(where, sections["ble"]),
        devices=devices,
        outbox=OutboxConfig(**sections["outbox"]),
        signing=_signing_config(where, sections["signing"], sections["mqtt"]),
        mqtt=_mqtt_config(where, sections["mqtt"], data.get("mqtt", {}), platform),
        keys=_keys_config(where, sections["keys"]),
        platform=platform,
        modem=_modem_config(where, sections["modem"]),
        indicator=_indicator_config(where, sections["indicator"]),
    )


def _mqtt_config(
    where: str, values: dict[str, Any], given: Mapping[str, Any], platform: PlatformConfig
) -> MqttConfig:
    """Cross-key checks of ``[mqtt]`` against its ``profile`` (``given``: the table as in the
    file, to tell a key left out from one set to its default).

    ``keepalive_s``: the profile's when absent, else within the profile's bounds. ``ack``:
    receipts can only be verified with the platform's certificate; without ``ack`` in the file,
    configuring that certificate opts in to the profile's default (``receipt``, or ``puback``
    on IoT Hub, whose PUBACK is durable), and a configuration without it keeps ``puback``.
    """
    profile = profile_named(values["profile"])
    keepalive_s = values["keepalive_s"] if "keepalive_s" in given else profile.keepalive_s
    try:
        profile.check_keepalive(keepalive_s)
    except UsageError as exc:
        raise ConfigError(where, "mqtt.keepalive_s", exc.reason) from None
    ack = values["ack"]
    if ack is None:
        ack = profile.ack_default if platform.cert_file is not None else AckMode.PUBACK
    ack = AckMode(ack)
    if ack is AckMode.RECEIPT and platform.cert_file is None:
        raise ConfigError(
            where,
            "mqtt.ack",
            "'receipt' needs [platform] cert_file (receipts are verified with the platform's"
            " certificate)",
        )
    return MqttConfig(**{**values, "ack": ack, "keepalive_s": keepalive_s, "profile": profile})


def _ble_config(where: str, values: dict[str, Any]) -> BleConfig:
    """Cross-key check of ``[ble]``: the outer session timeout exceeds the inner ones together.

    A session scans, connects, then collects until ``quiet_period_s`` passes without a
    measurement; ``session_timeout_s`` cuts it all off. Were it not longer than the three
    together, a device that behaves could still be cut off mid-transfer.
    """
    ble = BleConfig(**values)
    inner = ble.scan_timeout_s + ble.connect_timeout_s + ble.quiet_period_s
    if not ble.session_timeout_s > inner:
        raise ConfigError(
            where,
            "ble.session_timeout_s",
            "must exceed ble.scan_timeout_s + ble.connect_timeout_s + ble.quiet_period_s"
            f" ({_number(ble.scan_timeout_s)} + {_number(ble.connect_timeout_s)}"
            f" + {_number(ble.quiet_period_s)} = {_number(inner)} s),"
            f" not {_number(ble.session_timeout_s)} s",
        )
    return ble


def _validate_table(
    where: str, name: str, table: Mapping[str, Any], fields: Mapping[str, Field], base: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in table:
        if key not in fields:
            raise ConfigError(
                where,
                f"{name}.{_shown_key(key)}",
                f"unknown key (known: {', '.join(sorted(fields))})",
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
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(where, dotted, f"must be a finite number, not {value}")
    elif field.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, dotted, f"must be an integer, not {type(value).__name__}")
    elif not isinstance(value, field.type):
        raise ConfigError(
            where, dotted, f"must be a {field.type.__name__}, not {type(value).__name__}"
        )
    if field.low is not None and field.high is not None:
        # Compared before float(): an int too large for a float stays comparable.
        if not field.low <= value <= field.high:
            raise ConfigError(
                where, dotted, f"must be in {field.range_text()}, not {_shown(value)}"
            )
        if field.type is float:
            value = float(value)
    if field.check is not None:
        problem = field.check(value)
        if problem:
            raise ConfigError(where, dotted, problem)
    return value


def _shown(value: int | float) -> str:
    """A number from the file for an error line, cut short when it is absurdly long."""
    text = _number(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _shown_key(key: str) -> str:
    """A key name from the file for an error line: printable, on one line, bounded."""
    text = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 64 else text[:60] + "..."


# ---------------------------------------------------------------------------
# Where a key stands: tomllib gives no line numbers, so a small scanner finds them.
# ---------------------------------------------------------------------------

_Path = tuple[str | int, ...]
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_ERROR_KEY_PART_RE: Final = re.compile(r"^([^\[\]]*)((?:\[\d+\])*)$")


def locate_key(text: str, key: str) -> int | None:
    """The 1-based line of the file where dotted ``key`` (``"mqtt.port"``,
    ``"devices[1].label"``) is set; else the line of the nearest enclosing table or inline
    table that holds it (``[mqtt]``, ``mqtt = {...}``); else ``None``.

    Reads ``text`` once, line by line, tracking multi-line strings and brackets so that a
    ``[x]`` or ``k =`` inside a string or an array is not taken for a header or a key;
    comments, quoted keys, dotted keys, ``[[arrays]]`` of tables and inline tables are
    understood. Linear in the text's length (bounded by :data:`MAX_CONFIG_BYTES` in
    :func:`load`).
    """
    target = _error_key_path(key)
    if target is None:
        return None
    lines = _key_lines(text)
    for end in range(len(target), 0, -1):
        line = lines.get(target[:end])
        if line is not None:
            return line
    return None


def _error_key_path(key: str) -> _Path | None:
    """``"devices[1].label"`` → ``("devices", 1, "label")``."""
    path: list[str | int] = []
    for part in key.split("."):
        match = _ERROR_KEY_PART_RE.match(part)
        if match is None or not match.group(1):
            return None
        path.append(match.group(1))
        path.extend(int(i) for i in re.findall(r"\d+", match.group(2)))
    return tuple(path)


def _key_lines(text: str) -> dict[_Path, int]:
    """Every header and key of the document, as a resolved path, with its first line."""
    found: dict[_Path, int] = {}
    arrays: dict[_Path, int] = {}  # array-of-tables path -> index of its last element
    table: _Path = ()
    scanner = _Scanner()
    for number, line in enumerate(text.splitlines(), start=1):
        rest = scanner.resume(line)
        if rest is None:
            continue  # the whole line is inside a multi-line string or a bracketed value
        pos = _skip_space(line, rest)
        if pos >= len(line) or line[pos] == "#":
            continue
        if line[pos] == "[":
            is_array = line.startswith("[[", pos)
            parsed = _parse_key(line, pos + (2 if is_array else 1))
            if parsed is None:
                continue
            parts, _ = parsed
            resolved = _resolve(parts, arrays)
            if is_array:
                index = arrays.get(resolved, -1) + 1
                arrays[resolved] = index
                found.setdefault(resolved, number)
                resolved = (*resolved, index)
            table = resolved
            found.setdefault(table, number)
            continue
        parsed = _parse_key(line, pos)
        if parsed is None:
            continue
        parts, end = parsed
        end = _skip_space(line, end)
        if end >= len(line) or line[end] != "=":
            continue
        found.setdefault((*table, *parts), number)
        scanner.scan(line, end + 1)
    return found


def _resolve(parts: tuple[str, ...], arrays: Mapping[_Path, int]) -> _Path:
    """A header's path with the current element index after each array of tables in it."""
    resolved: list[str | int] = []
    plain: list[str] = []
    for part in parts:
        plain.append(part)
        resolved.append(part)
        index = arrays.get(tuple(plain))
        if index is not None and len(plain) < len(parts):
            resolved.append(index)
    return tuple(resolved)


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _parse_key(line: str, pos: int) -> tuple[tuple[str, ...], int] | None:
    """A (dotted, possibly quoted) key starting at ``pos``: its parts and where it ends."""
    parts: list[str] = []
    while True:
        pos = _skip_space(line, pos)
        if pos >= len(line):
            return None
        quote = line[pos]
        if quote in "\"'":
            close = pos + 1
            chars: list[str] = []
            while close < len(line) and line[close] != quote:
                if quote == '"' and line[close] == "\\" and close + 1 < len(line):
                    close += 1  # an escaped character: kept as itself (enough for a name)
                chars.append(line[close])
                close += 1
            if close >= len(line):
                return None
            parts.append("".join(chars))
            pos = close + 1
        else:
            match = _BARE_KEY_RE.match(line, pos)
            if match is None:
                return None
            parts.append(match.group())
            pos = match.end()
        pos = _skip_space(line, pos)
        if pos < len(line) and line[pos] == ".":
            pos += 1
            continue
        return tuple(parts), pos


class _Scanner:
    """Tracks, across lines, whether the text is inside a multi-line string or an open
    ``[`` / ``{`` of a value (where nothing can be a header or a key)."""

    __slots__ = ("depth", "string")

    def __init__(self) -> None:
        self.depth = 0
        self.string: str | None = None  # '"""' or "'''" while inside one

    def resume(self, line: str) -> int | None:
        """Where a statement may start on ``line``, or ``None`` when none can."""
        if self.string is None and self.depth == 0:
            return 0
        self.scan(line, 0)
        return None

    def scan(self, line: str, pos: int) -> None:
        """Follow a value's text from ``pos`` to the end of the line (or of the comment)."""
        while pos < len(line):
            if self.string is not None:
                close = _find_close(line, pos, self.string)
                if close < 0:
                    return
                self.string = None
                pos = close
                continue
            char = line[pos]
            if char == "#":
                return
            if char in "\"'":
                triple = char * 3
                if line.startswith(triple, pos):
                    self.string = triple
                    pos += 3
                    continue
                close = _find_close(line, pos + 1, char)
                pos = close if close >= 0 else len(line)
                continue
            if char in "[{":
                self.depth += 1
            elif char in "]}" and self.depth > 0:
                self.depth -= 1
            pos += 1


def _find_close(line: str, pos: int, quote: str) -> int:
    """Index just past the closing ``quote`` (honouring backslash escapes in basic strings),
    or -1 when the line ends first."""
    basic = quote[0] == '"'
    while pos < len(line):
        if basic and line[pos] == "\\":
            pos += 2
            continue
        if line.startswith(quote, pos):
            end = pos + len(quote)
            while end < len(line) and line[end] == quote[0] and len(quote) == 3:
                end += 1  # """a"""" ends with the last three quotes
            return end
        pos += 1
    return -1


def schema_lines() -> list[str]:
    """The schema as text, one key a line, for ``homehub config-schema``."""
    lines: list[str] = []
    for name, fields in [*SCHEMA.items(), ("[devices]", DEVICE_SCHEMA)]:
        lines.append(f"[{name}]")
        for key, f in fields.items():
            need = "required" if f.required else f"default {f.default!s}"
            bounds = f", {f.range_text()}" if f.low is not None else ""
            doc = f"  # {f.doc}" if f.doc else ""
            lines.append(f"  {key}: {f.type.__name__} ({need}{bounds}){doc}")
    return lines
