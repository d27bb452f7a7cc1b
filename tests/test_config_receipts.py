"""``[mqtt] ack``, ``[mqtt] receipt_timeout_s`` and ``[platform] cert_file`` (issue 9: receipts).

``ack`` absent: ``receipt`` once the platform's certificate is configured, else ``puback`` (so
a configuration written before receipts keeps deleting on the PUBACK until it opts in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.errors import ConfigError
from agent.profiles import AckMode
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


def test_example_keeps_puback_and_names_the_keys() -> None:
    """The example has no platform certificate: PUBACK, a 60 s receipt timeout."""
    cfg = config.load(EXAMPLE)
    assert (AckMode.PUBACK, 60.0, None) == (
        cfg.mqtt.ack,
        cfg.mqtt.receipt_timeout_s,
        cfg.platform.cert_file,
    )
    text = EXAMPLE.read_text()
    assert "[platform]" in text
    assert '# ack = "receipt"' in text
    assert '# cert_file = "/etc/homehub/tls/platform.pem"' in text


@pytest.mark.parametrize(
    ("mqtt", "platform", "expected"),
    [
        ({}, None, AckMode.PUBACK),
        ({}, {}, AckMode.PUBACK),
        ({}, {"cert_file": "platform.crt"}, AckMode.RECEIPT),
        ({"ack": "puback"}, {"cert_file": "platform.crt"}, AckMode.PUBACK),
        ({"ack": "receipt"}, {"cert_file": "platform.crt"}, AckMode.RECEIPT),
        ({"ack": "puback"}, None, AckMode.PUBACK),
    ],
)
def test_ack_mode(
    tmp_path: Path, mqtt: dict[str, Any], platform: dict[str, Any] | None, expected: AckMode
) -> None:
    cfg = _load(tmp_path, mqtt, platform)
    assert expected is cfg.mqtt.ack
    if platform and "cert_file" in platform:
        assert tmp_path / "platform.crt" == cfg.platform.cert_file


def test_receipt_without_platform_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"ack": "receipt"})
    assert "mqtt.ack" == caught.value.key
    assert "[platform] cert_file" in caught.value.reason


def test_receipt_without_certificate_names_the_line(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('# ack = "receipt"', 'ack = "receipt"  ', 1)
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith('ack = "receipt"'))
    assert ("mqtt.ack", line) == (caught.value.key, caught.value.line)


@pytest.mark.parametrize("value", ["durable", "PUBACK", 1])
def test_unknown_ack_mode(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"ack": value})
    assert "mqtt.ack" == caught.value.key


@pytest.mark.parametrize("value", [4.9, 3601, float("nan")])
def test_receipt_timeout_is_bounded(tmp_path: Path, value: float) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"receipt_timeout_s": value})
    assert "mqtt.receipt_timeout_s" == caught.value.key


def test_schema_lists_the_new_keys() -> None:
    lines = "\n".join(config.schema_lines())
    assert "[platform]" in lines
    assert "receipt_timeout_s: float (default 60.0, 5..3600 s)" in lines
    assert "ack: str (default None)" in lines
