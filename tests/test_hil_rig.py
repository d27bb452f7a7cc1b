"""The real-rig mode of the HIL kit (hil/rig.py): the rig file and its errors, which scenarios
a rig runs and which it skips (and how a skip is reported), the power relay's commands, the
agent's configuration on a rig, and the rig's radio on a Bumble HCI transport.

Nothing here has BlueZ, a USB dongle, a modem or a relay: the dongles are Bumble virtual
controllers served over HCI/TCP (the rig's radio opens them with Bumble's ``open_transport``
as it opens ``usb:0``), the relay's commands are small Python scripts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from bumble import hci
from bumble.controller import Controller
from bumble.device import Advertisement, Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

from agent.config import load as load_agent_config
from hil.__main__ import main as hil_main
from hil.broker import Broker
from hil.emulators.cuff import BLOOD_PRESSURE_SERVICE
from hil.pki import DevPki
from hil.report.html import render
from hil.report.junit import junit_xml
from hil.rig import (
    PowerRelay,
    RelayError,
    Rig,
    RigFileError,
    RigNotReadyError,
    RigRadio,
    RigRunError,
    cut_power,
    load_rig,
    open_rig,
)
from hil.scenarios import SCENARIOS, by_name
from hil.scenarios.base import NEEDS, RunIdentities, Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home
from hil.scenarios.results import Figures, ScenarioResult, from_json, to_json
from hil.scenarios.runner import _write_config, run_scenario

EXAMPLE = Path(__file__).parent.parent / "hil" / "rig.example.toml"

BASE = """\
[rig]
name = "test-rig"

[agent]
ble_stack = "bluez"
adapter = "hci0"

[devices]
provide = "emulated"
transports = ["usb:0", "usb:1"]
"""
"""A rig with two emulated devices, no modem and no relay."""
REAL = BASE.replace('provide = "emulated"\ntransports = ["usb:0", "usb:1"]', 'provide = "real"')


def rig_file(tmp_path: Path, text: str, name: str = "rig.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def _nothing(_home: Home) -> None:
    return None


def scenario(
    name: str = "s", *, devices: int = 1, needs: frozenset[str] | None = frozenset()
) -> Scenario:
    return Scenario(
        name=name,
        purpose="a test scenario",
        devices=tuple(Cuff(f"cuff{n}") for n in range(devices)),
        faults=(),
        drive=_nothing,
        needs=needs,
    )


# -- the file -------------------------------------------------------------------------------


def test_the_example_loads() -> None:
    rig = load_rig(EXAMPLE)
    assert (rig.name, rig.agent.ble_stack, rig.agent.adapter) == ("bench-pi-1", "bluez", "hci0")
    assert rig.agent.homehub is None
    assert rig.devices.provide == "emulated"
    assert rig.devices.transports == ("usb:0", "usb:1", "usb:2")
    assert rig.modem is not None
    assert (rig.modem.port, rig.modem.baudrate) == ("/dev/ttyUSB2", 115200)
    assert rig.power is not None
    assert rig.power.relay_off == ("/usr/local/bin/relay", "1", "off")
    assert (rig.power.timeout_s, rig.power.off_s) == (10.0, 2.0)
    # Frozen.
    with pytest.raises(AttributeError):
        rig.name = "other"  # type: ignore[misc]


BAD: list[tuple[str, str, str, str]] = [
    # (what, the file's text, the key named, what the error says)
    ("not TOML", "[rig\nname = 1", "file", "not valid TOML"),
    ("broker section", BASE + '\n[broker]\nhost = "x"\n', "broker", "unknown section"),
    ("no devices", BASE.split("[devices]")[0], "devices", "missing section [devices]"),
    ("section not a table", "modem = 3\n" + BASE, "modem", "expected a table"),
    ("no name", BASE.replace('name = "test-rig"\n', ""), "rig.name", "missing"),
    ("bad name", BASE.replace('"test-rig"', '"a rig!"'), "rig.name", "does not match"),
    ("unknown key", BASE.replace("[rig]\n", "[rig]\nowner = 1\n"), "rig.owner", "unknown key"),
    (
        "stack",
        BASE.replace('ble_stack = "bluez"', 'ble_stack = "bluetooth"'),
        "agent.ble_stack",
        "expected 'bluez' or 'bumble:<transport>'",
    ),
    (
        "bumble scheme",
        BASE.replace('ble_stack = "bluez"\nadapter = "hci0"', 'ble_stack = "bumble:usbx:0"'),
        "agent.ble_stack",
        "not a Bumble transport",
    ),
    ("adapter", BASE.replace('"hci0"', '"hci1"'), "agent.adapter", "opens BlueZ's hci0 only"),
    (
        "adapter with bumble",
        BASE.replace('ble_stack = "bluez"', 'ble_stack = "bumble:usb:5"'),
        "agent.adapter",
        "only with ble_stack = 'bluez'",
    ),
    (
        "homehub",
        BASE.replace('adapter = "hci0"', 'adapter = "hci0"\nhomehub = "homehub run"'),
        "agent.homehub",
        "list of strings",
    ),
    ("provide", BASE.replace('"emulated"', '"virtual"'), "devices.provide", "'emulated' or"),
    (
        "no transports",
        BASE.replace('transports = ["usb:0", "usb:1"]\n', ""),
        "devices.transports",
        "non-empty list of Bumble transports",
    ),
    (
        "transport scheme",
        BASE.replace('"usb:1"', '"hci1"'),
        "devices.transports",
        "'hci1' is not a Bumble transport",
    ),
    (
        "transport spec",
        BASE.replace('"usb:1"', '"usb:"'),
        "devices.transports",
        "needs a spec after the colon",
    ),
    (
        "transport twice",
        BASE.replace('"usb:1"', '"usb:0"'),
        "devices.transports",
        "usb:0 listed twice",
    ),
    (
        "the agent's own",
        BASE.replace('ble_stack = "bluez"\nadapter = "hci0"', 'ble_stack = "bumble:usb:1"'),
        "devices.transports",
        "usb:1 is the agent's own transport",
    ),
    (
        "transports with real",
        BASE.replace('"emulated"', '"real"'),
        "devices.transports",
        "only with provide = 'emulated'",
    ),
    ("modem port", BASE + '[modem]\nport = "ttyUSB2"\n', "modem.port", "does not match"),
    (
        "modem baud",
        BASE + '[modem]\nport = "/dev/ttyUSB2"\nbaudrate = 300\n',
        "modem.baudrate",
        "expected 1200 to 4000000, got 300",
    ),
    (
        "modem baud type",
        BASE + '[modem]\nport = "/dev/ttyUSB2"\nbaudrate = true\n',
        "modem.baudrate",
        "expected an integer",
    ),
    (
        "relay as a string",
        BASE + '[power]\nrelay_off = "relay off"\nrelay_on = ["relay", "on"]\n',
        "power.relay_off",
        "run without a shell",
    ),
    (
        "relay empty",
        BASE + '[power]\nrelay_off = []\nrelay_on = ["relay", "on"]\n',
        "power.relay_off",
        "non-empty list of strings",
    ),
    (
        "relay_on missing",
        BASE + '[power]\nrelay_off = ["relay", "off"]\n',
        "power.relay_on",
        "missing",
    ),
    (
        "relay timeout",
        BASE + '[power]\nrelay_off = ["r"]\nrelay_on = ["r"]\ntimeout_s = 0\n',
        "power.timeout_s",
        "expected 0.1 to 120, got 0",
    ),
]


@pytest.mark.parametrize(("text", "key", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_file_says_what_and_where(tmp_path: Path, text: str, key: str, says: str) -> None:
    path = rig_file(tmp_path, text)
    with pytest.raises(RigFileError) as caught:
        load_rig(path)
    error = caught.value
    assert (error.path, error.key or "file") == (str(path), key)
    assert says in error.reason
    message = str(error)
    assert message.startswith(str(path))
    assert f": {key}: " in message
    if key not in ("file", "devices"):  # the key's line, or its section's when it is missing
        assert error.line is not None
        line = text.splitlines()[error.line - 1]
        assert key.split(".")[-1] in line or line == f"[{key.split('.')[0]}]"


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RigFileError, match=r"nowhere\.toml: file: not found"):
        load_rig(tmp_path / "nowhere.toml")


def test_preflight_names_what_this_machine_lacks(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    with pytest.raises(RigNotReadyError) as caught:
        open_rig(EXAMPLE, sysfs=sysfs)
    message = str(caught.value)
    assert "agent.adapter: hci0 not found" in message
    assert "modem.port: /dev/ttyUSB2 does not exist" in message
    assert "power.relay_off: /usr/local/bin/relay is not an executable program" in message
    (sysfs / "class" / "bluetooth" / "hci0").mkdir(parents=True)
    ready = rig_file(tmp_path, BASE)
    assert open_rig(ready, sysfs=sysfs).name == "test-rig"


# -- which scenarios a rig runs -------------------------------------------------------------


def test_every_need_is_known_to_the_rig() -> None:
    rig = load_rig(EXAMPLE)
    for need in NEEDS:
        reason = rig.lacks(need, scenario())
        assert reason is None or "which no rig provides" not in reason, need
    with pytest.raises(ValueError, match="needs virtual_raido not known"):
        scenario(needs=frozenset({"virtual_raido"}))


def test_selection_on_a_rig_with_two_dongles_no_modem_no_relay(tmp_path: Path) -> None:
    rig = load_rig(rig_file(tmp_path, BASE))
    cases = {
        "plain": (scenario(devices=2), None),
        "software faults": (
            scenario(needs=frozenset({"proxy", "clock_wrapper", "disk_limit"})),
            None,
        ),
        "three devices": (
            scenario(devices=3),
            "needs 3 emulated devices, the rig has 2 transports ([devices] transports)",
        ),
        "power": (scenario(needs=frozenset({"power"})), "cuts power; the rig has no [power] relay"),
        "virtual radio": (
            scenario(needs=frozenset({"virtual_radio"})),
            "needs the virtual radio's own link; a rig's radios are real",
        ),
        "modem emulator": (
            scenario(needs=frozenset({"modem_emulator"})),
            "needs the AT modem emulator in place of the module; a rig's modem is its own",
        ),
        "real modem": (
            scenario(needs=frozenset({"real_modem"})),
            "needs a real modem; the rig has no [modem]",
        ),
        "undeclared": (
            scenario(needs=None),
            "declares no needs (Scenario.needs unset): not known to run on a rig",
        ),
        "two reasons": (
            scenario(devices=3, needs=frozenset({"power"})),
            "needs 3 emulated devices, the rig has 2 transports ([devices] transports); "
            "cuts power; the rig has no [power] relay",
        ),
    }
    assert {k: rig.skip_reason(s) for k, (s, _) in cases.items()} == {
        k: reason for k, (_, reason) in cases.items()
    }
    # The registered scenarios of issue 12's first set: each runs unchanged on two dongles
    # but the one with three devices at once.
    first_set = {
        "broker-restart-no-persistence": None,
        "sigkill-during-sync-and-upload": None,
        "impostor-cuff": None,
        "unknown-device-next-door": None,
        "clock-year-2000": None,
        "forged-receipt": None,
        "three-devices-at-once": "needs 3 emulated devices, the rig has 2 transports "
        "([devices] transports)",
    }
    assert {n: rig.skip_reason(by_name(n)) for n in first_set} == first_set
    # With a modem and a relay (the example: three dongles), they all run, and so do power cuts.
    example = load_rig(EXAMPLE)
    assert [n for n in first_set if example.skip_reason(by_name(n))] == []
    assert example.skip_reason(scenario(needs=frozenset({"power", "real_modem"}))) is None


def test_selection_on_a_rig_with_real_devices(tmp_path: Path) -> None:
    rig = load_rig(rig_file(tmp_path, REAL))
    assert rig.devices.transports == ()
    real = "drives emulated devices whose readings the checks know; the rig's devices are real"
    for s in SCENARIOS:
        if s.devices and s.requirements is not None:
            assert (rig.skip_reason(s) or "").startswith(real), s.name
    assert rig.skip_reason(scenario(devices=0)) is None  # nothing to drive: it may run
    assert rig.skip_reason(scenario(devices=0, needs=frozenset({"power"}))) == (
        "cuts power; the rig has no [power] relay"
    )


async def test_a_skipped_scenario_is_reported_as_skipped(tmp_path: Path) -> None:
    rig = load_rig(rig_file(tmp_path, BASE))
    three = by_name("three-devices-at-once")
    skipped = await run_scenario(three, tmp_path / "runs" / three.name, rig=rig)
    assert not (tmp_path / "runs").exists()  # nothing was started
    reason = "needs 3 emulated devices, the rig has 2 transports ([devices] transports)"
    assert (skipped.skipped, skipped.rig, skipped.passed, skipped.failed) == (
        reason,
        "test-rig",
        False,
        False,
    )
    ran = ScenarioResult("ran", "p", (), False, (), Figures(), error="boom", rig="test-rig")
    assert ran.failed
    results = [skipped, ran]
    # results.json keeps it.
    again = from_json(to_json(results))
    assert again == results
    assert json.loads(to_json(results))[0]["skipped"] == reason
    # junit.xml: <skipped message=...>, counted, not a failure.
    suite = ET.fromstring(junit_xml(results).split("\n", 1)[1])  # noqa: S314 - our own text
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "1")
    case = next(c for c in suite.iter("testcase") if c.get("name") == three.name)
    assert case.find("failure") is None
    marker = case.find("skipped")
    assert marker is not None
    assert marker.get("message") == reason
    # The page: its row says SKIPPED and why; the verdict counts it apart.
    page = render(results, {})
    assert f'data-name="{three.name}" data-state="skipped"' in page
    assert f'<span class="skip">SKIPPED</span> {reason}' in page
    assert 'id="verdict">0 of 2 scenarios passed, 1 skipped<' in page
    assert "the real rig test-rig" in page


def test_the_command_line_refuses_a_bad_rig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = rig_file(tmp_path, BASE.replace('"hci0"', '"hci1"'))
    assert hil_main(["run", "impostor-cuff", "--rig", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"python -m hil: {bad}:6: agent.adapter: the agent opens BlueZ's hci0 only" in err
    assert hil_main(["all", "--quick", "--rig", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: file: not found" in capsys.readouterr().err


# -- the power relay ------------------------------------------------------------------------

WRITE_STATE = "import sys, pathlib; pathlib.Path(sys.argv[1]).open('a').write(sys.argv[2] + '\\n')"


def relay(tmp_path: Path, **options: Any) -> tuple[PowerRelay, Path]:
    state = tmp_path / "relay-state"
    command = (sys.executable, "-c", WRITE_STATE, str(state))
    return PowerRelay((*command, "off"), (*command, "on"), **options), state


async def test_the_relay_runs_its_commands_and_logs_their_status(tmp_path: Path) -> None:
    power, state = relay(tmp_path)
    with structlog.testing.capture_logs() as logs:
        off = await power.switch("off")
        on = await power.switch("on")
    assert state.read_text() == "off\non\n"
    assert (off.exit_code, on.exit_code, off.program) == (0, 0, Path(sys.executable).name)
    assert [(e["event"], e["state"], e["exit_code"]) for e in logs] == [
        ("hil_power_relay", "off", 0),
        ("hil_power_relay", "on", 0),
    ]


async def test_a_relay_command_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    hang = "import time; time.sleep(5)"
    power = PowerRelay((sys.executable, "-c", hang), ("true",), timeout_s=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RelayError, match=r"did not finish within 0\.3 s \(killed"):
        await power.switch("off")
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_a_failing_or_missing_relay_command_fails_the_cut(tmp_path: Path) -> None:
    fails = PowerRelay((sys.executable, "-c", "print('relay 1 busy'); raise SystemExit(3)"), ("x",))
    with pytest.raises(RelayError, match="exited with status 3: relay 1 busy"):
        await fails.switch("off")
    missing = PowerRelay((str(tmp_path / "no-relay"), "off"), ("x",))
    with pytest.raises(RelayError, match="could not be started"):
        await missing.switch("off")


@dataclass
class _Home:
    """What cut_power uses of a Home: the rig, the daemon, kill_agent."""

    rig: Rig | None
    agent: asyncio.subprocess.Process | None
    order: list[str] = field(default_factory=list)

    async def kill_agent(self) -> int:
        assert self.agent is not None
        self.agent.kill()
        self.order.append("killed")
        return await self.agent.wait()


async def test_a_power_cut_on_a_rig_kills_then_switches_off_then_on(tmp_path: Path) -> None:
    power, state = relay(tmp_path, off_s=0.0)
    rig = Rig(tmp_path / "rig.toml", "r", load_rig(EXAMPLE).agent, load_rig(EXAMPLE).devices)
    with_relay = Rig(rig.path, rig.name, rig.agent, rig.devices, power=power)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    home = _Home(with_relay, daemon)
    await cut_power(home)  # type: ignore[arg-type]
    assert daemon.returncode is not None
    assert home.order == ["killed"]
    assert state.read_text() == "off\non\n"
    with pytest.raises(RigRunError, match=r"needs its \[power\] relay"):
        await cut_power(_Home(rig, None))  # type: ignore[arg-type]


# -- the agent's configuration and the radio on a rig ---------------------------------------


async def test_the_agent_on_a_rig_gets_bluez_and_the_modem(tmp_path: Path, dev_pki: DevPki) -> None:
    text = (
        BASE.replace('adapter = "hci0"', 'adapter = "hci0"\nhomehub = ["/opt/homehub/bin/homehub"]')
        + '[modem]\nport = "/dev/ttyUSB2"\nbaudrate = 921600\n'
    )
    rig = load_rig(rig_file(tmp_path, text))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    broker = cast(Broker, SimpleNamespace(port=18883))  # only its port is read
    async with RigRadio(rig) as radio:
        home = Home(
            by_name("impostor-cuff"), run_dir, dev_pki, RunIdentities.fresh(), broker, radio, rig
        )
        rig.apply(home)
        _write_config(home)
    written = tomllib.loads(home.config.read_text())
    assert written["ble"]["stack"] == "bluez"
    assert written["modem"] == {"backend": "at", "port": "/dev/ttyUSB2", "baudrate": 921600}
    assert home.agent_command()[:2] == ["/opt/homehub/bin/homehub", "run"]
    config = load_agent_config(home.config)  # the agent takes it as it is
    assert (config.ble.stack, config.modem.backend, config.modem.port) == (
        "bluez",
        "at",
        "/dev/ttyUSB2",
    )
    # Without a [modem] the agent has none, and the checkout's homehub runs.
    plain = load_rig(rig_file(tmp_path, BASE, "plain.toml"))
    assert plain.agent_overrides() == {}


@dataclass
class _Dongle:
    """A Bumble virtual controller served over HCI/TCP: what the rig's radio opens as
    ``tcp-client:127.0.0.1:<port>``, in place of a USB dongle's ``usb:N``."""

    spec: str
    server: asyncio.Server
    controller: Controller
    sink: Any
    """The served connection's packet sink (its ``transport`` None while no host is on)."""


async def _dongle(link: LocalLink) -> _Dongle:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    transport = await open_tcp_server_transport_with_socket(sock)
    controller = Controller(
        "dongle", host_source=transport.source, host_sink=transport.sink, link=link
    )
    server: asyncio.Server = transport.server  # type: ignore[attr-defined]
    port = sock.getsockname()[1]
    return _Dongle(f"tcp-client:127.0.0.1:{port}", server, controller, transport.sink)


@pytest.fixture
async def air() -> AsyncIterator[tuple[LocalLink, list[Advertisement]]]:
    """A link with a scanner on it: every advertisement it hears."""
    link = LocalLink()  # type: ignore[no-untyped-call]
    controller = Controller("scanner", link=link)
    scanner = Device(
        name="scanner",
        address=hci.Address("F0:00:00:00:00:99", hci.Address.RANDOM_DEVICE_ADDRESS),
        host=Host(controller, AsyncPipeSink(controller)),
    )
    heard: list[Advertisement] = []
    scanner.on("advertisement", heard.append)
    await scanner.power_on()
    await scanner.start_scanning(filter_duplicates=False)
    yield link, heard
    await scanner.stop_scanning()
    await scanner.power_off()


async def test_the_rig_radio_puts_each_device_on_its_own_dongle(
    tmp_path: Path, air: tuple[LocalLink, list[Advertisement]]
) -> None:
    link, heard = air
    dongles = [await _dongle(link) for _ in range(2)]
    transports = ", ".join(f'"{d.spec}"' for d in dongles)
    text = BASE.replace('["usb:0", "usb:1"]', f"[{transports}]")
    rig = load_rig(rig_file(tmp_path, text))
    address = "F0:12:34:00:10:A0"
    async with RigRadio(rig) as radio:
        assert radio.stack == "bluez"
        cuff = await by_name("impostor-cuff").device("cuff").power_on(radio, address, _info())
        assert radio.in_use == [dongles[0].spec]
        await _until(lambda: any(str(a.address) == address and _bps(a) for a in heard))
        other = await radio.add_peripheral_device("F0:12:34:00:10:A1", "meter")
        assert radio.in_use == [dongles[0].spec, dongles[1].spec]
        with pytest.raises(RigRunError, match="every transport is in use"):
            await radio.add_peripheral_device("F0:12:34:00:10:A2", "third")
        await cuff.stop()
        radio.cuffs.remove(cuff)
        await radio.release(cuff.device)  # what Home.remove_device does on a rig
        assert radio.in_use == [dongles[1].spec]
        # Bumble's tcp-server serves one host at a time (a dongle, one process): the next
        # opens it once the last is gone.
        await _until(lambda: dongles[0].sink.transport is None)
        again = await radio.add_peripheral_device("F0:12:34:00:10:A3", "impostor")
        assert radio.in_use == [dongles[1].spec, dongles[0].spec]
        del other, again
    assert radio.in_use == []
    for d in dongles:
        d.server.close()


async def test_a_dongle_that_will_not_open_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = BASE.replace('["usb:0", "usb:1"]', f'["tcp-client:127.0.0.1:{port}"]')
    rig = load_rig(rig_file(tmp_path, text))
    async with RigRadio(rig) as radio:
        with pytest.raises(RigRunError, match=f"transport tcp-client:127.0.0.1:{port} would not"):
            await radio.add_peripheral_device("F0:12:34:00:10:A0", "cuff")
        assert radio.in_use == []
    real = load_rig(rig_file(tmp_path, REAL, "real.toml"))
    with pytest.raises(RigRunError, match="its devices are real"):
        await RigRadio(real).add_peripheral_device("F0:12:34:00:10:A0", "cuff")


def _info() -> Any:
    from hil.scenarios.devices import device_information

    ids = RunIdentities.fresh()
    return device_information(ids.serial(0), ids.system_id(0))


def _bps(advertisement: Advertisement) -> bool:
    return BLOOD_PRESSURE_SERVICE.to_bytes(2, "little") in bytes(advertisement.data)


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - a list or attribute of Bumble's, no event
            await asyncio.sleep(0.02)
