"""``homehub doctor`` against the virtual home: every failure it checks, injected one at a time.

The home is real: a mosquitto over TLS with the run's dev PKI (tests/conftest.py), a private
``dbus-daemon`` as the system bus with python-dbusmock's ``bluez5`` (adapter hci0) and
``timedated`` templates (tests/dbus_bluez.py), the modem emulator on a pseudo-terminal, real
files and directories, ``systemd-analyze`` itself. One all-pass run and one with an injected
failure go through the installed ``homehub`` entry point in a subprocess; the injections call
:func:`agent.tech.doctor.run_checks` (the command's own code path) and assert that exactly
the injected check fails, with its finding and fix, and the exit code it makes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from agent import config, keys
from agent.ble.bluez_agent import bluez_call
from agent.instance_lock import hold
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.modem import state_file
from agent.modem.modemmanager import ModemLock, RegistrationState
from agent.modem.modemmanager import ModemState as MmState
from agent.modem.status import ModemStatus
from agent.tech.doctor import CHECKS, run_checks
from agent.tech.doctor_report import CheckResult, Outcome, exit_code
from hil.broker import Broker
from hil.emulators.modem import EmulatedModem, Registration
from hil.pki import DevPki, _leaf
from tests import keyhub
from tests.dbus_bluez import BluezMock, PrivateBus, _stop, start_private_bus, start_template
from tests.dbus_modemmanager import ModemManagerMock, ModemSpec
from tests.phi_canaries import DEVICE_ADDRESS, PATIENT_ID

pytestmark = pytest.mark.timeout(60)

HOMEHUB: Final = Path(sys.executable).with_name("homehub")
REPO_UNIT: Final = Path(__file__).resolve().parents[1] / "systemd" / "homehub.service"
TIMEDATE: Final = "org.freedesktop.timedate1"
BLUETOOTH_FIX: Final = (
    "systemctl start bluetooth; check the adapter is there (bluetoothctl list, rfkill list)"
)


@dataclass
class Home:
    """A hub's files under ``root`` and the virtual home around it."""

    root: Path
    pki: DevPki
    broker_port: int
    bus_address: str
    bluez: BluezMock
    timedated: MessageBus
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "state"

    def config(self, **changes: str) -> Path:
        """Write the hub's configuration, with ``changes`` to the defaults below."""
        s = {
            "state_dir": str(self.state),
            "stack": "bluez",
            "outbox": str(self.state / "outbox.db"),
            "quota": str(64 * 1024 * 1024),
            "host": "localhost",
            "port": str(self.broker_port),
            "ca_file": str(self.pki.ca_cert),
            "cert_file": str(self.pki.hub_cert),
            "key_file": str(self.root / "tls" / "hub.key"),
            "modem": 'backend = "none"',
            "platform": "",
            "keys": f'provider = "file"\nkek_file = "{self.root / "kek" / "kek.bin"}"',
            **self.settings,
            **changes,
        }
        text = f"""
[hub]
id = "hub-0001"
state_dir = "{s["state_dir"]}"

[patient]
id = "{PATIENT_ID}"

[ble]
stack = "{s["stack"]}"

[[devices]]
kind = "blood_pressure"
address = "{DEVICE_ADDRESS}"
label = "cuff"

[outbox]
path = "{s["outbox"]}"
key_file = "{self.root / "keys" / "data.key"}"
quota_bytes = {s["quota"]}

[signing]
key_file = "{self.root / "keys" / "hub-signing.pem"}"
{s.get("signing", "")}

[keys]
{s["keys"]}

[mqtt]
host = "{s["host"]}"
port = {s["port"]}
ca_file = "{s["ca_file"]}"
cert_file = "{s["cert_file"]}"
key_file = "{s["key_file"]}"

[modem]
{s["modem"]}

[platform]
{s["platform"]}
"""
        path = self.root / "homehub.toml"
        path.write_text(text)
        return path

    async def check(self, **changes: str) -> dict[str, CheckResult]:
        results = await run_checks(self.config(**changes), unit=REPO_UNIT)
        return {r.check: r for r in results}


def failures(results: dict[str, CheckResult]) -> dict[str, tuple[str, str | None]]:
    """``check -> (finding, fix)`` of every failed check."""
    return {n: (r.finding, r.fix) for n, r in results.items() if r.outcome is Outcome.FAIL}


def _private_key(path: Path, source: Path) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    path.chmod(0o600)
    return path


@pytest.fixture
def private_bus() -> Iterator[PrivateBus]:
    bus = start_private_bus()
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
async def home(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    private_bus: PrivateBus,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Home]:
    """A provisioned hub (TLS key and signing key 0600, state dir) in the virtual home: the
    private bus is this process's system bus, BlueZ has hci0 powered, NTP is synchronized."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    root = tmp_path / "hub"
    for name in ("state", "keys", "kek"):
        (root / name).mkdir(mode=0o700, parents=True)
    _private_key(root / "tls" / "hub.key", dev_pki.hub_key)
    signing = ec.generate_private_key(ec.SECP256R1())
    (root / "keys" / "hub-signing.pem").write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (root / "keys" / "hub-signing.pem").chmod(0o600)
    bluez = await BluezMock.start(private_bus.address, tmp_path / "bluez-mock.log")
    timedated, process = await start_template(
        private_bus.address, tmp_path / "timedated-mock.log", template="timedated", service=TIMEDATE
    )
    try:
        await bluez.add_adapter("hci0")
        home = Home(root, dev_pki, broker.port, private_bus.address, bluez, timedated)
        # The dev PKI's certificates last 30 days, inside the "rotate" margin: the hub gets
        # a year's certificate for the same key from the same CA.
        now = datetime.now(UTC)
        cert = _client_cert(home, root / "tls" / "hub.pem", now, timedelta(days=365))
        home.settings["cert_file"] = str(cert)
        yield home
    finally:
        timedated.disconnect()
        _stop(process)
        await bluez.stop()


EXPECTED_PASS: Final = {
    "configuration",
    "daemon",
    "key file: data key",
    "key file: KEK",
    "key file: signing key",
    "key file: TLS client key",
    "certificate: TLS client",
    "certificate: broker CA",
    "key provider (file)",
    "state directory",
    "disk space",
    "BLE adapter",
    "clock synchronized",
    "platform reachable (TLS)",
    "unit hardening",
}


def _homehub(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``homehub ARGV`` in its own process, as a technician runs it (in-process, the command's
    logging setup would outlive the test in the loggers it caches)."""
    return subprocess.run(
        [str(HOMEHUB), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _doctor(home: Home, config: Path) -> tuple[int, list[dict[str, Any]]]:
    """``homehub doctor --json`` on the virtual home's system bus."""
    done = _homehub(
        "doctor",
        "--config",
        str(config),
        "--json",
        "--unit",
        str(REPO_UNIT),
        env={"DBUS_SYSTEM_BUS_ADDRESS": home.bus_address},
    )
    assert done.stderr == ""
    return done.returncode, json.loads(done.stdout)


async def test_all_pass_then_one_failure_through_the_command(home: Home) -> None:
    """The virtual home passes every check (the modem is skipped: none configured), exit 0;
    the same hub with its TLS key world-readable: that one check fails, exit 1."""
    config = home.config()
    code, rows = _doctor(home, config)
    by_check = {row["check"]: row for row in rows}
    assert list(rows[0]) == ["check", "result", "finding", "fix"]
    assert {n for n, r in by_check.items() if r["result"] == "pass"} == EXPECTED_PASS
    assert {n: r["finding"] for n, r in by_check.items() if r["result"] == "skip"} == {
        "modem and SIM": 'no modem configured ([modem] backend = "none")',
        "registration": 'no modem configured ([modem] backend = "none")',
    }
    assert code == 0
    assert by_check["platform reachable (TLS)"]["finding"] == (
        f"localhost:{home.broker_port}: TLSv1.3, the hub's certificate accepted, an MQTT"
        " broker answers"
    )
    assert by_check["clock synchronized"]["finding"] == "synchronized (NTP)"
    assert by_check["BLE adapter"]["finding"] == "BlueZ adapter hci0 present and powered"
    assert by_check["unit hardening"]["finding"].endswith("is rated 1.5")

    key = home.root / "tls" / "hub.key"
    key.chmod(0o644)
    code, rows = _doctor(home, config)
    failed = {r["check"]: (r["finding"], r["fix"]) for r in rows if r["result"] == "fail"}
    assert failed == {
        "key file: TLS client key": (
            f"{key} has mode 0644: open to group and others",
            f"chmod 600 {key}",
        )
    }
    assert code == 1


async def test_table_output(home: Home) -> None:
    """Without --json: a table with a line per check and the summary."""
    config = home.config(key_file=str(home.root / "missing.key"))
    done = _homehub(
        "doctor", "--config", str(config), "--unit", str(REPO_UNIT), env={"COLUMNS": "300"}
    )
    assert done.returncode == 2  # the key, and the TLS probe that cannot load it
    assert "homehub doctor" in done.stdout
    assert "2 failed, 2 skipped, 17 checks" in done.stdout
    assert "homehub provision" in done.stdout  # COLUMNS: one line a check, nothing folded


# ---------------------------------------------------------------------------
# Each failure, injected one at a time
# ---------------------------------------------------------------------------


async def test_world_readable_signing_key(home: Home) -> None:
    signing = home.root / "keys" / "hub-signing.pem"
    signing.chmod(0o640)
    results = await home.check()
    assert failures(results) == {
        "key file: signing key": (
            f"{signing} has mode 0640: open to group",
            f"chmod 600 {signing}",
        )
    }
    assert exit_code(list(results.values())) == 1


async def test_missing_tls_key_and_lost_data_key(home: Home) -> None:
    """The TLS key missing: provision. A data key gone while the outbox exists: the readings
    are lost (restore or reset)."""
    (home.state / "outbox.db").write_bytes(b"")
    results = await home.check(key_file=str(home.root / "tls" / "gone.key"))
    data_key = home.root / "keys" / "data.key"
    found = failures(results)
    assert found["key file: TLS client key"] == (
        f"{home.root / 'tls' / 'gone.key'} is missing",
        "homehub provision (it creates the hub's keys and certificate)",
    )
    assert found["key file: data key"] == (
        f"{data_key} is missing, but the outbox holds records sealed under it",
        "restore it from the hub's backup, or start over with `homehub factory-reset --yes`",
    )
    # The key cannot be loaded, so the TLS probe cannot start either: said, not hidden.
    assert found["platform reachable (TLS)"][0] == (
        "the CA, certificate or key cannot be loaded (No such file or directory)"
    )
    assert set(found) == {
        "key file: TLS client key",
        "key file: data key",
        "platform reachable (TLS)",
    }


def _client_cert(
    home: Home,
    path: Path,
    not_before: datetime,
    lifetime: timedelta,
    pki: DevPki | None = None,
    cn: str = "hub-0001",
) -> Path:
    """A client certificate for the hub key of ``pki`` (the run's) from its CA, valid as
    given, issued to ``cn``."""
    pki = pki or home.pki
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    key = serialization.load_pem_private_key(pki.hub_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert = _leaf(
        ca_cert,
        ca_key,
        key,
        cn,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        san=None,
        valid=(not_before, lifetime),
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


async def test_certificate_expiring_soon(home: Home) -> None:
    """Valid, but for 10 more days: a failure, "rotate" before the day; the broker still
    takes it."""
    now = datetime.now(UTC)
    cert = _client_cert(home, home.root / "soon.pem", now - timedelta(days=80), timedelta(days=90))
    day = (now - timedelta(days=80) + timedelta(days=90)).date().isoformat()
    results = await home.check(cert_file=str(cert))
    (finding, fix), *_ = failures(results).values()
    assert failures(results) == {"certificate: TLS client": (finding, fix)}
    assert finding in (
        f"{cert} expires on {day} (in 9 days)",
        f"{cert} expires on {day} (in 10 days)",
    )
    assert fix == (
        f"rotate the hub's certificate (homehub provision, or the platform's rotation) before {day}"
    )


async def test_expired_certificate(home: Home) -> None:
    """Expired: the certificate check says so, and the broker refuses it too."""
    now = datetime.now(UTC)
    cert = _client_cert(home, home.root / "old.pem", now - timedelta(days=60), timedelta(days=30))
    day = (now - timedelta(days=30)).date().isoformat()
    results = await home.check(cert_file=str(cert))
    found = failures(results)
    assert found["certificate: TLS client"] == (
        f"{cert} expired on {day}",
        "rotate the hub's certificate (homehub provision, or the platform's rotation)",
    )
    assert found["platform reachable (TLS)"][0].startswith(
        f"localhost:{home.broker_port}: the broker refused the hub's client certificate"
    )
    assert set(found) == {"certificate: TLS client", "platform reachable (TLS)"}


async def test_signing_certificate_expired_or_another_hubs(home: Home, foreign_pki: DevPki) -> None:
    """A token's signing key has its own certificate ([signing] cert_file): checked like the
    client's (valid, this hub's), with provisioning's fix."""
    now = datetime.now(UTC)
    old = _client_cert(
        home, home.root / "signing-old.pem", now - timedelta(days=60), timedelta(days=30)
    )
    day = (now - timedelta(days=30)).date().isoformat()
    results = await home.check(signing=f'cert_file = "{old}"')
    found = failures(results)
    assert set(found) == {"certificate: signing"}
    assert found["certificate: signing"][0] == f"{old} expired on {day}"
    assert found["certificate: signing"][1].startswith("homehub provision apply --signing-cert")
    foreign = _client_cert(
        home, home.root / "other.pem", now - timedelta(days=1), timedelta(days=90), cn="hub-0002"
    )
    results = await home.check(signing=f'cert_file = "{foreign}"')
    assert failures(results)["certificate: signing"][0] == (
        f"{foreign} is issued to 'hub-0002', not to this hub ('hub-0001')"
    )
    fresh = _client_cert(
        home, home.root / "signing.pem", now - timedelta(days=1), timedelta(days=90)
    )
    results = await home.check(signing=f'cert_file = "{fresh}"')
    assert results["certificate: signing"].outcome is Outcome.PASS
    assert failures(results) == {}


async def test_another_hubs_certificate(home: Home, foreign_pki: DevPki) -> None:
    """A certificate that is not the key's: provision again."""
    results = await home.check(cert_file=str(foreign_pki.hub_cert))
    found = failures(results)
    assert found["certificate: TLS client"] == (
        f"{foreign_pki.hub_cert} is not the certificate of {home.root / 'tls' / 'hub.key'}",
        "homehub provision (it creates the hub's keys and certificate)",
    )


async def test_state_dir_is_a_file(home: Home) -> None:
    """A file where the state directory should be (root writes anywhere, so a permission
    cannot make a directory unwritable in this test: a file in its place can)."""
    blocker = home.root / "not-a-dir"
    blocker.write_text("")
    results = await home.check(state_dir=str(blocker), outbox=str(blocker / "outbox.db"))
    fix = (
        f"move the file at {blocker} aside, then: systemd-tmpfiles --create, or mkdir -m 700"
        f" {blocker} && chown homehub: {blocker}"
    )
    assert failures(results) == {
        "state directory": (
            f"{blocker} is not a directory (the daemon waits, retrying every 5 s)",
            fix,
        )
    }
    assert exit_code(list(results.values())) == 1


async def test_outbox_directory_missing(home: Home) -> None:
    outbox_dir = home.root / "elsewhere"
    results = await home.check(outbox=str(outbox_dir / "outbox.db"))
    assert failures(results) == {
        "outbox directory": (
            f"{outbox_dir} does not exist",
            f"systemd-tmpfiles --create, or mkdir -m 700 {outbox_dir} && chown homehub:"
            f" {outbox_dir}",
        )
    }


async def test_bluez_adapter_powered_off(home: Home) -> None:
    await bluez_call(
        home.bluez.control,
        "/org/bluez/hci0",
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        ["org.bluez.Adapter1", "Powered", Variant("b", False)],
    )
    results = await home.check()
    assert failures(results) == {
        "BLE adapter": (
            "adapter hci0 is powered off",
            "rfkill unblock bluetooth; bluetoothctl power on",
        )
    }
    assert exit_code(list(results.values())) == 1


async def test_bluez_adapter_absent(home: Home) -> None:
    await home.bluez.call("/org/bluez", "org.bluez.Mock", "RemoveAdapter", "s", ["hci0"])
    results = await home.check()
    (finding, fix), *_ = failures(results).values()
    assert set(failures(results)) == {"BLE adapter"}
    assert finding.startswith("BlueZ adapter hci0 failed: org.freedesktop.DBus.Error.")
    assert fix == BLUETOOTH_FIX


async def test_bumble_transport_that_does_not_open(home: Home) -> None:
    """A Bumble controller that is not there; while the daemon runs, not tried at all."""
    port = _closed_port()
    results = await home.check(stack=f"bumble:tcp-client:127.0.0.1:{port}")
    assert failures(results) == {
        "BLE adapter": (
            "the Bumble transport (tcp-client) did not open (ConnectionRefusedError)",
            "check [ble] stack and that the controller (USB dongle, virtual radio) is there",
        )
    }
    with hold(home.state):
        results = await home.check(stack=f"bumble:tcp-client:127.0.0.1:{port}")
    assert results["BLE adapter"].outcome is Outcome.SKIP
    assert results["BLE adapter"].finding == "the daemon holds the Bumble transport (tcp-client)"
    assert results["daemon"].finding.startswith(f"running (pid {os.getpid()})")
    assert failures(results) == {}


async def test_ntp_not_synchronized(home: Home) -> None:
    await bluez_call(
        home.timedated,
        "/org/freedesktop/timedate1",
        TIMEDATE,
        "SetNTP",
        "bb",
        [False, False],
        destination=TIMEDATE,
    )
    results = await home.check()
    assert failures(results) == {
        "clock synchronized": ("not synchronized: NTP is off", "timedatectl set-ntp true")
    }


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_broker_not_listening(home: Home) -> None:
    port = _closed_port()
    results = await home.check(port=str(port))
    assert failures(results) == {
        "platform reachable (TLS)": (
            f"localhost:{port} refused the connection: no broker listens there",
            "check [mqtt] host and port; ask the platform whether its broker is up",
        )
    }


async def test_broker_of_another_ca(home: Home, foreign_pki: DevPki) -> None:
    """The configured CA did not issue the broker's certificate."""
    results = await home.check(ca_file=str(foreign_pki.ca_cert))
    finding, fix = failures(results)["platform reachable (TLS)"]
    assert set(failures(results)) == {"platform reachable (TLS)"}
    assert finding == (
        f"localhost:{home.broker_port}: the broker's certificate is not accepted"
        " (self-signed certificate in certificate chain)"
    )
    assert fix == (
        f"{foreign_pki.ca_cert} must hold the CA that issued the broker's certificate;"
        " check the clock"
    )


async def test_client_certificate_refused(home: Home, foreign_pki: DevPki) -> None:
    """The hub's certificate from a CA the broker does not trust."""
    key = _private_key(home.root / "foreign" / "hub.key", foreign_pki.hub_key)
    now = datetime.now(UTC)
    cert = _client_cert(home, home.root / "foreign" / "hub.pem", now, timedelta(365), foreign_pki)
    results = await home.check(cert_file=str(cert), key_file=str(key))
    finding, fix = failures(results)["platform reachable (TLS)"]
    assert set(failures(results)) == {"platform reachable (TLS)"}
    # TLS 1.3: the broker's alert, or (when the probe's bytes reach a closed socket first)
    # the connection closed without an MQTT answer.
    assert finding in (
        f"localhost:{home.broker_port}: the broker refused the hub's client certificate"
        " (TLSV1_ALERT_UNKNOWN_CA)",
        f"localhost:{home.broker_port}: the broker refused the hub's client certificate"
        " (it closed the connection after the TLS handshake without an MQTT answer)",
    )
    assert fix == "the platform must trust this hub's certificate: rotate or re-provision it"


async def test_unit_loosened(home: Home, tmp_path: Path) -> None:
    """A unit without its sandboxing rates far above 1.5."""
    loose = tmp_path / "homehub.service"
    kept = [
        line
        for line in REPO_UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "System", "Capability"))
    ]
    loose.write_text("\n".join(kept) + "\n")
    results = {r.check: r for r in await run_checks(home.config(), unit=loose)}
    finding, fix = failures(results)["unit hardening"]
    assert set(failures(results)) == {"unit hardening"}
    assert finding.startswith(f"{loose} (given) is rated ")
    assert float(finding.split("is rated ")[1].split(",")[0]) > 1.5
    assert fix.startswith("reinstall the shipped unit (systemd/homehub.service)")


# ---------------------------------------------------------------------------
# The modem
# ---------------------------------------------------------------------------


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[EmulatedModem]:
    with EmulatedModem(tmp_path) as emulated:
        yield emulated


def _at(modem: EmulatedModem) -> str:
    return f'backend = "at"\nport = "{modem.path}"'


async def test_modem_passes(home: Home, modem: EmulatedModem) -> None:
    results = await home.check(modem=_at(modem))
    assert failures(results) == {}
    assert results["modem and SIM"].finding == f"RM500Q-GL: SIM ready (read on {modem.path})"
    assert results["registration"].finding == (
        f"registered (home network, HomeHub Test, LTE; read on {modem.path})"
    )


async def test_modem_without_sim(home: Home, modem: EmulatedModem) -> None:
    modem.state.set_sim(None)
    results = await home.check(modem=_at(modem))
    assert failures(results) == {
        "modem and SIM": (
            f"no SIM in the module (read on {modem.path})",
            "switch the hub off and insert the SIM",
        )
    }
    assert results["registration"].outcome is Outcome.SKIP


async def test_modem_registration_denied(home: Home, modem: EmulatedModem) -> None:
    modem.state.set_registration(Registration.DENIED)
    results = await home.check(modem=_at(modem))
    assert failures(results) == {
        "registration": (
            f"the network denied registration (read on {modem.path})",
            "ask the operator: the SIM's subscription is inactive or barred",
        )
    }


async def test_modem_port_missing(home: Home, tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB9"
    results = await home.check(modem=f'backend = "at"\nport = "{port}"')
    assert failures(results) == {
        "modem and SIM": (
            f"{port} is not there",
            "check the module is plugged in and powered (lsusb; dmesg)",
        )
    }


async def test_modem_while_the_daemon_runs(home: Home, modem: EmulatedModem) -> None:
    """The daemon holds the port: its last figures are judged, and said to be its."""
    as_of = datetime(2026, 12, 2, 18, 30, tzinfo=UTC)
    state_file.write(
        home.state / state_file.STATE_FILE,
        ModemStatus(model="RM500Q-GL", sim="ready", registration="searching"),
        as_of,
    )
    with hold(home.state):
        results = await home.check(modem=_at(modem))
    assert failures(results) == {
        "registration": (
            f"searching for a network (the daemon's figures of {as_of.isoformat()})",
            "check the antenna and the coverage where the hub stands",
        )
    }


# ---------------------------------------------------------------------------
# Without the virtual home
# ---------------------------------------------------------------------------


def test_bad_configuration_skips_what_needs_it(tmp_path: Path) -> None:
    """One failure with the loader's message; the unit is still rated; without
    systemd-analyze that check is skipped with the reason."""
    bad = tmp_path / "homehub.toml"
    bad.write_text('[hub]\nid = "Hub_1"\n')
    done = _homehub("doctor", "--config", str(bad), "--json", "--unit", str(REPO_UNIT))
    rows = json.loads(done.stdout)
    assert done.returncode == 1
    assert rows[0]["check"] == "configuration"
    assert rows[0]["result"] == "fail"
    assert rows[0]["finding"].startswith(f"{bad}:2: key 'hub.id': ")
    assert {r["check"]: r["result"] for r in rows[1:]} == {
        "daemon": "skip",
        "key files": "skip",
        "certificates": "skip",
        "key provider": "skip",
        "directories": "skip",
        "disk space": "skip",
        "BLE adapter": "skip",
        "modem and SIM": "skip",
        "clock synchronized": "skip",
        "platform reachable (TLS)": "skip",
        "unit hardening": "pass",
    }
    empty = tmp_path / "bin"
    empty.mkdir()
    done = _homehub("doctor", "--config", str(bad), "--json", env={"PATH": str(empty)})
    assert done.returncode == 1
    assert json.loads(done.stdout)[-1] == {
        "check": "unit hardening",
        "result": "skip",
        "finding": "systemd-analyze is not installed (package systemd)",
        "fix": None,
    }


# ---------------------------------------------------------------------------
# A PKCS#11 token, ModemManager, small and read-only filesystems
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not keyhub.softhsm_available(), reason="softhsm2 missing")
async def test_pkcs11_token(home: Home) -> None:
    """The token opens but holds no signing key; then it does; then the PIN is wrong."""
    token = keyhub.init_token(home.root / "keys")
    settings = (
        f'provider = "pkcs11"\npkcs11_module = "{keyhub.SOFTHSM_MODULE}"\n'
        f'pkcs11_token = "{token.label}"\npkcs11_pin_file = "{token.pin_file}"'
    )
    results = await home.check(keys=settings)
    assert failures(results) == {
        "key provider (pkcs11)": (
            "the token holds no signing key",
            "homehub provision (it creates the hub's keys and certificate)",
        )
    }
    assert results["key file: signing key"].outcome is Outcome.SKIP
    assert results["key file: token PIN"].outcome is Outcome.PASS

    provider = keys.open_provider(config.load(home.config(keys=settings)))
    try:
        assert isinstance(provider, Pkcs11KeyProvider)
        provider.generate_signing_key()
    finally:
        provider.close()
    results = await home.check(keys=settings)
    assert failures(results) == {}
    assert results["key provider (pkcs11)"].finding == (
        f"token {token.label!r} opened, no KEK yet (made at the daemon's first start),"
        " signing key present"
    )

    token.pin_file.write_text("wrong-pin\n")
    results = await home.check(keys=settings)
    finding, fix = failures(results)["key provider (pkcs11)"]
    assert set(failures(results)) == {"key provider (pkcs11)"}
    assert "cannot log in: PKCS#11 PinIncorrect" in finding
    assert fix == (
        "check [keys] pkcs11_module, pkcs11_token and the PIN file (softhsm2-util"
        " --show-slots, or the TPM's tools)"
    )


async def test_modemmanager(home: Home, tmp_path: Path) -> None:
    """Not running: says so; running with a PIN-locked SIM: the SIM check fails with where
    the PIN goes."""
    results = await home.check(modem='backend = "modemmanager"')
    finding, fix = failures(results)["modem and SIM"]
    assert set(failures(results)) == {"modem and SIM"}
    assert finding == "modem: ModemManager find_modem: ModemManager is not running"
    assert fix == "systemctl start ModemManager; mmcli -L lists the modems it sees"

    mm = await ModemManagerMock.start(home.bus_address, tmp_path / "mm-mock.log")
    try:
        await mm.add_modem(
            ModemSpec(
                imei="860000000000025",
                iccid="8988000000000000024",
                state=MmState.LOCKED,
                lock=ModemLock.SIM_PIN,
                registration=RegistrationState.IDLE,
            )
        )
        results = await home.check(modem='backend = "modemmanager"')
    finally:
        await mm.stop()
    assert failures(results) == {
        "modem and SIM": (
            "the SIM asks for its PIN (from ModemManager)",
            "set [modem] pin_file to a file (mode 0600) holding the SIM's PIN",
        )
    }


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a 1 MiB tmpfs (read-only when asked) on a new directory; skipped where this
    user may not mount. Every mount is undone after the test."""
    mounted: list[Path] = []

    def mount(name: str, *, read_only: bool = False) -> Path:
        where = tmp_path / name
        where.mkdir()
        options = "size=1m,mode=0700" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], timeout=10, check=True)


async def test_disk_too_small_for_the_quota(home: Home, tiny_fs: Callable[..., Path]) -> None:
    """The outbox on a 1 MiB filesystem with a 64 MiB quota."""
    small = tiny_fs("small")
    results = await home.check(outbox=str(small / "outbox.db"))
    assert failures(results) == {
        "disk space": (
            f"1 MiB free on the filesystem of {small}; the outbox may grow by 64 MiB to its"
            " quota (64 MiB)",
            f"free space on the filesystem of {small}, or lower [outbox] quota_bytes below"
            f" {1024 * 1024}",
        )
    }


async def test_read_only_state_directory(home: Home, tiny_fs: Callable[..., Path]) -> None:
    """A state directory on a read-only filesystem (what a failing SD card becomes)."""
    state = tiny_fs("ro-state", read_only=True)
    results = await home.check(state_dir=str(state))
    assert failures(results) == {
        "state directory": (
            f"{state} is not writable (Read-only file system; the daemon waits, retrying"
            " every 5 s)",
            f"chown homehub: {state}; chmod 700 {state}; if the filesystem is read-only"
            f" (findmnt -T {state}), remount it read-write or replace the SD card",
        )
    }


async def test_kek_credential_missing(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KEK configured as a systemd credential that no credential store holds; from a shell
    the provider itself cannot be opened (only the unit gets the credential): skipped."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    name = f"homehub-kek-doctor-{os.getpid()}"
    results = await home.check(keys=f'provider = "file"\nkek_credential = "{name}"')
    finding, fix = failures(results)["key file: KEK"]
    assert set(failures(results)) == {"key file: KEK"}
    assert finding.startswith(f"no encrypted credential {name!r} in /etc/credstore.encrypted, ")
    assert fix == (
        f"create it: head -c 32 /dev/urandom | systemd-creds encrypt --name={name}"
        f" --with-key=auto - /etc/credstore.encrypted/{name} (docs/install.md)"
    )
    assert results["key provider (file)"].outcome is Outcome.SKIP


async def test_a_hung_check_is_one_failure(home: Home) -> None:
    """A FIFO where the platform's certificate should be: reading it blocks (as a dead
    filesystem or a hung token would). That check fails at its bound (shortened here to
    1 s); every other check still runs and passes."""
    fifo = home.root / "platform.pem"
    os.mkfifo(fifo)
    checks = [(n, p, 1.0 if n == "certificates" else t) for n, p, t in CHECKS]
    config = home.config(platform=f'cert_file = "{fifo}"')
    try:
        results = {r.check: r for r in await run_checks(config, unit=REPO_UNIT, checks=checks)}
    finally:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked reader go
    assert failures(results) == {
        "certificates": (
            "no answer within 1 s",
            "see docs/doctor.md for what this check asks, and ask it by hand",
        )
    }
    assert results["platform reachable (TLS)"].outcome is Outcome.PASS
    assert results["unit hardening"].outcome is Outcome.PASS
