"""The agent's TOML for one scenario run: its devices, the run's broker, PKI and identities.

hil/virtual_home.py writes the demo's (one cuff); a scenario's home has several devices, some
of them never allow-listed, and a receipt timeout of its own, so it writes its own, with the
same keys ``homehub check-config`` validates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomlkit

from hil.pki import DevPki
from hil.scenarios.base import HUB_ID, TIMEZONE, RunIdentities
from hil.scenarios.devices import Device


def write_agent_config(
    run_dir: Path,
    *,
    stack: str,
    broker_port: int,
    pki: DevPki,
    ids: RunIdentities,
    devices: Sequence[tuple[int, Device]],
    receipt_timeout_s: float,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``run_dir/homehub.toml``: state and keys in their own directories; ``devices``
    (index, device) are the allow-listed ones, each at its run address; ``overrides``
    (section -> key -> value) set or add keys and sections (a scenario's ``[modem]``, a
    shorter backoff)."""
    state = run_dir / "state"
    keys = run_dir / "keys"
    for directory in (state, keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    entries = "".join(
        f'\n[[devices]]\nkind = "{d.kind}"\naddress = "{ids.address(i)}"\nlabel = "{d.label}"\n'
        for i, d in devices
    )
    text = f"""\
[hub]
id = "{HUB_ID}"
timezone = "{TIMEZONE}"
state_dir = "{state}"

[patient]
id = "{ids.patient_id}"

[ble]
stack = "{stack}"
scan_timeout_s = 10.0
connect_timeout_s = 10.0
quiet_period_s = 1.0
session_timeout_s = 60.0
cycle_interval_s = 0.5
max_connections = 3
{entries}
[outbox]
path = "{state / "outbox.db"}"
key_file = "{keys / "data.key"}"

[signing]
key_file = "{pki.hub_key}"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
ca_file = "{pki.ca_cert}"
cert_file = "{pki.hub_cert}"
key_file = "{pki.hub_key}"
keepalive_s = 30
backoff_max_s = 1.0
first_connect_jitter_s = 0.0     # one hub in a lab: no fleet to spread
ack = "receipt"                  # deleted only on the platform's signed receipt
receipt_timeout_s = {receipt_timeout_s}

[platform]
cert_file = "{pki.platform_cert}"
"""
    if overrides:
        document = tomlkit.parse(text)
        for section, values in overrides.items():
            table = document.setdefault(section, tomlkit.table())
            for key, value in values.items():
                table[key] = value
        text = tomlkit.dumps(document)
    path = run_dir / "homehub.toml"
    path.write_text(text)
    return path
