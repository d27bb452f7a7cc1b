"""``[mqtt]`` keys of issue 9's uplink: ``daily_budget_bytes`` and ``batch_max_readings``
(the publisher reads them), ``profile`` and the keepalive and ack defaults it brings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.errors import ConfigError
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
