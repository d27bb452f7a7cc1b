"""The link manager (agent/modem) driven through the emulated modem's states over a real pty.

Every test runs :class:`agent.modem.manager.ModemLink` against
:class:`hil.emulators.modem.EmulatedModem` through pyserial, with one fake monotonic clock
shared by both (the mock edge): the test moves it, calls ``modem.tick()`` and runs rounds
(:func:`settle`); nothing sleeps. The only real waits are the commands the emulator is told
to swallow, bounded by the link's ``timeout_cap_s`` (0.3 s).

Expectations are exact: the phase, the fault, the events, the figures (worked out from the
emulator's defaults: PLMN 001/01 "HomeHub Test", LTE band 3 cell 0x1A2B3C4 TAC 0x1A2B, NR
band 78 cell 0x1A2B3C4D5, -90 dBm / -10 dB / 15 dB / -60 dBm), the recovery rungs taken
and those not taken, counted in the commands the emulator received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
import structlog.testing

from agent.modem.link import (
    Action,
    ActionKind,
    ConnectOutcome,
    EventKind,
    Fault,
    LinkEvent,
    LinkMachine,
    LinkPolicy,
    Observation,
    Phase,
    RungPolicy,
    SimStatus,
    Step,
)
from agent.modem.manager import ModemLink
from agent.modem.serial_port import AtPort
from drivers.modem import ts27007
from drivers.modem.at_codec import RejectReason
from hil.emulators.modem import (
    EmulatedModem,
    ModemState,
    PdpContext,
    Registration,
    Signal,
    SimCard,
    Technology,
)
from tests import phi_canaries

NOW: Final = datetime(2026, 12, 2, 18, 30, 5, tzinfo=UTC)
PIN: Final = "739153"
IMEI: Final = "860000000000017"
ICCID: Final = "8988000000000000016"
IMSI: Final = "001010000000001"
for _name, _value in {"modem PIN": PIN, "modem IMEI": IMEI, "modem ICCID": ICCID}.items():
    phi_canaries.plant(_name, _value)
phi_canaries.plant("modem IMSI", IMSI)

#: Short, round guards so the ladder's schedule can be worked out by hand.
RUNGS: Final = {
    Step.REQUERY: RungPolicy(cooldown_s=30, max_per_hour=10, settle_s=10),
    Step.REREGISTER: RungPolicy(cooldown_s=60, max_per_hour=3, settle_s=30),
    Step.RADIO_CYCLE: RungPolicy(cooldown_s=120, max_per_hour=2, settle_s=30),
    Step.MODEM_RESET: RungPolicy(cooldown_s=600, max_per_hour=1, settle_s=60),
    Step.POWER_CYCLE: RungPolicy(cooldown_s=1200, max_per_hour=1, settle_s=60),
}
POLICY: Final = LinkPolicy(
    rungs=RUNGS,
    registration_grace_s=120,
    no_answer_grace_s=30,
    reenumeration_grace_s=60,
    reset_wait_s=60,
    stopped_poll_s=300,
    poll_interval_s=30,
    stable_s=300,
)
ONLINE_FIGURES: Final[dict[str, Any]] = {
    "manufacturer": "Quectel",
    "model": "RM500Q-GL",
    "revision": "RM500QGLABR11A06M4G",
    "imei": IMEI,
    "sim": "ready",
    "iccid": ICCID,
    "registration": "home",
    "technology": "LTE",
    "operator": "HomeHub Test",
    "mcc": "001",
    "mnc": "01",
    "cell_id": 0x1A2B3C4,
    "tac": 0x1A2B,
    "band": 3,
    "rsrp_dbm": -90,
    "rsrq_db": -10,
    "sinr_db": 15,
    "rssi_dbm": -60,
    "apn": "hub.test",
    "ip_address": "10.45.0.2",
    "network_time": "2026-12-02T18:30:05+00:00",
    "last_recovery": None,
}
CONNECT: Final = "AT+QNETDEVCTL=1,1,1"
RESET: Final = "AT+CFUN=1,1"


def modem_state(**options: Any) -> ModemState:
    """An emulated modem's state, its wall clock (+CCLK, +QLTS) fixed at :data:`NOW`."""
    return ModemState(utc_now=lambda: NOW, **options)


class FakeClock:
    """Monotonic seconds, moved by the test; the emulator and the link share it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """An emulated modem and a link on it, on one fake clock."""

    def __init__(self, modem: EmulatedModem, clock: FakeClock) -> None:
        self.modem = modem
        self.state = modem.state
        self.clock = clock
        self.power_cycles = 0
        self.link: ModemLink = self.make_link()

    def make_link(self, **overrides: Any) -> ModemLink:
        options: dict[str, Any] = {
            "apn": "hub.test",
            "policy": POLICY,
            "clock": self.clock,
            "utc_now": lambda: NOW,
            "timeout_cap_s": 0.3,
        }
        options.update(overrides)
        self.link = ModemLink(str(self.modem.path), **options)
        return self.link

    async def power_cycle(self) -> None:
        """The hook: power off (the port goes), power on (a new port, booting)."""
        self.power_cycles += 1
        self.modem.unplug()
        self.modem.plug()

    async def settle(self, rounds: int = 10) -> list[Action]:
        """Rounds until the machine waits; the actions taken."""
        actions = []
        for _ in range(rounds):
            action = await self.link.step()
            actions.append(action)
            if action.kind is ActionKind.WAIT:
                return actions
        raise AssertionError(f"no wait after {rounds} rounds: {actions}")

    async def run_for(self, seconds: float, every: float = 10.0) -> None:
        """Move the clock in steps of ``every``, ticking the modem and settling the link."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(every)
            self.modem.tick()
            await self.settle()

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = json.loads(self.link.status.to_json())
        return figures

    def kinds(self) -> list[tuple[EventKind, Phase, Fault | None, Step | None]]:
        return [(e.kind, e.phase, e.fault, e.step) for e in self.link.history]

    def steps(self) -> list[tuple[Step, float]]:
        """The rungs taken and when, as seconds since the rig started."""
        return [
            (e.step, e.at - 1000.0)
            for e in self.link.history
            if e.kind is EventKind.RECOVERY_STEP and e.step is not None
        ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., Rig]]:
    """Start an emulated modem in the given state (default: LTE, at home) and a link."""
    modems: list[EmulatedModem] = []
    rigs: list[Rig] = []

    def _start(state: ModemState | None = None, **link: Any) -> Rig:
        state = state or modem_state()
        modem = EmulatedModem(tmp_path, state, clock=clock).start()
        modems.append(modem)
        rig = Rig(modem, clock)
        if link:
            rig.make_link(**link)
        rigs.append(rig)
        return rig

    yield _start
    for rig in rigs:
        rig.link.close()
    for modem in modems:
        modem.stop()


@pytest.fixture
async def online(start: Callable[..., Rig]) -> Rig:
    """LTE at home, brought online."""
    rig = start()
    await rig.settle()
    assert Phase.ONLINE == rig.link.machine.phase
    return rig


# ---------------------------------------------------------------------------
# Bring-up
# ---------------------------------------------------------------------------


class TestBringUp:
    async def test_lte_home(self, start: Callable[..., Rig]) -> None:
        """LTE at home: APN set once, the data call made once, online; exact figures."""
        rig = start()
        actions = await rig.settle()
        assert [ActionKind.SET_APN, ActionKind.CONNECT_DATA, ActionKind.WAIT] == [
            a.kind for a in actions
        ]
        assert Phase.ONLINE == rig.link.machine.phase
        assert rig.link.machine.fault is None
        assert [
            (EventKind.PHASE_CHANGED, Phase.CONNECTING, None, None),
            (EventKind.PHASE_CHANGED, Phase.ONLINE, None, None),
        ] == rig.kinds()
        assert 1 == rig.state.count('AT+CGDCONT=1,"IPV4V6","hub.test"')
        assert 1 == rig.state.count(CONNECT)
        assert ONLINE_FIGURES == rig.figures()
        assert not [c for c in rig.state.commands if c.startswith(("AT+CFUN=", "AT+COPS="))]

    async def test_roaming(self, start: Callable[..., Rig]) -> None:
        """Roaming is registered: online, registration 'roaming'."""
        rig = start(modem_state(registration=Registration.ROAMING))
        await rig.settle()
        assert Phase.ONLINE == rig.link.machine.phase
        assert {**ONLINE_FIGURES, "registration": "roaming"} == rig.figures()

    @pytest.mark.parametrize(
        ("technology", "signal", "nr_signal", "expected"),
        [
            (
                Technology.NR5G_NSA,
                Signal(rsrp_dbm=-95, rsrq_db=-11, sinr_db=12, rssi_dbm=-66),
                Signal(rsrp_dbm=-88, rsrq_db=-9, sinr_db=21),
                {"technology": "NR5G-NSA", "band": 78, "rsrp_dbm": -88, "rsrq_db": -9,
                 "sinr_db": 21, "rssi_dbm": -66},
            ),
            (
                Technology.NR5G_SA,
                Signal(rsrp_dbm=-101, rsrq_db=-12, sinr_db=7, rssi_dbm=-70),
                None,
                {"technology": "NR5G-SA", "band": 78, "rsrp_dbm": -101, "rsrq_db": -12,
                 "sinr_db": 7, "rssi_dbm": None, "cell_id": 0x1A2B3C4D5},
            ),
        ],
    )  # fmt: skip
    async def test_5g_figures(
        self,
        start: Callable[..., Rig],
        technology: Technology,
        signal: Signal,
        nr_signal: Signal | None,
        expected: dict[str, Any],
    ) -> None:
        """NR5G-NSA (the NR leg's signal, the anchor's cell) and NR5G-SA come online."""
        rig = start(modem_state(technology=technology, signal=signal, nr_signal=nr_signal))
        await rig.settle()
        assert Phase.ONLINE == rig.link.machine.phase
        assert {**ONLINE_FIGURES, **expected} == rig.figures()


# ---------------------------------------------------------------------------
# The SIM
# ---------------------------------------------------------------------------


class TestSim:
    async def test_no_sim_stops_and_resumes(self, start: Callable[..., Rig]) -> None:
        """No SIM: stopped with sim_absent, no rung in two hours; a SIM inserted resumes."""
        rig = start(modem_state(sim=None))
        await rig.settle()
        assert (Phase.STOPPED, Fault.SIM_ABSENT) == (rig.link.machine.phase, rig.link.machine.fault)
        assert (EventKind.LINK_STOPPED, Phase.STOPPED, Fault.SIM_ABSENT, None) in rig.kinds()
        assert {"sim": "absent", "iccid": None} == {k: rig.figures()[k] for k in ("sim", "iccid")}
        await rig.run_for(2 * 3600, every=300)
        assert [] == rig.steps()
        assert 0 == rig.state.count(RESET)
        rig.state.set_sim(SimCard())
        await rig.settle()
        assert Phase.ONLINE == rig.link.machine.phase
        assert (EventKind.LINK_RESUMED, Phase.CONNECTING, Fault.SIM_ABSENT, None) in rig.kinds()

    async def test_pin_entered_once(self, start: Callable[..., Rig]) -> None:
        """A PIN-locked SIM with the right PIN configured: entered once, then online; the PIN
        is in no log line."""
        rig = start(modem_state(sim=SimCard(pin=PIN)), pin=lambda: PIN)
        with structlog.testing.capture_logs() as logs:
            actions = await rig.settle()
        assert ActionKind.ENTER_PIN == actions[0].kind
        assert Phase.ONLINE == rig.link.machine.phase
        assert 1 == rig.state.count(f'AT+CPIN="{PIN}"')
        assert PIN not in repr(logs)
        assert IMEI not in repr(logs)
        assert ICCID not in repr(logs)
        assert {"event": "modem_pin_accepted", "log_level": "info"} in logs

    async def test_pin_without_credential(self, start: Callable[..., Rig]) -> None:
        """A PIN-locked SIM and no PIN configured: stopped, nothing entered."""
        rig = start(modem_state(sim=SimCard(pin=PIN)))
        await rig.settle()
        assert (Phase.STOPPED, Fault.SIM_PIN_REQUIRED) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        assert "pin_required" == rig.figures()["sim"]
        assert not [c for c in rig.state.commands if c.startswith("AT+CPIN=")]

    async def test_wrong_pin_tried_once(self, start: Callable[..., Rig]) -> None:
        """A wrong PIN: one attempt (two left on the SIM), stopped with sim_pin_wrong, never
        tried again in two hours, no rung."""
        rig = start(modem_state(sim=SimCard(pin=PIN)), pin=lambda: "000000")
        await rig.settle()
        assert (Phase.STOPPED, Fault.SIM_PIN_WRONG) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        await rig.run_for(2 * 3600, every=300)
        assert 1 == rig.state.count('AT+CPIN="000000"')
        assert 2 == rig.state.pin_attempts_left
        assert [] == rig.steps()
        stops = [k for k in rig.kinds() if k[0] is EventKind.LINK_STOPPED]
        assert [(EventKind.LINK_STOPPED, Phase.STOPPED, Fault.SIM_PIN_WRONG, None)] == stops

    async def test_puk_never_guessed(self, start: Callable[..., Rig]) -> None:
        """A SIM wanting its PUK: stopped, nothing sent to the SIM, even with a PIN."""
        state = modem_state(sim=SimCard(pin=PIN))
        state.require_puk()
        rig = start(state, pin=lambda: PIN)
        await rig.settle()
        await rig.run_for(3600, every=300)
        assert (Phase.STOPPED, Fault.SIM_PUK_REQUIRED) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        assert "puk_required" == rig.figures()["sim"]
        assert not [c for c in rig.state.commands if c.startswith("AT+CPIN=")]
        assert [] == rig.steps()


# ---------------------------------------------------------------------------
# Registration and the ladder
# ---------------------------------------------------------------------------


class TestRegistration:
    async def test_denied_stops(self, start: Callable[..., Rig]) -> None:
        """Registration denied: the hub's APN written once and the radio cycled once (the
        module held another APN), denied again: stopped; no other rung, no reset in two
        hours."""
        rig = start(modem_state(registration=Registration.DENIED))
        await rig.settle()
        assert (Phase.STOPPED, Fault.REGISTRATION_DENIED) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        await rig.run_for(2 * 3600, every=300)
        assert [(Step.RADIO_CYCLE, 0.0)] == rig.steps()
        assert 1 == rig.state.count('AT+CGDCONT=1,"IPV4V6","hub.test"')
        assert 0 == rig.state.count(RESET)
        assert "denied" == rig.figures()["registration"]
        stops = [k for k in rig.kinds() if k[0] is EventKind.LINK_STOPPED]
        assert [(EventKind.LINK_STOPPED, Phase.STOPPED, Fault.REGISTRATION_DENIED, None)] == stops

    async def test_searching_within_grace(self, start: Callable[..., Rig]) -> None:
        """Searching for less than the grace: registering, no fault, no rung."""
        rig = start(modem_state(registration=Registration.SEARCHING))
        await rig.settle()
        await rig.run_for(110)
        assert (Phase.REGISTERING, None) == (rig.link.machine.phase, rig.link.machine.fault)
        assert [] == rig.steps()
        assert {"registration": "searching", "technology": "none", "rsrp_dbm": None} == {
            k: rig.figures()[k] for k in ("registration", "technology", "rsrp_dbm")
        }

    async def test_ladder_climbs_within_its_caps(self, start: Callable[..., Rig]) -> None:
        """Searching for good: the ladder climbs rung by rung, each rung's cool-down and
        hourly cap hold (one modem reset, one power cycle an hour), and it says so when
        every rung is capped."""
        rig = start(modem_state(registration=Registration.SEARCHING))
        rig.make_link(power_cycle=rig.power_cycle)
        await rig.settle()
        await rig.run_for(3600)
        # grace 120 s, then one rung a round once the last one settled: requery (settle
        # 10 s), reregister (30 s), radio cycle (30 s), reset (the port back at 210 s, RDY
        # at 220 s, settle 60 s), power cycle; then every rung left is capped for the hour.
        # grace 120 s, then one rung a round once the last one settled: requery (settle
        # 10 s), reregister (30 s), radio cycle (30 s), reset (the port back at 210 s, RDY
        # at 220 s, settle 60 s), power cycle; then, the top two capped for the hour, the
        # rungs below again within their cool-downs (base · 2^(uses − 1)) and caps.
        assert [
            (Step.REQUERY, 120.0),
            (Step.REREGISTER, 130.0),
            (Step.RADIO_CYCLE, 160.0),
            (Step.MODEM_RESET, 190.0),
            (Step.POWER_CYCLE, 250.0),
            (Step.RADIO_CYCLE, 310.0),  # 160 + 120: its second and last use this hour
            (Step.REREGISTER, 340.0),
            (Step.REQUERY, 370.0),
            (Step.REQUERY, 430.0),  # 370 + 60
            (Step.REREGISTER, 460.0),  # 340 + 120: its third and last use this hour
            (Step.REQUERY, 550.0),  # 430 + 120
            (Step.REQUERY, 790.0),
            (Step.REQUERY, 1270.0),
            (Step.REQUERY, 2230.0),  # the next would be 4150 s
        ] == rig.steps()
        assert (1, 1) == (rig.state.count(RESET), rig.power_cycles)
        assert ["AT+COPS=2", "AT+COPS=0", "AT+CFUN=0", "AT+CFUN=1", RESET] == [
            c for c in rig.state.commands if c.startswith(("AT+COPS=", "AT+CFUN="))
        ][:5]
        assert {"step": "requery", "time": NOW.isoformat()} == rig.figures()["last_recovery"]
        await rig.run_for(3600)
        # A second hour: a second reset and power cycle once the first left the hour, and
        # in any rolling hour no rung more often than its cap.
        assert (2, 2) == (rig.state.count(RESET), rig.power_cycles)
        steps = rig.steps()
        for step, at in steps:
            in_hour = [t for s, t in steps if s is step and at - 3600 < t <= at]
            assert len(in_hour) <= RUNGS[step].max_per_hour, (step, at)

    async def test_registration_back_ends_the_episode(self, start: Callable[..., Rig]) -> None:
        """The network found again mid-ladder: fault cleared, online, no further rung."""
        rig = start(modem_state(registration=Registration.SEARCHING))
        await rig.settle()
        await rig.run_for(150)
        assert [Step.REQUERY, Step.REREGISTER] == [step for step, _ in rig.steps()]
        rig.state.set_registration(Registration.HOME)
        await rig.run_for(600)
        assert (Phase.ONLINE, None) == (rig.link.machine.phase, rig.link.machine.fault)
        assert [Step.REQUERY, Step.REREGISTER] == [step for step, _ in rig.steps()]
        assert (
            EventKind.FAULT_CLEARED,
            Phase.CONNECTING,
            Fault.NOT_REGISTERED,
            None,
        ) in rig.kinds()


# ---------------------------------------------------------------------------
# The data session and the APN
# ---------------------------------------------------------------------------


class TestData:
    async def test_data_call_drops(self, online: Rig) -> None:
        """The network ends the data call: lost, made again at once, online; no rung."""
        online.state.drop_data_call()
        await online.settle()
        assert Phase.ONLINE == online.link.machine.phase
        assert (EventKind.DATA_SESSION_LOST, Phase.ONLINE, None, None) in online.kinds()
        assert 2 == online.state.count(CONNECT)
        assert [] == online.steps()
        assert ONLINE_FIGURES == online.figures()

    @pytest.mark.parametrize("technology", [Technology.LTE, Technology.NR5G_SA])
    async def test_wrong_apn_never_resets(
        self, start: Callable[..., Rig], technology: Technology
    ) -> None:
        """A wrong APN configured: the data call is refused (+CME ERROR 127), stopped with
        wrong_apn; in two hours no rung at all, no modem reset (cap 1 an hour)."""
        rig = start(modem_state(technology=technology))
        rig.make_link(apn="wrong.apn", power_cycle=rig.power_cycle)
        await rig.settle()
        assert (Phase.STOPPED, Fault.WRONG_APN) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        await rig.run_for(2 * 3600, every=60)
        assert 0 == rig.state.count(RESET) <= RUNGS[Step.MODEM_RESET].max_per_hour
        assert 0 == rig.power_cycles
        assert [] == rig.steps()
        assert 1 == rig.state.count(CONNECT)

    async def test_module_holds_a_wrong_apn(self, start: Callable[..., Rig]) -> None:
        """The module holds a wrong APN, so the LTE attach is denied: the hub writes its own
        once, cycles the radio once, and the attach succeeds: online, no reset."""
        rig = start(modem_state(contexts={1: PdpContext("IP", "wrong.apn")}))
        await rig.settle()
        assert (Phase.ONLINE, None) == (rig.link.machine.phase, rig.link.machine.fault)
        assert [(Step.RADIO_CYCLE, 0.0)] == rig.steps()
        assert ["AT+CFUN=0", "AT+CFUN=1"] == [
            c for c in rig.state.commands if c.startswith("AT+CFUN=")
        ]
        resumed = (EventKind.LINK_RESUMED, Phase.CONNECTING, Fault.REGISTRATION_DENIED, None)
        assert resumed in rig.kinds()
        assert ONLINE_FIGURES == {**rig.figures(), "last_recovery": None}

    async def test_configured_wrong_apn_denied_at_attach(self, start: Callable[..., Rig]) -> None:
        """The hub's own APN is the wrong one and the module holds it: denied, stopped at
        once, nothing written, nothing reset in an hour."""
        rig = start(modem_state(contexts={1: PdpContext("IP", "wrong.apn")}))
        rig.make_link(apn="wrong.apn", power_cycle=rig.power_cycle)
        await rig.settle()
        await rig.run_for(3600, every=60)
        assert (Phase.STOPPED, Fault.REGISTRATION_DENIED) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
        )
        assert (0, 0, []) == (rig.state.count(RESET), rig.power_cycles, rig.steps())
        assert not [c for c in rig.state.commands if c.startswith("AT+CGDCONT=")]


# ---------------------------------------------------------------------------
# What the modem sends besides answers, and what it fails to send
# ---------------------------------------------------------------------------


class TestLine:
    async def test_fading(self, online: Rig) -> None:
        """The signal fades: the next round's figures follow; still online, no rung."""
        online.state.set_signal(rsrp_dbm=-118, rsrq_db=-17, sinr_db=-3, rssi_dbm=-95)
        await online.settle()
        expected = {"rsrp_dbm": -118, "rsrq_db": -17, "sinr_db": -3, "rssi_dbm": -95}
        assert {**ONLINE_FIGURES, **expected} == online.figures()
        assert (Phase.ONLINE, []) == (online.link.machine.phase, online.steps())

    async def test_interleaved_urcs_and_garbage(self, online: Rig) -> None:
        """URCs inside answers, line noise and a runaway line: rejected and counted, the
        figures exact, still online."""
        online.state.inject_urc('+QIND: "csq",20,99', interleave=True)
        online.state.inject_urc("+CEREG: 1", interleave=True)
        online.state.inject_bytes(b"\r\n\xff\xfe\x00noise\r\n")
        online.state.inject_overlong_line()
        await online.settle()
        await online.settle()
        assert ONLINE_FIGURES == online.figures()
        assert Phase.ONLINE == online.link.machine.phase
        assert 2 <= online.link.urcs_seen
        rejected = online.link.port.rejected
        assert (1, 1) == (
            rejected[RejectReason.NON_PRINTABLE],
            rejected[RejectReason.LINE_TOO_LONG],
        )

    async def test_swallowed_command_times_out(self, online: Rig) -> None:
        """A query that never answers: its figures unknown this round, the port resyncs with
        'AT', the link stays online; the next round has them again."""
        online.state.swallow('AT+QENG="servingcell"')
        await online.settle()
        assert Phase.ONLINE == online.link.machine.phase
        assert 1 == online.link.port.timeouts
        commands = online.state.commands
        after = commands[len(commands) - commands[::-1].index('AT+QENG="servingcell"') :]
        assert "AT" == after[0]
        cell = ("cell_id", "tac", "band", "rsrp_dbm", "rsrq_db", "sinr_db", "rssi_dbm", "mcc")
        assert dict.fromkeys(cell) == {k: online.figures()[k] for k in cell}
        await online.settle()
        assert ONLINE_FIGURES == online.figures()
        assert [] == online.steps()

    async def test_callers_timeout_nests_outside(self, start: Callable[..., Rig]) -> None:
        """A caller's timeout shorter than the command's own ends the wait; the command is
        abandoned (its late answer drained) and the next one resyncs first."""
        rig = start()
        rig.state.swallow("AT+CSQ")
        async with AtPort(str(rig.modem.path), timeout_cap_s=5.0) as port:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await port.command("AT+CSQ")
            response = await port.command("AT+CSQ")
        assert (("+CSQ: 26,99",), True) == (response.lines, response.ok)
        assert ["AT+CSQ", "AT", "AT+CSQ"] == rig.state.commands[-3:]


# ---------------------------------------------------------------------------
# The port going away
# ---------------------------------------------------------------------------


class TestPort:
    async def test_usb_reenumeration(self, online: Rig) -> None:
        """The module drops off USB and comes back: the port is lost (figures cleared, no
        fault within the grace), reopened, probed again, the data call made again."""
        online.modem.unplug()
        await online.settle()
        assert (Phase.PORT_ABSENT, None) == (online.link.machine.phase, online.link.machine.fault)
        assert {"sim": None, "imei": None, "registration": None} == {
            k: online.figures()[k] for k in ("sim", "imei", "registration")
        }
        online.modem.plug()
        online.clock.advance(10)
        await online.settle()
        assert Phase.ONLINE == online.link.machine.phase
        assert 2 == online.state.count("ATE0")
        assert 2 == online.state.count(CONNECT)
        assert [] == online.steps()
        assert ONLINE_FIGURES == online.figures()

    async def test_port_gone_for_good(self, online: Rig) -> None:
        """A port absent beyond the grace is a fault; without a power-cycle hook nothing
        can be done (no rung); with one, the power cycle brings it back."""
        online.modem.unplug()
        await online.settle()
        await online.run_for(120)
        assert (Phase.PORT_ABSENT, Fault.PORT_ABSENT) == (
            online.link.machine.phase,
            online.link.machine.fault,
        )
        assert [] == online.steps()
        online.make_link(power_cycle=online.power_cycle)
        await online.run_for(120)
        assert [Step.POWER_CYCLE] == [step for step, _ in online.steps()]
        assert (1, Phase.ONLINE) == (online.power_cycles, online.link.machine.phase)

    async def test_modem_reset_reenumerates(self, start: Callable[..., Rig]) -> None:
        """A modem reset (+CFUN=1,1): the port goes, the link waits (resetting, no fault)
        while the fake clock runs the emulator's 20 s reset and 2 s boot, then reopens,
        probes again and is online."""
        rig = start(modem_state(registration=Registration.SEARCHING))
        await rig.settle()
        await rig.run_for(190)
        assert [Step.REQUERY, Step.REREGISTER, Step.RADIO_CYCLE, Step.MODEM_RESET] == [
            step for step, _ in rig.steps()
        ]
        assert (1, 1, False) == (
            rig.state.count(RESET),
            rig.modem.reenumerations,
            rig.link.port.is_open,
        )
        assert Phase.RESETTING == rig.link.machine.phase
        rig.state.set_registration(Registration.HOME)  # the network is back after the reset
        await rig.run_for(20)  # 210 s: the port is back, the module still booting (silent)
        assert (Phase.RESETTING, 2) == (rig.link.machine.phase, rig.modem.generation)
        await rig.run_for(10)  # 220 s: RDY
        assert (Phase.ONLINE, None) == (rig.link.machine.phase, rig.link.machine.fault)
        assert 2 == rig.state.count("ATE0")
        assert {"step": "modem_reset", "time": NOW.isoformat()} == rig.figures()["last_recovery"]
        assert {**ONLINE_FIGURES, "last_recovery": rig.figures()["last_recovery"]} == rig.figures()

    async def test_silent_module(self, start: Callable[..., Rig]) -> None:
        """A module that enumerates but never answers: no answer (a fault after 30 s), then
        only the rungs that can help a hung module: requery, a reset (unanswered), the power
        cycle, which brings it back."""
        rig = start()
        rig.make_link(power_cycle=rig.power_cycle, timeout_cap_s=0.2)
        await rig.settle()
        rig.modem.unplug()
        await rig.settle()  # the port is lost
        assert Phase.PORT_ABSENT == rig.link.machine.phase
        rig.modem.plug(ready=False)  # back on USB, the firmware never comes up
        await rig.run_for(30)
        assert (Phase.NO_ANSWER, None) == (rig.link.machine.phase, rig.link.machine.fault)
        await rig.run_for(90)
        assert [(Step.REQUERY, 40.0), (Step.MODEM_RESET, 50.0), (Step.POWER_CYCLE, 110.0)] == (
            rig.steps()
        )
        await rig.run_for(10)
        assert (Phase.ONLINE, None, 1) == (
            rig.link.machine.phase,
            rig.link.machine.fault,
            rig.power_cycles,
        )


class TestRun:
    async def test_run_until_stopped(self, start: Callable[..., Rig]) -> None:
        """``run`` goes round until online here (an event callback sets the stop), then
        returns promptly."""
        rig = start()
        stop = asyncio.Event()

        def on_event(event: LinkEvent) -> None:
            if event.kind is EventKind.PHASE_CHANGED and event.phase is Phase.ONLINE:
                stop.set()

        rig.make_link(on_event=on_event)
        async with asyncio.timeout(10):
            await rig.link.run(stop)
        assert Phase.ONLINE == rig.link.machine.phase
        assert 1 == rig.state.count(CONNECT)


class TestDataCounters:
    async def test_growth_of_the_counters_is_reported(self, start: Callable[..., Rig]) -> None:
        """+QGDCNT and +QGDNRCNT, both counted: the first round is the baseline, each later
        round reports what they grew by; after the module's reboot (counters back at 0)
        all of the new count is new."""
        grown: list[int] = []
        rig = start(on_data_bytes=grown.append)
        rig.state.add_traffic(5_000, 7_000)  # before the hub: not today's to know
        await rig.settle()
        assert [] == grown
        rig.state.add_traffic(1_000, 2_000)
        rig.state.add_traffic(300, 400, nr=True)
        await rig.link.step()
        assert [3_700] == grown
        await rig.link.step()  # nothing carried: nothing reported
        assert [3_700] == grown
        rig.modem.unplug()
        rig.modem.plug()  # the module reboots: its counters restart at 0
        await rig.settle()
        rig.state.add_traffic(10, 20)
        await rig.settle()
        assert 30 == sum(grown[1:])


# ---------------------------------------------------------------------------
# The ladder's rules, on the machine alone (sans-I/O: no port, the clock passed in)
# ---------------------------------------------------------------------------

SEARCHING: Final = Observation(SimStatus.READY, ts27007.Registration.SEARCHING)
HOME_ONLINE: Final = Observation(
    SimStatus.READY,
    ts27007.Registration.HOME,
    ts27007.Technology.LTE,
    data_up=True,
    has_address=True,
)


def rounds(machine: LinkMachine, observation: Observation, times: range) -> list[float]:
    """Observe at each time; take every rung offered; the times rungs were taken."""
    taken = []
    for now in times:
        machine.observe(observation, float(now))
        action = machine.next_action(float(now))
        if action.kind is ActionKind.RECOVER and action.step is not None:
            machine.recovery_done(action.step, float(now))
            taken.append(float(now))
    return taken


class TestLadderRules:
    def only_requery(self, **policy: Any) -> LinkMachine:
        rungs = {step: RungPolicy(cooldown_s=30, max_per_hour=0, settle_s=0) for step in Step}
        rungs[Step.REQUERY] = RungPolicy(cooldown_s=30, max_per_hour=10, settle_s=10)
        return LinkMachine(LinkPolicy(rungs=rungs, registration_grace_s=120, **policy))

    def test_cooldown_backs_off_and_is_bounded(self) -> None:
        """A rung's cool-down doubles with each consecutive use, up to max_cooldown_s."""
        machine = self.only_requery(max_cooldown_s=200)
        taken = rounds(machine, SEARCHING, range(0, 1200, 10))
        assert [120, 150, 210, 330, 530, 730, 930, 1130] == taken

    def test_hourly_cap(self) -> None:
        """At most max_per_hour uses in any rolling hour; then capped, said once."""
        machine = self.only_requery(backoff_factor=1.0)
        taken = rounds(machine, SEARCHING, range(0, 3720, 10))
        assert [120 + 30 * n for n in range(10)] == taken[:10]
        assert 10 == len(taken)
        capped = [e for e in machine.events() if e.kind is EventKind.RECOVERY_CAPPED]
        assert 1 == len(capped)
        # The first use leaves the hour at 120 + 3600 s: the rung is taken again then.
        assert [3720.0] == rounds(machine, SEARCHING, range(3720, 3730, 10))

    def test_stable_online_resets_the_backoff(self) -> None:
        """Online for stable_s: the next episode's cool-downs start from the base again."""
        machine = self.only_requery(stable_s=300)
        assert [120, 150, 210] == rounds(machine, SEARCHING, range(0, 300, 10))
        rounds(machine, HOME_ONLINE, range(300, 610, 10))
        assert [730, 760] == rounds(machine, SEARCHING, range(610, 770, 10))

    def test_data_session_failures(self) -> None:
        """Connects failing in a row raise data_session after data_failures_before_fault;
        the ladder then alternates with new connects."""
        machine = LinkMachine(LinkPolicy(data_failures_before_fault=2, connect_cooldown_s=20))
        registered = Observation(SimStatus.READY, ts27007.Registration.HOME, ts27007.Technology.LTE)
        machine.observe(registered, 0.0)
        assert ActionKind.CONNECT_DATA == machine.next_action(0.0).kind
        machine.connect_result(ConnectOutcome.FAILED, 0.0)
        assert (ActionKind.WAIT, None) == (machine.next_action(10.0).kind, machine.fault)
        assert ActionKind.CONNECT_DATA == machine.next_action(20.0).kind
        machine.connect_result(ConnectOutcome.FAILED, 20.0)
        assert Fault.DATA_SESSION == machine.fault
        assert Action(ActionKind.RECOVER, step=Step.REQUERY) == machine.next_action(20.0)
        machine.recovery_done(Step.REQUERY, 20.0)
        assert ActionKind.WAIT == machine.next_action(25.0).kind  # the rung settles (10 s)
        assert ActionKind.CONNECT_DATA == machine.next_action(30.0).kind
        machine.connect_result(ConnectOutcome.FAILED, 30.0)
        assert Action(ActionKind.RECOVER, step=Step.REREGISTER) == machine.next_action(30.0)
        machine.recovery_done(Step.REREGISTER, 30.0)
        assert ActionKind.WAIT == machine.next_action(60.0).kind  # reregister settles 60 s
        assert ActionKind.CONNECT_DATA == machine.next_action(90.0).kind
        machine.connect_result(ConnectOutcome.OK, 90.0)
        machine.observe(HOME_ONLINE, 100.0)
        assert (Phase.ONLINE, None) == (machine.phase, machine.fault)

    def test_online_but_no_traffic_climbs_from_the_radio(self) -> None:
        """Registered with a data session, the platform unreachable for unreachable_grace_s:
        no_traffic, a radio cycle first (re-asking the module is pointless), then up the
        ladder, each rung followed by the uplink's full grace to reconnect; reachable again,
        the fault clears; unreachable for less than the grace, nothing is done."""
        machine = LinkMachine(LinkPolicy(unreachable_grace_s=600))
        machine.observe(HOME_ONLINE, 0.0)
        machine.uplink_reachable(False, 0.0)
        for now in (100.0, 599.0):
            machine.observe(HOME_ONLINE, now)
            machine.uplink_reachable(False, now)
            assert (ActionKind.WAIT, None) == (machine.next_action(now).kind, machine.fault)
        machine.uplink_reachable(False, 600.0)
        assert (Phase.ONLINE, Fault.NO_TRAFFIC) == (machine.phase, machine.fault)
        assert Action(ActionKind.RECOVER, step=Step.RADIO_CYCLE) == machine.next_action(600.0)
        machine.recovery_done(Step.RADIO_CYCLE, 600.0)
        machine.observe(HOME_ONLINE, 700.0)
        machine.uplink_reachable(False, 700.0)
        assert Action(ActionKind.WAIT, until=1200.0) == machine.next_action(700.0)
        machine.observe(HOME_ONLINE, 1200.0)
        machine.uplink_reachable(False, 1200.0)
        assert Fault.NO_TRAFFIC == machine.fault
        assert Action(ActionKind.RECOVER, step=Step.MODEM_RESET) == machine.next_action(1200.0)
        machine.recovery_done(Step.MODEM_RESET, 1200.0)
        machine.observe(HOME_ONLINE, 1400.0)
        machine.uplink_reachable(True, 1400.0)
        assert (Phase.ONLINE, None) == (machine.phase, machine.fault)
        kinds = [e.kind for e in machine.events()]
        assert 1 == kinds.count(EventKind.FAULT_RAISED)  # one episode, two rungs
        assert EventKind.FAULT_CLEARED == kinds[-1]

    def test_wrong_pin_not_retried_until_another_sim(self) -> None:
        """A refused PIN is not offered again for that SIM; a SIM inserted after none was
        reported may be given the configured PIN once."""
        machine = LinkMachine(pin_available=True)
        locked = Observation(SimStatus.PIN_REQUIRED)
        machine.observe(locked, 0.0)
        assert ActionKind.ENTER_PIN == machine.next_action(0.0).kind
        machine.pin_result(False, 0.0)
        for now in (10.0, 1000.0, 100_000.0):
            machine.observe(locked, now)
            assert (ActionKind.WAIT, Fault.SIM_PIN_WRONG) == (
                machine.next_action(now).kind,
                machine.fault,
            )
        machine.observe(Observation(SimStatus.ABSENT), 100_010.0)
        machine.observe(locked, 100_020.0)
        assert ActionKind.ENTER_PIN == machine.next_action(100_020.0).kind
