"""A BlueZ for tests: python-dbusmock's ``bluez5`` template on a private D-Bus system bus.

Everything speaks the real D-Bus protocol through a real ``dbus-daemon``; nothing here is a
Python stand-in for BlueZ or for D-Bus:

- :func:`start_private_bus` runs ``dbus-daemon`` with a system-bus configuration of its own
  (a socket in a temporary directory, a policy that lets the test's peers own and call
  anything), so no test touches the machine's real system bus;
- :meth:`BluezMock.start` runs Debian's python3-dbusmock (``/usr/bin/python3 -m dbusmock
  --system --template bluez5``, installed by ``make system-deps``) on it, and returns once
  the mock owns ``org.bluez`` (watched through ``NameOwnerChanged``, not by sleeping);
- the mock is driven with the template's own methods: ``org.bluez.Mock.AddAdapter`` and
  ``AddDevice``, ``Device1.Pair`` (which marks the device paired), and dbusmock's
  ``org.freedesktop.DBus.Mock`` interface (``GetMethodCalls``, ``AddMethod``).

The template's ``Pair`` never calls the registered agent (bluetoothd's SMP is not part of
it). :meth:`BluezMock.pair_asks_agent` therefore replaces one device's ``Pair`` with what
bluetoothd does there: it calls the *default agent registered with the template's
AgentManager1* over D-Bus (``RequestPasskey`` or ``RequestConfirmation``), fails the way
BlueZ fails when the agent refuses or the keys do not match, and otherwise runs the
template's own ``Pair``. :meth:`BluezMock.ask` is the same for a single question,
sent from the mock's connection as bluetoothd sends it.

The mock's own log holds addresses: it goes to a file in the test's temporary directory,
outside the PHI scan, never to the captured output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from agent.ble.bluez_agent import AGENT_INTERFACE, bluez_call
from tests import phi_canaries

DBUSMOCK_PYTHON: Final = "/usr/bin/python3"
"""The interpreter that has Debian's python3-dbusmock (and python3-dbus) installed."""

BUS_START_TIMEOUT_S: Final = 10.0
MOCK_START_TIMEOUT_S: Final = 30.0
"""dbusmock imports dbus-python and GLib: about half a second here, far more on a busy CI."""
PROCESS_STOP_TIMEOUT_S: Final = 5.0
MOCK_AGENT_CALL_TIMEOUT_S: Final = 60
"""How long the mock's bluetoothd waits on the agent: BlueZ's own ``REQUEST_TIMEOUT``."""

MOCK_IFACE: Final = "org.freedesktop.DBus.Mock"
BLUEZ_MOCK_IFACE: Final = "org.bluez.Mock"
DEVICE_IFACE: Final = "org.bluez.Device1"

_BUS_CONFIG: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# bluetoothd's part in Device1.Pair(): ask the default agent (registered through the
# template's AgentManager1) over D-Bus, then pair with the template's own Pair. Run by
# dbusmock's AddMethod, where `self` is the device, `objects` every mock object, `dbus` and
# `time` modules. BlueZ's answers (src/device.c): the agent's Canceled -> AuthenticationCanceled,
# its Rejected -> AuthenticationRejected, keys that differ -> AuthenticationFailed.
_PAIR_ASKS_AGENT: Final = """
import importlib
manager = objects["/org/bluez"]
if self.paired:
    raise dbus.exceptions.DBusException("Already Paired", name="org.bluez.Error.AlreadyExists")
if not manager.default_agent:
    raise dbus.exceptions.DBusException("no agent", name="org.bluez.Error.AuthenticationFailed")
agent = self.connection.get_object({owner!r}, manager.default_agent, introspect=False)
try:
    answer = agent.{question}(
        dbus.ObjectPath(self.path), {extra}
        dbus_interface="org.bluez.Agent1", timeout={timeout},
    )
except dbus.exceptions.DBusException as exc:
    failed = "AuthenticationRejected"
    if exc.get_dbus_name() == "org.bluez.Error.Canceled":
        failed = "AuthenticationCanceled"
    raise dbus.exceptions.DBusException(failed, name="org.bluez.Error." + failed)
self.call_log.append((int(time.time()), "AgentAnswered", [answer if answer is not None else ""]))
{check}
importlib.import_module("dbusmock.templates.bluez5").Pair(self)
"""

# bluetoothd asking the agent one question without blocking (its main loop stays free, so
# a Cancel can follow while the question is open). The reply, or the error's name, comes back
# as the signal org.bluez.Mock.AgentReplied(tag, error name or "", first value or "").
_ASK_AGENT: Final = """
agent = self.connection.get_object({owner!r}, {path!r}, introspect=False)
def replied(*reply, _self=self):
    value = str(int(reply[0])) if reply else ""
    _self.EmitSignal("org.bluez.Mock", "AgentReplied", "sss", [{tag!r}, "", value])
def failed(exc, _self=self):
    _self.EmitSignal("org.bluez.Mock", "AgentReplied", "sss", [{tag!r}, exc.get_dbus_name(), ""])
agent.get_dbus_method({member!r}, "org.bluez.Agent1")(
    {args}reply_handler=replied, error_handler=failed, timeout={timeout}
)
"""

_DBUS_PYTHON_TYPES: Final = {
    "o": "dbus.ObjectPath",
    "s": "dbus.String",
    "u": "dbus.UInt32",
    "q": "dbus.UInt16",
}

_PASSKEY_CHECK: Final = """
if int(answer) != {displayed}:
    raise dbus.exceptions.DBusException("Authentication Failed",
                                        name="org.bluez.Error.AuthenticationFailed")
"""


@dataclass
class PrivateBus:
    """A ``dbus-daemon`` of the test's own, system-bus flavoured.

    Attributes:
        address: the D-Bus address to connect to (``unix:path=…``).
        process: the daemon.
        directory: its socket's and configuration's directory.
    """

    address: str
    process: subprocess.Popen[bytes]
    directory: Path

    def stop(self) -> None:
        """End the daemon and remove its directory."""
        _stop(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, SIGKILL if it does not end: no process outlives its test."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(PROCESS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
        if stream is not None:
            with stream:
                phi_canaries.record_output(f"_stop {process.args[0]}: {name}", stream.read())


def start_private_bus() -> PrivateBus:
    """Start ``dbus-daemon`` on a socket in a new temporary directory (short enough for
    ``sun_path``) and return once it listens (it prints its address then)."""
    directory = Path(tempfile.mkdtemp(prefix="hh-dbus-"))
    config = directory / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=directory / "system_bus_socket"))
    process = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    address = process.stdout.readline().decode().strip()
    if not address:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"dbus-daemon did not start (exit {process.returncode})")
    return PrivateBus(address=address, process=process, directory=directory)


async def connect(address: str) -> MessageBus:
    """A dbus-fast connection to ``address``."""
    async with asyncio.timeout(BUS_START_TIMEOUT_S):
        return await MessageBus(bus_address=address).connect()


async def add_match(bus: MessageBus, rule: str) -> None:
    """Ask the bus daemon to route the signals matching ``rule`` to ``bus``."""
    await bluez_call(
        bus,
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "AddMatch",
        "s",
        [rule],
        destination="org.freedesktop.DBus",
    )


def plain(value: Any) -> Any:
    """``value`` with every dbus-fast Variant unwrapped, at any depth."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class AgentReply:
    """The agent's answer to one question BlueZ asked.

    Attributes:
        error: the D-Bus error name, or ``None`` for a method return.
        value: the returned value as text (a passkey), ``""`` when nothing is returned.
    """

    error: str | None
    value: str = ""


async def start_template(
    bus_address: str,
    logfile: Path,
    *,
    template: str,
    service: str,
    env: dict[str, str] | None = None,
) -> tuple[MessageBus, subprocess.Popen[bytes]]:
    """Run dbusmock's ``template`` on the private bus ``bus_address`` (its log to
    ``logfile``, its stderr beside it) and return, with the test's own connection to the bus,
    once it owns ``service`` (watched through ``NameOwnerChanged``, not by sleeping).
    ``env``: more environment for the mock (e.g. a ``PYTHONPATH`` to a newer dbusmock)."""
    control = await connect(bus_address)
    owned: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if (
            message.member == "NameOwnerChanged"
            and message.body[:1] == [service]
            and message.body[2]
            and not owned.done()
        ):
            owned.set_result(None)

    control.add_message_handler(on_message)
    await add_match(control, f"type='signal',member='NameOwnerChanged',arg0='{service}'")
    full_env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus_address, **(env or {})}
    argv = [DBUSMOCK_PYTHON, "-m", "dbusmock", "--system", "--template", template]
    with logfile.with_suffix(".stderr").open("wb") as stderr:
        # Popen returns at once; the wait for the mock is the await on D-Bus below.
        process = subprocess.Popen(  # noqa: ASYNC220
            [*argv, "--logfile", str(logfile)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        async with asyncio.timeout(MOCK_START_TIMEOUT_S):
            await owned
    except TimeoutError:
        _stop(process)
        control.disconnect()
        raise RuntimeError(f"the {template} mock did not start (exit {process.poll()})") from None
    finally:
        control.remove_message_handler(on_message)
    return control, process


@dataclass
class BluezMock:
    """The bluez5 template running on a private bus, and the test's connection to it.

    Attributes:
        bus_address: the private bus.
        control: the test's own connection: drives the template and, as bluetoothd would,
            asks the hub's agent.
        process: the dbusmock process.
    """

    bus_address: str
    control: MessageBus
    process: subprocess.Popen[bytes]
    adapters: list[str] = field(default_factory=list)
    _replies: dict[str, asyncio.Future[AgentReply]] = field(default_factory=dict)
    _asked: int = 0

    @classmethod
    async def start(cls, bus_address: str, logfile: Path) -> BluezMock:
        """Start the template on ``bus_address``; return once it owns ``org.bluez``."""
        control, process = await start_template(
            bus_address, logfile, template="bluez5", service="org.bluez"
        )
        mock = cls(bus_address=bus_address, control=control, process=process)
        control.add_message_handler(mock._on_agent_replied)
        await add_match(control, "type='signal',interface='org.bluez.Mock',member='AgentReplied'")
        return mock

    def _on_agent_replied(self, message: Message) -> None:
        if message.member == "AgentReplied" and message.interface == BLUEZ_MOCK_IFACE:
            tag, error, value = message.body
            waiting = self._replies.pop(tag, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(AgentReply(error or None, value))

    async def stop(self) -> None:
        """Close the test's connection and end the mock."""
        self.control.disconnect()
        with contextlib.suppress(Exception):
            await self.control.wait_for_disconnect()  # type: ignore[no-untyped-call]
        _stop(self.process)

    # -- the template's own methods ------------------------------------------------

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", body: Any = None
    ) -> list[Any]:
        return await bluez_call(self.control, path, interface, member, signature, body or [])

    async def add_adapter(self, name: str = "hci0", alias: str = "homehub") -> str:
        """``org.bluez.Mock.AddAdapter``: the adapter's object path."""
        (path,) = await self.call("/", BLUEZ_MOCK_IFACE, "AddAdapter", "ss", [name, alias])
        self.adapters.append(name)
        return str(path)

    async def add_device(self, address: str, alias: str, adapter: str = "hci0") -> str:
        """``org.bluez.Mock.AddDevice``: a device BlueZ has seen, not paired."""
        (path,) = await self.call(
            "/", BLUEZ_MOCK_IFACE, "AddDevice", "sss", [adapter, address, alias]
        )
        return str(path)

    async def method_calls(self, path: str, method: str) -> list[list[Any]]:
        """The arguments of every call of ``method`` on the mock object ``path``."""
        (calls,) = await self.call(path, MOCK_IFACE, "GetMethodCalls", "s", [method])
        return [plain(args) for _, args in calls]

    async def properties(self, path: str, interface: str = DEVICE_IFACE) -> dict[str, Any]:
        """Every property of ``interface`` on ``path``, unwrapped."""
        (props,) = await self.call(
            path, "org.freedesktop.DBus.Properties", "GetAll", "s", [interface]
        )
        return dict(plain(props))

    async def set_property(self, path: str, name: str, value: bool) -> None:
        await self.call(
            path,
            "org.freedesktop.DBus.Properties",
            "Set",
            "ssv",
            [DEVICE_IFACE, name, Variant("b", value)],
        )

    # -- bluetoothd's part ---------------------------------------------------

    async def pair_asks_agent(
        self,
        device_path: str,
        agent_owner: str,
        *,
        question: str = "RequestPasskey",
        displayed: int | None = None,
    ) -> None:
        """Make ``device_path``'s ``Pair`` ask the default agent (owned by the connection
        ``agent_owner``) as bluetoothd does: ``RequestPasskey`` (the answer must equal
        ``displayed``, else ``AuthenticationFailed``) or ``RequestConfirmation`` of
        ``displayed``. The agent's answer is logged as the mock call ``AgentAnswered``."""
        if question == "RequestPasskey":
            extra, check = "", _PASSKEY_CHECK.format(displayed=displayed)
        elif question == "RequestConfirmation":
            extra, check = f"dbus.UInt32({displayed}),", ""
        else:
            raise ValueError(question)
        code = _PAIR_ASKS_AGENT.format(
            owner=agent_owner,
            question=question,
            extra=extra,
            timeout=MOCK_AGENT_CALL_TIMEOUT_S,
            check=check,
        )
        await self.call(
            device_path, MOCK_IFACE, "AddMethod", "sssss", [DEVICE_IFACE, "Pair", "", "", code]
        )

    async def pair_fails_with(self, device_path: str, error: str) -> None:
        """Make ``device_path``'s ``Pair`` answer the D-Bus error ``error``, as bluetoothd
        does when the link or the key exchange fails (``org.bluez.Error.…``)."""
        code = f"raise dbus.exceptions.DBusException('pairing failed', name={error!r})"
        await self.call(
            device_path, MOCK_IFACE, "AddMethod", "sssss", [DEVICE_IFACE, "Pair", "", "", code]
        )

    async def ask(
        self,
        agent_owner: str,
        agent_path: str,
        member: str,
        args: list[tuple[str, Any]] | None = None,
    ) -> AgentReply:
        """Ask the agent ``member(*args)`` from the mock's own connection (the owner of
        ``org.bluez``), as bluetoothd does; ``args`` are ``(D-Bus type, value)`` pairs.
        Returns the agent's reply (an error is returned, not raised)."""
        self._asked += 1
        tag = f"ask{self._asked}"
        code = _ASK_AGENT.format(
            owner=agent_owner,
            path=agent_path,
            tag=tag,
            member=member,
            args="".join(f"{_DBUS_PYTHON_TYPES[t]}({v!r}), " for t, v in args or []),
            timeout=MOCK_AGENT_CALL_TIMEOUT_S,
        )
        reply: asyncio.Future[AgentReply] = asyncio.get_running_loop().create_future()
        self._replies[tag] = reply
        try:
            await self.call(
                "/org/bluez",
                MOCK_IFACE,
                "AddMethod",
                "sssss",
                [BLUEZ_MOCK_IFACE, tag, "", "", code],
            )
            await self.call("/org/bluez", BLUEZ_MOCK_IFACE, tag)
            async with asyncio.timeout(MOCK_AGENT_CALL_TIMEOUT_S):
                return await reply
        finally:
            self._replies.pop(tag, None)

    async def call_as_stranger(
        self, agent_owner: str, agent_path: str, member: str, signature: str, body: list[Any]
    ) -> Message:
        """Call the agent from the test's own connection, which is *not* BlueZ; the reply
        is returned, not raised."""
        message = Message(
            destination=agent_owner,
            path=agent_path,
            interface=AGENT_INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )
        async with asyncio.timeout(MOCK_AGENT_CALL_TIMEOUT_S):
            return await self.control.call(message)


def error_name(reply: Message) -> str | None:
    """The D-Bus error name of ``reply``, or ``None`` for a method return."""
    return reply.error_name if reply.message_type == MessageType.ERROR else None


__all__ = [
    "AgentReply",
    "BluezMock",
    "PrivateBus",
    "add_match",
    "connect",
    "error_name",
    "plain",
    "start_private_bus",
]
