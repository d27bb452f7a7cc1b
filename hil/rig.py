"""The real rig (issue 12): the HIL scenarios on the hub's own hardware, chosen by one file.

A rig is a Raspberry Pi running ``homehub run`` on BlueZ (its ``hci0``), emulated devices on
USB Bluetooth dongles driven through Bumble (one dongle, one controller, per emulated device;
or the patient's real devices), the hub's real modem on its AT port, and a power relay for
power-cut campaigns. The runner (``python -m hil ... --rig FILE``) runs **on the Pi, beside
the agent**: it starts the daemon as it does on the virtual home, with mosquitto and the
reference platform on the Pi's loopback, and reads the daemon's logs and outbox there. That
is the simplest arrangement and an honest one: nothing of the daemon is remote-controlled,
and every check reads what it reads on the virtual home. What it does not cover: the
readings travel to a local broker over loopback, not through the modem (the modem is the
agent's ``[modem]``: its status, registration and recovery ladder run on the real module).

The rig file (annotated example: hil/rig.example.toml) is loaded by :func:`load_rig` into
frozen dataclasses (:class:`Rig`); a wrong file raises :class:`RigFileError` naming the file,
the line, the ``section.key`` and what was expected. :meth:`Rig.skip_reason` says why a
scenario cannot run on the rig (its :attr:`~hil.scenarios.base.Scenario.needs` against what
the rig has; hil/scenarios/base.py ``NEEDS``); :meth:`Rig.preflight` what is missing on this
machine (the adapter, the modem's port, the relay's commands). On the rig the runner uses
:class:`RigRadio` for the virtual radio (each emulated device on a controller opened over
the next free transport of ``[devices] transports``), writes the agent's configuration with
the rig's stack and modem (:meth:`Rig.apply`), and a power cut is :func:`cut_power`: the
relay's ``relay_off`` and ``relay_on`` commands (:class:`PowerRelay`: argv lists run without
a shell, each bounded, its exit status logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self

import structlog
from bumble import hci
from bumble.device import Device
from bumble.transport import open_transport
from bumble.transport.common import Transport

from agent.config import locate_key
from hil.emulators.cuff import BpReading, EmulatedCuff

if TYPE_CHECKING:
    from hil.scenarios.base import Scenario
    from hil.scenarios.home import Home

_log = structlog.get_logger("hil.rig")

MAX_RIG_BYTES: Final = 64 * 1024
"""A rig file is a few lines; past this it is not one."""
SECTIONS: Final = ("rig", "agent", "devices", "modem", "power")
REQUIRED_SECTIONS: Final = ("rig", "agent", "devices")
BUMBLE_SCHEMES: Final[Mapping[str, bool]] = {
    "usb": True,
    "pyusb": True,
    "serial": True,
    "tcp-client": True,
    "tcp-server": True,
    "udp": True,
    "unix": True,
    "unix-client": True,
    "unix-server": True,
    "ws-client": True,
    "ws-server": True,
    "file": True,
    "hci-socket": False,
    "vhci": False,
    "pty": False,
    "android-emulator": False,
    "android-netsim": False,
}
"""Bumble's HCI transport schemes (bumble/transport/__init__.py), and whether each needs a
spec after the colon (``usb:0``, ``serial:/dev/ttyACM0,1000000``)."""
AGENT_ADAPTER: Final = "hci0"
"""The one BlueZ adapter the agent opens (agent/ble/bluez_devices.py ``DEFAULT_ADAPTER``)."""
BAUD_RANGE: Final = (1200, 4_000_000)
"""What the agent's ``[modem] baudrate`` takes."""
RELAY_TIMEOUT_RANGE_S: Final = (0.1, 120.0)
OFF_RANGE_S: Final = (0.0, 600.0)
DEFAULT_RELAY_TIMEOUT_S: Final = 10.0
DEFAULT_OFF_S: Final = 2.0
KILL_WAIT_S: Final = 5.0
"""After a relay command's timeout (SIGKILL to its process group), or a power cut's SIGKILL
of the daemon: how long its exit is waited for."""
TRANSPORT_OPEN_TIMEOUT_S: Final = 10.0
"""Opening one dongle (USB enumeration, the controller's first reset)."""
RESET_TIMEOUT_S: Final = 3.0
"""A released dongle's HCI Reset (it stops advertising and ends its links)."""
OUTPUT_TAIL: Final = 300
"""Characters of a failed relay command's output quoted in the error."""


class RigError(ValueError):
    """The rig cannot be used: its file is wrong (:class:`RigFileError`) or this machine lacks
    one of its parts (:class:`RigNotReadyError`). The command line exits 2 with it."""


class RigFileError(RigError):
    """The rig file is missing, unreadable, or holds a missing or wrong key.

    Attributes:
        path: the rig file.
        key: ``section.key`` at fault (``"devices.transports"``), or None for the whole file.
        reason: what was wrong and what was expected.
        line: the file's line where the key (or its table) stands, when known.
    """

    def __init__(self, path: str, key: str | None, reason: str, line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        self.line = line
        at = f":{line}" if line is not None else ""
        where = f"{key}" if key else "file"
        super().__init__(f"{path}{at}: {where}: {reason}")


class RigNotReadyError(RigError):
    """This machine lacks a part the rig file names (:meth:`Rig.preflight`)."""


class RigRunError(RuntimeError):
    """A part of the rig failed while a scenario ran (a dongle, the relay): the run errors."""


class RelayError(RigRunError):
    """A relay command could not start, timed out, or exited non-zero: the power state is
    unknown, so the run stops there."""


# -- the file's parts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentSide:
    """``[agent]``: how the daemon on the Pi reaches Bluetooth, and which ``homehub`` runs.

    Attributes:
        ble_stack: the agent's ``ble.stack``: ``"bluez"``, or ``"bumble:<transport>"`` (a
            dongle the agent drives itself through Bumble).
        adapter: with BlueZ, the adapter (``hci0``: the only one the agent opens); None with
            Bumble.
        homehub: the command that runs ``homehub`` (before ``run --config``), e.g. the
            installed ``/opt/homehub/.venv/bin/homehub``; None: the checkout's, beside this
            interpreter (as on the virtual home).
    """

    ble_stack: str
    adapter: str | None
    homehub: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class DeviceSide:
    """``[devices]``: ``provide = "emulated"`` (the emulators on the listed Bumble transports,
    one controller each, handed out in order and reused once a device is removed) or
    ``"real"`` (the patient's devices: nothing here drives them)."""

    provide: Literal["emulated", "real"]
    transports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModemPort:
    """``[modem]``: the real module's AT port, written into the agent's ``[modem]``
    (``backend = "at"``)."""

    port: str
    baudrate: int


@dataclass(frozen=True, slots=True)
class RelayRun:
    """One relay command's run, as logged: which, the program's name, exit status, time."""

    state: str
    program: str
    exit_code: int
    took_s: float


@dataclass(frozen=True, slots=True)
class PowerRelay:
    """``[power]``: the relay that cuts and restores the hub's supply.

    Attributes:
        relay_off: argv of the command that opens the relay (power off); run without a shell.
        relay_on: argv of the command that closes it (power on).
        timeout_s: each command's bound; past it its process group is killed and the run
            fails (the power state is then unknown).
        off_s: how long the power stays off in a cut.
    """

    relay_off: tuple[str, ...]
    relay_on: tuple[str, ...]
    timeout_s: float = DEFAULT_RELAY_TIMEOUT_S
    off_s: float = DEFAULT_OFF_S

    async def switch(self, state: Literal["off", "on"]) -> RelayRun:
        """Run ``relay_off`` or ``relay_on``, bounded by ``timeout_s``; its exit status is
        logged (``hil_power_relay``: the program's name, never its arguments' output).

        Raises:
            RelayError: it could not start, outlived its timeout (killed), or exited non-zero.
        """
        argv = self.relay_off if state == "off" else self.relay_on
        program = Path(argv[0]).name
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own group: a timeout kills what it started too
            )
        except OSError as exc:
            _log.error("hil_power_relay", state=state, program=program, error=exc.strerror)
            raise RelayError(
                f"power relay {state}: {argv[0]} could not be started ({exc.strerror})"
            ) from None
        try:
            async with asyncio.timeout(self.timeout_s):
                output, _ = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await process.wait()
            _log.error("hil_power_relay", state=state, program=program, timed_out_s=self.timeout_s)
            raise RelayError(
                f"power relay {state}: {argv[0]} did not finish within {self.timeout_s:g} s "
                "(killed; the power state is unknown)"
            ) from None
        code = process.returncode
        assert code is not None
        run = RelayRun(state, program, code, round(time.monotonic() - started, 3))
        _log.info(
            "hil_power_relay", state=state, program=program, exit_code=code, took_s=run.took_s
        )
        if code != 0:
            tail = output.decode("utf-8", "replace").strip()[-OUTPUT_TAIL:]
            raise RelayError(
                f"power relay {state}: {argv[0]} exited with status {code}"
                + (f": {tail}" if tail else "")
            )
        return run


@dataclass(frozen=True, slots=True)
class Rig:
    """A real rig, as its file says (see the module doc and hil/rig.example.toml)."""

    path: Path
    name: str
    agent: AgentSide
    devices: DeviceSide
    modem: ModemPort | None = None
    power: PowerRelay | None = None

    def describe(self) -> str:
        """One line for the console: what the rig is."""
        stack = self.agent.ble_stack
        if self.agent.adapter is not None:
            stack += f" ({self.agent.adapter})"
        if self.devices.provide == "emulated":
            devices = f"emulated devices on {', '.join(self.devices.transports)}"
        else:
            devices = "real devices"
        modem = "no modem" if self.modem is None else f"modem on {self.modem.port}"
        power = "no relay" if self.power is None else "a power relay"
        return f"rig {self.name}: agent on {stack}, {devices}, {modem}, {power}"

    def lacks(self, need: str, scenario: Scenario) -> str | None:
        """Why this rig cannot meet ``need`` of ``scenario`` (hil/scenarios/base.py
        ``NEEDS``); None when it can."""
        if need == "emulated_devices":
            if self.devices.provide == "real":
                return (
                    "drives emulated devices whose readings the checks know; "
                    "the rig's devices are real"
                )
            have, want = len(self.devices.transports), len(scenario.devices)
            if want > have:
                return (
                    f"needs {want} emulated devices, the rig has {have} "
                    f"transport{'s' if have != 1 else ''} ([devices] transports)"
                )
            return None
        if need == "virtual_radio":
            return "needs the virtual radio's own link; a rig's radios are real"
        if need == "modem_emulator":
            return "needs the AT modem emulator in place of the module; a rig's modem is its own"
        if need == "real_modem":
            return None if self.modem is not None else "needs a real modem; the rig has no [modem]"
        if need == "power":
            return None if self.power is not None else "cuts power; the rig has no [power] relay"
        if need in ("proxy", "clock_wrapper", "disk_limit"):
            return None  # on the Pi as on the virtual home: loopback, the daemon's command
        return f"needs {need}, which no rig provides"

    def skip_reason(self, scenario: Scenario) -> str | None:
        """Why ``scenario`` cannot run on this rig (each unmet need, ``; ``-joined); None
        when it can run unchanged."""
        requirements = scenario.requirements
        if requirements is None:
            return "declares no needs (Scenario.needs unset): not known to run on a rig"
        reasons = [r for need in sorted(requirements) if (r := self.lacks(need, scenario))]
        return "; ".join(reasons) or None

    def agent_overrides(self) -> dict[str, dict[str, Any]]:
        """What the rig sets in the agent's configuration besides ``ble.stack`` (the radio's):
        its real modem, if any."""
        if self.modem is None:
            return {}
        return {
            "modem": {"backend": "at", "port": self.modem.port, "baudrate": self.modem.baudrate}
        }

    def apply(self, home: Home) -> None:
        """Set the rig's parts on a scenario's home before its setup runs: the modem in the
        agent's configuration, and which ``homehub`` runs."""
        home.config_overrides.update(self.agent_overrides())
        if self.agent.homehub is not None:
            home.agent_base = list(self.agent.homehub)

    def preflight(self, sysfs: Path = Path("/sys")) -> list[str]:
        """What this machine lacks for the rig (empty: ready): the BlueZ adapter, the
        modem's port, the relay's and ``homehub``'s programs. The dongles are found only
        when opened (Bumble enumerates USB then)."""
        problems = []
        if self.agent.adapter is not None:
            where = sysfs / "class" / "bluetooth" / self.agent.adapter
            if not where.exists():
                problems.append(
                    f"{self.path}: agent.adapter: {self.agent.adapter} not found ({where}); "
                    "is Bluetooth up (bluetoothctl show)?"
                )
        if self.modem is not None and not Path(self.modem.port).exists():
            problems.append(f"{self.path}: modem.port: {self.modem.port} does not exist")
        commands: list[tuple[str, tuple[str, ...]]] = []
        if self.power is not None:
            commands += [("power.relay_off", self.power.relay_off)]
            commands += [("power.relay_on", self.power.relay_on)]
        if self.agent.homehub is not None:
            commands.append(("agent.homehub", self.agent.homehub))
        for key, argv in commands:
            if shutil.which(argv[0]) is None:
                problems.append(f"{self.path}: {key}: {argv[0]} is not an executable program")
        return problems


# -- loading ----------------------------------------------------------------------------------


class _Reader:
    """Typed reads of one section's keys; every error names the file, line and key."""

    def __init__(self, path: Path, text: str, section: str, table: Mapping[str, Any]) -> None:
        self.path = path
        self.text = text
        self.section = section
        self.table = table
        self.read: set[str] = set()

    def error(self, key: str | None, reason: str) -> RigFileError:
        dotted = self.section if key is None else f"{self.section}.{key}"
        return RigFileError(str(self.path), dotted, reason, locate_key(self.text, dotted))

    def get(self, key: str) -> Any:
        self.read.add(key)
        return self.table.get(key)

    def string(self, key: str, *, required: bool, pattern: str | None = None) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing: expected a string")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_shown(value)}")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise self.error(key, f"{value!r} does not match {pattern}")
        return value

    def argv(self, key: str, *, required: bool) -> tuple[str, ...] | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing: expected a command as a list of strings")
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(a, str) for a in value)
            or not value[0].strip()
        ):
            raise self.error(
                key,
                "expected a command as a non-empty list of strings, run without a shell "
                f'(e.g. ["/usr/local/bin/relay", "off"]), got {_shown(value)}',
            )
        return tuple(value)

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number of seconds, got {_shown(value)}")
        if not low <= value <= high:
            raise self.error(key, f"expected {low:g} to {high:g}, got {value:g}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_shown(value)}")
        if not low <= value <= high:
            raise self.error(key, f"expected {low} to {high}, got {value}")
        return value

    def no_others(self, known: Sequence[str]) -> None:
        for key in self.table:
            if key not in known:
                raise self.error(
                    key, f"unknown key (known in [{self.section}]: {', '.join(known)})"
                )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def transport_problem(spec: str) -> str | None:
    """What is wrong with a Bumble transport spec (``usb:0``, ``serial:/dev/ttyACM0``); None
    when it names a known scheme with what that scheme needs."""
    scheme, _, rest = spec.partition(":")
    if scheme not in BUMBLE_SCHEMES:
        return (
            f"{spec!r} is not a Bumble transport (expected <scheme>:<spec>, scheme one of "
            f"{', '.join(BUMBLE_SCHEMES)}; e.g. 'usb:0', 'usb:0a12:0001', 'serial:/dev/ttyACM0')"
        )
    if BUMBLE_SCHEMES[scheme] and not rest.strip():
        return f"{spec!r}: the {scheme} transport needs a spec after the colon (e.g. 'usb:0')"
    return None


def _agent(r: _Reader) -> AgentSide:
    stack = r.string("ble_stack", required=True)
    assert stack is not None
    adapter = r.string("adapter", required=False)
    if stack == "bluez":
        adapter = adapter or AGENT_ADAPTER
        if adapter != AGENT_ADAPTER:
            raise r.error(
                "adapter",
                f"the agent opens BlueZ's {AGENT_ADAPTER} only (agent/ble/bluez_devices.py), "
                f"got {adapter!r}",
            )
    elif stack.startswith("bumble:"):
        problem = transport_problem(stack.removeprefix("bumble:"))
        if problem is not None:
            raise r.error("ble_stack", problem)
        if adapter is not None:
            raise r.error("adapter", "only with ble_stack = 'bluez' (Bumble opens its transport)")
    else:
        raise r.error(
            "ble_stack",
            f"expected 'bluez' or 'bumble:<transport>' (e.g. 'bumble:usb:0'), got {stack!r}",
        )
    homehub = r.argv("homehub", required=False)
    r.no_others(("ble_stack", "adapter", "homehub"))
    return AgentSide(stack, adapter, homehub)


def _devices(r: _Reader, agent: AgentSide) -> DeviceSide:
    provide = r.string("provide", required=True)
    transports = r.get("transports")
    r.no_others(("provide", "transports"))
    if provide == "real":
        if transports is not None:
            raise r.error("transports", "only with provide = 'emulated' (real devices need none)")
        return DeviceSide("real", ())
    if provide != "emulated":
        raise r.error("provide", f"expected 'emulated' or 'real', got {provide!r}")
    if (
        not isinstance(transports, list)
        or not transports
        or not all(isinstance(t, str) for t in transports)
    ):
        raise r.error(
            "transports",
            "expected a non-empty list of Bumble transports, one per emulated device present "
            f'at once (e.g. ["usb:0", "usb:1"]), got {_shown(transports)}',
        )
    for spec in transports:
        problem = transport_problem(spec)
        if problem is not None:
            raise r.error("transports", problem)
    repeated = sorted({t for t in transports if transports.count(t) > 1})
    if repeated:
        raise r.error("transports", f"{', '.join(repeated)} listed twice (one controller each)")
    own = agent.ble_stack.removeprefix("bumble:") if agent.ble_stack != "bluez" else None
    if own is not None and own in transports:
        raise r.error("transports", f"{own} is the agent's own transport (agent.ble_stack)")
    return DeviceSide("emulated", tuple(transports))


def _modem(r: _Reader) -> ModemPort:
    port = r.string("port", required=True, pattern=r"/\S+")
    assert port is not None
    baudrate = r.integer("baudrate", 115200, *BAUD_RANGE)
    r.no_others(("port", "baudrate"))
    return ModemPort(port, baudrate)


def _power(r: _Reader) -> PowerRelay:
    relay_off = r.argv("relay_off", required=True)
    relay_on = r.argv("relay_on", required=True)
    assert relay_off is not None
    assert relay_on is not None
    timeout_s = r.number("timeout_s", DEFAULT_RELAY_TIMEOUT_S, *RELAY_TIMEOUT_RANGE_S)
    off_s = r.number("off_s", DEFAULT_OFF_S, *OFF_RANGE_S)
    r.no_others(("relay_off", "relay_on", "timeout_s", "off_s"))
    return PowerRelay(relay_off, relay_on, timeout_s, off_s)


def load_rig(path: Path | str) -> Rig:
    """Read and validate a rig file.

    Raises:
        RigFileError: naming the file, the line, the ``section.key`` and what was expected.
    """
    path = Path(path)
    where = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_RIG_BYTES + 1)
    except FileNotFoundError:
        raise RigFileError(where, None, "not found") from None
    except OSError as exc:
        raise RigFileError(where, None, f"cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_RIG_BYTES:
        raise RigFileError(where, None, f"larger than {MAX_RIG_BYTES} bytes: not a rig file")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise RigFileError(where, None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RigFileError(where, None, f"not valid TOML: {exc}") from None
    for section, table in data.items():
        if section not in SECTIONS:
            raise RigFileError(
                where,
                section,
                f"unknown section (known: {', '.join(SECTIONS)}; the broker and the platform "
                "are always the runner's own: mosquitto and the reference receiver on loopback)",
                locate_key(text, section),
            )
        if not isinstance(table, dict):
            raise RigFileError(
                where, section, f"expected a table [{section}]", locate_key(text, section)
            )
    for section in REQUIRED_SECTIONS:
        if section not in data:
            raise RigFileError(where, section, f"missing section [{section}]")

    def reader(section: str) -> _Reader:
        return _Reader(path, text, section, data[section])

    rig = reader("rig")
    name = rig.string("name", required=True, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    assert name is not None
    rig.no_others(("name",))
    agent = _agent(reader("agent"))
    devices = _devices(reader("devices"), agent)
    modem = _modem(reader("modem")) if "modem" in data else None
    power = _power(reader("power")) if "power" in data else None
    return Rig(path, name, agent, devices, modem, power)


def open_rig(path: Path | str, *, sysfs: Path = Path("/sys")) -> Rig:
    """:func:`load_rig`, then :meth:`Rig.preflight` on this machine.

    Raises:
        RigFileError: the file is wrong.
        RigNotReadyError: this machine lacks a part the file names (each problem on a line).
    """
    rig = load_rig(path)
    problems = rig.preflight(sysfs)
    if problems:
        raise RigNotReadyError(f"rig {rig.name} is not ready here:\n  " + "\n  ".join(problems))
    return rig


# -- on the rig: the radio and the power cut --------------------------------------------------

TransportOpener = Callable[[str], Awaitable[Transport]]


class RigRadio:
    """The rig's radio, in place of hil/virtual_radio.py's :class:`VirtualRadio` (the same
    methods the devices and the home use): each emulated device gets a Bumble host in this
    process on its own controller, opened over the next free transport of ``[devices]
    transports`` (a USB dongle); a removed device's controller is reset (it stops
    advertising, its links end) and its transport closed and free again. The agent's side is
    the rig's: :attr:`stack` is ``[agent] ble_stack``.

    Args:
        rig: the rig.
        opener: opens a transport spec (Bumble's ``open_transport``; tests give their own).
    """

    def __init__(self, rig: Rig, *, opener: TransportOpener = open_transport) -> None:
        self.rig = rig
        self.cuffs: list[EmulatedCuff] = []
        self._opener = opener
        self._free = list(rig.devices.transports)
        self._held: dict[int, tuple[str, Transport, Device]] = {}

    @property
    def stack(self) -> str:
        """The agent's ``ble.stack`` on this rig."""
        return self.rig.agent.ble_stack

    @property
    def in_use(self) -> list[str]:
        """The transports a device holds now."""
        return [spec for spec, _, _ in self._held.values()]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for cuff in self.cuffs:
            with contextlib.suppress(Exception):
                await cuff.stop()
        for _, _, device in list(self._held.values()):
            await self.release(device)

    async def add_peripheral_device(self, address: str, name: str) -> Device:
        """A Bumble device at ``address`` (random static) on the next free controller; not
        powered on.

        Raises:
            RigRunError: the devices are real, every transport is in use, or the transport
                would not open within :data:`TRANSPORT_OPEN_TIMEOUT_S`.
        """
        if self.rig.devices.provide != "emulated":
            raise RigRunError(f"rig {self.rig.name}: its devices are real, none is emulated")
        if not self._free:
            raise RigRunError(
                f"rig {self.rig.name}: every transport is in use ({', '.join(self.in_use)}); "
                "[devices] transports needs one per emulated device present at once"
            )
        spec = self._free.pop(0)
        try:
            async with asyncio.timeout(TRANSPORT_OPEN_TIMEOUT_S):
                transport = await self._opener(spec)
        except Exception as exc:  # noqa: BLE001 - libusb, serial, OS: each named in the error
            self._free.insert(0, spec)
            raise RigRunError(
                f"rig {self.rig.name}: transport {spec} would not open "
                f"({type(exc).__name__}: {exc})"
            ) from None
        device = Device.with_hci(
            name,
            hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS),
            transport.source,
            transport.sink,
        )
        self._held[id(device)] = (spec, transport, device)
        _log.info("hil_rig_device_on", transport=spec)
        return device

    async def add_cuff(
        self, readings: Sequence[BpReading], *, address: str, **options: Any
    ) -> EmulatedCuff:
        """Start an emulated blood-pressure cuff on the next free controller."""
        device = await self.add_peripheral_device(address, options.get("local_name", "cuff"))
        cuff = EmulatedCuff(device, readings, **options)
        await cuff.start()
        self.cuffs.append(cuff)
        return cuff

    async def release(self, device: Device) -> None:
        """Take ``device``'s controller off the air (HCI Reset, bounded) and close its
        transport; the transport is free for the next device."""
        held = self._held.pop(id(device), None)
        if held is None:
            return
        spec, transport, _ = held
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RESET_TIMEOUT_S):
                await device.host.send_command(hci.HCI_Reset_Command())
        with contextlib.suppress(Exception):
            await transport.close()
        self._free.append(spec)
        _log.info("hil_rig_device_off", transport=spec)


async def cut_power(home: Home) -> None:
    """A power cut on the rig: the daemon SIGKILLed and its exit waited for, bounded, then
    ``relay_off`` at once (the runner shares the Pi's CPU, so the relay feeds the parts around
    it: the modem, a powered USB hub with the dongles; the daemon dies by the kill, first, so
    it never sees its parts go before it); ``off_s`` without power; ``relay_on``. Starting
    the agent again is the scenario's.

    Raises:
        RelayError: a relay command failed (the power state is then unknown).
        RigRunError: the rig has no relay, or the daemon did not exit after SIGKILL.
    """
    rig = home.rig
    if rig is None or rig.power is None:
        raise RigRunError("a power cut on a rig needs its [power] relay")
    relay = rig.power
    try:
        async with asyncio.timeout(KILL_WAIT_S):
            if home.agent is not None:
                await home.kill_agent()
    except TimeoutError:
        raise RigRunError(f"the daemon did not exit within {KILL_WAIT_S:g} s of SIGKILL") from None
    await relay.switch("off")
    await asyncio.sleep(relay.off_s)  # the time without power: a hold, not a synchronisation
    await relay.switch("on")
