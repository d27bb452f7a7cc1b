"""The daemon's BlueZ stack over D-Bus (agent/ble/stack.py on ``ble.stack = "bluez"``):
bonds asked of BlueZ, a ``required`` device never connected without the bond ``homehub pair``
made, the adapter power-cycled by the scan watchdog. BlueZ is python-dbusmock's bluez5
template on a private dbus-daemon (tests/dbus_bluez.py); the hub reaches it as the system
bus (``DBUS_SYSTEM_BUS_ADDRESS``), exactly as on a Pi."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant
from structlog.testing import capture_logs

from agent import config, pairing
from agent.ble.bluez_devices import open_adapter
from agent.ble.prompts import RefusingPrompter
from agent.ble.stack import BleStack
from agent.ble.uuids import GLUCOSE_SERVICE
from agent.daemon import Hub
from agent.errors import PairingError, PairingFailure
from agent.pairing import BluezBonder
from tests.dbus_bluez import MOCK_IFACE, BluezMock, add_match
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


# -- homehub pair on BlueZ -----------------------------------------------------------------


class Technician:
    """The technician's answers (the pair flow's Prompter and Chooser): refuses the passkey,
    and records what it was asked and shown."""

    method = "passkey"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.shown: list[str] = []

    async def ask_passkey(self, device: str) -> int | None:
        self.asked.append(f"passkey {device}")
        return None

    async def confirm_number(self, device: str, number: int) -> bool:
        self.asked.append(f"confirm {device}")
        return False

    async def show_passkey(self, device: str, passkey: int) -> None:
        self.asked.append(f"show {device}")

    async def ask_line(self, question: str) -> str | None:
        self.asked.append(question)
        return None

    def say(self, text: str) -> None:
        self.shown.append(text)


async def test_a_refused_pairing_on_bluez_leaves_nothing_in_the_allow_list(
    system: BluezMock, tmp_path: Path
) -> None:
    """``homehub pair``'s flow on BlueZ: the scan (bleak's BlueZ backend) finds the meter in
    pairing mode, BlueZ's Pair() asks our agent for the passkey, the technician refuses:
    PairingError (declined), nothing bonded or trusted, the configuration file unchanged."""
    device_path = await system.add_device(DEVICE_ADDRESS, "Glucometer")
    # What the template leaves out and bleak's BlueZ backend reads: the adapter's Roles.
    await system.call(
        "/org/bluez/hci0",
        MOCK_IFACE,
        "AddProperty",
        "ssv",
        ["org.bluez.Adapter1", "Roles", Variant("as", ["central", "peripheral"])],
    )
    for name, value in (
        ("AdvertisingFlags", Variant("ay", bytes([0x06]))),  # LE General Discoverable
        ("UUIDs", Variant("as", [GLUCOSE_SERVICE])),
        ("ManufacturerData", Variant("a{qv}", {})),  # the template's is the wrong type
        ("ServiceData", Variant("a{sv}", {})),
    ):
        await system.call(
            device_path,
            "org.freedesktop.DBus.Properties",
            "Set",
            "ssv",
            ["org.bluez.Device1", name, value],
        )
    cfg_path = tmp_path / "homehub.toml"
    cfg_path.write_text(
        "# the technician's notes stay\n"
        '[hub]\nid = "hub-0001"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[patient]\nid = "{PATIENT_ID}"\n'
        '[ble]\nstack = "bluez"\n'
        f'[outbox]\npath = "{tmp_path / "state" / "outbox.db"}"\n'
        f'key_file = "{tmp_path / "data.key"}"\n'
        f'[signing]\nkey_file = "{tmp_path / "signing.pem"}"\n'
        '[mqtt]\nhost = "127.0.0.1"\nca_file = "ca.pem"\ncert_file = "hub.pem"\n'
        'key_file = "hub.key"\n'
    )
    before = cfg_path.read_text()
    cfg = config.load(cfg_path)
    technician = Technician()

    # The scan sees a device when BlueZ reports it during discovery: once StartDiscovery
    # was called, the device's RSSI changes (as an advertisement updates it).
    discovering = asyncio.Event()

    def on_message(message: Any) -> None:
        if message.member == "MethodCalled" and message.body[:1] == ["StartDiscovery"]:
            discovering.set()

    system.control.add_message_handler(on_message)
    await add_match(system.control, "type='signal',member='MethodCalled'")

    async def advertise() -> None:
        await discovering.wait()
        await system.call(
            device_path,
            "org.freedesktop.DBus.Properties",
            "Set",
            "ssv",
            ["org.bluez.Device1", "RSSI", Variant("n", -57)],
        )

    async with open_adapter() as adapter:
        await system.pair_asks_agent(device_path, adapter.bus.unique_name or "")

        @asynccontextmanager
        async def bonder(_cfg: config.Config, _prompter: Any) -> AsyncIterator[BluezBonder]:
            async with BleStack.open("bluez") as stack:
                yield BluezBonder(stack, adapter)

        advertising = asyncio.create_task(advertise(), name="test.advertise")
        try:
            async with asyncio.timeout(30):
                with pytest.raises(PairingError) as caught:
                    await pairing.pair(
                        cfg,
                        technician,
                        technician,
                        scan_s=2.0,
                        address=DEVICE_ADDRESS,
                        bonder_factory=bonder,
                    )
        finally:
            advertising.cancel()
        assert not await adapter.is_bonded(DEVICE_ADDRESS)
        assert await adapter.bond(DEVICE_ADDRESS) is None  # BlueZ forgot the device
    assert caught.value.failure is PairingFailure.DECLINED
    assert caught.value.question == "passkey"
    assert technician.asked == ["passkey ..:12:34"]
    assert any("..:12:34" in line and "glucose" in line for line in technician.shown)
    assert cfg_path.read_text() == before
