"""A ModemManager for tests: python-dbusmock's ``modemmanager`` template on a private D-Bus
system bus (the bus of :func:`tests.dbus_bluez.start_private_bus`).

Debian's python3-dbusmock (0.28) has no ``modemmanager`` template; PyPI's python-dbusmock
0.34.3 has one. ``make system-deps`` installs that release, pinned and without dependencies,
into :data:`DBUSMOCK_DIR`; it is pure Python and runs under the system interpreter, which has
Debian's python3-dbus::

    PYTHONPATH=.cache/dbusmock-0.34.3 /usr/bin/python3 -m dbusmock --system --template modemmanager

The template gives the manager object (``GetManagedObjects``) and ``AddSimpleModem`` (a
modem with the ``Modem`` and ``Modem3gpp`` interfaces and a SIM object). What a real
ModemManager also exposes and the hub reads or calls is added with dbusmock's generic
``org.freedesktop.DBus.Mock`` API, as ModemManager ≥ 1.20 spells it
(``introspection/org.freedesktop.ModemManager1.*.xml``):

- ``Modem``: ``Manufacturer``, ``EquipmentIdentifier``, ``Ports`` (``a(su)``), ``Device``,
  ``Bearers``, ``StateFailedReason``, and the method ``Reset``;
- ``Modem3gpp``: ``RegistrationState``, ``OperatorCode``;
- ``Modem.Signal``: ``Rate``, ``Lte``, ``Nr5g``, ``Umts``, ``Gsm`` and ``Setup(rate)``;
- ``Modem.Simple``: ``Connect(a{sv}) -> o`` and ``Disconnect(o)``;
- ``Sim``: ``SimIdentifier``;
- a ``Bearer`` object: ``Connected``, ``Ip4Config``, ``Properties`` and ``Connect`` and
  ``Disconnect``, which flip ``Connected``.

Every call of a mocked method is logged by dbusmock (``GetMethodCalls``). The mock's own
log and stderr hold the identifiers the tests plant (IMEI, ICCID): they go to files in the
test's temporary directory, outside the PHI scan, never to the captured output.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from agent.ble.bluez_agent import bluez_call
from agent.modem.modemmanager import (
    BEARER_INTERFACE,
    MM_PATH,
    MM_SERVICE,
    MODEM_3GPP_INTERFACE,
    MODEM_INTERFACE,
    SIGNAL_INTERFACE,
    SIM_INTERFACE,
    SIMPLE_INTERFACE,
    AccessTechnology,
    ModemLock,
    ModemState,
    PortType,
    RegistrationState,
    StateFailedReason,
)
from tests.dbus_bluez import (
    MOCK_IFACE,
    _stop,
    plain,
    start_template,
)

ROOT: Final = Path(__file__).resolve().parents[1]

DBUSMOCK_VERSION: Final = "0.34.3"
DBUSMOCK_DIR: Final = ROOT / ".cache" / f"dbusmock-{DBUSMOCK_VERSION}"
"""Where ``make system-deps`` installs PyPI's python-dbusmock (``pip --target``)."""

BEARER_PATH: Final = MM_PATH + "/Bearer/0"
SIMPLE_CONNECT_BEARER: Final = MM_PATH + "/Bearer/1"

# Simple.Connect as ModemManager does it: a new bearer with the APN asked for, connected.
_SIMPLE_CONNECT: Final = f"""
path = {SIMPLE_CONNECT_BEARER!r}
self.AddObject(path, {BEARER_INTERFACE!r}, {{
    "Connected": dbus.Boolean(True),
    "Properties": dbus.Dictionary({{"apn": args[0]["apn"]}}, signature="sv"),
    "Ip4Config": dbus.Dictionary({{}}, signature="sv"),
}}, [])
ret = dbus.ObjectPath(path)
"""


@dataclass
class BearerSpec:
    """The modem's data bearer."""

    apn: str = "internet.m2m"
    connected: bool = True
    address: str = "10.64.12.7"


@dataclass
class ModemSpec:
    """What the mocked modem reports; defaults: an RM520N registered at home on LTE."""

    imei: str
    iccid: str
    state: int = ModemState.CONNECTED
    failed_reason: int = StateFailedReason.NONE
    lock: int = ModemLock.NONE
    manufacturer: str = "Quectel"
    model: str = "RM520N-GL"
    revision: str = "RM520NGLAAR03A03M4G"
    access_technologies: int = AccessTechnology.LTE
    signal_quality: int = 71
    registration: int = RegistrationState.HOME
    operator_code: str = "26201"
    operator_name: str = "Telekom.de"
    sim: bool = True
    ports: list[tuple[str, int]] = field(
        default_factory=lambda: [
            ("cdc-wdm0", PortType.QMI),
            ("ttyUSB0", PortType.QCDM),
            ("ttyUSB1", PortType.GPS),
            ("ttyUSB2", PortType.AT),
            ("ttyUSB3", PortType.AT),
            ("wwan0", PortType.NET),
        ]
    )
    device: str = "/sys/devices/platform/scb/fd500000.pcie/usb2/2-1"
    signal_rate: int = 30
    lte: dict[str, float] = field(default_factory=dict)
    nr5g: dict[str, float] = field(default_factory=dict)
    bearer: BearerSpec | None = field(default_factory=BearerSpec)


def _doubles(values: dict[str, float]) -> Variant:
    return Variant("a{sv}", {k: Variant("d", float(v)) for k, v in values.items()})


@dataclass
class ModemManagerMock:
    """The modemmanager template running on a private bus, and the test's connection to it.

    Attributes:
        bus_address: the private bus.
        control: the test's own connection, which drives the mock.
        process: the dbusmock process.
    """

    bus_address: str
    control: MessageBus
    process: subprocess.Popen[bytes]
    modem_path: str = ""
    sim_path: str = ""

    @classmethod
    async def start(cls, bus_address: str, logfile: Path) -> ModemManagerMock:
        """Start the template on ``bus_address``; return once it owns its name."""
        if not (DBUSMOCK_DIR / "dbusmock" / "templates" / "modemmanager.py").exists():
            raise RuntimeError(f"python-dbusmock {DBUSMOCK_VERSION} missing: run make system-deps")
        control, process = await start_template(
            bus_address,
            logfile,
            template="modemmanager",
            service=MM_SERVICE,
            env={"PYTHONPATH": str(DBUSMOCK_DIR)},
        )
        return cls(bus_address=bus_address, control=control, process=process)

    async def stop(self) -> None:
        """Close the test's connection and end the mock (woken first if paused)."""
        self.resume()
        self.control.disconnect()
        with contextlib.suppress(Exception):
            await self.control.wait_for_disconnect()  # type: ignore[no-untyped-call]
        _stop(self.process)

    def pause(self) -> None:
        """Stop the mock process (SIGSTOP): every call to ModemManager stays unanswered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused mock run again (SIGCONT)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", body: Any = None
    ) -> list[Any]:
        return await bluez_call(
            self.control, path, interface, member, signature, body or [], destination=MM_SERVICE
        )

    async def _mock(self, path: str, member: str, signature: str, body: list[Any]) -> list[Any]:
        return await self.call(path, MOCK_IFACE, member, signature, body)

    async def add_properties(self, path: str, interface: str, props: dict[str, Variant]) -> None:
        await self._mock(path, "AddProperties", "sa{sv}", [interface, props])

    async def update_properties(self, path: str, interface: str, props: dict[str, Variant]) -> None:
        """``Properties.Set`` each of ``props`` (dbusmock's ``UpdateProperties`` cannot wrap
        a struct or a dict value such as ``SignalQuality``)."""
        for name, value in props.items():
            await self.call(
                path, "org.freedesktop.DBus.Properties", "Set", "ssv", [interface, name, value]
            )

    async def add_method(
        self, path: str, interface: str, name: str, in_sig: str, out_sig: str, code: str = ""
    ) -> None:
        await self._mock(path, "AddMethod", "sssss", [interface, name, in_sig, out_sig, code])

    async def method_calls(self, path: str, method: str) -> list[list[Any]]:
        """The arguments of every call of ``method`` on the mock object ``path``."""
        (calls,) = await self._mock(path, "GetMethodCalls", "s", [method])
        return [plain(args) for _, args in calls]

    # -- the modem -----------------------------------------------------------------

    async def add_modem(self, spec: ModemSpec) -> str:
        """The template's simple modem, completed to ``spec``; its object path."""
        modem, sim = await self._mock(MM_PATH, "AddSimpleModem", "", [])
        self.modem_path, self.sim_path = str(modem), str(sim)
        bearers = [BEARER_PATH] if spec.bearer is not None else []
        await self.add_properties(
            modem,
            MODEM_INTERFACE,
            {
                "Manufacturer": Variant("s", spec.manufacturer),
                "EquipmentIdentifier": Variant("s", spec.imei),
                "Ports": Variant("a(su)", [[name, int(kind)] for name, kind in spec.ports]),
                "PrimaryPort": Variant("s", "cdc-wdm0"),
                "Device": Variant("s", spec.device),
                "Bearers": Variant("ao", bearers),
                "StateFailedReason": Variant("u", int(spec.failed_reason)),
            },
        )
        await self.update_properties(
            modem,
            MODEM_INTERFACE,
            {
                "State": Variant("i", int(spec.state)),
                "Model": Variant("s", spec.model),
                "Revision": Variant("s", spec.revision),
                "AccessTechnologies": Variant("u", int(spec.access_technologies)),
                "SignalQuality": Variant("(ub)", [spec.signal_quality, True]),
                "UnlockRequired": Variant("u", int(spec.lock)),
                "Sim": Variant("o", sim if spec.sim else "/"),
            },
        )
        await self.add_method(modem, MODEM_INTERFACE, "Reset", "", "")
        await self.add_properties(
            modem,
            MODEM_3GPP_INTERFACE,
            {
                "RegistrationState": Variant("u", int(spec.registration)),
                "OperatorCode": Variant("s", spec.operator_code),
            },
        )
        await self.update_properties(
            modem, MODEM_3GPP_INTERFACE, {"OperatorName": Variant("s", spec.operator_name)}
        )
        await self.add_properties(
            modem,
            SIGNAL_INTERFACE,
            {
                "Rate": Variant("u", spec.signal_rate),
                "Lte": _doubles(spec.lte),
                "Nr5g": _doubles(spec.nr5g),
                "Umts": _doubles({}),
                "Gsm": _doubles({}),
            },
        )
        await self.add_method(
            modem,
            SIGNAL_INTERFACE,
            "Setup",
            "u",
            "",
            f"self.UpdateProperties({SIGNAL_INTERFACE!r}, {{'Rate': dbus.UInt32(args[0])}})",
        )
        await self.add_method(modem, SIMPLE_INTERFACE, "Connect", "a{sv}", "o", _SIMPLE_CONNECT)
        await self.add_method(modem, SIMPLE_INTERFACE, "Disconnect", "o", "")
        await self.add_properties(sim, SIM_INTERFACE, {"SimIdentifier": Variant("s", spec.iccid)})
        if spec.bearer is not None:
            await self.add_bearer(spec.bearer)
        return self.modem_path

    async def add_bearer(self, bearer: BearerSpec) -> None:
        """The bearer object at :data:`BEARER_PATH`; ``Connect``/``Disconnect`` flip
        ``Connected``."""
        flip = "self.UpdateProperties({iface!r}, {{'Connected': dbus.Boolean({value})}})"
        await self._mock(
            MM_PATH,
            "AddObject",
            "ssa{sv}a(ssss)",
            [
                BEARER_PATH,
                BEARER_INTERFACE,
                {
                    "Connected": Variant("b", bearer.connected),
                    "Interface": Variant("s", "wwan0"),
                    "Ip4Config": Variant(
                        "a{sv}",
                        {
                            "method": Variant("u", 3),  # MM_BEARER_IP_METHOD_DHCP
                            "address": Variant("s", bearer.address),
                            "prefix": Variant("u", 30),
                        },
                    ),
                    "Properties": Variant("a{sv}", {"apn": Variant("s", bearer.apn)}),
                },
                [
                    ["Connect", "", "", flip.format(iface=BEARER_INTERFACE, value=True)],
                    ["Disconnect", "", "", flip.format(iface=BEARER_INTERFACE, value=False)],
                ],
            ],
        )

    async def set_modem(self, **props: Variant) -> None:
        """Update ``Modem`` properties of the modem."""
        await self.update_properties(self.modem_path, MODEM_INTERFACE, props)

    async def fail_method(
        self, path: str, interface: str, name: str, in_sig: str, error: str
    ) -> None:
        """Make ``interface.name`` on ``path`` answer the D-Bus error ``error``."""
        code = f"raise dbus.exceptions.DBusException('refused', name={error!r})"
        await self.add_method(path, interface, name, in_sig, "", code)


__all__ = [
    "BEARER_PATH",
    "DBUSMOCK_DIR",
    "SIMPLE_CONNECT_BEARER",
    "BearerSpec",
    "ModemManagerMock",
    "ModemSpec",
]
