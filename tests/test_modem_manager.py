"""The modem through ModemManager (agent/modem/modemmanager.py): the sans-I/O mapping of
ModemManager's properties, and the client against python-dbusmock's ``modemmanager``
template on a private D-Bus system bus (tests/dbus_modemmanager.py)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

from agent.errors import (
    LocalError,
    ModemAbsentError,
    ModemManagerCallError,
    ModemManagerTimeoutError,
    ModemManagerUnavailableError,
    ModemPortHeldError,
    TransportError,
    UsageError,
)
from agent.modem.modemmanager import (
    BEARER_INTERFACE,
    MODEM_3GPP_INTERFACE,
    MODEM_INTERFACE,
    SIGNAL_INTERFACE,
    SIM_INTERFACE,
    SIMPLE_INTERFACE,
    AccessTechnology,
    ModemLock,
    ModemManagerSnapshot,
    ModemState,
    PortType,
    RegistrationState,
    StateFailedReason,
    check_at_port,
    held_ports,
    open_modemmanager,
    port_held_by_modemmanager,
    registration_of,
    sim_status_of,
    snapshot_from_properties,
    split_operator_code,
    technology_of,
)
from agent.modem.status import KEYS, ModemStatus
from tests import phi_canaries
from tests.dbus_bluez import PrivateBus, start_private_bus
from tests.dbus_modemmanager import (
    BEARER_PATH,
    BearerSpec,
    ModemManagerMock,
    ModemSpec,
)

IMEI: Final = "867530000000421"
ICCID: Final = "8949000000000000428"
phi_canaries.plant("modemmanager IMEI", IMEI)
phi_canaries.plant("modemmanager ICCID", ICCID)

LTE_SIGNAL: Final = {"rsrp": -97.0, "rsrq": -11.5, "snr": 13.2, "rssi": -68.0}
NR_SIGNAL: Final = {"rsrp": -88.0, "rsrq": -10.0, "snr": 21.5}

A: Final = AccessTechnology


def spec(**changes: Any) -> ModemSpec:
    """The default modem (RM520N, LTE, home, connected) with ``changes``."""
    values: dict[str, Any] = {"imei": IMEI, "iccid": ICCID, "lte": dict(LTE_SIGNAL)}
    values.update(changes)
    return ModemSpec(**values)


# ---------------------------------------------------------------------------
# Sans-I/O: tables and mapping
# ---------------------------------------------------------------------------


class TestTables:
    @pytest.mark.parametrize(
        ("bits", "expected"),
        [
            (0, "none"),
            (A.LTE, "LTE"),
            (A.LTE_CAT_M, "LTE"),
            (A.LTE | A.NR5G, "NR5G-NSA"),
            (A.NR5G, "NR5G-SA"),
            (A.UMTS | A.HSPA_PLUS, "WCDMA"),
            (A.GSM | A.EDGE, "GSM"),
            (A.GPRS, "GSM"),
            (A.POTS, None),
            (A.ONE_X_RTT | A.EVDOA, None),
        ],
    )
    def test_access_technologies(self, bits: int, expected: str | None) -> None:
        """The AccessTechnologies bitmask maps to the hub's technology, best radio first."""
        tech = technology_of(bits)
        assert expected == (tech.value if tech is not None else None)

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            (RegistrationState.IDLE, "not_registered"),
            (RegistrationState.HOME, "home"),
            (RegistrationState.SEARCHING, "searching"),
            (RegistrationState.DENIED, "denied"),
            (RegistrationState.UNKNOWN, "unknown"),
            (RegistrationState.ROAMING, "roaming"),
            (RegistrationState.HOME_SMS_ONLY, "home"),
            (RegistrationState.ROAMING_SMS_ONLY, "roaming"),
            (RegistrationState.EMERGENCY_ONLY, "not_registered"),
            (RegistrationState.HOME_CSFB_NOT_PREFERRED, "home"),
            (RegistrationState.ROAMING_CSFB_NOT_PREFERRED, "roaming"),
            (RegistrationState.ATTACHED_RLOS, "not_registered"),
            (99, "unknown"),
        ],
    )
    def test_registration(self, state: int, expected: str) -> None:
        """Every MMModem3gppRegistrationState has its registration; a new one is unknown."""
        assert expected == registration_of(state).value

    @pytest.mark.parametrize(
        ("state", "reason", "lock", "sim", "expected"),
        [
            (ModemState.REGISTERED, 0, ModemLock.NONE, "/sim/0", "ready"),
            (ModemState.DISABLED, 0, ModemLock.NONE, "/sim/0", "ready"),
            (ModemState.LOCKED, 0, ModemLock.SIM_PIN, "/sim/0", "pin_required"),
            (ModemState.LOCKED, 0, ModemLock.SIM_PUK, "/sim/0", "puk_required"),
            (ModemState.LOCKED, 0, ModemLock.PH_NET_PIN, "/sim/0", "error"),
            (ModemState.REGISTERED, 0, ModemLock.SIM_PIN2, "/sim/0", "ready"),
            (ModemState.FAILED, StateFailedReason.SIM_MISSING, None, "/", "absent"),
            (ModemState.FAILED, StateFailedReason.ESIM_WITHOUT_PROFILES, None, "/", "absent"),
            (ModemState.FAILED, StateFailedReason.SIM_ERROR, None, "/sim/0", "error"),
            (ModemState.FAILED, StateFailedReason.UNKNOWN, None, "/sim/0", None),
            (ModemState.ENABLED, 0, ModemLock.NONE, "/", "absent"),
            (ModemState.INITIALIZING, 0, ModemLock.UNKNOWN, "/sim/0", None),
            (ModemState.LOCKED, 0, ModemLock.UNKNOWN, "/sim/0", None),
        ],
    )
    def test_sim_status(
        self, state: int, reason: int, lock: int | None, sim: str, expected: str | None
    ) -> None:
        """State, failure reason, lock and SIM path give the SIM figure."""
        status = sim_status_of(state, reason, lock, sim)
        assert expected == (status.value if status is not None else None)

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("26201", ("262", "01")),
            ("310410", ("310", "410")),
            ("00101", ("001", "01")),
            ("2620", (None, None)),
            ("2620１", (None, None)),
            ("26201x", (None, None)),
            ("", (None, None)),
            (None, (None, None)),
        ],
    )
    def test_operator_code(self, code: str | None, expected: tuple[str | None, ...]) -> None:
        """MCC and MNC split from the operator code; the MNC keeps its leading zero."""
        assert expected == split_operator_code(code)

    def test_held_ports(self) -> None:
        """Ports of every used type are held; ignored, unknown and malformed are not."""
        ports: list[Any] = [
            ["ttyUSB0", PortType.QCDM],
            ["ttyUSB1", PortType.GPS],
            ["ttyUSB2", PortType.AT],
            ["ttyUSB3", PortType.IGNORED],
            ["ttyUSB4", PortType.UNKNOWN],
            ["ttyUSB5", 77],
            ["ttyUSB6"],
            ["wwan0", PortType.NET],
        ]
        assert frozenset({"ttyUSB0", "ttyUSB1", "ttyUSB2", "wwan0"}) == held_ports(ports)


def _lte_modem(**modem: Any) -> dict[str, dict[str, Any]]:
    return {
        MODEM_INTERFACE: {
            "State": int(ModemState.CONNECTED),
            "AccessTechnologies": int(A.LTE),
            "Sim": "/sim/0",
            "UnlockRequired": int(ModemLock.NONE),
            **modem,
        },
        MODEM_3GPP_INTERFACE: {"RegistrationState": 1, "OperatorCode": "26201"},
        SIGNAL_INTERFACE: {"Rate": 30, "Lte": dict(LTE_SIGNAL), "Nr5g": dict(NR_SIGNAL)},
    }


class TestSnapshotMapping:
    def test_nsa_signal_is_the_nr_legs_rssi_the_anchors(self) -> None:
        """In NR5G-NSA, RSRP/RSRQ/SINR come from Nr5g and RSSI from the LTE anchor."""
        snap = snapshot_from_properties(_lte_modem(AccessTechnologies=int(A.LTE | A.NR5G)))
        assert ("NR5G-NSA", -88.0, -10.0, 21.5, -68.0) == (
            snap.technology,
            snap.rsrp_dbm,
            snap.rsrq_db,
            snap.sinr_db,
            snap.rssi_dbm,
        )

    @pytest.mark.parametrize(
        ("bits", "signal", "expected"),
        [
            (A.UMTS | A.HSPA, {"Umts": {"rssi": -75.0}, "Lte": dict(LTE_SIGNAL)}, -75.0),
            (A.EDGE, {"Gsm": {"rssi": -81.0}, "Lte": dict(LTE_SIGNAL)}, -81.0),
            (0, {"Lte": dict(LTE_SIGNAL)}, None),
        ],
    )
    def test_rssi_only_before_lte(
        self, bits: int, signal: dict[str, Any], expected: float | None
    ) -> None:
        """WCDMA and GSM report RSSI from their own dict, no RSRP; off-network nothing."""
        interfaces = _lte_modem(AccessTechnologies=int(bits))
        interfaces[SIGNAL_INTERFACE] = signal
        snap = snapshot_from_properties(interfaces)
        assert (expected, None, None) == (snap.rssi_dbm, snap.rsrp_dbm, snap.sinr_db)

    def test_implausible_and_hostile_values_are_unknown(self) -> None:
        """Out-of-range or non-finite signal, control characters, over-long text and a bad
        address are unknown, not passed on."""
        interfaces = _lte_modem(
            Manufacturer="Quectel\x1b[2J",
            Model="M" * 65,
            EquipmentIdentifier="86753000000042X",
            SignalQuality=[180, True],
        )
        interfaces[SIGNAL_INTERFACE]["Lte"] = {
            "rsrp": -1000.0,
            "rsrq": float("nan"),
            "snr": True,
            "rssi": "x",
        }
        interfaces[MODEM_3GPP_INTERFACE]["OperatorName"] = "Evil\nNet"
        bearer = {
            "Connected": True,
            "Ip4Config": {"address": "10.0.0.300"},
            "Properties": {"apn": "a" * 200},
        }
        snap = snapshot_from_properties(interfaces, {"SimIdentifier": "89490"}, [bearer])
        assert (
            ModemManagerSnapshot(
                sim="ready",
                registration="home",
                technology="LTE",
                mcc="262",
                mnc="01",
                state=ModemState.CONNECTED,
                signal_rate_s=30,
                bearer_connected=True,
            )
            == snap
        )

    def test_identifiers_stay_out_of_repr(self) -> None:
        """IMEI and ICCID are in the snapshot but not in its repr."""
        snap = snapshot_from_properties(
            _lte_modem(EquipmentIdentifier=IMEI), {"SimIdentifier": ICCID + "F"}
        )
        assert (IMEI, ICCID) == (snap.imei, snap.iccid)
        assert IMEI not in repr(snap)
        assert ICCID not in repr(snap)

    def test_figures_are_modem_status_keys(self) -> None:
        """The snapshot's figures are ModemStatus keys and build one 1:1."""
        snap = snapshot_from_properties(_lte_modem(EquipmentIdentifier=IMEI))
        figures = snap.figures()
        assert set(KEYS) - {"last_recovery"} == set(figures)
        status = ModemStatus(**figures)
        assert ("LTE", "home", -97.0, IMEI) == (
            status.technology,
            status.registration,
            status.rsrp_dbm,
            status.imei,
        )


# ---------------------------------------------------------------------------
# Over D-Bus, against the modemmanager template
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system_bus() -> Iterator[PrivateBus]:
    """One private system-flavoured ``dbus-daemon`` for the module's tests."""
    bus = start_private_bus()
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
async def mm(
    system_bus: PrivateBus, request: pytest.FixtureRequest
) -> AsyncIterator[ModemManagerMock]:
    """python-dbusmock's modemmanager template on the private bus, without a modem."""
    logfile = phi_canaries.output_path(f"{request.node.nodeid} mm-mock")
    mock = await ModemManagerMock.start(system_bus.address, logfile)
    try:
        yield mock
    finally:
        await mock.stop()


async def snapshot_of(mm: ModemManagerMock, modem: ModemSpec) -> ModemManagerSnapshot:
    await mm.add_modem(modem)
    async with open_modemmanager(mm.bus_address) as client:
        return await client.snapshot()


class TestSnapshot:
    async def test_lte_registered_home(self, mm: ModemManagerMock) -> None:
        """An LTE modem registered at home, connected: every figure, exactly."""
        with capture_logs() as logs:
            snap = await snapshot_of(mm, spec())
        assert (
            ModemManagerSnapshot(
                manufacturer="Quectel",
                model="RM520N-GL",
                revision="RM520NGLAAR03A03M4G",
                imei=IMEI,
                sim="ready",
                iccid=ICCID,
                registration="home",
                technology="LTE",
                operator="Telekom.de",
                mcc="262",
                mnc="01",
                rsrp_dbm=-97.0,
                rsrq_db=-11.5,
                sinr_db=13.2,
                rssi_dbm=-68.0,
                apn="internet.m2m",
                ip_address="10.64.12.7",
                state=ModemState.CONNECTED,
                signal_quality_percent=71,
                signal_rate_s=30,
                bearer_connected=True,
                ports=frozenset({"cdc-wdm0", "ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3", "wwan0"}),
            )
            == snap
        )
        assert [{"event": "modemmanager_modem_found", "modems": 1, "modem": 8}] == [
            {k: v for k, v in line.items() if k != "log_level"} for line in logs
        ]

    async def test_roaming(self, mm: ModemManagerMock) -> None:
        """Roaming on a foreign network with a three-digit MNC."""
        snap = await snapshot_of(
            mm,
            spec(
                registration=RegistrationState.ROAMING,
                operator_code="310410",
                operator_name="AT&T",
            ),
        )
        assert ("roaming", "AT&T", "310", "410") == (
            snap.registration,
            snap.operator,
            snap.mcc,
            snap.mnc,
        )

    async def test_searching(self, mm: ModemManagerMock) -> None:
        """Searching: no technology, no signal figures, no bearer."""
        snap = await snapshot_of(
            mm,
            spec(
                state=ModemState.SEARCHING,
                registration=RegistrationState.SEARCHING,
                access_technologies=0,
                operator_code="",
                operator_name="",
                bearer=None,
            ),
        )
        assert ("searching", "none", "ready", None, None, None, None) == (
            snap.registration,
            snap.technology,
            snap.sim,
            snap.rsrp_dbm,
            snap.operator,
            snap.mcc,
            snap.bearer_connected,
        )
        assert ModemState.SEARCHING == snap.state

    async def test_denied(self, mm: ModemManagerMock) -> None:
        """Registration denied by the network."""
        snap = await snapshot_of(
            mm,
            spec(
                state=ModemState.ENABLED,
                registration=RegistrationState.DENIED,
                access_technologies=0,
                bearer=BearerSpec(connected=False),
            ),
        )
        assert ("denied", "none", False, None, "internet.m2m") == (
            snap.registration,
            snap.technology,
            snap.bearer_connected,
            snap.ip_address,
            snap.apn,
        )

    async def test_sim_missing(self, mm: ModemManagerMock) -> None:
        """No SIM: the modem failed (SIM missing), no ICCID, not registered."""
        snap = await snapshot_of(
            mm,
            spec(
                state=ModemState.FAILED,
                failed_reason=StateFailedReason.SIM_MISSING,
                sim=False,
                registration=RegistrationState.IDLE,
                access_technologies=0,
                bearer=None,
            ),
        )
        assert ("absent", None, "not_registered", ModemState.FAILED) == (
            snap.sim,
            snap.iccid,
            snap.registration,
            snap.state,
        )

    @pytest.mark.parametrize(
        ("lock", "expected"),
        [(ModemLock.SIM_PIN, "pin_required"), (ModemLock.SIM_PUK, "puk_required")],
    )
    async def test_sim_locked(self, mm: ModemManagerMock, lock: ModemLock, expected: str) -> None:
        """A locked modem needs the SIM PIN, or the PUK."""
        snap = await snapshot_of(
            mm,
            spec(
                state=ModemState.LOCKED,
                lock=lock,
                registration=RegistrationState.IDLE,
                access_technologies=0,
                bearer=None,
            ),
        )
        assert (expected, ModemState.LOCKED) == (snap.sim, snap.state)

    async def test_nr5g_sa(self, mm: ModemManagerMock) -> None:
        """NR5G-SA: the Nr5g figures; no RSSI (NR reports none)."""
        snap = await snapshot_of(mm, spec(access_technologies=A.NR5G, lte={}, nr5g=dict(NR_SIGNAL)))
        assert ("NR5G-SA", -88.0, -10.0, 21.5, None) == (
            snap.technology,
            snap.rsrp_dbm,
            snap.rsrq_db,
            snap.sinr_db,
            snap.rssi_dbm,
        )

    async def test_enable_signal(self, mm: ModemManagerMock) -> None:
        """Signal.Setup(rate) is called and the rate is read back."""
        await mm.add_modem(spec(signal_rate=0))
        async with open_modemmanager(mm.bus_address) as client:
            assert 0 == (await client.snapshot()).signal_rate_s
            await client.enable_signal(10)
            assert 10 == (await client.snapshot()).signal_rate_s
            with pytest.raises(UsageError):
                await client.enable_signal(-1)
        assert [[10]] == await mm.method_calls(mm.modem_path, "Setup")


class TestActions:
    async def test_reset(self, mm: ModemManagerMock) -> None:
        """reset() calls Modem.Reset once."""
        await mm.add_modem(spec())
        async with open_modemmanager(mm.bus_address) as client:
            await client.reset()
        assert [[]] == await mm.method_calls(mm.modem_path, "Reset")

    async def test_reconnect_with_bearer(self, mm: ModemManagerMock) -> None:
        """reconnect() disconnects and connects the modem's bearer, which ends connected."""
        await mm.add_modem(spec())
        with capture_logs() as logs:
            async with open_modemmanager(mm.bus_address) as client:
                await client.reconnect()
                snap = await client.snapshot()
        assert [[]] == await mm.method_calls(BEARER_PATH, "Disconnect")
        assert [[]] == await mm.method_calls(BEARER_PATH, "Connect")
        assert [] == await mm.method_calls(mm.modem_path, "Connect")
        assert snap.bearer_connected is True
        assert IMEI not in repr(logs)
        assert ICCID not in repr(logs)
        assert "internet.m2m" not in repr(logs)

    async def test_reconnect_without_bearer(self, mm: ModemManagerMock) -> None:
        """Without a bearer: Simple.Connect with the APN given; none given is refused."""
        await mm.add_modem(spec(bearer=None))
        async with open_modemmanager(mm.bus_address) as client:
            with pytest.raises(UsageError) as refused:
                await client.reconnect()
            assert "apn" == refused.value.argument
            await client.reconnect(apn="internet.m2m")
        assert [[{"apn": "internet.m2m"}]] == await mm.method_calls(mm.modem_path, "Connect")

    async def test_reconnect_refused(self, mm: ModemManagerMock) -> None:
        """ModemManager refusing the connection is a typed error with its D-Bus name."""
        await mm.add_modem(spec())
        error = "org.freedesktop.ModemManager1.Error.MobileEquipment.GprsServiceOptionNotSubscribed"
        await mm.fail_method(BEARER_PATH, BEARER_INTERFACE, "Connect", "", error)
        async with open_modemmanager(mm.bus_address) as client:
            with pytest.raises(ModemManagerCallError) as refused:
                await client.reconnect()
        assert (error, "Bearer.Connect") == (refused.value.dbus_error, refused.value.operation)

    async def test_reset_never_answered(self, mm: ModemManagerMock) -> None:
        """A call ModemManager never answers ends at its timeout, typed; so does a snapshot
        whose outer bound is shorter than its calls'."""
        await mm.add_modem(spec())
        async with open_modemmanager(mm.bus_address) as client:
            mm.pause()
            try:
                started = time.monotonic()
                with pytest.raises(ModemManagerTimeoutError) as reset:
                    await client.reset(timeout_s=0.3)
                with pytest.raises(ModemManagerTimeoutError) as snap:
                    await client.snapshot(timeout_s=0.3)
                elapsed = time.monotonic() - started
            finally:
                mm.resume()
        assert ("Modem.Reset", 0.3) == (reset.value.operation, reset.value.timeout_s)
        assert ("snapshot", 0.3) == (snap.value.operation, snap.value.timeout_s)
        assert isinstance(reset.value, TimeoutError)
        assert 0.6 <= elapsed < 3.0


class TestAbsent:
    async def test_modemmanager_not_running(self, system_bus: PrivateBus) -> None:
        """No owner of ModemManager's name: the typed transport error, at once."""
        started = time.monotonic()
        with pytest.raises(ModemManagerUnavailableError) as absent:
            async with open_modemmanager(system_bus.address):
                pass
        assert time.monotonic() - started < 2.0
        assert isinstance(absent.value, TransportError)
        assert absent.value.retryable

    async def test_no_dbus(self, tmp_path: Path) -> None:
        """No bus at the address: the same typed error."""
        with pytest.raises(ModemManagerUnavailableError) as absent:
            async with open_modemmanager(f"unix:path={tmp_path}/nothing"):
                pass
        assert "connect_bus" == absent.value.operation

    async def test_no_modem(self, mm: ModemManagerMock) -> None:
        """ModemManager without a modem: a local error, not retried."""
        with pytest.raises(ModemAbsentError) as absent:
            async with open_modemmanager(mm.bus_address):
                pass
        assert 0 == absent.value.modems
        assert isinstance(absent.value, LocalError)
        assert not absent.value.retryable


class TestPortHeld:
    async def test_ports(self, mm: ModemManagerMock, tmp_path: Path) -> None:
        """AT and GPS ports are held, an ignored or unlisted one is not; a by-id symlink is
        followed to its tty."""
        ports = [("ttyUSB1", PortType.GPS), ("ttyUSB2", PortType.AT), ("ttyUSB3", 9)]
        await mm.add_modem(spec(ports=ports, device=str(tmp_path / "nowhere")))
        by_id = tmp_path / "usb-Quectel_RM520N-GL_0123abcd-if02-port0"
        by_id.symlink_to("/dev/ttyUSB2")
        held = {
            port: await port_held_by_modemmanager(
                port, bus_address=mm.bus_address, sysfs_root=tmp_path
            )
            for port in ("/dev/ttyUSB1", "/dev/ttyUSB2", "/dev/ttyUSB3", "/dev/ttyACM0")
        }
        assert {
            "/dev/ttyUSB1": True,
            "/dev/ttyUSB2": True,
            "/dev/ttyUSB3": False,
            "/dev/ttyACM0": False,
        } == held
        assert await port_held_by_modemmanager(
            str(by_id), bus_address=mm.bus_address, sysfs_root=tmp_path
        )

    async def test_unlisted_port_of_the_managed_device(
        self, mm: ModemManagerMock, tmp_path: Path
    ) -> None:
        """A tty ModemManager does not list, on the USB device it manages, is held too (it
        is probed again after every re-enumeration)."""
        device = tmp_path / "devices" / "usb2" / "2-1"
        tty = device / "2-1:1.5" / "ttyUSB5" / "tty" / "ttyUSB5"
        tty.mkdir(parents=True)
        (tmp_path / "class" / "tty").mkdir(parents=True)
        (tmp_path / "class" / "tty" / "ttyUSB5").symlink_to(tty)
        await mm.add_modem(spec(device=str(device)))
        assert await port_held_by_modemmanager(
            "/dev/ttyUSB5", bus_address=mm.bus_address, sysfs_root=tmp_path
        )
        assert not await port_held_by_modemmanager(
            "/dev/ttyUSB9", bus_address=mm.bus_address, sysfs_root=tmp_path
        )

    async def test_check_says_so_with_the_fix(self, mm: ModemManagerMock, tmp_path: Path) -> None:
        """check_at_port refuses a held port with the fix, naming the resolved tty only."""
        await mm.add_modem(spec())
        by_id = tmp_path / "usb-Quectel_RM520N-GL_0123abcd-if02-port0"
        by_id.symlink_to("/dev/ttyUSB2")
        with pytest.raises(ModemPortHeldError) as held:
            await check_at_port(str(by_id), bus_address=mm.bus_address, sysfs_root=tmp_path)
        assert ("/dev/ttyUSB2", "ModemManager") == (held.value.port, held.value.holder)
        assert (
            'ModemManager holds /dev/ttyUSB2: set [modem] backend = "modemmanager", or stop'
            " ModemManager (systemctl disable --now ModemManager) to use the AT port"
        ) == str(held.value)
        assert not held.value.retryable
        await check_at_port("/dev/ttyUSB9", bus_address=mm.bus_address, sysfs_root=tmp_path)

    async def test_no_modemmanager_holds_nothing(self, system_bus: PrivateBus) -> None:
        """Without ModemManager (or without D-Bus) no port is held."""
        assert not await port_held_by_modemmanager("/dev/ttyUSB2", bus_address=system_bus.address)
        assert not await port_held_by_modemmanager(
            "/dev/ttyUSB2", bus_address="unix:path=/nonexistent"
        )
        await check_at_port("/dev/ttyUSB2", bus_address=system_bus.address)


class TestTheHubDoesNotFight:
    """The hub's own users of the check: ``homehub modem status`` and the daemon's link."""

    @pytest.mark.usefixtures("restore_logging")
    async def test_cli_and_daemon_leave_a_held_port_alone(
        self,
        mm: ModemManagerMock,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """ModemManager holds the module's AT port (the emulator's pty): the technician's
        command exits 2 with the fix, the daemon's link logs it and sends nothing; neither
        writes one byte to the port."""
        import asyncio

        from agent.cli import main
        from agent.daemon import _port_free
        from hil.emulators.modem import EmulatedModem

        with EmulatedModem(tmp_path) as emulated:
            resolved = await asyncio.to_thread(os.path.realpath, emulated.path)
            tty = resolved.rsplit("/", 1)[-1]  # /dev/pts/N: "N", as ModemManager would list it
            await mm.add_modem(spec(ports=[(tty, PortType.AT)], device=str(tmp_path / "none")))
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mm.bus_address)
            # The daemon's check first: the CLI below configures logging for its process
            # (caching loggers), which a daemon logger first used after it would keep.
            with capture_logs() as logs:
                assert not await _port_free(str(emulated.path))
            assert ["modem_port_held", "modem_port_not_used"] == [e["event"] for e in logs]
            code = await asyncio.to_thread(main, ["modem", "status", "--port", str(emulated.path)])
            assert 2 == code
            assert capsys.readouterr().err.endswith(
                'set [modem] backend = "modemmanager", or stop ModemManager'
                " (systemctl disable --now ModemManager) to use the AT port\n"
            )
            assert [] == list(emulated.state.commands)


def test_interfaces_named_as_modemmanager() -> None:
    """The interface names are ModemManager's (a typo would only fail against a real one)."""
    assert [
        "org.freedesktop.ModemManager1.Modem",
        "org.freedesktop.ModemManager1.Modem.Modem3gpp",
        "org.freedesktop.ModemManager1.Modem.Signal",
        "org.freedesktop.ModemManager1.Modem.Simple",
        "org.freedesktop.ModemManager1.Sim",
        "org.freedesktop.ModemManager1.Bearer",
    ] == [
        MODEM_INTERFACE,
        MODEM_3GPP_INTERFACE,
        SIGNAL_INTERFACE,
        SIMPLE_INTERFACE,
        SIM_INTERFACE,
        BEARER_INTERFACE,
    ]


@pytest.mark.timeout(120)
async def test_the_daemon_reports_modemmanagers_figures(
    mm: ModemManagerMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dev_pki: Any,
    broker: Any,
) -> None:
    """``[modem] backend = "modemmanager"``: the daemon reads ModemManager's figures (and asks
    it to poll the signal), and its signed status carries the link's health."""
    import asyncio

    from hil.platform_console import PlatformConsole
    from tests.platform_hub import running_hub, write_hub_config

    await mm.add_modem(spec())
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mm.bus_address)
    path = write_hub_config(tmp_path, dev_pki, broker.port)
    path.write_text(path.read_text() + '\n[modem]\nbackend = "modemmanager"\n')
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port) as console:
        async with asyncio.timeout(30):
            await console.subscribed.wait()
        async with running_hub(path) as hub:
            async with asyncio.timeout(30):
                await console.wait_for(lambda m: m.kind == "status")  # connected, subscribed
                await hub.modem_changed.wait()  # ModemManager's figures were read
                seen = len(console.messages)
                await console.ask(dev_pki.hub_id, "report_status")
                status = await console.wait_for(
                    lambda m: m.kind == "status" and m.body["state"] == "online", after=seen
                )
    assert {
        "registration": "home",
        "technology": "LTE",
        "band": None,
        "rsrp_dbm": -97,
        "rsrq_db": -11.5,
        "sinr_db": 13.2,
        "rssi_dbm": -68,
        "last_recovery": None,
    } == status.body["modem"]
    assert 1 <= len(await mm.method_calls(mm.modem_path, "Setup"))


async def test_the_daemon_asks_modemmanager_to_recover_a_link_that_carries_nothing(
    mm: ModemManagerMock, tmp_path: Path
) -> None:
    """ModemManager says all is well but the platform is unreachable: the AT path's machine
    (no_traffic, grace and cool-downs shortened: the clock edge) picks the rungs, taken as
    ModemManager's own actions: a reconnect through the bearer, then a Reset."""
    import dataclasses

    from agent.config import ModemConfig
    from agent.daemon import Hub
    from agent.modem.link import LinkMachine, LinkPolicy, RungPolicy, Step
    from agent.modem.modemmanager import open_modemmanager
    from tests.example_config import example_config

    await mm.add_modem(spec())
    cfg = example_config(tmp_path)
    hub = Hub(dataclasses.replace(cfg, modem=ModemConfig(backend="modemmanager")))
    quick = {step: RungPolicy(cooldown_s=0, max_per_hour=10, settle_s=0) for step in Step}
    machine = LinkMachine(LinkPolicy(rungs=quick, unreachable_grace_s=0))
    async with open_modemmanager(mm.bus_address) as client:
        for _ in range(2):
            await hub._modemmanager_round(client, machine, await client.snapshot())
    assert [[]] == await mm.method_calls(BEARER_PATH, "Disconnect")
    assert [[]] == await mm.method_calls(BEARER_PATH, "Connect")
    assert [[]] == await mm.method_calls(mm.modem_path, "Reset")
