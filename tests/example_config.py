"""The shipped example configuration, pointed at a test's temporary directories."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent import config
from hil.pki import make_dev_pki

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def example_config(
    tmp_path: Path, *, outbox_path: Path | None = None, quota_bytes: int | None = None
) -> config.Config:
    """config/homehub.example.toml with state, keys, KEK and signing key under ``tmp_path``.

    ``quota_bytes`` is set on the loaded configuration, not in the file: tests reach the quota
    at once with quotas (1 byte) below the configurable minimum of ``outbox.quota_bytes``.
    """
    pki = make_dev_pki(tmp_path / "pki", "hub-0001")
    (tmp_path / "kek").mkdir(mode=0o700)
    outbox = outbox_path or tmp_path / "state" / "outbox.db"
    text = EXAMPLE.read_text()
    replacements = [
        ('state_dir = "/var/lib/homehub"', f'state_dir = "{tmp_path / "state"}"'),
        ('path = "/var/lib/homehub/outbox.db"', f'path = "{outbox}"'),
        ('key_file = "/etc/homehub/keys/data.key"', f'key_file = "{tmp_path}/keys/data.key"'),
        ('kek_file = "/etc/homehub/keys/kek.bin"', f'kek_file = "{tmp_path}/kek/kek.bin"'),
        ('key_file = "/etc/homehub/keys/hub-signing.pem"', f'key_file = "{pki.hub_key}"'),
    ]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    cfg = config.load(path)
    if quota_bytes is None:
        return cfg
    return dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, quota_bytes=quota_bytes))


def minimal_config(
    tmp_path: Path,
    *,
    hub_id: str,
    patient_id: str,
    outbox_path: Path,
    key_file: Path | None = None,
    **sections: Any,
) -> config.Config:
    """The smallest valid configuration (no broker is reached: certificates are never read),
    with ``sections`` (``ble=…``, ``devices=…``) added as given."""
    return config.from_mapping(
        {
            "hub": {"id": hub_id},
            "patient": {"id": patient_id},
            "outbox": {
                "path": str(outbox_path),
                "key_file": str(key_file or tmp_path / "data.key"),
            },
            "signing": {"key_file": str(tmp_path / "signing.pem")},
            "mqtt": {
                "host": "127.0.0.1",
                "ca_file": "ca.crt",
                "cert_file": "hub.crt",
                "key_file": "hub.key",
            },
            **sections,
        },
        tmp_path / "homehub.toml",
    )
