"""The daemon's BlueZ stack over D-Bus (agent/ble/stack.py on ``ble.stack = "bluez"``):
bonds asked of BlueZ, a ``required`` device never connected without the bond ``homehub pair``
made, the adapter power-cycled by the scan watchdog. BlueZ is python-dbusmock's bluez5
template on a private dbus-daemon (tests/dbus_bluez.py); the hub reaches it as the system
bus (``DBUS_SYSTEM_BUS_ADDRESS``), exactly as on a Pi."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent import config
from agent.ble.bluez_devices import open_adapter
from agent.ble.prompts import RefusingPrompter
from agent.ble.stack import BleStack
from agent.daemon import Hub
from tests.dbus_bluez import BluezMock, add_match
from tests.phi_canaries import DEVICE_ADDRESS, PATIENT_ID
from tests.test_bluez_agent import bluez, system_bus  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def system(bluez: BluezMock, monkeypatch: pytest.MonkeyPatch) -> BluezMock:  # noqa: F811
    """The private bus is this process's system bus."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address)
    return bluez


async def test_bonds_are_asked_of_bluez(system: BluezMock) -> None:
    await system.add_device(DEVICE_ADDRESS, "Glucometer")
    async with BleStack.open("bluez") as ble:
        assert not await ble.is_bonded(DEVICE_ADDRESS)
        async with open_adapter() as adapter:
            await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())
        assert await ble.is_bonded(DEVICE_ADDRESS)


async def test_power_cycle_toggles_powered(system: BluezMock) -> None:
    """The watchdog's power cycle: Powered false then true, seen as BlueZ's signals."""
    seen: list[bool] = []

    def on_message(message: Any) -> None:
        if message.member == "PropertiesChanged" and message.path == "/org/bluez/hci0":
            changed = message.body[1]
            if "Powered" in changed:
                seen.append(changed["Powered"].value)

    system.control.add_message_handler(on_message)
    await add_match(
        system.control,
        "type='signal',interface='org.freedesktop.DBus.Properties',path='/org/bluez/hci0'",
    )
    async with BleStack.open("bluez") as ble:
        await ble.power_cycle()
    # A round trip on the mock's own connection delivers every signal it sent before.
    props = await system.properties("/org/bluez/hci0", "org.bluez.Adapter1")
    assert props["Powered"] is True
    assert seen == [False, True]


async def test_required_device_without_a_bond_is_never_connected(
    system: BluezMock, tmp_path: Path
) -> None:
    """A ``required`` cuff BlueZ holds no bond for: one ``security`` event (``bond``), no
    scan nor connection attempted (nothing reached bleak), nothing stored."""
    await system.add_device(DEVICE_ADDRESS, "Cuff")
    state = tmp_path / "state"
    cfg = config.from_mapping(
        {
            "hub": {"id": "hub-0001", "state_dir": str(state)},
            "patient": {"id": PATIENT_ID},
            "ble": {"stack": "bluez"},
            "devices": [
                {
                    "kind": "blood_pressure",
                    "address": DEVICE_ADDRESS,
                    "label": "cuff",
                    "pairing": "required",
                }
            ],
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
            "signing": {"key_file": str(tmp_path / "signing.pem")},
            "mqtt": {
                "host": "127.0.0.1",
                "ca_file": "ca.pem",
                "cert_file": "hub.pem",
                "key_file": "hub.key",
            },
        },
        tmp_path / "homehub.toml",
    )
    hub = Hub(cfg)
    async with BleStack.open("bluez") as ble:
        with capture_logs() as events:
            await hub._session(ble, cfg.devices[0])
    security = [e for e in events if e["event"] == "security"]
    assert [(e["check"], e["device"]) for e in security] == [("bond", "..:12:34")]
    assert not [e for e in events if e["event"].startswith("ble_scan")]
    assert hub.security_events == 1
    assert hub.stored == 0
