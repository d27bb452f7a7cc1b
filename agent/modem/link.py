"""The cellular link's state machine and its recovery ladder, sans-I/O.

:class:`LinkMachine` holds no port and reads no clock: the driver
(:class:`agent.modem.manager.ModemLink`) tells it what it observed and when (``now``, from the
injected monotonic clock: the mock edge tests replace), asks it what to do next
(:meth:`LinkMachine.next_action`), and reports how that went. Events come out of
:meth:`LinkMachine.events`.

Theory of operation
-------------------

Each round the driver reports one of: the port is absent, the module does not answer, or an
:class:`Observation` (SIM, registration, technology, data session, APN). From those facts
alone :meth:`LinkMachine._assess` derives the **phase** and the **fault**, in this order
(the first that applies wins)::

    port absent ──▶ RESETTING while a reset we made may still be under way, else
                    PORT_ABSENT (fault port_absent after reenumeration_grace_s)
    no answer   ──▶ NO_ANSWER (fault no_answer after no_answer_grace_s)
    SIM         ──▶ absent / PUK / error / PIN rejected / PIN wanted but none given:
                    STOPPED (a configuration fault); PIN wanted: SIM (action: enter it)
    registration ─▶ denied: STOPPED (registration_denied; when the module holds another
                    APN than the hub's, which the LTE attach uses, the hub's is written
                    once and the radio cycled once first);
                    searching, not registered, unknown: REGISTERING
                    (fault not_registered after registration_grace_s)
    data        ──▶ the APN refused (+CME ERROR 127/133): STOPPED (wrong_apn);
                    down: CONNECTING (action: connect; fault data_session after
                    data_failures_before_fault failed connects; then, once each rung
                    has settled, one connect before the next rung)
    otherwise   ──▶ ONLINE (fault no_traffic when the driver reports the platform
                    unreachable for unreachable_grace_s: the issue's "registered but no
                    traffic"; its ladder starts at radio_cycle, and after each rung the
                    uplink gets the full grace again before the next)

Configuration faults (:attr:`Fault.configuration`: SIM absent, PIN required without a
credential, PIN wrong, PUK required, SIM error, registration denied, wrong APN) **stop the
ladder**: resetting cannot fix them and a reset loop makes things worse (a SIM locked for
good, a network that bars the module). The machine raises ``modem_link_stopped`` once, with
the fault, and from then on only re-queries (every ``stopped_poll_s``): when the fault
clears (a SIM inserted, the network accepting the module again) the link resumes
(``modem_link_resumed``). A PIN the SIM refused is never sent again (the next refusal would
bring the PUK closer) until a new credential is given or a SIM is inserted after the module
reported none; the PUK is never guessed: a person must enter it.

Recovery ladder (other faults), one rung per round at most::

    requery ─▶ reregister ─▶ radio_cycle ─▶ modem_reset ─▶ power_cycle
    (poll)     (+COPS=2/0)   (+CFUN=0/1)    (+CFUN=1,1)    (the configured hook)

- An episode starts at the ladder's first rung when a fault is raised; each rung taken
  moves the episode one rung up (the top rung repeats). :data:`LADDERS` says which rungs
  apply to which fault (a module that does not answer gets no AT rungs but a reset; an absent
  port only the power cycle); ``power_cycle`` only when a hook is configured.
- After a rung the machine waits ``settle_s`` (the rung's time to work) before deciding
  again.
- Each rung has a cool-down that grows with its consecutive uses (``cooldown_s ·
  backoff_factor^(uses − 1)``, at most ``max_cooldown_s``) and a cap of uses per rolling
  hour (``max_per_hour``). The next rung up in its cool-down is waited for; a rung at its
  cap is skipped for the next one up; when every rung from the episode's up is capped, the
  rungs below are used again (the highest ready one first, each within its own cool-down
  and cap); when every rung is capped the machine says so once (``modem_recovery_capped``)
  and waits for the oldest use to leave the hour.
- The consecutive counts (the backoff) reset once the link has been ONLINE for
  ``stable_s``; the episode ends when the fault clears.

Nothing here logs: events carry the phase, fault and step, never an identifier.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from agent.errors import UsageError
from drivers.modem.ts27007 import Registration, Technology

__all__ = [
    "DEFAULT_RUNGS",
    "LADDERS",
    "Action",
    "ActionKind",
    "ConnectOutcome",
    "EventKind",
    "Fault",
    "LinkEvent",
    "LinkMachine",
    "LinkPolicy",
    "Observation",
    "Phase",
    "Registration",
    "RungPolicy",
    "SimStatus",
    "Step",
    "Technology",
]

HOUR_S: Final = 3600.0
MAX_EVENTS: Final = 256
"""Events kept for :meth:`LinkMachine.events` between two drains (older ones dropped)."""


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


class SimStatus(enum.StrEnum):
    """The SIM as the hub reports it (value: the status figure and the log code)."""

    READY = "ready"
    PIN_REQUIRED = "pin_required"
    PUK_REQUIRED = "puk_required"
    ABSENT = "absent"
    #: A SIM failure (+CME ERROR 13, 15), blocked for good, or a lock other than PIN/PUK.
    ERROR = "error"


class Phase(enum.StrEnum):
    """Where the link is (value: the log code)."""

    PORT_ABSENT = "port_absent"
    RESETTING = "resetting"
    NO_ANSWER = "no_answer"
    SIM = "sim"
    REGISTERING = "registering"
    CONNECTING = "connecting"
    ONLINE = "online"
    STOPPED = "stopped"


class Fault(enum.StrEnum):
    """Why the link is not online (value: the log code)."""

    PORT_ABSENT = "port_absent"
    NO_ANSWER = "no_answer"
    NOT_REGISTERED = "not_registered"
    DATA_SESSION = "data_session"
    #: Registered, the data session up, and yet the platform unreachable this long
    #: (:meth:`LinkMachine.uplink_reachable`): a session that carries nothing.
    NO_TRAFFIC = "no_traffic"
    SIM_ABSENT = "sim_absent"
    SIM_PIN_REQUIRED = "sim_pin_required"
    SIM_PIN_WRONG = "sim_pin_wrong"
    SIM_PUK_REQUIRED = "sim_puk_required"
    SIM_ERROR = "sim_error"
    REGISTRATION_DENIED = "registration_denied"
    WRONG_APN = "wrong_apn"

    @property
    def configuration(self) -> bool:
        """A person must act (configuration, SIM, subscription): the ladder stops."""
        return self in _CONFIGURATION_FAULTS

    @property
    def advice(self) -> str:
        """What to do, in a technician's words (for the stop event)."""
        return _ADVICE.get(self, "")


_CONFIGURATION_FAULTS: Final = frozenset(
    {
        Fault.SIM_ABSENT,
        Fault.SIM_PIN_REQUIRED,
        Fault.SIM_PIN_WRONG,
        Fault.SIM_PUK_REQUIRED,
        Fault.SIM_ERROR,
        Fault.REGISTRATION_DENIED,
        Fault.WRONG_APN,
    }
)
_ADVICE: Final = {
    Fault.SIM_ABSENT: "insert the SIM",
    Fault.SIM_PIN_REQUIRED: "configure the SIM PIN credential, or disable the PIN on the SIM",
    Fault.SIM_PIN_WRONG: "the SIM refused the configured PIN; correct it (not retried)",
    Fault.SIM_PUK_REQUIRED: "the SIM wants its PUK: unblock it by hand (never guessed)",
    Fault.SIM_ERROR: "the SIM failed or is blocked; replace or check it",
    Fault.REGISTRATION_DENIED: (
        "the network refused registration: check the subscription and the APN"
    ),
    Fault.WRONG_APN: "the network refused the APN: correct the configured APN",
}


class Step(enum.StrEnum):
    """A rung of the recovery ladder (value: the log code and ``last_recovery.step``)."""

    REQUERY = "requery"
    REREGISTER = "reregister"
    RADIO_CYCLE = "radio_cycle"
    MODEM_RESET = "modem_reset"
    POWER_CYCLE = "power_cycle"


#: Which rungs apply to which (recoverable) fault, lowest first.
LADDERS: Final[Mapping[Fault, tuple[Step, ...]]] = MappingProxyType(
    {
        Fault.NOT_REGISTERED: tuple(Step),
        Fault.DATA_SESSION: tuple(Step),
        # The module says all is well: re-asking it is pointless; the radio and up.
        Fault.NO_TRAFFIC: (Step.RADIO_CYCLE, Step.MODEM_RESET, Step.POWER_CYCLE),
        # A module that does not answer ignores AT rungs, except perhaps a reset.
        Fault.NO_ANSWER: (Step.REQUERY, Step.MODEM_RESET, Step.POWER_CYCLE),
        Fault.PORT_ABSENT: (Step.POWER_CYCLE,),
    }
)

#: Rungs that take the module away (it comes back through RDY, or a new port).
_RESETTING_STEPS: Final = frozenset({Step.MODEM_RESET, Step.POWER_CYCLE})


class ConnectOutcome(enum.Enum):
    """How a data-session attempt ended."""

    OK = "ok"
    #: The network refused the APN (+CME ERROR 127 "missing or unknown APN", 133 "requested
    #: service option not subscribed"): a configuration fault.
    WRONG_APN = "wrong_apn"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RungPolicy:
    """One rung's guards.

    Attributes:
        cooldown_s: least time between two uses, before backoff.
        max_per_hour: uses allowed in any rolling hour.
        settle_s: time the rung is given to work before the next decision.
    """

    cooldown_s: float
    max_per_hour: int
    settle_s: float

    def __post_init__(self) -> None:
        if self.cooldown_s < 0 or self.settle_s < 0:
            raise UsageError("RungPolicy", "cooldown_s and settle_s must be >= 0")
        if not 0 <= self.max_per_hour <= 3600:
            raise UsageError("RungPolicy.max_per_hour", "must be in 0..3600")


#: Defaults: cheap rungs often, a reset twice an hour at most, a power cycle once; settle
#: times cover a registration (tens of seconds) and an RM5xxQ reboot (about a minute).
DEFAULT_RUNGS: Final[Mapping[Step, RungPolicy]] = MappingProxyType(
    {
        Step.REQUERY: RungPolicy(cooldown_s=30.0, max_per_hour=30, settle_s=10.0),
        Step.REREGISTER: RungPolicy(cooldown_s=120.0, max_per_hour=6, settle_s=60.0),
        Step.RADIO_CYCLE: RungPolicy(cooldown_s=300.0, max_per_hour=4, settle_s=60.0),
        Step.MODEM_RESET: RungPolicy(cooldown_s=900.0, max_per_hour=2, settle_s=120.0),
        Step.POWER_CYCLE: RungPolicy(cooldown_s=1800.0, max_per_hour=1, settle_s=180.0),
    }
)


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Timing and guards of the link (seconds of the injected monotonic clock).

    Attributes:
        rungs: each rung's :class:`RungPolicy` (every :class:`Step` present).
        backoff_factor: a rung's cool-down grows by this per consecutive use.
        max_cooldown_s: bound on a grown cool-down.
        registration_grace_s: not registered this long is a fault (a boot, a handover, a
            cell reselection take less).
        no_answer_grace_s: no answer this long is a fault.
        reenumeration_grace_s: a port absent this long (not after our reset) is a fault.
        reset_wait_s: how long a reset or power cycle may keep the port away or silent.
        data_failures_before_fault: failed connects in a row before the ladder starts.
        connect_cooldown_s: least time after a failed connect attempt before the next.
        stopped_poll_s: how often a stopped link re-queries.
        poll_interval_s: how often a healthy link is polled (the driver's cadence).
        stable_s: online this long resets the ladder's backoff.
        unreachable_grace_s: online but the platform unreachable this long is a fault
            (:attr:`Fault.NO_TRAFFIC`): longer than a platform's brief outage or a
            reconnect's backoff, so only a link that carries nothing climbs the ladder,
            whose caps bound what a long platform outage can cost.
    """

    rungs: Mapping[Step, RungPolicy] = field(default_factory=lambda: DEFAULT_RUNGS)
    backoff_factor: float = 2.0
    max_cooldown_s: float = HOUR_S
    registration_grace_s: float = 180.0
    no_answer_grace_s: float = 30.0
    reenumeration_grace_s: float = 60.0
    reset_wait_s: float = 90.0
    data_failures_before_fault: int = 3
    connect_cooldown_s: float = 20.0
    stopped_poll_s: float = 300.0
    poll_interval_s: float = 30.0
    stable_s: float = 600.0
    unreachable_grace_s: float = 900.0

    def __post_init__(self) -> None:
        missing = [step.value for step in Step if step not in self.rungs]
        if missing:
            raise UsageError("LinkPolicy.rungs", f"missing {', '.join(missing)}")
        if self.backoff_factor < 1:
            raise UsageError("LinkPolicy.backoff_factor", "must be >= 1")
        if self.data_failures_before_fault < 1:
            raise UsageError("LinkPolicy.data_failures_before_fault", "must be >= 1")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll of a module that answers found.

    Attributes:
        sim: the SIM; None while not known (SIM busy after a boot, an unexpected answer).
        registration: packet-domain registration (EPS or 5GS, whichever is better).
        technology: the radio technology in use.
        data_up: the data session on the hub's context is up.
        has_address: the context has an IP address.
        apn: the APN the module holds for the hub's context (None: not defined).
    """

    sim: SimStatus | None
    registration: Registration = Registration.UNKNOWN
    technology: Technology = Technology.NONE
    data_up: bool = False
    has_address: bool = False
    apn: str | None = None

    @property
    def registered(self) -> bool:
        """Registered at home or roaming."""
        return self.registration in (Registration.HOME, Registration.ROAMING)


class ActionKind(enum.Enum):
    """What the driver should do now."""

    WAIT = "wait"
    ENTER_PIN = "enter_pin"
    SET_APN = "set_apn"
    CONNECT_DATA = "connect_data"
    RECOVER = "recover"


@dataclass(frozen=True, slots=True)
class Action:
    """The machine's answer to :meth:`LinkMachine.next_action`.

    Attributes:
        kind: what to do.
        step: the rung, for RECOVER.
        until: for WAIT, when to ask again at the latest (the driver polls sooner for URCs).
    """

    kind: ActionKind
    step: Step | None = None
    until: float | None = None


class EventKind(enum.StrEnum):
    """What happened (value: the structlog event name)."""

    PHASE_CHANGED = "modem_link_phase"
    FAULT_RAISED = "modem_link_fault"
    FAULT_CLEARED = "modem_link_fault_cleared"
    RECOVERY_STEP = "modem_recovery_step"
    RECOVERY_CAPPED = "modem_recovery_capped"
    LINK_STOPPED = "modem_link_stopped"
    LINK_RESUMED = "modem_link_resumed"
    DATA_SESSION_LOST = "modem_data_session_lost"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One event of the link (no identifier in any field).

    Attributes:
        kind: what happened.
        at: the machine's clock when it happened.
        phase: the phase entered (PHASE_CHANGED), or the phase then.
        fault: the fault raised, cleared, or that stopped the link.
        step: the rung taken (RECOVERY_STEP).
    """

    kind: EventKind
    at: float
    phase: Phase
    fault: Fault | None = None
    step: Step | None = None


@dataclass(slots=True)
class _Rung:
    uses: collections.deque[float] = field(default_factory=collections.deque)
    consecutive: int = 0
    last: float | None = None


# ---------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------


class LinkMachine:
    """The link's state and its recovery ladder (module docstring).

    Args:
        policy: timings and guards.
        apn: the APN the hub's context must hold (None: leave the module's own).
        pin_available: a SIM PIN credential is configured.
        power_cycle_available: a power-cycle hook is configured (its rung applies).
    """

    def __init__(
        self,
        policy: LinkPolicy | None = None,
        *,
        apn: str | None = None,
        pin_available: bool = False,
        power_cycle_available: bool = False,
    ) -> None:
        self.policy = policy or LinkPolicy()
        self._apn = apn
        self._pin_available = pin_available
        self._power_cycle = power_cycle_available
        self._phase = Phase.PORT_ABSENT
        self._fault: Fault | None = None
        self._observation: Observation | None = None
        self._port_absent_since: float | None = None
        self._no_answer_since: float | None = None
        self._unregistered_since: float | None = None
        self._resetting_until: float | None = None
        self._pin_rejected = False
        self._pin_tried = False
        self._apn_rejected = False
        self._apn_set_tried = False
        self._reattach_pending = False
        self._data_failures = 0
        self._next_connect_at = 0.0
        self._last_connect_at = float("-inf")
        self._online_since: float | None = None
        self._unreachable_since: float | None = None
        self._level = 0
        self._settle_until = 0.0
        self._capped_reported = False
        self._stopped_poll_at = 0.0
        self._rungs = {step: _Rung() for step in Step}
        self._last_recovery: tuple[Step, float] | None = None
        self._events: collections.deque[LinkEvent] = collections.deque(maxlen=MAX_EVENTS)

    # -- what the driver reads -----------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the link is."""
        return self._phase

    @property
    def fault(self) -> Fault | None:
        """The fault raised, or None."""
        return self._fault

    @property
    def observation(self) -> Observation | None:
        """The last observation (None before the first, or while the port is away)."""
        return self._observation

    @property
    def last_recovery(self) -> tuple[Step, float] | None:
        """The last rung taken and when (the machine's clock)."""
        return self._last_recovery

    def uses_in_hour(self, step: Step, now: float) -> int:
        """How often ``step`` was taken in the hour up to ``now``."""
        rung = self._rungs[step]
        return sum(1 for at in rung.uses if at > now - HOUR_S)

    def events(self) -> Iterator[LinkEvent]:
        """Every event since the last call, oldest first."""
        while self._events:
            yield self._events.popleft()

    # -- what the driver reports ---------------------------------------------------------

    def port_absent(self, now: float) -> None:
        """The port could not be opened, or was lost."""
        if self._port_absent_since is None:
            self._port_absent_since = now
        self._observation = None
        self._assess(now)

    def no_answer(self, now: float) -> None:
        """The port is open but the module did not answer a plain ``AT``."""
        self._port_absent_since = None
        if self._no_answer_since is None:
            self._no_answer_since = now
        self._observation = None
        self._assess(now)

    def observe(self, observation: Observation, now: float) -> None:
        """A poll's findings."""
        previous = self._observation
        self._port_absent_since = None
        self._no_answer_since = None
        self._resetting_until = None
        if observation.sim is not SimStatus.PIN_REQUIRED:
            self._pin_tried = False
        if previous is not None and previous.sim is SimStatus.ABSENT and observation.sim:
            self._pin_rejected = False  # another SIM: the configured PIN may be its own
        if observation.registered:
            self._unregistered_since = None
        elif self._unregistered_since is None:
            self._unregistered_since = now
        if previous is not None and previous.data_up and not observation.data_up:
            self._emit(EventKind.DATA_SESSION_LOST, now)
        if observation.data_up and observation.has_address:
            self._data_failures = 0
            self._apn_rejected = False
        self._observation = observation
        self._assess(now)

    def uplink_reachable(self, reachable: bool, now: float) -> None:
        """Whether the platform is reachable over the link now (the uplink connected): the
        issue's "registered but no traffic for N minutes is a fault too"."""
        if reachable:
            self._unreachable_since = None
        elif self._unreachable_since is None:
            self._unreachable_since = now
        self._assess(now)

    def module_restarted(self, now: float) -> None:
        """The module booted (``RDY``): per-boot attempts start over (never a rejected PIN)."""
        self._pin_tried = False
        self._apn_set_tried = False
        self._next_connect_at = now

    def set_credentials(self, *, pin_available: bool | None = None, apn: str | None = None) -> None:
        """New configuration: a new PIN may be tried once, a new APN set."""
        if pin_available is not None:
            self._pin_available = pin_available
            self._pin_rejected = False
            self._pin_tried = False
        if apn is not None:
            self._apn = apn
            self._apn_rejected = False
            self._apn_set_tried = False

    def pin_result(self, accepted: bool | None, now: float) -> None:
        """The PIN was accepted (True), refused by the SIM (False), or the attempt failed
        for another reason (None: tried again after the next boot only)."""
        self._pin_tried = True
        if accepted is False:
            self._pin_rejected = True
        self._assess(now)

    def apn_result(self, accepted: bool, now: float) -> None:
        """Setting the APN into the hub's context worked or not."""
        self._apn_set_tried = True
        if not accepted:
            self._data_failures += 1
        elif self._fault is Fault.REGISTRATION_DENIED:
            self._reattach_pending = True
        self._assess(now)

    def connect_result(self, outcome: ConnectOutcome, now: float) -> None:
        """How the data-session attempt ended."""
        self._last_connect_at = now
        if outcome is not ConnectOutcome.OK:  # a call that came up may be redialled at once
            self._next_connect_at = now + self.policy.connect_cooldown_s
        if outcome is ConnectOutcome.WRONG_APN:
            self._apn_rejected = True
        elif outcome is ConnectOutcome.FAILED:
            self._data_failures += 1
        self._assess(now)

    def recovery_done(self, step: Step, now: float) -> None:
        """``step`` was taken (whatever its commands answered: the next poll tells)."""
        if step is Step.RADIO_CYCLE:
            self._reattach_pending = False
        rung = self._rungs[step]
        rung.uses.append(now)
        while len(rung.uses) > 3600:  # bounded: max_per_hour is at most 3600
            rung.uses.popleft()
        rung.consecutive += 1
        rung.last = now
        self._settle_until = now + self.policy.rungs[step].settle_s
        self._last_recovery = (step, now)
        if self._fault is Fault.NO_TRAFFIC:
            # The uplink gets its full grace to reconnect before the next rung up.
            self._settle_until = max(self._settle_until, now + self.policy.unreachable_grace_s)
        if step in _RESETTING_STEPS:
            self._resetting_until = now + self.policy.reset_wait_s
            self._observation = None
            self._pin_tried = False
            self._apn_set_tried = False
        self._emit(EventKind.RECOVERY_STEP, now, step=step)
        self._assess(now)

    # -- deciding ------------------------------------------------------------------------

    def next_action(self, now: float) -> Action:
        """What to do now (one action a round)."""
        self._assess(now)
        wait = Action(ActionKind.WAIT, until=now + self.policy.poll_interval_s)
        if self._phase is Phase.STOPPED:
            obs = self._observation
            if self._fault is Fault.REGISTRATION_DENIED and obs is not None:
                # Denied while the module holds another APN than the hub's (the LTE attach
                # uses it): write the hub's once and re-attach once; denied again, stopped.
                if self._wants_apn(obs):
                    return Action(ActionKind.SET_APN)
                if self._reattach_pending and self._rung_available(Step.RADIO_CYCLE, now):
                    return Action(ActionKind.RECOVER, step=Step.RADIO_CYCLE)
            return Action(ActionKind.WAIT, until=max(now, self._stopped_poll_at))
        if self._phase is Phase.RESETTING:
            return Action(ActionKind.WAIT, until=self._resetting_until)
        obs = self._observation
        if obs is not None:
            if obs.sim is SimStatus.PIN_REQUIRED and self._may_enter_pin():
                return Action(ActionKind.ENTER_PIN)
            if self._wants_apn(obs):
                return Action(ActionKind.SET_APN)
            if (
                self._phase is Phase.CONNECTING
                and self._fault is None
                and now >= self._next_connect_at
            ):
                return Action(ActionKind.CONNECT_DATA)
        if self._fault is not None:
            if (
                self._fault is Fault.DATA_SESSION
                and now >= self._settle_until
                and self._last_recovery is not None
                and self._last_recovery[1] >= self._last_connect_at
            ):
                return Action(ActionKind.CONNECT_DATA)  # each rung settled: dial again first
            return self._ladder(now)
        return wait

    def _rung_available(self, step: Step, now: float) -> bool:
        rung, guard = self._rungs[step], self.policy.rungs[step]
        in_hour = sum(1 for at in rung.uses if at > now - HOUR_S)
        return in_hour < guard.max_per_hour and now >= self._ready_at(rung, guard)

    def _may_enter_pin(self) -> bool:
        return self._pin_available and not self._pin_rejected and not self._pin_tried

    def _wants_apn(self, obs: Observation) -> bool:
        return (
            self._apn is not None
            and obs.sim is SimStatus.READY
            and not obs.data_up
            and not self._apn_set_tried
            and (obs.apn or "").lower() != self._apn.lower()
        )

    def _ladder(self, now: float) -> Action:
        fault = self._fault
        assert fault is not None
        ladder = [
            step
            for step in LADDERS.get(fault, ())
            if step is not Step.POWER_CYCLE or self._power_cycle
        ]
        if not ladder:
            return Action(ActionKind.WAIT, until=now + self.policy.poll_interval_s)
        if now < self._settle_until:
            return Action(ActionKind.WAIT, until=self._settle_until)
        level = min(self._level, len(ladder) - 1)
        # Up from the episode's rung; only when every rung up is capped, down again.
        order = [*range(level, len(ladder)), *range(level - 1, -1, -1)]
        cooling: list[float] = []
        for index in order:
            step = ladder[index]
            rung, guard = self._rungs[step], self.policy.rungs[step]
            while rung.uses and rung.uses[0] <= now - HOUR_S:
                rung.uses.popleft()
            if len(rung.uses) >= guard.max_per_hour:
                continue  # capped this hour
            ready_at = self._ready_at(rung, guard)
            if now < ready_at:
                if index >= level:
                    return Action(ActionKind.WAIT, until=ready_at)  # the way up cools down
                cooling.append(ready_at)
                continue
            if index >= level:
                self._level = min(index + 1, len(ladder) - 1)
            self._capped_reported = False
            return Action(ActionKind.RECOVER, step=step)
        if cooling:
            return Action(ActionKind.WAIT, until=min(cooling))
        if not self._capped_reported:
            self._capped_reported = True
            self._emit(EventKind.RECOVERY_CAPPED, now, fault=fault)
        releases = [self._rungs[step].uses[0] + HOUR_S for step in ladder if self._rungs[step].uses]
        return Action(ActionKind.WAIT, until=min(releases, default=now + HOUR_S))

    def _ready_at(self, rung: _Rung, guard: RungPolicy) -> float:
        if rung.last is None or rung.consecutive == 0:
            return float("-inf")
        grown = guard.cooldown_s * self.policy.backoff_factor ** (rung.consecutive - 1)
        return rung.last + min(grown, self.policy.max_cooldown_s)

    # -- assessing -----------------------------------------------------------------------

    def _assess(self, now: float) -> None:
        phase, fault = self._derive(now)
        if fault is not self._fault:
            old = self._fault
            if old is not None:
                self._emit(EventKind.FAULT_CLEARED, now, fault=old, phase=phase)
                if old.configuration and (fault is None or not fault.configuration):
                    self._emit(EventKind.LINK_RESUMED, now, fault=old, phase=phase)
            self._fault = fault
            self._level = 0
            self._capped_reported = False
            if fault is not None:
                self._emit(EventKind.FAULT_RAISED, now, fault=fault, phase=phase)
                if fault.configuration:
                    self._stopped_poll_at = now + self.policy.stopped_poll_s
                    self._emit(EventKind.LINK_STOPPED, now, fault=fault, phase=phase)
        if self._phase is Phase.STOPPED and phase is Phase.STOPPED and now >= self._stopped_poll_at:
            self._stopped_poll_at = now + self.policy.stopped_poll_s
        if phase is not self._phase:
            self._phase = phase
            self._emit(EventKind.PHASE_CHANGED, now, phase=phase)
        if phase is Phase.ONLINE and fault is None:  # online carrying nothing is not stable
            if self._online_since is None:
                self._online_since = now
            elif now - self._online_since >= self.policy.stable_s:
                for rung in self._rungs.values():
                    rung.consecutive = 0
        else:
            self._online_since = None

    def _derive(self, now: float) -> tuple[Phase, Fault | None]:
        policy = self.policy
        if self._port_absent_since is not None:
            if self._resetting_until is not None and now < self._resetting_until:
                return Phase.RESETTING, self._fault  # a reset of ours: the episode goes on
            since = self._port_absent_since
            if self._resetting_until is not None:
                since = max(since, self._resetting_until)
            late = now - since >= policy.reenumeration_grace_s
            return Phase.PORT_ABSENT, Fault.PORT_ABSENT if late else None
        if self._no_answer_since is not None:
            if self._resetting_until is not None and now < self._resetting_until:
                return Phase.RESETTING, self._fault  # a reset of ours: the episode goes on
            late = now - self._no_answer_since >= policy.no_answer_grace_s
            return Phase.NO_ANSWER, Fault.NO_ANSWER if late else None
        obs = self._observation
        if obs is None:
            if self._resetting_until is not None and now < self._resetting_until:
                return Phase.RESETTING, self._fault  # a reset of ours: the episode goes on
            return Phase.PORT_ABSENT, None
        sim_fault = self._sim_fault(obs)
        if sim_fault is not None:
            return Phase.STOPPED, sim_fault
        if obs.sim is not SimStatus.READY:
            return Phase.SIM, None
        if obs.registration is Registration.DENIED:
            return Phase.STOPPED, Fault.REGISTRATION_DENIED
        if not obs.registered:
            since = self._unregistered_since if self._unregistered_since is not None else now
            late = now - since >= policy.registration_grace_s
            return Phase.REGISTERING, Fault.NOT_REGISTERED if late else None
        if self._apn_rejected:
            return Phase.STOPPED, Fault.WRONG_APN
        if not (obs.data_up and obs.has_address):
            failing = self._data_failures >= policy.data_failures_before_fault
            return Phase.CONNECTING, Fault.DATA_SESSION if failing else None
        unreachable = self._unreachable_since
        if unreachable is not None and now - unreachable >= policy.unreachable_grace_s:
            return Phase.ONLINE, Fault.NO_TRAFFIC
        return Phase.ONLINE, None

    def _sim_fault(self, obs: Observation) -> Fault | None:
        if obs.sim is SimStatus.ABSENT:
            return Fault.SIM_ABSENT
        if obs.sim is SimStatus.PUK_REQUIRED:
            return Fault.SIM_PUK_REQUIRED
        if obs.sim is SimStatus.ERROR:
            return Fault.SIM_ERROR
        if obs.sim is SimStatus.PIN_REQUIRED:
            if self._pin_rejected:
                return Fault.SIM_PIN_WRONG
            if not self._pin_available:
                return Fault.SIM_PIN_REQUIRED
        return None

    def _emit(
        self,
        kind: EventKind,
        now: float,
        *,
        phase: Phase | None = None,
        fault: Fault | None = None,
        step: Step | None = None,
    ) -> None:
        self._events.append(LinkEvent(kind, now, phase or self._phase, fault, step))
