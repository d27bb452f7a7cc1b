"""The modem link manager: :class:`~agent.modem.link.LinkMachine` driven over an
:class:`~agent.modem.serial_port.AtPort`, and the queries behind the technician's figures.

One round (:meth:`ModemLink.step`)::

    port closed? ── open it ── failed ──▶ machine.port_absent
         │                     opened ──▶ "AT" alive? no ──▶ machine.no_answer
         │                                probe: ATE0, +CMEE=1, +CEREG=2, +C5GREG=2, ATI, +CGSN
    URCs: RDY ──▶ probe again, machine.module_restarted
    poll: +CPIN? +QCCID +CEREG? +C5GREG? +COPS? +QENG="servingcell" +CGDCONT? +QNETDEVCTL?
          +CGPADDR=<cid> +QLTS=1 ──▶ figures, machine.observe(Observation)
    act:  machine.next_action(now): enter the PIN, set the APN, start the data call
          (+QNETDEVCTL=1,<cid>,1), or a recovery rung; events logged

The round's ``now`` comes from the injected monotonic ``clock`` (the mock edge: tests hand
the emulator and the manager one fake clock); wall times (``last_recovery.time``) from
``utc_now``. Each command waits at most its own timeout (capped by ``timeout_cap_s``) inside
whatever timeout the caller of :meth:`ModemLink.step` holds; :meth:`ModemLink.run` bounds
each round by :data:`ROUND_TIMEOUT_S`.

A query that times out leaves its figures unknown for this round (the port resynchronises);
a first query (+CPIN?) that times out counts as the module not answering. A reply that does
not parse is logged by command and field (``modem_response_unparsed``), never by content.

The PIN comes from a credential callable, is sent once per credential and module boot, and
is never logged (its command is ``sensitive``); the APN is checked against the APN grammar
(TS 23.003 §9.1) before it can reach the AT port.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Final, TypeVar

from agent.errors import (
    ModemPortLostError,
    ModemTimeoutError,
    ModemTransportError,
    UsageError,
)
from agent.modem.link import (
    Action,
    ActionKind,
    ConnectOutcome,
    EventKind,
    LinkEvent,
    LinkMachine,
    LinkPolicy,
    Observation,
    Phase,
    SimStatus,
    Step,
)
from agent.modem.serial_port import DEFAULT_BAUDRATE, AtPort, AtResponse, FreshLogger
from agent.modem.status import LastRecovery, ModemStatus
from drivers.errors import ModemProtocolError
from drivers.modem import quectel, ts27007
from drivers.modem.at_codec import DEFAULT_TIMEOUT_S, AtCommand, CmeError, UnsolicitedResult
from drivers.modem.ts27007 import (
    AccessTechnology,
    Functionality,
    Registration,
    RegistrationStatus,
    Technology,
)

__all__ = [
    "MAX_HISTORY",
    "MIN_ROUND_INTERVAL_S",
    "ROUND_TIMEOUT_S",
    "Clock",
    "ModemLink",
    "PinSource",
    "PowerCycleHook",
    "read_status",
    "validate_apn",
]

log = FreshLogger("agent.modem")

Clock = Callable[[], float]
UtcClock = Callable[[], dt.datetime]
PinSource = Callable[[], str | None]
"""Returns the SIM PIN from the hub's credential store, or None when none is configured."""
PowerCycleHook = Callable[[], Awaitable[None]]
"""Cuts and restores the module's power (a GPIO line, a USB port's power switch)."""

MIN_ROUND_INTERVAL_S: Final = 1.0
"""Least time between the starts of two rounds of :meth:`ModemLink.run` (host seconds)."""
MAX_HISTORY: Final = 512
"""Link events kept in :attr:`ModemLink.history`."""
ROUND_TIMEOUT_S: Final = 15 * 60.0
"""Outer bound of one round in :meth:`ModemLink.run`: a dozen queries at their own timeouts
(5 s; +COPS 180 s, +CFUN 15 s) plus a rung (+COPS=2 and =0: 360 s) fit inside."""
DEFAULT_CID: Final = 1
"""The hub's PDP context: the one an LTE attach uses (context 1 on Quectel modules)."""
#: APN network identifier: dot-separated labels of letters, digits and hyphens, at most 100
#: octets (TS 23.003 §9.1, RFC 1035 labels).
_APN: Final = re.compile(
    r"(?=.{1,100}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*",
    re.ASCII,
)
#: +CME ERROR codes of a data-session attempt meaning "the APN or subscription is refused"
#: (TS 27.007 §9.2.2: 127 missing or unknown APN, 133 requested service option not
#: subscribed).
_APN_REFUSED: Final = frozenset({127, 133})
_PDP_TYPES: Final = frozenset({"IP", "IPV6", "IPV4V6"})

_A = TypeVar("_A")
_R = TypeVar("_R")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def validate_apn(apn: str) -> str:
    """``apn`` when it is a valid APN network identifier (TS 23.003 §9.1), else UsageError."""
    if not _APN.fullmatch(apn):
        raise UsageError("apn", "not an APN: labels of letters, digits and '-', dot-separated")
    return apn


# ---------------------------------------------------------------------------
# Queries: the figures and the observation, shared by the manager and the CLI
# ---------------------------------------------------------------------------


class _Reader:
    """Asks the module for everything the figures and the link need; keeps the figures."""

    def __init__(self, port: AtPort, cid: int) -> None:
        self.port = port
        self.cid = cid
        self.figures = ModemStatus()

    async def ask(self, command: AtCommand) -> AtResponse | None:
        """The response, or None when it timed out (logged by the port)."""
        try:
            return await self.port.command(command)
        except ModemTimeoutError:
            return None

    async def alive(self) -> bool:
        """The module answers a plain ``AT``."""
        response = await self.ask(AtCommand.of("AT"))
        return response is not None and response.ok

    async def identity(self) -> None:
        """ATI and +CGSN: manufacturer, model, revision, IMEI."""
        ident = await self._lines(ts27007.ati())
        product = _parse(ts27007.ProductIdentification.from_lines, ident) if ident else None
        imei_lines = await self._lines(ts27007.cgsn())
        imei = _parse(ts27007.Imei.from_line, imei_lines[0]) if imei_lines else None
        self.figures = replace(
            self.figures,
            manufacturer=product.manufacturer if product else None,
            model=product.model if product else None,
            revision=product.revision if product else None,
            imei=imei.digits if imei else None,
        )

    async def poll(self) -> Observation | None:
        """Every figure; the observation, or None when the module did not answer +CPIN?."""
        response = await self.ask(ts27007.cpin_query())
        if response is None:
            return None
        sim = _sim_status(response)
        iccid = None
        if sim is not SimStatus.ABSENT:
            lines = await self._lines(quectel.qccid())
            parsed = _parse(quectel.Iccid.from_line, lines[0]) if lines else None
            iccid = parsed.digits if parsed else None
        statuses = []
        for command in (ts27007.cereg_query(), ts27007.c5greg_query()):
            for line in await self._lines(command):
                status = _parse(RegistrationStatus.from_line, line)
                if status is not None:
                    statuses.append(status)
        registration, act = _merge_registration(statuses)
        cops_lines = await self._lines(ts27007.cops_query())
        cops = _parse(ts27007.OperatorSelection.from_line, cops_lines[0]) if cops_lines else None
        cell_lines = await self._lines(quectel.qeng_servingcell())
        cell = _parse(quectel.ServingCell.from_lines, cell_lines) if cell_lines else None
        apn = await self._apn()
        data_up = await self._data_up()
        address = await self._address()
        network_time = await self._network_time()
        technology = _technology(cell, act, registration, cops)
        self.figures = replace(
            self.figures,
            sim=sim.value if sim else None,
            iccid=iccid,
            registration=registration.value,
            technology=technology.value,
            operator=_operator_name(cops, registration),
            apn=apn or None,
            ip_address=address,
            network_time=network_time,
        )
        self.figures = _cell_figures(self.figures, cell)
        return Observation(
            sim=sim,
            registration=registration,
            technology=technology,
            data_up=data_up,
            has_address=address is not None,
            apn=apn,
        )

    async def _lines(self, command: AtCommand) -> list[str]:
        response = await self.ask(command)
        if response is None or not response.ok:
            return []
        return list(response.lines)

    async def _apn(self) -> str | None:
        for line in await self._lines(ts27007.cgdcont_query()):
            context = _parse(ts27007.PdpContext.from_line, line)
            if context is not None and context.cid == self.cid:
                return context.apn
        return None

    async def _data_up(self) -> bool:
        lines = await self._lines(quectel.qnetdevctl_query())
        control = _parse(quectel.NetDevControl.from_line, lines[0]) if lines else None
        return bool(control and control.cid == self.cid and control.connected)

    async def _address(self) -> str | None:
        for line in await self._lines(ts27007.cgpaddr(self.cid)):
            parsed = _parse(ts27007.PdpAddress.from_line, line)
            if parsed is not None and parsed.cid == self.cid and parsed.addresses:
                return str(parsed.ipv4 or parsed.addresses[0])
        return None

    async def _network_time(self) -> str | None:
        lines = await self._lines(quectel.qlts(quectel.QltsMode.CURRENT_UTC))
        if not lines:
            return None
        parsed = _parse(
            lambda line: quectel.NetworkTime.from_line(line, mode=quectel.QltsMode.CURRENT_UTC),
            lines[0],
        )
        return parsed.time.isoformat() if parsed else None


async def _wait_set(event: asyncio.Event) -> object:
    return await event.wait()


async def _wait_urc(port: AtPort) -> object:
    await port.wait_urc()
    return None


def _parse(parser: Callable[[_A], _R], value: _A) -> _R | None:
    """``parser(value)``, or None (logged by command and field) when the reply is malformed."""
    try:
        return parser(value)
    except ModemProtocolError as exc:
        log.info(
            "modem_response_unparsed", command=exc.command, field=exc.field, position=exc.position
        )
        return None


#: +CPIN? read codes (TS 27.007 §8.3) → the hub's SIM status; other locks are errors.
_PIN_CODES: Final = {
    ts27007.SimState.READY: SimStatus.READY,
    ts27007.SimState.SIM_PIN: SimStatus.PIN_REQUIRED,
    ts27007.SimState.SIM_PUK: SimStatus.PUK_REQUIRED,
}
#: +CME ERROR answers to +CPIN? (§9.2.1) → SIM status; SIM busy and others: not known yet.
_PIN_ERRORS: Final = {
    CmeError.SIM_NOT_INSERTED: SimStatus.ABSENT,
    CmeError.SIM_PIN_REQUIRED: SimStatus.PIN_REQUIRED,
    CmeError.SIM_PUK_REQUIRED: SimStatus.PUK_REQUIRED,
    CmeError.SIM_FAILURE: SimStatus.ERROR,
    CmeError.SIM_WRONG: SimStatus.ERROR,
}


def _sim_status(response: AtResponse) -> SimStatus | None:
    if not response.ok:
        cme = response.final.cme_error
        return _PIN_ERRORS.get(cme) if cme is not None else None
    status = _parse(ts27007.PinStatus.from_line, response.lines[0]) if response.lines else None
    if status is None:
        return None
    state = status.state
    return _PIN_CODES.get(state, SimStatus.ERROR) if state is not None else SimStatus.ERROR


#: Which registration wins when the EPS and 5GS domains disagree: registered first.
_REGISTRATION_RANK: Final = (
    Registration.HOME,
    Registration.ROAMING,
    Registration.DENIED,
    Registration.SEARCHING,
    Registration.NOT_REGISTERED,
    Registration.UNKNOWN,
)


def _merge_registration(
    statuses: Iterable[RegistrationStatus],
) -> tuple[Registration, AccessTechnology | None]:
    """The packet domain's registration: on NR5G-SA +CEREG says 0 and +C5GREG 1, on LTE the
    reverse; the better of the two counts."""
    best: RegistrationStatus | None = None
    for status in statuses:
        rank = _REGISTRATION_RANK.index(status.registration)
        if best is None or rank < _REGISTRATION_RANK.index(best.registration):
            best = status
    if best is None:
        return Registration.UNKNOWN, None
    return best.registration, best.access_technology


def _technology(
    cell: quectel.ServingCell | None,
    act: AccessTechnology | None,
    registration: Registration,
    cops: ts27007.OperatorSelection | None,
) -> Technology:
    if cell is not None and cell.technology is not Technology.NONE:
        return cell.technology
    if registration not in (Registration.HOME, Registration.ROAMING):
        return Technology.NONE
    for candidate in (act, cops.access_technology if cops else None):
        if candidate is not None:
            return candidate.technology
    return Technology.NONE


def _operator_name(
    cops: ts27007.OperatorSelection | None, registration: Registration
) -> str | None:
    if cops is None or registration not in (Registration.HOME, Registration.ROAMING):
        return None
    return cops.operator


def _cell_figures(status: ModemStatus, cell: quectel.ServingCell | None) -> ModemStatus:
    """cell_id … rssi_dbm from +QENG (status.py says which cell in NR5G-NSA)."""
    status = replace(
        status,
        mcc=None,
        mnc=None,
        cell_id=None,
        tac=None,
        band=None,
        rsrp_dbm=None,
        rsrq_db=None,
        sinr_db=None,
        rssi_dbm=None,
    )
    if cell is None:
        return status
    lte, nr, wcdma = cell.lte, cell.nr, cell.wcdma
    if lte is not None:
        status = replace(
            status,
            mcc=lte.mcc,
            mnc=lte.mnc,
            cell_id=lte.cell_id,
            tac=lte.tac,
            band=lte.band,
            rsrp_dbm=lte.rsrp_dbm,
            rsrq_db=lte.rsrq_db,
            sinr_db=lte.sinr_db,
            rssi_dbm=lte.rssi_dbm,
        )
    if nr is not None:
        status = replace(
            status, band=nr.band, rsrp_dbm=nr.rsrp_dbm, rsrq_db=nr.rsrq_db, sinr_db=nr.sinr_db
        )
        if lte is None:  # standalone: the NR cell is the serving cell; NR has no RSSI
            status = replace(status, mcc=nr.mcc, mnc=nr.mnc, cell_id=nr.cell_id, tac=nr.tac)
    if wcdma is not None:
        status = replace(status, mcc=wcdma.mcc, mnc=wcdma.mnc, cell_id=wcdma.cell_id)
    return status


async def read_status(
    path: str, *, baudrate: int = DEFAULT_BAUDRATE, timeout_cap_s: float | None = None
) -> ModemStatus:
    """The figures, read once, changing nothing but the session's error format (+CMEE=1):
    no PIN, no APN, no data call, no recovery (``homehub modem status``).

    Raises:
        ModemTransportError: the port cannot be opened, or the module does not answer.
    """
    async with AtPort(path, baudrate=baudrate, timeout_cap_s=timeout_cap_s) as port:
        reader = _Reader(port, DEFAULT_CID)
        if not await reader.alive():
            waited = (
                DEFAULT_TIMEOUT_S
                if timeout_cap_s is None
                else min(DEFAULT_TIMEOUT_S, timeout_cap_s)
            )
            raise ModemTimeoutError(path, "AT", waited)
        await reader.ask(AtCommand.of("AT+CMEE=1"))
        await reader.identity()
        await reader.poll()
        return reader.figures


# ---------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------


class ModemLink:
    """Keeps the hub online over one modem's AT port (module docstring).

    Args:
        path: the AT port (``/dev/ttyUSB2``, a udev symlink).
        apn: the APN for the hub's context (validated; None: keep the module's).
        pin: the SIM PIN credential source (never logged; None: no PIN configured).
        policy: the link's timings and the ladder's guards.
        clock: monotonic seconds (the mock edge: tests pass the emulator's fake clock).
        utc_now: the wall clock for ``last_recovery.time``.
        power_cycle: the power-cycle hook (None: that rung does not apply).
        baudrate: for a UART.
        timeout_cap_s: bound on every command's timeout (tests shorten them).
        cid: the hub's PDP context.
        pdp_type: the context's type when the APN is set.
        on_event: called with each link event as it happens (after it is logged).
        on_data_bytes: called with the bytes the module's data counters grew by since the
            last round (the metered budget, agent/budget.py).
        reachable: whether the platform is reachable over the link now (the uplink is
            connected), asked each round: online but unreachable for
            ``policy.unreachable_grace_s`` climbs the ladder (:attr:`Fault.NO_TRAFFIC`).
    """

    def __init__(
        self,
        path: str,
        *,
        apn: str | None = None,
        pin: PinSource | None = None,
        policy: LinkPolicy | None = None,
        clock: Clock = time.monotonic,
        utc_now: UtcClock = _utc_now,
        power_cycle: PowerCycleHook | None = None,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout_cap_s: float | None = None,
        cid: int = DEFAULT_CID,
        pdp_type: str = "IPV4V6",
        on_event: Callable[[LinkEvent], None] | None = None,
        reachable: Callable[[], bool] | None = None,
        on_data_bytes: Callable[[int], None] | None = None,
    ) -> None:
        if not 1 <= cid <= 16:
            raise UsageError("cid", "1..16")
        if pdp_type not in _PDP_TYPES:
            raise UsageError("pdp_type", "IP, IPV6 or IPV4V6")
        self._apn = None if apn is None else validate_apn(apn)
        self._pin = pin
        self._clock = clock
        self._utc_now = utc_now
        self._power_cycle = power_cycle
        self._cid = cid
        self._pdp_type = pdp_type
        self._on_event = on_event
        self._reachable = reachable
        self._on_data_bytes = on_data_bytes
        self._data_counts: dict[str, int] = {}
        self.port = AtPort(path, baudrate=baudrate, timeout_cap_s=timeout_cap_s)
        self.machine = LinkMachine(
            policy,
            apn=self._apn,
            pin_available=pin is not None,
            power_cycle_available=power_cycle is not None,
        )
        self._reader = _Reader(self.port, cid)
        self._probed = False
        self._last_recovery: LastRecovery | None = None
        self.history: collections.deque[LinkEvent] = collections.deque(maxlen=MAX_HISTORY)
        """The latest link events, oldest first."""
        self.urcs_seen = 0
        """URCs received (their content is not kept)."""

    @property
    def status(self) -> ModemStatus:
        """The figures as of the last round."""
        return replace(self._reader.figures, last_recovery=self._last_recovery)

    def steps_taken(self) -> list[Step]:
        """The recovery rungs in :attr:`history`, in order."""
        return [e.step for e in self.history if e.kind is EventKind.RECOVERY_STEP and e.step]

    def close(self) -> None:
        """Close the port."""
        self.port.close()

    async def step(self) -> Action:
        """One round: open or observe, then the machine's next action (returned, done)."""
        now = self._clock()
        try:
            if not self.port.is_open:
                try:
                    await self.port.open()
                except ModemTransportError:
                    self._forget_figures()
                    self.machine.port_absent(now)
                    return await self._act(now)
                self._probed = False
            self._take_urcs(now)
            if not self._probed:
                if not await self._reader.alive():
                    self.machine.no_answer(now)
                    return await self._act(now)
                await self._probe()
                # A module answers AT only once booted: an RDY read by now came before the
                # probe, which already set the session up again.
                self._take_urcs(now, probed=True)
            observation = await self._reader.poll()
            if observation is None:
                self.machine.no_answer(now)
            else:
                self.machine.observe(observation, now)
                if self._reachable is not None:
                    self.machine.uplink_reachable(self._reachable(), now)
                await self._count_data()
            return await self._act(now)
        except ModemPortLostError:
            self.port.close()
            self._forget_figures()
            self.machine.port_absent(now)
            return await self._act(now)
        finally:
            self._drain_events()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set: each bounded by :data:`ROUND_TIMEOUT_S`, then a wait
        for the machine's next time (at most ``poll_interval_s``, but ``stopped_poll_s`` for
        a stopped link), cut short by a URC or ``stop``; never two rounds closer than
        :data:`MIN_ROUND_INTERVAL_S` (a modem that floods URCs does not turn into a polling
        storm)."""
        name = self.port.path.rsplit("/", 1)[-1]
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(ROUND_TIMEOUT_S):
                    action = await self.step()
            except TimeoutError:
                log.error("modem_round_timeout", timeout_s=ROUND_TIMEOUT_S)
                self.port.close()
                action = Action(ActionKind.WAIT, until=self._clock())
            if action.kind is not ActionKind.WAIT:
                continue
            delay = max(0.0, (action.until or 0.0) - self._clock())
            if self.machine.phase is not Phase.STOPPED:  # stopped: every stopped_poll_s
                delay = min(delay, self.machine.policy.poll_interval_s)
            waits: list[asyncio.Task[object]] = [
                asyncio.create_task(_wait_set(stop), name=f"modem[{name}].stop")
            ]
            if self.port.is_open:
                urc = asyncio.create_task(_wait_urc(self.port), name=f"modem[{name}].urc")
                waits.append(urc)
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
            floor = MIN_ROUND_INTERVAL_S - (time.monotonic() - started)
            if floor > 0 and not stop.is_set():
                await asyncio.sleep(floor)

    # -- inside ----------------------------------------------------------------------------

    async def _probe(self) -> None:
        for text in ("ATE0", "AT+CMEE=1", "AT+CEREG=2", "AT+C5GREG=2"):
            await self._reader.ask(AtCommand.of(text))
        await self._reader.identity()
        self._probed = True

    def _forget_figures(self) -> None:
        self._reader.figures = ModemStatus()
        self._probed = False

    def _take_urcs(self, now: float, *, probed: bool = False) -> None:
        urcs: Sequence[UnsolicitedResult] = self.port.take_urcs()
        self.urcs_seen += len(urcs)
        if any(urc.prefix is None and urc.text == "RDY" for urc in urcs):
            log.info("modem_restarted")
            self.machine.module_restarted(now)
            self._probed = probed

    async def _act(self, now: float) -> Action:
        self._drain_events()
        action = self.machine.next_action(now)
        if action.kind is ActionKind.ENTER_PIN:
            await self._enter_pin(now)
        elif action.kind is ActionKind.SET_APN:
            await self._set_apn(now)
        elif action.kind is ActionKind.CONNECT_DATA:
            await self._connect(now)
        elif action.kind is ActionKind.RECOVER and action.step is not None:
            await self._recover(action.step, now)
        self._drain_events()
        return action

    async def _enter_pin(self, now: float) -> None:
        pin = self._pin() if self._pin is not None else None
        if pin is None:
            self.machine.set_credentials(pin_available=False)
            return
        try:
            command = ts27007.cpin_enter(pin)
        except UsageError:
            log.error("modem_pin_malformed")  # the credential is not 4-8 digits: never sent
            self.machine.pin_result(False, now)
            return
        response = await self._reader.ask(command)
        if response is None:
            self.machine.pin_result(None, now)
        elif response.ok:
            log.info("modem_pin_accepted")
            self.machine.pin_result(True, now)
        elif response.final.cme_error is CmeError.INCORRECT_PASSWORD:
            log.error("modem_pin_rejected")
            self.machine.pin_result(False, now)
        else:
            self.machine.pin_result(None, now)

    async def _set_apn(self, now: float) -> None:
        assert self._apn is not None
        command = AtCommand.of(f'AT+CGDCONT={self._cid},"{self._pdp_type}","{self._apn}"')
        response = await self._reader.ask(command)
        accepted = response is not None and response.ok
        log.info("modem_apn_set", accepted=accepted, cid=self._cid)
        self.machine.apn_result(accepted, now)

    async def _connect(self, now: float) -> None:
        command = quectel.qnetdevctl_set(quectel.NetDevOperation.CONNECT, self._cid, urc=True)
        response = await self._reader.ask(command)
        if response is not None and response.ok:
            outcome = ConnectOutcome.OK
        elif response is not None and response.final.code in _APN_REFUSED:
            outcome = ConnectOutcome.WRONG_APN
        else:
            outcome = ConnectOutcome.FAILED
        log.info(
            "modem_data_call",
            outcome=outcome.value,
            cme_error=response.final.code if response is not None else None,
        )
        self.machine.connect_result(outcome, now)

    async def _count_data(self) -> None:
        """Read the module's data counters (+QGDCNT, and +QGDNRCNT where the module has
        one) and report what they grew by since the last round to ``on_data_bytes``. A
        counter that went down was reset by a boot: all of it is new. The first reading is
        the baseline (what came before the hub started is not today's to know)."""
        if self._on_data_bytes is None:
            return
        grown = 0
        for key, command, prefix in (
            ("lte", quectel.qgdcnt(), "+QGDCNT"),
            ("nr", quectel.qgdnrcnt(), "+QGDNRCNT"),
        ):
            response = await self._reader.ask(command)
            if response is None or not response.ok:
                continue  # no such counter on this module, or no answer this round
            line = next((x for x in response.lines if x.startswith(prefix)), None)
            if line is None:
                continue
            try:
                count = quectel.DataCounter.from_line(line, prefix).total_bytes
            except ModemProtocolError as exc:
                log.warning("modem_response_unparsed", command=prefix, field=exc.field)
                continue
            last = self._data_counts.get(key)
            self._data_counts[key] = count
            if last is not None:
                grown += count - last if count >= last else count
        if grown:
            self._on_data_bytes(grown)

    async def _recover(self, step: Step, now: float) -> None:
        commands: tuple[AtCommand, ...] = ()
        if step is Step.REREGISTER:
            cops = ts27007.COPS_TIMEOUT_S
            commands = (
                AtCommand.of("AT+COPS=2", timeout_s=cops),
                AtCommand.of("AT+COPS=0", timeout_s=cops),
            )
        elif step is Step.RADIO_CYCLE:
            commands = (
                ts27007.cfun_set(Functionality.MINIMUM),
                ts27007.cfun_set(Functionality.FULL),
            )
        elif step is Step.MODEM_RESET:
            commands = (ts27007.cfun_set(Functionality.FULL, reset=True),)
        for command in commands:
            if not self.port.is_open:
                break
            try:
                await self._reader.ask(command)
            except ModemTransportError:
                break  # the port went with the reset; the next rounds see it back
        if step is Step.POWER_CYCLE:
            self.port.close()
            assert self._power_cycle is not None
            await self._power_cycle()
        if step in (Step.MODEM_RESET, Step.POWER_CYCLE):
            self.port.close()  # the module re-enumerates: open the new port when it is back
            self._forget_figures()
        self._last_recovery = LastRecovery(step.value, self._utc_now().isoformat())
        self.machine.recovery_done(step, now)

    def _drain_events(self) -> None:
        for event in self.machine.events():
            self.history.append(event)
            fields: dict[str, object] = {"phase": event.phase.value}
            if event.fault is not None:
                fields["fault"] = event.fault.value
            if event.step is not None:
                fields["step"] = event.step.value
            if event.kind is EventKind.LINK_STOPPED and event.fault is not None:
                fields["advice"] = event.fault.advice
                log.error(event.kind.value, **fields)
            elif event.kind in (EventKind.FAULT_RAISED, EventKind.RECOVERY_CAPPED):
                log.warning(event.kind.value, **fields)
            else:
                log.info(event.kind.value, **fields)
            if self._on_event is not None:
                self._on_event(event)
