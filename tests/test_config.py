"""The configuration file: the example loads, and every wrong key names itself and the file."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError
from agent.uplink import UplinkSettings
from tests.example_config import example_config, minimal_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    return path


def _example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text, old
    return _write(tmp_path, text.replace(old, new, 1))


class TestExample:
    def test_example_loads(self) -> None:
        """The shipped example is a valid, complete configuration."""
        cfg = config.load(EXAMPLE)
        assert cfg.hub.id == "hub-0001"
        assert cfg.hub.timezone == "Europe/Berlin"
        assert len(cfg.devices) == 1
        assert cfg.devices[0].kind == "blood_pressure"
        assert cfg.mqtt.port == 8883
        assert cfg.ble.scan_timeout_s == 20.0

    def test_defaults_apply(self, tmp_path: Path) -> None:
        """Optional keys left out take their schema default."""
        path = _example_with(tmp_path, "keepalive_s = 900 ", "# keepalive_s = 900 ")
        assert config.load(path).mqtt.keepalive_s == 900

    def test_relative_paths_resolve_against_the_file(self, tmp_path: Path) -> None:
        """A relative path is taken relative to the configuration file's directory."""
        path = _example_with(
            tmp_path, 'path = "/var/lib/homehub/outbox.db"', 'path = "state/outbox.db"'
        )
        assert tmp_path / "state" / "outbox.db" == config.load(path).outbox.path


class TestErrors:
    @pytest.mark.parametrize(
        ("old", "new", "key", "reason_part"),
        [
            ('id = "hub-0001"', "", "hub.id", "missing"),
            ('id = "hub-0001"', 'id = "Hub/0001"', "hub.id", "lowercase"),
            ("port = 8883", 'port = "8883"', "mqtt.port", "integer"),
            ("port = 8883", "port = 70000", "mqtt.port", "1..65535"),
            ('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"', "hub.timezone", "IANA"),
            ('stack = "bluez"', 'stack = "usb"', "ble.stack", "bumble:"),
            (
                'address = "F0:00:00:00:10:01"',
                'address = "f0:00"',
                "devices[0].address",
                "Bluetooth",
            ),
            ('kind = "blood_pressure"', 'kind = "toaster"', "devices[0].kind", "one of"),
            (
                "keepalive_s = 900",
                "keepalive_s = 900\nkeep_alive = 5",
                "mqtt.keep_alive",
                "unknown key",
            ),
            (
                "scan_timeout_s = 20.0",
                "scan_timeout_s = -1",
                "ble.scan_timeout_s",
                "must be in 1..300 s, not -1",
            ),
        ],
    )
    def test_wrong_key_is_named(
        self, tmp_path: Path, old: str, new: str, key: str, reason_part: str
    ) -> None:
        """A missing or wrong key stops loading with an error naming the key and the file."""
        path = _example_with(tmp_path, old, new)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert key == info.value.key
        assert str(path) == info.value.path
        assert reason_part in info.value.reason
        assert key in str(info.value)
        assert str(path) in str(info.value)
        assert info.value.line is not None
        assert f"{path}:{info.value.line}: key '{key}'" in str(info.value)

    def test_missing_section(self, tmp_path: Path) -> None:
        """A missing required section names its first required key."""
        text = EXAMPLE.read_text()
        start = text.index("[patient]")
        end = text.index("[ble]")
        path = _write(tmp_path, text[:start] + text[end:])
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.key == "patient.id"

    def test_unknown_section(self, tmp_path: Path) -> None:
        """A misspelt section is an error, not silently ignored."""
        path = _write(tmp_path, EXAMPLE.read_text() + "\n[mqqt]\nhost = 'x'\n")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.key == "mqqt"

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the file."""
        with pytest.raises(ConfigError) as info:
            config.load(tmp_path / "nope.toml")
        assert info.value.key is None
        assert "not found" in info.value.reason

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A syntax error is reported with TOML's own position."""
        path = _write(tmp_path, "[hub\nid = 1\n")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert "not valid TOML" in info.value.reason
        assert 1 == info.value.line

    def test_duplicate_device_label(self, tmp_path: Path) -> None:
        """Two devices cannot share a label or an address."""
        text = EXAMPLE.read_text()
        block = text[text.index("[[devices]]") : text.index("[outbox]")]
        path = _write(tmp_path, text.replace(block, block + block.replace("10:01", "10:02")))
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.key == "devices[1].label"
        assert info.value.line is not None
        lines = path.read_text().splitlines()
        second = [i for i, line in enumerate(lines, 1) if line == "[[devices]]"][1]
        assert lines[info.value.line - 1] == 'label = "cuff"'
        assert info.value.line > second

    def test_example_is_valid_toml_with_every_schema_section(self) -> None:
        """The example mentions every section of the schema."""
        data = tomllib.loads(EXAMPLE.read_text())
        assert set(config.SCHEMA) <= set(data)


def test_every_configurable_kind_has_a_session() -> None:
    """DEVICE_KINDS (validated without importing BLE) and the session table agree."""
    from agent.ble.sessions import SESSIONS

    assert set(config.DEVICE_KINDS) == set(SESSIONS)


# ---------------------------------------------------------------------------
# Ranges: every number of the schema, below, above, NaN and ±inf, with the line
# ---------------------------------------------------------------------------

MARK = "# <- under test"

NUMERIC = [
    (section, key, field)
    for section, fields in config.SCHEMA.items()
    for key, field in fields.items()
    if field.type in (int, float)
]


def _numeric_ids() -> list[str]:
    return [f"{section}.{key}" for section, key, _ in NUMERIC]


def _set_key(tmp_path: Path, section: str, key: str, value: str) -> tuple[Path, int]:
    """The example with ``section.key = value`` (marked), and the line the mark stands on."""
    lines = EXAMPLE.read_text().splitlines()
    header = lines.index(f"[{section}]")
    at = next(i for i in range(header + 1, len(lines)) if lines[i].startswith(f"{key} ="))
    lines[at] = f"{key} = {value}  {MARK}"
    path = _write(tmp_path, "\n".join(lines) + "\n")
    return path, at + 1


def _bad_values(field: config.Field) -> list[str]:
    """TOML text for a value below and above the range, and the non-finite ones for floats."""
    assert field.low is not None
    assert field.high is not None
    if field.type is int:
        # 0 may be allowed (mqtt.daily_budget_bytes: 0 = no budget)
        return [str(int(field.low) - 1), str(int(field.high) + 1), *("0", "-1")[field.low <= 0 :]]
    return [
        repr(field.low - 0.001),
        repr(field.high + 0.001),
        *(zero for zero in ("0.0", "-1.0") if float(zero) < field.low),  # 0 may be allowed
        "nan",
        "inf",
        "+inf",
        "-inf",
        "1" + "0" * 400,  # an integer too large for a float
    ]


class TestRanges:
    def test_every_number_has_a_range_and_a_reason(self) -> None:
        """No number is unbounded: each has a finite closed range and a doc giving a reason."""
        assert {"ble.session_timeout_s", "mqtt.keepalive_s", "mqtt.port"} <= set(_numeric_ids())
        for section, key, field in NUMERIC:
            assert field.low is not None, key
            assert field.high is not None, key
            assert math.isfinite(field.low), key
            assert math.isfinite(field.high), key
            assert field.low <= field.default <= field.high, key
            assert field.doc, f"{section}.{key} has no reason for its range"
        assert not [k for k, f in config.DEVICE_SCHEMA.items() if f.type in (int, float)]

    def test_chosen_ranges(self) -> None:
        """The ranges the docs give reasons for (MQTT 5 §3.1.2.10 for Keep Alive)."""
        ranges = {f"{s}.{k}": (f.low, f.high) for s, k, f in NUMERIC}
        assert ranges == {
            "modem.baudrate": (1200, 4_000_000),
            "indicator.offline_attention_s": (600.0, 604800.0),
            "ble.scan_timeout_s": (1.0, 300.0),
            "ble.connect_timeout_s": (1.0, 120.0),
            "ble.quiet_period_s": (0.5, 600.0),
            "ble.session_timeout_s": (3.0, 3600.0),
            "ble.cycle_interval_s": (0.5, 3600.0),
            "ble.max_connections": (1, 4),
            "ble.adapter_quiet_s": (30.0, 86400.0),
            "ble.clock_set_threshold_s": (1.0, 86400.0),
            "outbox.quota_bytes": (1024 * 1024, 4 * 1024**3),
            "mqtt.port": (1, 65535),
            "mqtt.keepalive_s": (1, 65535),
            "mqtt.backoff_max_s": (1.0, 3600.0),
            "mqtt.first_connect_jitter_s": (0.0, 300.0),
            "mqtt.receipt_timeout_s": (5.0, 3600.0),
            "mqtt.daily_budget_bytes": (0, 10 * 1024**3),
            "mqtt.batch_max_readings": (1, 500),
        }

    @pytest.mark.parametrize(("section", "key", "field"), NUMERIC, ids=_numeric_ids())
    def test_out_of_range_names_key_file_and_line(
        self, tmp_path: Path, section: str, key: str, field: config.Field
    ) -> None:
        """Below, above, NaN, ±inf: each a ConfigError naming the key, the file and its line."""
        for value in _bad_values(field):
            path, line = _set_key(tmp_path, section, key, value)
            with pytest.raises(ConfigError) as info:
                config.load(path)
            err = info.value
            assert (f"{section}.{key}", str(path), line) == (err.key, err.path, err.line), value
            assert str(err).startswith(f"{path}:{line}: key '{section}.{key}': "), str(err)
            if value in ("nan", "inf", "+inf", "-inf"):
                assert err.reason.startswith("must be a finite number"), err.reason
            else:
                assert err.reason.startswith(f"must be in {field.range_text()}, not "), err.reason

    @pytest.mark.parametrize(("section", "key", "field"), NUMERIC, ids=_numeric_ids())
    def test_the_bounds_themselves_load(
        self, tmp_path: Path, section: str, key: str, field: config.Field
    ) -> None:
        """Both ends of each range are accepted (closed ranges), with room made for nesting."""
        for bound in (field.low, field.high):
            assert bound is not None
            text = EXAMPLE.read_text()
            roomy = {
                "scan_timeout_s = 20.0": "scan_timeout_s = 1.0",
                "connect_timeout_s = 20.0": "connect_timeout_s = 1.0",
                "quiet_period_s = 5.0": "quiet_period_s = 0.5",
                "session_timeout_s = 120.0": "session_timeout_s = 3600.0",
            }
            for old, new in roomy.items():
                text = text.replace(old, new, 1)
            lines = text.splitlines()
            header = lines.index(f"[{section}]")
            at = next(i for i in range(header + 1, len(lines)) if lines[i].startswith(f"{key} ="))
            lines[at] = f"{key} = {bound!r}"
            path = _write(tmp_path, "\n".join(lines) + "\n")
            loaded = getattr(getattr(config.load(path), section), key)
            assert bound == loaded
            assert type(loaded) is field.type

    def test_an_integer_key_refuses_a_float(self, tmp_path: Path) -> None:
        """1e17 or inf for an integer key is refused by type, on its line."""
        for value in ("1e17", "inf", "60.0"):
            path, line = _set_key(tmp_path, "mqtt", "keepalive_s", value)
            with pytest.raises(ConfigError) as info:
                config.load(path)
            assert ("mqtt.keepalive_s", line) == (info.value.key, info.value.line)
            assert "must be an integer, not float" == info.value.reason

    def test_a_number_too_long_for_python_is_refused(self, tmp_path: Path) -> None:
        """A 5,000-digit integer is a ConfigError, not a ValueError from int()."""
        path, _ = _set_key(tmp_path, "outbox", "quota_bytes", "9" * 5000)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert "not valid TOML" in info.value.reason

    def test_oversized_file_is_refused(self, tmp_path: Path) -> None:
        """A file past MAX_CONFIG_BYTES is refused before parsing."""
        path = _write(tmp_path, EXAMPLE.read_text() + "#" * config.MAX_CONFIG_BYTES + "\n")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.key is None
        assert str(config.MAX_CONFIG_BYTES) in info.value.reason


class TestNesting:
    def test_session_timeout_must_exceed_the_inner_timeouts(self, tmp_path: Path) -> None:
        """20 + 20 + 5 = 45 s of inner timeouts: a 45 s session cap is refused, on its line."""
        path, line = _set_key(tmp_path, "ble", "session_timeout_s", "45.0")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        err = info.value
        assert ("ble.session_timeout_s", line) == (err.key, err.line)
        for name in ("ble.scan_timeout_s", "ble.connect_timeout_s", "ble.quiet_period_s"):
            assert name in err.reason
        assert "= 45 s), not 45 s" in err.reason

    def test_just_above_the_inner_timeouts_loads(self, tmp_path: Path) -> None:
        """45.001 s exceeds 45 s: accepted."""
        path, _ = _set_key(tmp_path, "ble", "session_timeout_s", "45.001")
        assert 45.001 == config.load(path).ble.session_timeout_s

    def test_an_inner_timeout_against_the_default_cap_points_at_the_table(
        self, tmp_path: Path
    ) -> None:
        """With session_timeout_s left at its default, the error stands on the [ble] line."""
        text = EXAMPLE.read_text()
        lines = [
            line
            for line in text.splitlines()
            if not line.startswith("session_timeout_s") and "scan_timeout_s + conn" not in line
        ]
        lines[lines.index("[ble]") + 2] = "scan_timeout_s = 200.0"
        path = _write(tmp_path, "\n".join(lines) + "\n")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert "ble.session_timeout_s" == info.value.key
        assert lines.index("[ble]") + 1 == info.value.line
        assert "= 225 s), not 120 s" in info.value.reason


class TestLocateKey:
    DOC = """\
# [mqtt] in a comment is not a header
hub = { id = "x", timezone = "UTC" }   # an inline table
"patient".'id' = "p"
notes = \"\"\"
[ble]
scan_timeout_s = 1
\"\"\"
list = [
  { port = 1 },
  "[outbox]",
]
[ ble ]  # spaces and a comment
"scan_timeout_s" = 3   # a quoted key
connect_timeout_s=4
[[devices]]
kind = 'x'

[[devices]]
  label = "y"  # indented
[mqtt]
port = 1 # "quoted" text in a comment
"""

    @pytest.mark.parametrize(
        ("key", "line"),
        [
            ("hub.id", 2),  # inside an inline table: the table's line
            ("hub", 2),
            ("patient.id", 3),  # dotted and quoted
            ("notes", 4),
            ("list", 8),
            ("ble.scan_timeout_s", 13),  # not the one inside the multi-line string (6)
            ("ble.connect_timeout_s", 14),
            ("ble.quiet_period_s", 12),  # absent: the table's line
            ("devices[0].kind", 16),
            ("devices[1].label", 19),  # by index
            ("devices[1].kind", 18),  # absent in that entry: the entry's header
            ("devices[7].kind", 15),  # no such entry: the array's first header
            ("mqtt.port", 21),
            ("outbox.path", None),  # only inside a string
            ("signing.key_file", None),
        ],
    )
    def test_lines(self, key: str, line: int | None) -> None:
        """Headers, keys, quoted keys, inline tables and [[arrays]] by index, strings skipped."""
        assert tomllib.loads(self.DOC)  # the document is valid TOML
        assert line == config.locate_key(self.DOC, key)

    def test_example_lines(self) -> None:
        """Every key of the example is found on the line that sets it."""
        lines = EXAMPLE.read_text().splitlines()
        section = ""
        checked = 0
        for number, text in enumerate(lines, start=1):
            if text.startswith("[") and not text.startswith("[["):
                section = text.strip("[]")
            elif text.startswith("[[devices]]"):
                section = "devices[0]"
            elif text and not text.startswith("#") and " = " in text:
                key = f"{section}.{text.split(' = ')[0]}"
                assert number == config.locate_key(EXAMPLE.read_text(), key), key
                checked += 1
        assert checked >= 25


def test_first_connection_is_jittered_by_default(tmp_path: Path) -> None:
    """A hub's first connection after a start waits up to mqtt.first_connect_jitter_s (30 s by
    default, as the example shows), so a fleet booting together is spread out."""
    cfg = example_config(tmp_path)
    assert 30.0 == cfg.mqtt.first_connect_jitter_s
    assert 30.0 == UplinkSettings.from_config(cfg).first_connect_jitter_s


class TestDevicePairing:
    """``devices.pairing`` and ``devices.identity`` (issue 8: bonds and pinned identities)."""

    def _device(self, **extra: object) -> dict[str, object]:
        return {"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter", **extra}

    def _load(self, tmp_path: Path, devices: list[dict[str, object]]) -> config.Config:
        return minimal_config(
            tmp_path,
            hub_id="hub-0001",
            patient_id="p-1",
            outbox_path=tmp_path / "outbox.db",
            devices=devices,
        )

    def test_default_is_the_kinds_own(self, tmp_path: Path) -> None:
        cfg = self._load(
            tmp_path,
            [
                self._device(),
                {"kind": "blood_pressure", "address": "F0:00:00:00:10:01", "label": "cuff"},
            ],
        )
        assert [d.pairing_mode for d in cfg.devices] == ["first_contact", "none"]
        assert [d.identity for d in cfg.devices] == [None, None]

    def test_explicit_values(self, tmp_path: Path) -> None:
        pin = "sha256:" + "ab" * 32
        cfg = self._load(tmp_path, [self._device(pairing="required", identity=pin)])
        assert cfg.devices[0].pairing_mode == "required"
        assert cfg.devices[0].identity == pin

    @pytest.mark.parametrize(
        ("extra", "key", "reason"),
        [
            ({"pairing": "sometimes"}, "devices[0].pairing", "must be one of required"),
            ({"identity": "md5:00"}, "devices[0].identity", "must be 'sha256:'"),
            ({"identity": "sha256:" + "AB" * 32}, "devices[0].identity", "lowercase hex"),
        ],
    )
    def test_bad_values_are_named(
        self, tmp_path: Path, extra: dict[str, object], key: str, reason: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            self._load(tmp_path, [self._device(**extra)])
        assert caught.value.key == key
        assert reason in caught.value.reason


class TestModem:
    """``[modem]``: no modem by default; an AT port with its APN and PIN file."""

    def test_no_modem_by_default(self) -> None:
        cfg = config.load(EXAMPLE)
        assert ("none", None, None) == (cfg.modem.backend, cfg.modem.port, cfg.modem.apn)

    def test_an_at_modem(self, tmp_path: Path) -> None:
        path = _example_with(
            tmp_path,
            'backend = "none"',
            'backend = "at"\nport = "/dev/ttyUSB2"\napn = "hospital.m2m"\n'
            f'pin_file = "{tmp_path / "pin"}"',
        )
        modem = config.load(path).modem
        assert ("at", "/dev/ttyUSB2", "hospital.m2m", tmp_path / "pin", 115200) == (
            modem.backend,
            modem.port,
            modem.apn,
            modem.pin_file,
            modem.baudrate,
        )

    @pytest.mark.parametrize(
        ("new", "key", "reason"),
        [
            ('backend = "at"', "modem.port", "missing (backend 'at' needs the AT port)"),
            ('backend = "qmi"', "modem.backend", "must be one of 'none', 'at', 'modemmanager'"),
            (
                'backend = "modemmanager"\nport = "/dev/ttyUSB2"',
                "modem.port",
                "only with backend 'at' (ModemManager has its own)",
            ),
            (
                'backend = "none"\nport = "/dev/ttyUSB2"',
                "modem.port",
                "only with a modem (backend 'at')",
            ),
            (
                'backend = "at"\nport = "/dev/ttyUSB2"\napn = "bad apn;AT+CFUN=0"',
                "modem.apn",
                "must be an APN (not an APN: labels of letters, digits and '-', dot-separated)",
            ),
        ],
    )
    def test_errors_name_the_key(self, tmp_path: Path, new: str, key: str, reason: str) -> None:
        path = _example_with(tmp_path, 'backend = "none"', new)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert (key, reason) == (info.value.key, info.value.reason)
        assert info.value.line is not None
