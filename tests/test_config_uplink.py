"""``[mqtt]`` keys of issue 9's uplink: ``daily_budget_bytes`` and ``batch_max_readings``
(the publisher reads them), ``profile`` and the keepalive and ack defaults it brings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.errors import ConfigError
from agent.profiles import MQTT, PROFILES, AckMode
from tests.example_config import minimal_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def _load(
    tmp_path: Path, mqtt: dict[str, Any], platform: dict[str, Any] | None = None
) -> config.Config:
    sections: dict[str, Any] = {
        "mqtt": {
            "host": "127.0.0.1",
            "ca_file": "ca.crt",
            "cert_file": "hub.crt",
            "key_file": "hub.key",
            **mqtt,
        }
    }
    if platform is not None:
        sections["platform"] = platform
    return minimal_config(
        tmp_path, hub_id="hub-0001", patient_id="p-1", outbox_path=tmp_path / "o.db", **sections
    )


def _line_of(text: str, start: str) -> int:
    return next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(start))


def _refused_in_example(tmp_path: Path, old: str, new: str) -> tuple[ConfigError, int]:
    text = EXAMPLE.read_text()
    assert old in text, old
    text = text.replace(old, new, 1)
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    return caught.value, _line_of(text, new)


def test_budget_and_batch_defaults(tmp_path: Path) -> None:
    m = _load(tmp_path, {}).mqtt
    assert (m.daily_budget_bytes, m.batch_max_readings) == (0, 50)
    m = config.load(EXAMPLE).mqtt
    assert (m.daily_budget_bytes, m.batch_max_readings) == (0, 50)


@pytest.mark.parametrize("value", [0, 64 * 1024, 30 * 1024 * 1024, 10 * 1024**3])
def test_budget_accepted(tmp_path: Path, value: int) -> None:
    assert _load(tmp_path, {"daily_budget_bytes": value}).mqtt.daily_budget_bytes == value


@pytest.mark.parametrize("value", [1, 64 * 1024 - 1, 10 * 1024**3 + 1, -1, 1.5, True, "1"])
def test_budget_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"daily_budget_bytes": value})
    assert caught.value.key == "mqtt.daily_budget_bytes"


@pytest.mark.parametrize("value", [1, 50, 500])
def test_batch_accepted(tmp_path: Path, value: int) -> None:
    assert _load(tmp_path, {"batch_max_readings": value}).mqtt.batch_max_readings == value


@pytest.mark.parametrize("value", [0, 501, -1, 2.0])
def test_batch_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"batch_max_readings": value})
    assert caught.value.key == "mqtt.batch_max_readings"


def test_budget_error_names_the_line(tmp_path: Path) -> None:
    error, line = _refused_in_example(
        tmp_path, "daily_budget_bytes = 0 ", "daily_budget_bytes = 1000 "
    )
    assert (error.key, error.line) == ("mqtt.daily_budget_bytes", line)
    assert "64 KiB" in error.reason


@pytest.mark.parametrize("name", ["mqtt", "azure_iot_hub", "aws_iot_core"])
def test_profile_named(tmp_path: Path, name: str) -> None:
    m = _load(tmp_path, {"profile": name}).mqtt
    assert (m.profile, m.keepalive_s) == (PROFILES[name], 900)


def test_profile_default_and_example(tmp_path: Path) -> None:
    assert _load(tmp_path, {}).mqtt.profile is MQTT
    m = config.load(EXAMPLE).mqtt
    assert (m.profile, m.keepalive_s) == (MQTT, 900)


def test_unknown_profile_names_its_line(tmp_path: Path) -> None:
    error, line = _refused_in_example(tmp_path, 'profile = "mqtt"', 'profile = "hivemq"')
    assert (error.key, error.line) == ("mqtt.profile", line)
    assert "'mqtt', 'azure_iot_hub', 'aws_iot_core'" in error.reason


@pytest.mark.parametrize(
    ("profile", "keepalive_s", "accepted"),
    [
        ("mqtt", 1, True),
        ("mqtt", 65535, True),
        ("azure_iot_hub", 1177, True),
        ("azure_iot_hub", 1178, False),
        ("aws_iot_core", 30, True),
        ("aws_iot_core", 29, False),
        ("aws_iot_core", 1200, True),
        ("aws_iot_core", 1201, False),
    ],
)
def test_keepalive_within_the_profile(
    tmp_path: Path, profile: str, keepalive_s: int, accepted: bool
) -> None:
    if accepted:
        m = _load(tmp_path, {"profile": profile, "keepalive_s": keepalive_s}).mqtt
        assert m.keepalive_s == keepalive_s
        return
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"profile": profile, "keepalive_s": keepalive_s})
    assert caught.value.key == "mqtt.keepalive_s"
    assert profile in caught.value.reason


def test_keepalive_outside_the_profile_names_its_line(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('profile = "mqtt"', 'profile = "aws_iot_core"', 1)
    path = tmp_path / "homehub.toml"
    path.write_text(text.replace("keepalive_s = 900 ", "keepalive_s = 10 ", 1))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    line = _line_of(path.read_text(), "keepalive_s = 10 ")
    assert (caught.value.key, caught.value.line) == ("mqtt.keepalive_s", line)
    assert "30-1200 s" in caught.value.reason


@pytest.mark.parametrize(
    ("profile", "mqtt", "platform", "expected"),
    [
        ("mqtt", {}, None, AckMode.PUBACK),
        ("mqtt", {}, {"cert_file": "platform.crt"}, AckMode.RECEIPT),
        ("aws_iot_core", {}, {"cert_file": "platform.crt"}, AckMode.RECEIPT),
        ("azure_iot_hub", {}, {"cert_file": "platform.crt"}, AckMode.PUBACK),
        ("azure_iot_hub", {"ack": "receipt"}, {"cert_file": "platform.crt"}, AckMode.RECEIPT),
        ("aws_iot_core", {}, None, AckMode.PUBACK),
        ("azure_iot_hub", {}, None, AckMode.PUBACK),
    ],
)
def test_ack_default_is_the_profiles_once_the_platform_certificate_is_set(
    tmp_path: Path,
    profile: str,
    mqtt: dict[str, Any],
    platform: dict[str, Any] | None,
    expected: AckMode,
) -> None:
    assert _load(tmp_path, {"profile": profile, **mqtt}, platform).mqtt.ack is expected


def test_receipt_without_the_platform_certificate_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"profile": "aws_iot_core", "ack": "receipt"})
    assert caught.value.key == "mqtt.ack"
