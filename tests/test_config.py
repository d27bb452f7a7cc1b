"""The configuration file: the example loads, and every wrong key names itself and the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError

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
        path = _example_with(tmp_path, "keepalive_s = 60\n", "")
        assert config.load(path).mqtt.keepalive_s == 60

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
            ("port = 8883", "port = 70000", "mqtt.port", "TCP port"),
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
                "keepalive_s = 60",
                "keepalive_s = 60\nkeep_alive = 5",
                "mqtt.keep_alive",
                "unknown key",
            ),
            (
                "scan_timeout_s = 20.0",
                "scan_timeout_s = -1",
                "ble.scan_timeout_s",
                "greater than 0",
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

    def test_duplicate_device_label(self, tmp_path: Path) -> None:
        """Two devices cannot share a label or an address."""
        text = EXAMPLE.read_text()
        block = text[text.index("[[devices]]") : text.index("[outbox]")]
        path = _write(tmp_path, text.replace(block, block + block.replace("10:01", "10:02")))
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.key == "devices[1].label"

    def test_example_is_valid_toml_with_every_schema_section(self) -> None:
        """The example mentions every section of the schema."""
        data = tomllib.loads(EXAMPLE.read_text())
        assert set(config.SCHEMA) <= set(data)


def test_every_configurable_kind_has_a_session() -> None:
    """DEVICE_KINDS (validated without importing BLE) and the session table agree."""
    from agent.ble.sessions import SESSIONS

    assert set(config.DEVICE_KINDS) == set(SESSIONS)
