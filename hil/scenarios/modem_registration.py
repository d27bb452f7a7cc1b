"""The 5G modem loses its registration while readings flow: the hub's link manager climbs its
recovery ladder up to a modem reset, the module registers again, and every reading held
meanwhile reaches the platform once.

The hub runs with its modem (``[modem] backend = "at"``): an emulated Quectel RM5xxQ on a
pseudo-terminal (hil/emulators/modem.py, NR5G-SA, at home, the hub's APN served), its AT port
at ``<run>/dev/ttyUSB2``. MQTT runs over loopback here, so the data path is a
:class:`~hil.faults.proxy.LoopbackProxy` in front of mosquitto that lives with the hub's data
call: blackholed until the hub first brought it up, blackholed again when the registration
goes.

As soon as the first reading reached the platform (the cuff's memory still flowing), the
network loses the module: registration "searching" (no cell), its data call dropped by the
network (``+CGEV: NW PDN DEACT``), and at the same instant the proxy blackholes the MQTT path
(a dead radio: nothing forwarded, connections kept silent, a reconnect's TLS handshake never
answered). The cuff takes three measurements during the outage. The module stays lost
through the lower rungs (re-query, re-register with +COPS, radio off and on with +CFUN) until
the hub resets it (``AT+CFUN=1,1``); the network finds it again after that reboot. Once the
emulator is registered and the hub has brought its data call up again, the proxy forwards
again.

The ladder's timings are the product's defaults (agent/modem/link.py ``LinkPolicy``: 180 s
not registered before the fault, then a rung once the last one settled: 10, 60 and 60 s):
``[modem]`` has no key that shortens them, so the reset comes some five minutes into the
outage and the scenario takes about six. Its waits derive their bounds from that policy.

Besides the platform-side checks, the scenario notes: the reset the emulator saw (one
``AT+CFUN=1,1``, one re-enumeration) and the lower rungs' commands; the daemon's modem events
(registration lost with the data session, the ``not_registered`` fault, the rungs in the
ladder's order, the reset, the fault cleared and the link online again); the signed status
messages a platform console collected (the last will ``offline`` while the hub was cut off,
an ``online`` status afterwards whose modem figures say registered at home and a last
recovery ``modem_reset``); the readings taken during the outage held in the outbox until the
link came back; and that no modem identifier (IMEI, ICCID, IMSI) appears in any log.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

from agent.modem.link import LinkPolicy, Step
from hil.emulators.modem import (
    DEFAULT_READY_DELAY_S,
    DEFAULT_RESET_S,
    EmulatedModem,
    ModemState,
    Registration,
    Technology,
)
from hil.emulators.modem_at import DEFAULT_SIM, ModuleIdentity, Network
from hil.faults.proxy import LoopbackProxy, ProxyMode
from hil.platform_console import HubMessage, PlatformConsole
from hil.scenarios.base import HUB_ID, Scenario
from hil.scenarios.checks import scan_logs
from hil.scenarios.devices import Cuff, seen
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

HELD: Final = morning_readings(12, day=21)
DURING: Final = morning_readings(3, first=12, day=21)
"""Measurements taken while the modem is lost: held in the outbox until the link is back."""
APN: Final = "hub.test"
"""The hub's configured APN, the one the emulated network serves."""
RESET_COMMAND: Final = "AT+CFUN=1,1"
LOWER_RUNGS: Final = ("AT+COPS=2", "AT+COPS=0", "AT+CFUN=0", "AT+CFUN=1")
"""What the re-register and radio-cycle rungs send (agent/modem/manager.py)."""
LADDER: Final = (Step.REQUERY, Step.REREGISTER, Step.RADIO_CYCLE, Step.MODEM_RESET)
"""The rungs the hub takes for ``not_registered`` up to the reset, in order (no power-cycle
hook is configured)."""

POLICY: Final = LinkPolicy()
"""The daemon's link policy: the defaults (``[modem]`` configures none of it)."""
TO_RESET_S: Final = POLICY.registration_grace_s + sum(
    POLICY.rungs[step].settle_s for step in LADDER[:-1]
)
"""From the registration lost to the reset, as the ladder schedules it (310 s)."""
RESET_WAIT_S: Final = TO_RESET_S + 2 * POLICY.poll_interval_s + 30.0
"""Bound on the wait for the reset: a round may come up to one poll interval late at the
start of the grace and at the reset's round; the rest is margin for two loaded cores."""
BACK_WAIT_S: Final = (
    DEFAULT_RESET_S + DEFAULT_READY_DELAY_S + POLICY.reset_wait_s + POLICY.poll_interval_s
)
"""Bound on the module registered and the data call up after the reset: the emulator's reboot,
then the link's next round (at most ``poll_interval_s`` after the reset; ``reset_wait_s``
covers one more)."""
STATUS_WAIT_S: Final = 60.0
"""A status after the MQTT connection came back (the uplink's attempt timeout is 25 s)."""
ONLINE: Final = "online"


@dataclass(slots=True)
class _Rig:
    """The scenario's own parts of one run."""

    modem: EmulatedModem
    proxy: LoopbackProxy
    console: PlatformConsole
    moments: dict[str, float] = field(default_factory=dict)
    """Seconds since the run's start of what the drive saw (for the notes' details)."""


_RIGS: Final[weakref.WeakKeyDictionary[Home, _Rig]] = weakref.WeakKeyDictionary()


def modem_state() -> ModemState:
    """An RM500Q on NR5G-SA at home, SIM ready without a PIN, serving :data:`APN`."""
    return ModemState(
        identity=ModuleIdentity(),
        sim=DEFAULT_SIM,
        network=Network(apn=APN),
        technology=Technology.NR5G_SA,
        registration=Registration.HOME,
    )


async def setup(home: Home) -> None:
    """The emulated modem on its pty, the proxy in the MQTT path, a platform console on the
    status topic; the daemon's ``[modem]`` section pointing at the emulator's port."""
    dev = home.run_dir / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    modem = EmulatedModem(dev, modem_state())
    await asyncio.to_thread(modem.start)
    home.parts.push_async_callback(asyncio.to_thread, modem.stop)
    proxy = await home.parts.enter_async_context(LoopbackProxy(home.broker.port))
    await proxy.aset_mode(ProxyMode.BLACKHOLE)  # no data path before the hub's data call
    home.mqtt_port = proxy.port
    console = await home.parts.enter_async_context(
        PlatformConsole.for_dev_pki(home.pki, home.broker.port, client_id="hil-modem-console")
    )
    home.config_overrides["modem"] = {"backend": "at", "port": str(modem.path), "apn": APN}
    _RIGS[home] = _Rig(modem, proxy, console)


# -- what the daemon logged ---------------------------------------------------------------


def _after(events: list[dict[str, Any]], name: str, **fields: str) -> int | None:
    """Index of the first event ``name`` with ``fields`` in ``events``, None if none."""
    for index, event in enumerate(events):
        if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
            return index
    return None


def _link_online(home: Home) -> bool:
    return any(e.get("phase") == ONLINE for e in home.agent_events("modem_link_phase"))


def _modem_events(home: Home) -> list[dict[str, Any]]:
    return [e for e in home.agent_events() if str(e.get("event", "")).startswith("modem_")]


def _statuses(console: PlatformConsole, after: int = 0) -> list[HubMessage]:
    return [m for m in console.messages[after:] if m.kind == "status" and m.hub_id == HUB_ID]


def _figures_ok(message: HubMessage) -> bool:
    modem = message.body.get("modem")
    return (
        message.body.get("state") == ONLINE
        and isinstance(modem, dict)
        and modem.get("registration") == "home"
        and modem.get("last_recovery") == Step.MODEM_RESET.value
    )


# -- the drive ------------------------------------------------------------------------------


async def drive(home: Home) -> None:
    """Lose the registration (and the data path) mid-transfer; hold it lost until the hub
    resets the module; restore once registered with the data call up; note what happened."""
    rig = _RIGS[home]
    state, proxy, console = rig.modem.state, rig.proxy, rig.console
    cuff = home.cuff("cuff")
    await home.until(console.subscribed.is_set, "the platform console's subscription")
    await home.until(lambda: _data_call_up(state), "the hub's first data call")
    await proxy.aset_mode(ProxyMode.PASS)
    await home.until(lambda: _link_online(home), "the hub's modem link online")
    await home.until(lambda: len(home.arrivals) >= 1, "the first reading at the platform")
    statuses_before = len(console.messages)
    async with home.fault("modem registration lost (searching, data call dropped) until reset"):
        state.set_registration(Registration.SEARCHING)  # the network drops the data call too
        await proxy.aset_mode(ProxyMode.BLACKHOLE)  # the data path dies with the radio
        rig.moments["lost"] = home.now()
        arrived_before = len(home.arrivals)  # what the broker had taken still arrives
        for reading in DURING:
            await home.measure("cuff", reading)
        total = len(HELD) + len(DURING)
        await home.until(lambda: cuff.confirmations >= total, "every reading handed to the hub")
        await home.until(
            lambda: len(home.agent_events("measurement_stored")) >= total,
            "every reading committed to the outbox",
        )
        await home.until(lambda: state.counters.resets >= 1, "the hub's modem reset", RESET_WAIT_S)
        rig.moments["reset"] = home.now()
        # The reboot finds the network again (registration is the network's, kept by the
        # emulator across the reset): at home once it has booted.
        state.set_registration(Registration.HOME)
        await home.until(
            lambda: _data_call_up(state),
            "the module registered again with the hub's data call up",
            BACK_WAIT_S,
        )
        rig.moments["back"] = home.now()
        held = await home.fresh_sample()
        during = home.arrivals[arrived_before:]
        # The broker published the hub's last will 1.5 keep-alives (45 s) after it went
        # silent: minutes before the reset, so looked at here, not waited for.
        will_seen = any(
            m.body.get("state") == "offline" for m in _statuses(console, statuses_before)
        )
        await proxy.aset_mode(ProxyMode.PASS)
    status = await _fresh_status(home, rig, len(console.messages))
    await home.until(lambda: _online_after_reset(home), "the modem link online after the reset")
    _note_reset(home, rig)
    _note_events(home)
    _note_status(home, will_seen, status)
    taken_during = {home.scenario.device("cuff").values(r) for r in DURING}
    early = sum(1 for a in during if _values(a) in taken_during)
    arrived_during = len(during)
    home.note(
        "outage readings held",
        held >= len(DURING) and early == 0,
        f"{held} pending in the outbox when the link came back (>= {len(DURING)} taken during "
        f"the outage); {arrived_during} readings already past the proxy arrived during it, "
        f"{early} of those taken during it",
    )
    leaks = scan_logs(home.log_paths(), _modem_canaries())
    home.note(
        "modem identifiers not logged",
        not leaks,
        "IMEI, ICCID, IMSI in no log" if not leaks else "; ".join(leaks),
    )


def _data_call_up(state: ModemState) -> bool:
    """The emulated module runs with the hub's data call (context 1) up: registered, since a
    context is only active while registered."""
    return state.powered and 1 in state.active_contexts


def _values(arrival: Any) -> Any:
    view = seen(arrival.reading)
    return None if view is None else view.values


def _online_after_reset(home: Home) -> bool:
    events = _modem_events(home)
    reset = _after(events, "modem_recovery_step", step=Step.MODEM_RESET.value)
    if reset is None:
        return False
    return _after(events[reset:], "modem_link_phase", phase=ONLINE) is not None


async def _fresh_status(home: Home, rig: _Rig, after: int) -> HubMessage | None:
    """The first ``online`` status after the link came back whose modem figures are the
    recovered link's; the hub sends one after every connection, and on ``report_status``
    (asked once when the first one still carried older figures). None if none came."""
    console = rig.console
    try:
        async with asyncio.timeout(STATUS_WAIT_S):
            first = await console.wait_for(
                lambda m: m.kind == "status" and m.body.get("state") == ONLINE, after=after
            )
            if _figures_ok(first):
                return first
            asked = len(console.messages)
            await home.until(lambda: _online_after_reset(home), "the modem link online again")
            await console.ask(HUB_ID, "report_status")
            return await console.wait_for(
                lambda m: m.kind == "status" and m.body.get("state") == ONLINE, after=asked
            )
    except TimeoutError:
        statuses = _statuses(console, after)
        return statuses[-1] if statuses else None


def _note_reset(home: Home, rig: _Rig) -> None:
    state = rig.modem.state
    resets = state.count(RESET_COMMAND)
    lower = {command: state.count(command) for command in LOWER_RUNGS}
    counters = state.counters
    ok = (
        resets == 1
        and counters.resets == 1
        and rig.modem.reenumerations == 1
        and all(n >= 1 for n in lower.values())
    )
    lost, reset, back = (rig.moments.get(k) for k in ("lost", "reset", "back"))
    timing = ""
    if lost is not None and reset is not None and back is not None:
        timing = (
            f"; reset {reset - lost:.0f} s after the registration was lost (the ladder's "
            f"schedule: {TO_RESET_S:.0f} s), registered with the data call up {back - reset:.0f}"
            f" s after it: data path down {back - lost:.0f} s"
        )
    home.note(
        "modem reset",
        ok,
        f"emulator saw {resets} {RESET_COMMAND} ({counters.resets} resets, "
        f"{rig.modem.reenumerations} re-enumerations, {counters.boots} boots), lower rungs "
        + ", ".join(f"{c} x{n}" for c, n in lower.items())
        + timing,
    )


def _note_events(home: Home) -> None:
    events = _modem_events(home)
    lost = _after(events, "modem_data_session_lost")
    fault = _after(events, "modem_link_fault", fault="not_registered")
    steps = [str(e.get("step")) for e in events if e.get("event") == "modem_recovery_step"]
    reset = _after(events, "modem_recovery_step", step=Step.MODEM_RESET.value)
    cleared = _after(events, "modem_link_fault_cleared", fault="not_registered")
    online = None
    if cleared is not None:
        found = _after(events[cleared:], "modem_link_phase", phase=ONLINE)
        online = None if found is None else cleared + found
    restarted = _after(events, "modem_restarted")
    order = [x for x in (lost, fault, reset, cleared, online) if x is not None]
    ok = len(order) == 5 and order == sorted(order) and steps == [step.value for step in LADDER]
    home.note(
        "modem events",
        ok,
        "daemon logged: data session lost, fault not_registered, rungs "
        + (" ".join(steps) or "none")
        + f", fault cleared, online again ({'in order' if ok else 'missing or out of order'}"
        + f"; RDY seen: {'yes' if restarted is not None else 'no'})",
    )


def _note_status(home: Home, will_seen: bool, status: HubMessage | None) -> None:
    modem = status.body.get("modem") if status is not None else None
    shown = (
        "none"
        if not isinstance(modem, dict)
        else f"registration {modem.get('registration')}, technology {modem.get('technology')}, "
        f"last recovery {modem.get('last_recovery')}"
    )
    ok = will_seen and status is not None and _figures_ok(status)
    home.note(
        "signed status",
        ok,
        f"last will 'offline' during the outage: {'seen' if will_seen else 'not seen'}; "
        f"'online' status after it: {shown}",
    )


def _modem_canaries() -> dict[str, str]:
    identity, sim = ModuleIdentity(), DEFAULT_SIM
    return {"modem IMEI": identity.imei, "modem ICCID": sim.iccid, "modem IMSI": sim.imsi}


SCENARIO: Final = Scenario(
    name="modem-loses-registration",
    purpose="the modem lost its network until the hub reset it: every reading still arrives once",
    devices=(Cuff("cuff", HELD),),
    faults=(
        "the 5G modem's registration lost (searching, its data call dropped by the network) "
        "right after the first reading reached the platform, the MQTT path blackholed with it",
        "three measurements taken while the modem is lost",
        f"the module stays lost through the hub's ladder (re-query, +COPS, +CFUN) until it "
        f"resets it ({RESET_COMMAND}); registered again after the reboot, the path restored "
        "once the hub's data call is up",
    ),
    drive=drive,
    receipt_timeout_s=5.0,
    timeout_s=RESET_WAIT_S + BACK_WAIT_S + 120.0,
    setup=setup,
    needs=frozenset({"modem_emulator", "proxy"}),  # a real module cannot be told to lose its cell
)
