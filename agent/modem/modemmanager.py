"""The modem through ModemManager, over D-Bus with dbus-fast (issue 10, "Two ways to the modem").

Where the OS already runs ModemManager (Raspberry Pi OS with NetworkManager), ModemManager
owns the module's AT, QMI and MBIM ports: the hub reads what ModemManager knows and asks it to
act, instead of fighting it for the AT port. Where the hub is configured for the AT backend
and ModemManager holds the port anyway, :func:`check_at_port` says so, with the fix.

Theory of operation::

    open_modemmanager()  connect to the system bus (or a given address)
        │                NameHasOwner(org.freedesktop.ModemManager1)? no ─▶ Unavailable
        │                ObjectManager.GetManagedObjects ─▶ .../Modems/N (lowest N)
        │                                                   none ─▶ ModemAbsentError
        ▼
    client.snapshot()    the modem object's interfaces (Modem, Modem3gpp, Signal) from
                         GetManagedObjects, then the Sim and the Bearers (Properties.GetAll)
                         ──▶ snapshot_from_properties(...) ──▶ ModemManagerSnapshot
    client.enable_signal(rate_s)   Signal.Setup(rate): ModemManager polls RSRP/RSRQ/SNR
    client.reconnect()   Bearer.Disconnect + Bearer.Connect on the modem's bearer, or
                         Simple.Connect({"apn": …}) when it has none
    client.reset()       Modem.Reset: the module restarts (and re-enumerates on USB)

The mapping from D-Bus property dicts to the snapshot, and the tables of ModemManager's
enumerations (``ModemManager-enums.h``: MMModemState, MMModemStateFailedReason, MMModemLock,
MMModemPortType, MMModemAccessTechnology, MMModem3gppRegistrationState) are sans-I/O: plain
dicts in, a frozen dataclass out (:func:`snapshot_from_properties`), tested without D-Bus.

**Timeouts** are nested: each D-Bus call has its own bound (:data:`CALL_TIMEOUT_S` for reads,
longer for connect, disconnect and reset, which wait on the module), inside the bound of the
whole operation (:data:`SNAPSHOT_TIMEOUT_S`, :data:`RECONNECT_TIMEOUT_S`). Every call is sent
with ``NO_AUTO_START``: asking must not start a ModemManager the operator disabled.

**Errors** are typed (:mod:`agent.errors`): :class:`~agent.errors.ModemManagerUnavailableError`
(no D-Bus, no ModemManager), :class:`~agent.errors.ModemManagerTimeoutError`,
:class:`~agent.errors.ModemManagerCallError` (ModemManager refused an action),
:class:`~agent.errors.ModemAbsentError` (no modem), :class:`~agent.errors.ModemPortHeldError`.
They carry D-Bus error *names*, never ModemManager's texts.

**Identifiers** (IMEI, ICCID) are in the snapshot for the technician who asked, kept out of
its ``repr``, and never logged; nor are operator names, APNs or addresses. Text from the
modem (operator name, APN) is untrusted: printable characters only, bounded in length.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import math
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import structlog
from dbus_fast import BusType, DBusError, DBusFastError, Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from agent.errors import (
    ModemAbsentError,
    ModemManagerCallError,
    ModemManagerError,
    ModemManagerTimeoutError,
    ModemManagerUnavailableError,
    ModemPortHeldError,
    UsageError,
)
from agent.modem.link import Observation, SimStatus
from drivers.modem.ts27007 import Registration, Technology

__all__ = [
    "BEARER_INTERFACE",
    "CALL_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "DISCONNECT_TIMEOUT_S",
    "MM_PATH",
    "MM_SERVICE",
    "MODEM_3GPP_INTERFACE",
    "MODEM_INTERFACE",
    "RECONNECT_TIMEOUT_S",
    "RESET_TIMEOUT_S",
    "SIGNAL_INTERFACE",
    "SIGNAL_RATE_S",
    "SIMPLE_INTERFACE",
    "SIM_INTERFACE",
    "SNAPSHOT_TIMEOUT_S",
    "AccessTechnology",
    "ModemLock",
    "ModemManagerClient",
    "ModemManagerSnapshot",
    "ModemState",
    "PortType",
    "RegistrationState",
    "StateFailedReason",
    "check_at_port",
    "held_ports",
    "open_modemmanager",
    "port_held_by_modemmanager",
    "port_held_fix",
    "registration_of",
    "sim_status_of",
    "snapshot_from_properties",
    "split_operator_code",
    "technology_of",
]

log = structlog.get_logger(__name__)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

MM_SERVICE: Final = "org.freedesktop.ModemManager1"
MM_PATH: Final = "/org/freedesktop/ModemManager1"
MODEMS_PREFIX: Final = MM_PATH + "/Modems/"
MODEM_INTERFACE: Final = MM_SERVICE + ".Modem"
MODEM_3GPP_INTERFACE: Final = MM_SERVICE + ".Modem.Modem3gpp"
SIGNAL_INTERFACE: Final = MM_SERVICE + ".Modem.Signal"
SIMPLE_INTERFACE: Final = MM_SERVICE + ".Modem.Simple"
SIM_INTERFACE: Final = MM_SERVICE + ".Sim"
BEARER_INTERFACE: Final = MM_SERVICE + ".Bearer"
PROPERTIES_INTERFACE: Final = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_INTERFACE: Final = "org.freedesktop.DBus.ObjectManager"
BUS_SERVICE: Final = "org.freedesktop.DBus"
BUS_PATH: Final = "/org/freedesktop/DBus"
NO_OBJECT: Final = "/"
"""ModemManager's "none" object path (``Sim`` without a SIM, ``Simple.Disconnect`` of all)."""

CALL_TIMEOUT_S: Final = 5.0
"""Bound of one D-Bus call that reads (properties, managed objects): ModemManager answers
them from its cache in milliseconds; a stalled bus or daemon must not hang the hub."""

SNAPSHOT_TIMEOUT_S: Final = 3 * CALL_TIMEOUT_S
"""Bound of :meth:`ModemManagerClient.snapshot`: three rounds of calls one after the other
(the managed objects, the SIM, the bearers read together)."""

DISCONNECT_TIMEOUT_S: Final = 30.0
"""Bound of ``Bearer.Disconnect``: the module tears the data call down (a QMI/MBIM or
+CGACT exchange, seconds), ModemManager answers when it is done."""

CONNECT_TIMEOUT_S: Final = 90.0
"""Bound of ``Bearer.Connect``/``Simple.Connect``: attach, PDP context activation and
ModemManager's own retries take up to about a minute on a weak cell; kept under the 120 s
D-Bus timeout NetworkManager gives the same call."""

RECONNECT_TIMEOUT_S: Final = CALL_TIMEOUT_S + DISCONNECT_TIMEOUT_S + CONNECT_TIMEOUT_S
"""Bound of :meth:`ModemManagerClient.reconnect`: find the bearer, disconnect, connect."""

RESET_TIMEOUT_S: Final = 30.0
"""Bound of ``Modem.Reset``: ModemManager answers once the module took the command
(+CFUN=1,1 or its QMI/MBIM twin), before the module is gone from USB."""

SIGNAL_RATE_S: Final = 30
"""Default ``Signal.Setup`` rate: as often as the AT link polls its signal figures."""

SIGNAL_RATE_MAX_S: Final = 3600

MAX_MODEMS: Final = 16
"""Modem objects considered; a hub has one, a few more is a test bench."""

MAX_BEARERS: Final = 8
"""Bearers read per snapshot (ModemManager's ``MaxBearers`` is a handful on every module)."""

MAX_TEXT_CHARS: Final = 64
"""Longest operator name, APN, model or revision kept (an APN is at most 100 octets by
TS 23.003 §9.1, but every real one is far shorter; 64 bounds a hostile network's text)."""

# ---------------------------------------------------------------------------
# ModemManager's enumerations (ModemManager-enums.h), sans-I/O
# ---------------------------------------------------------------------------


class ModemState(enum.IntEnum):
    """``MMModemState``: the ``Modem.State`` property."""

    FAILED = -1
    UNKNOWN = 0
    INITIALIZING = 1
    LOCKED = 2
    DISABLED = 3
    DISABLING = 4
    ENABLING = 5
    ENABLED = 6
    SEARCHING = 7
    REGISTERED = 8
    DISCONNECTING = 9
    CONNECTING = 10
    CONNECTED = 11


class StateFailedReason(enum.IntEnum):
    """``MMModemStateFailedReason``: why ``State`` is ``FAILED``."""

    NONE = 0
    UNKNOWN = 1
    SIM_MISSING = 2
    SIM_ERROR = 3
    UNKNOWN_CAPABILITIES = 4
    ESIM_WITHOUT_PROFILES = 5


class ModemLock(enum.IntEnum):
    """``MMModemLock``: the ``Modem.UnlockRequired`` property."""

    UNKNOWN = 0
    NONE = 1
    SIM_PIN = 2
    SIM_PIN2 = 3
    SIM_PUK = 4
    SIM_PUK2 = 5
    PH_SP_PIN = 6
    PH_SP_PUK = 7
    PH_NET_PIN = 8
    PH_NET_PUK = 9
    PH_SIM_PIN = 10
    PH_CORP_PIN = 11
    PH_CORP_PUK = 12
    PH_FSIM_PIN = 13
    PH_FSIM_PUK = 14
    PH_NETSUB_PIN = 15
    PH_NETSUB_PUK = 16


class PortType(enum.IntEnum):
    """``MMModemPortType``: the second member of each ``Modem.Ports`` entry."""

    UNKNOWN = 1
    NET = 2
    AT = 3
    QCDM = 4
    GPS = 5
    QMI = 6
    MBIM = 7
    AUDIO = 8
    IGNORED = 9
    XMMRPC = 10


class AccessTechnology(enum.IntFlag):
    """``MMModemAccessTechnology``: the ``Modem.AccessTechnologies`` bitmask."""

    UNKNOWN = 0
    POTS = 1 << 0
    GSM = 1 << 1
    GSM_COMPACT = 1 << 2
    GPRS = 1 << 3
    EDGE = 1 << 4
    UMTS = 1 << 5
    HSDPA = 1 << 6
    HSUPA = 1 << 7
    HSPA = 1 << 8
    HSPA_PLUS = 1 << 9
    ONE_X_RTT = 1 << 10
    EVDO0 = 1 << 11
    EVDOA = 1 << 12
    EVDOB = 1 << 13
    LTE = 1 << 14
    NR5G = 1 << 15
    LTE_CAT_M = 1 << 16
    LTE_NB_IOT = 1 << 17


class RegistrationState(enum.IntEnum):
    """``MMModem3gppRegistrationState``: the ``Modem3gpp.RegistrationState`` property. Values
    0-10 are TS 27.007's ``<stat>``; 11 is ModemManager's own (RLOS, not disaster roaming)."""

    IDLE = 0
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5
    HOME_SMS_ONLY = 6
    ROAMING_SMS_ONLY = 7
    EMERGENCY_ONLY = 8
    HOME_CSFB_NOT_PREFERRED = 9
    ROAMING_CSFB_NOT_PREFERRED = 10
    ATTACHED_RLOS = 11


# fmt: off
_REGISTRATION: Final = {
    RegistrationState.IDLE:                       Registration.NOT_REGISTERED,
    RegistrationState.HOME:                       Registration.HOME,
    RegistrationState.SEARCHING:                  Registration.SEARCHING,
    RegistrationState.DENIED:                     Registration.DENIED,
    RegistrationState.UNKNOWN:                    Registration.UNKNOWN,
    RegistrationState.ROAMING:                    Registration.ROAMING,
    # SMS only / CSFB not preferred: registered for data all the same (as for +CEREG).
    RegistrationState.HOME_SMS_ONLY:              Registration.HOME,
    RegistrationState.ROAMING_SMS_ONLY:           Registration.ROAMING,
    RegistrationState.HOME_CSFB_NOT_PREFERRED:    Registration.HOME,
    RegistrationState.ROAMING_CSFB_NOT_PREFERRED: Registration.ROAMING,
    # Emergency calls only, restricted local operator services: no data for the hub.
    RegistrationState.EMERGENCY_ONLY:             Registration.NOT_REGISTERED,
    RegistrationState.ATTACHED_RLOS:              Registration.NOT_REGISTERED,
}
# fmt: on

_LTE_BITS: Final = AccessTechnology.LTE | AccessTechnology.LTE_CAT_M | AccessTechnology.LTE_NB_IOT
_WCDMA_BITS: Final = (
    AccessTechnology.UMTS
    | AccessTechnology.HSDPA
    | AccessTechnology.HSUPA
    | AccessTechnology.HSPA
    | AccessTechnology.HSPA_PLUS
)
_GSM_BITS: Final = (
    AccessTechnology.GSM
    | AccessTechnology.GSM_COMPACT
    | AccessTechnology.GPRS
    | AccessTechnology.EDGE
)

# fmt: off
_SIGNAL_SOURCES: Final[dict[Technology | None, tuple[str | None, str | None]]] = {
    # technology:          (Signal dict of RSRP/RSRQ/SNR, Signal dict of RSSI)
    Technology.LTE:        ("Lte",  "Lte"),
    Technology.NR5G_SA:    ("Nr5g", None),   # NR reports no RSSI
    Technology.NR5G_NSA:   ("Nr5g", "Lte"),  # the NR leg carries the data; RSSI: LTE anchor
    Technology.WCDMA:      (None,   "Umts"),
    Technology.GSM:        (None,   "Gsm"),
}
"""Which ``Signal`` property each figure is read from, by technology (as the AT path
reports them, :mod:`agent.modem.status`)."""
# fmt: on

_HOLDING_PORT_TYPES: Final = frozenset(PortType) - {PortType.UNKNOWN, PortType.IGNORED}
"""Port types ModemManager opens and uses; an ignored or unknown port is left alone."""

# Plausible reporting ranges (TS 36.133 §9.1, TS 38.133 §10.1, widened): a value outside is
# the modem's "not known" marker or garbage, reported as unknown.
_RSRP_DBM: Final = (-160.0, -20.0)
_RSRQ_DB: Final = (-50.0, 30.0)
_SINR_DB: Final = (-30.0, 60.0)
_RSSI_DBM: Final = (-130.0, 0.0)


def technology_of(bits: int) -> Technology | None:
    """The hub's technology for an ``AccessTechnologies`` bitmask: NR with an LTE bit is
    EN-DC (NR5G-NSA), NR alone is NR5G-SA, then LTE, WCDMA, GSM; ``0`` (not on a network) is
    ``none``; only CDMA/POTS bits: ``None`` (not a technology the hub reports)."""
    tech = AccessTechnology(bits & 0x3FFFF)
    if tech & AccessTechnology.NR5G:
        return Technology.NR5G_NSA if tech & _LTE_BITS else Technology.NR5G_SA
    if tech & _LTE_BITS:
        return Technology.LTE
    if tech & _WCDMA_BITS:
        return Technology.WCDMA
    if tech & _GSM_BITS:
        return Technology.GSM
    if bits == 0:
        return Technology.NONE
    return None


def registration_of(state: int) -> Registration:
    """The hub's registration for a ``Modem3gpp.RegistrationState``; a value this table
    does not know is ``unknown``."""
    try:
        return _REGISTRATION[RegistrationState(state)]
    except ValueError:
        return Registration.UNKNOWN


def sim_status_of(
    state: int, failed_reason: int | None, lock: int | None, sim_path: str | None
) -> SimStatus | None:
    """The SIM figure from ``State``, ``StateFailedReason``, ``UnlockRequired`` and ``Sim``.

    A failed modem says why (SIM missing or eSIM without profile: absent; SIM error: error);
    a locked one needs the SIM PIN or PUK (another lock, a network or corporate one: error);
    an unlocked modem with a SIM object is ready, without one absent. ``None`` while
    ModemManager does not know yet (initializing)."""
    if state == ModemState.FAILED:
        if failed_reason in (
            StateFailedReason.SIM_MISSING,
            StateFailedReason.ESIM_WITHOUT_PROFILES,
        ):
            return SimStatus.ABSENT
        if failed_reason == StateFailedReason.SIM_ERROR:
            return SimStatus.ERROR
        return None
    if lock == ModemLock.SIM_PIN:
        return SimStatus.PIN_REQUIRED
    if lock == ModemLock.SIM_PUK:
        return SimStatus.PUK_REQUIRED
    if lock is not None and lock not in (ModemLock.UNKNOWN, ModemLock.NONE):
        # PIN2/PUK2 do not lock the modem; ModemManager reports them only while LOCKED.
        return SimStatus.ERROR if state == ModemState.LOCKED else SimStatus.READY
    if state in (ModemState.UNKNOWN, ModemState.INITIALIZING, ModemState.LOCKED):
        return None
    if not sim_path or sim_path == NO_OBJECT:
        return SimStatus.ABSENT
    return SimStatus.READY if lock == ModemLock.NONE else None


def split_operator_code(code: str | None) -> tuple[str | None, str | None]:
    """``Modem3gpp.OperatorCode`` (MCC then MNC, 5 or 6 digits) as ``(mcc, mnc)``; the MNC
    keeps its leading zero. Anything else: ``(None, None)``."""
    if code is None or not code.isascii() or not code.isdigit() or len(code) not in (5, 6):
        return None, None
    return code[:3], code[3:]


def held_ports(ports: Iterable[Sequence[Any]]) -> frozenset[str]:
    """The port names (``ttyUSB2``) of ``Modem.Ports`` (``a(su)``) that ModemManager uses:
    every type but ignored and unknown."""
    held: set[str] = set()
    for entry in ports:
        if len(entry) != 2 or not isinstance(entry[0], str) or not isinstance(entry[1], int):
            continue
        name, kind = entry
        with contextlib.suppress(ValueError):
            if PortType(kind) in _HOLDING_PORT_TYPES:
                held.add(name)
    return frozenset(held)


def port_held_fix(port: str) -> ModemPortHeldError:
    """The error (with the fix) for an AT port ``port`` that ModemManager holds."""
    return ModemPortHeldError(
        port,
        "ModemManager",
        'set [modem] backend = "modemmanager", or stop ModemManager'
        " (systemctl disable --now ModemManager) to use the AT port",
    )


def _text(value: Any, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Untrusted text: printable ASCII only, at most ``limit`` characters, else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > limit or not text.isascii() or not text.isprintable():
        return None
    return text


def _digits(value: Any, lengths: range) -> str | None:
    """An identifier of digits (an ICCID may end in the F of its padding, dropped)."""
    if not isinstance(value, str):
        return None
    text = value.strip().upper().rstrip("F")
    if not text.isascii() or not text.isdigit() or len(text) not in lengths:
        return None
    return text


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _measure(
    signal: Mapping[str, Any] | None, key: str, bounds: tuple[float, float]
) -> float | None:
    """One figure of a ``Signal`` dict, within its plausible range, else None."""
    if not signal:
        return None
    value = signal.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    low, high = bounds
    return float(value) if low <= value <= high else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _ip_address(config: Any) -> str | None:
    if not isinstance(config, Mapping):
        return None
    address = config.get("address")
    if not isinstance(address, str):
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# The snapshot
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModemManagerSnapshot:
    """What ModemManager reports of the modem, at one moment.

    The first fields are named, typed and valued like :class:`~agent.modem.status.ModemStatus`
    (``ModemStatus(**snapshot.figures())``); ``None`` where ModemManager does not know.
    Figures ModemManager gives only through other interfaces (``cell_id``, ``tac``, ``band``
    of Location/Modem3gpp cell info, ``network_time`` of Time) are not read yet: ``None``.

    Signal figures: the serving cell in LTE (``Signal.Lte``) and NR5G-SA (``Signal.Nr5g``);
    in NR5G-NSA ``rsrp_dbm``, ``rsrq_db`` and ``sinr_db`` are the NR leg's, ``rssi_dbm`` the
    LTE anchor's (as the AT path reports them); ``rssi_dbm`` alone in WCDMA and GSM. They are
    only fresh while ModemManager polls (``signal_rate_s`` > 0, :meth:`enable_signal`).

    Attributes:
        state: ModemManager's modem state (:class:`ModemState`).
        signal_quality_percent: ``Modem.SignalQuality``, 0-100 (every modem has it).
        signal_rate_s: ``Signal.Rate``: 0 when ModemManager does not poll extended signal.
        bearer_connected: whether the data bearer is connected; None without a bearer.
        ports: the port names ModemManager uses (``ttyUSB2``, ``cdc-wdm0``, ``wwan0``).
    """

    manufacturer: str | None = None
    model: str | None = None
    revision: str | None = None
    imei: str | None = field(default=None, repr=False)
    sim: str | None = None
    iccid: str | None = field(default=None, repr=False)
    registration: str | None = None
    technology: str | None = None
    operator: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    band: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    apn: str | None = None
    ip_address: str | None = None
    network_time: str | None = None
    state: ModemState = ModemState.UNKNOWN
    signal_quality_percent: int | None = None
    signal_rate_s: int | None = None
    bearer_connected: bool | None = None
    ports: frozenset[str] = frozenset()

    def figures(self) -> dict[str, Any]:
        """The fields shared with :class:`~agent.modem.status.ModemStatus`, by its keys."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in FIGURE_KEYS}


FIGURE_KEYS: Final = (
    "manufacturer",
    "model",
    "revision",
    "imei",
    "sim",
    "iccid",
    "registration",
    "technology",
    "operator",
    "mcc",
    "mnc",
    "cell_id",
    "tac",
    "band",
    "rsrp_dbm",
    "rsrq_db",
    "sinr_db",
    "rssi_dbm",
    "apn",
    "ip_address",
    "network_time",
)
"""The snapshot's fields that are :class:`~agent.modem.status.ModemStatus` keys."""


def _choose_bearer(bearers: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The connected bearer, else the first one (ModemManager lists them in creation order)."""
    for bearer in bearers:
        if bearer.get("Connected") is True:
            return bearer
    return bearers[0] if bearers else None


def observation_of(snapshot: ModemManagerSnapshot) -> Observation:
    """What :class:`~agent.modem.link.LinkMachine` judges, from ModemManager's figures: the
    same machine (faults, ladder, caps) then decides when to ask ModemManager to reconnect
    or reset (agent/daemon.py), as it decides the AT path's rungs."""
    sim = None if snapshot.sim is None else SimStatus(snapshot.sim)
    registration = Registration(snapshot.registration or Registration.UNKNOWN)
    technology = Technology(snapshot.technology or Technology.NONE)
    return Observation(
        sim,
        registration,
        technology,
        data_up=bool(snapshot.bearer_connected),
        has_address=snapshot.ip_address is not None,
        apn=snapshot.apn,
    )


def snapshot_from_properties(
    interfaces: Mapping[str, Mapping[str, Any]],
    sim: Mapping[str, Any] | None = None,
    bearers: Sequence[Mapping[str, Any]] = (),
) -> ModemManagerSnapshot:
    """The snapshot from plain (unwrapped) property dicts.

    Args:
        interfaces: the modem object's properties by interface, as ``GetManagedObjects``
            gives them (``Modem``, ``Modem3gpp``, ``Signal``).
        sim: the SIM object's ``Sim`` properties, or None (no SIM object).
        bearers: each bearer's ``Bearer`` properties.
    """
    modem = interfaces.get(MODEM_INTERFACE, {})
    gpp = interfaces.get(MODEM_3GPP_INTERFACE)
    signal = interfaces.get(SIGNAL_INTERFACE)

    raw_state = _int(modem.get("State"))
    try:
        state = ModemState(raw_state if raw_state is not None else 0)
    except ValueError:
        state = ModemState.UNKNOWN
    sim_path = modem.get("Sim")
    sim_status = sim_status_of(
        state,
        _int(modem.get("StateFailedReason")),
        _int(modem.get("UnlockRequired")),
        sim_path if isinstance(sim_path, str) else None,
    )

    bits = _int(modem.get("AccessTechnologies"))
    technology = technology_of(bits) if bits is not None else None

    registration = None
    operator = mcc = mnc = None
    if gpp is not None:
        reg_state = _int(gpp.get("RegistrationState"))
        if reg_state is not None:
            registration = registration_of(reg_state)
        operator = _text(gpp.get("OperatorName"))
        code = gpp.get("OperatorCode")
        mcc, mnc = split_operator_code(code if isinstance(code, str) else None)

    imei = _digits(modem.get("EquipmentIdentifier"), range(14, 18))
    if imei is None and gpp is not None:
        imei = _digits(gpp.get("Imei"), range(14, 18))
    iccid = _digits(sim.get("SimIdentifier"), range(18, 23)) if sim else None

    quality = modem.get("SignalQuality")
    percent = None
    if isinstance(quality, Sequence) and quality:
        percent = _int(quality[0])
        if percent is not None and not 0 <= percent <= 100:
            percent = None

    rsrp = rsrq = sinr = rssi = None
    if signal is not None:
        serving, with_rssi = _SIGNAL_SOURCES.get(technology, (None, None))
        if serving is not None:
            cell = _mapping(signal.get(serving))
            rsrp = _measure(cell, "rsrp", _RSRP_DBM)
            rsrq = _measure(cell, "rsrq", _RSRQ_DB)
            sinr = _measure(cell, "snr", _SINR_DB)
        if with_rssi is not None:
            rssi = _measure(_mapping(signal.get(with_rssi)), "rssi", _RSSI_DBM)

    bearer = _choose_bearer(bearers)
    apn = ip = connected = None
    if bearer is not None:
        connected = bearer.get("Connected") is True
        settings = bearer.get("Properties")
        if isinstance(settings, Mapping):
            apn = _text(settings.get("apn"))
        if connected:
            ip = _ip_address(bearer.get("Ip4Config")) or _ip_address(bearer.get("Ip6Config"))

    ports = modem.get("Ports")
    return ModemManagerSnapshot(
        manufacturer=_text(modem.get("Manufacturer")),
        model=_text(modem.get("Model")),
        revision=_text(modem.get("Revision")),
        imei=imei,
        sim=sim_status.value if sim_status is not None else None,
        iccid=iccid,
        registration=registration.value if registration is not None else None,
        technology=technology.value if technology is not None else None,
        operator=operator,
        mcc=mcc,
        mnc=mnc,
        rsrp_dbm=rsrp,
        rsrq_db=rsrq,
        sinr_db=sinr,
        rssi_dbm=rssi,
        apn=apn,
        ip_address=ip,
        state=state,
        signal_quality_percent=percent,
        signal_rate_s=_int(signal.get("Rate")) if signal is not None else None,
        bearer_connected=connected,
        ports=held_ports(ports) if isinstance(ports, Sequence) else frozenset(),
    )


def port_name(port_path: str) -> str:
    """The kernel name of a port path (``/dev/ttyUSB2`` → ``ttyUSB2``), as ``Modem.Ports``
    names it; the path must already be resolved (no by-id symlink)."""
    return port_path.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------
# D-Bus
# ---------------------------------------------------------------------------

_UNAVAILABLE_ERRORS: Final = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
    }
)
"""Answers that say ModemManager cannot be reached, not that it refused."""

_GONE_ERRORS: Final = frozenset(
    {
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.UnknownMethod",
    }
)
"""Answers that say the modem object (or its interface) is gone: removed by a reset or an
unplug, or not exposed in this state."""


def _unwrap(value: Any) -> Any:
    """``value`` with every dbus-fast Variant unwrapped, at any depth."""
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unwrap(v) for v in value]
    return value


async def _call(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    timeout_s: float = CALL_TIMEOUT_S,
    destination: str = MM_SERVICE,
    operation: str | None = None,
) -> list[Any]:
    """Call ``interface.member`` (without starting ModemManager) and return the reply's body.

    Raises:
        ModemManagerTimeoutError: no reply within ``timeout_s``.
        ModemManagerUnavailableError: the bus or ModemManager is not there.
        ModemAbsentError: the object or interface is gone.
        ModemManagerCallError: ModemManager answered with another error.
    """
    what = operation or f"{interface.rsplit('.', 1)[-1]}.{member}"
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
        flags=MessageFlag.NO_AUTOSTART,
    )
    try:
        async with asyncio.timeout(timeout_s):
            reply = await bus.call(message)
    except TimeoutError:
        raise ModemManagerTimeoutError(what, timeout_s) from None
    except (OSError, EOFError, DBusFastError) as exc:
        # The connection itself broke (dbus-fast raises these when the socket goes away).
        raise ModemManagerUnavailableError(
            what, "D-Bus connection lost", type(exc).__name__
        ) from None
    if reply is None:
        raise ModemManagerUnavailableError(what, "D-Bus connection lost")
    if reply.message_type == MessageType.ERROR:
        name = reply.error_name or "org.freedesktop.DBus.Error.Failed"
        if name in _UNAVAILABLE_ERRORS:
            raise ModemManagerUnavailableError(what, "ModemManager is not running", name)
        if name in _GONE_ERRORS:
            raise ModemAbsentError(None, f"{what}: no such modem object or interface ({name})")
        raise ModemManagerCallError(what, "refused", name)
    return list(reply.body)


async def _managed_modems(bus: MessageBus) -> dict[str, dict[str, dict[str, Any]]]:
    """ModemManager's modem objects, by path (at most :data:`MAX_MODEMS`, lowest first)."""
    (objects,) = await _call(
        bus, MM_PATH, OBJECT_MANAGER_INTERFACE, "GetManagedObjects", operation="find_modem"
    )
    if not isinstance(objects, dict):
        return {}
    paths = sorted((p for p in objects if str(p).startswith(MODEMS_PREFIX)), key=_modem_index)
    return {str(p): _unwrap(objects[p]) for p in paths[:MAX_MODEMS]}


def _modem_index(path: str) -> tuple[int, str]:
    leaf = path.rsplit("/", 1)[-1]
    return (int(leaf), path) if leaf.isdigit() else (1 << 30, path)


async def _connect_bus(bus_address: str | None) -> MessageBus:
    """A dbus-fast connection to the system bus (or ``bus_address``)."""
    try:
        bus = (
            MessageBus(bus_address=bus_address)
            if bus_address is not None
            else MessageBus(bus_type=BusType.SYSTEM)
        )
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await bus.connect()
    except TimeoutError:
        raise ModemManagerTimeoutError("connect_bus", CALL_TIMEOUT_S) from None
    except (OSError, EOFError, DBusFastError, DBusError) as exc:
        # No socket, refused, an address we cannot use, authentication refused.
        raise ModemManagerUnavailableError("connect_bus", "no D-Bus", type(exc).__name__) from None
    return bus


async def _disconnect_bus(bus: MessageBus) -> None:
    bus.disconnect()
    with contextlib.suppress(Exception):  # a bus that died first ends the same way
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # untyped in 5.2


async def _modemmanager_running(bus: MessageBus) -> bool:
    """Whether ModemManager owns its name (asked of the bus: never starts it)."""
    (owned,) = await _call(
        bus,
        BUS_PATH,
        BUS_SERVICE,
        "NameHasOwner",
        "s",
        [MM_SERVICE],
        destination=BUS_SERVICE,
        operation="name_has_owner",
    )
    return owned is True


class ModemManagerClient:
    """One modem of ModemManager's, over one D-Bus connection (see the module docstring).

    Made by :func:`open_modemmanager`; every method bounds its own wait.

    Attributes:
        bus: the D-Bus connection.
        modem_path: the modem's object path (``/org/freedesktop/ModemManager1/Modems/0``).
    """

    def __init__(self, bus: MessageBus, modem_path: str) -> None:
        self.bus = bus
        self.modem_path = modem_path

    async def _properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await _call(
            self.bus,
            path,
            PROPERTIES_INTERFACE,
            "GetAll",
            "s",
            [interface],
            operation=f"read_{interface.rsplit('.', 1)[-1].lower()}",
        )
        return dict(_unwrap(props)) if isinstance(props, dict) else {}

    async def _interfaces(self) -> dict[str, dict[str, Any]]:
        modems = await _managed_modems(self.bus)
        interfaces = modems.get(self.modem_path)
        if interfaces is None:
            raise ModemAbsentError(len(modems), "the modem is gone")
        return interfaces

    async def snapshot(self, *, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> ModemManagerSnapshot:
        """Read the modem, its SIM and its bearers; nothing is changed.

        Raises:
            ModemManagerTimeoutError: a call, or the whole, took longer than its bound.
            ModemManagerUnavailableError: ModemManager went away.
            ModemAbsentError: the modem went away (a reset, an unplug).
        """
        async with _bounded("snapshot", timeout_s):
            interfaces = await self._interfaces()
            modem = interfaces.get(MODEM_INTERFACE, {})
            sim_path = modem.get("Sim")
            sim: dict[str, Any] | None = None
            if isinstance(sim_path, str) and sim_path != NO_OBJECT:
                try:
                    sim = await self._properties(sim_path, SIM_INTERFACE)
                except ModemAbsentError:
                    sim = None  # the SIM object went away between the two reads
            paths = [p for p in modem.get("Bearers", []) if isinstance(p, str)][:MAX_BEARERS]
            bearers = await asyncio.gather(*(self._properties(p, BEARER_INTERFACE) for p in paths))
        return snapshot_from_properties(interfaces, sim, bearers)

    async def enable_signal(self, rate_s: int = SIGNAL_RATE_S) -> None:
        """``Signal.Setup(rate_s)``: ModemManager polls the extended signal figures every
        ``rate_s`` seconds (0 stops it). Its state outlives this connection."""
        if not 0 <= rate_s <= SIGNAL_RATE_MAX_S:
            raise UsageError("rate_s", f"must be 0..{SIGNAL_RATE_MAX_S}")
        await _call(self.bus, self.modem_path, SIGNAL_INTERFACE, "Setup", "u", [rate_s])
        log.info("modemmanager_signal_polling", rate_s=rate_s)

    async def reconnect(
        self, *, apn: str | None = None, timeout_s: float = RECONNECT_TIMEOUT_S
    ) -> None:
        """Take the data session down and up again.

        With a bearer (NetworkManager's, or one made before): ``Bearer.Disconnect`` (its
        failure is logged, not raised: a bearer already down is what we want) then
        ``Bearer.Connect``, keeping the bearer's APN and credentials. Without one:
        ``Simple.Connect({"apn": apn})``.

        Raises:
            UsageError: no bearer and no ``apn``.
            ModemManagerCallError: ModemManager refused the connection (its error's name).
            ModemManagerTimeoutError, ModemManagerUnavailableError, ModemAbsentError.
        """
        if apn is not None and _text(apn, 100) is None:
            raise UsageError("apn", "not an APN (printable ASCII, at most 100 characters)")
        async with _bounded("reconnect", timeout_s):
            modem = await self._properties(self.modem_path, MODEM_INTERFACE)
            paths = [p for p in modem.get("Bearers", []) if isinstance(p, str)][:MAX_BEARERS]
            bearers = [(p, await self._properties(p, BEARER_INTERFACE)) for p in paths]
            chosen = next((p for p, b in bearers if b.get("Connected") is True), None)
            chosen = chosen or (paths[0] if paths else None)
            if chosen is None:
                if apn is None:
                    raise UsageError("apn", "the modem has no bearer: an APN is needed")
                log.info("modemmanager_connect", bearer="new")
                await _call(
                    self.bus,
                    self.modem_path,
                    SIMPLE_INTERFACE,
                    "Connect",
                    "a{sv}",
                    [{"apn": Variant("s", apn)}],
                    timeout_s=CONNECT_TIMEOUT_S,
                )
            else:
                log.info("modemmanager_reconnect", bearers=len(paths))
                try:
                    await _call(
                        self.bus,
                        chosen,
                        BEARER_INTERFACE,
                        "Disconnect",
                        timeout_s=DISCONNECT_TIMEOUT_S,
                    )
                except ModemManagerCallError as exc:
                    log.warning("modemmanager_disconnect_refused", dbus_error=exc.dbus_error)
                await _call(
                    self.bus, chosen, BEARER_INTERFACE, "Connect", timeout_s=CONNECT_TIMEOUT_S
                )
        log.info("modemmanager_connected")

    async def reset(self, *, timeout_s: float = RESET_TIMEOUT_S) -> None:
        """``Modem.Reset``: the module restarts; ModemManager drops the modem object and
        makes a new one (another path) once the module is back on USB.

        Raises:
            ModemManagerCallError: ModemManager refused (e.g. ``Core.Unsupported``).
            ModemManagerTimeoutError, ModemManagerUnavailableError, ModemAbsentError.
        """
        log.info("modemmanager_reset")
        await _call(self.bus, self.modem_path, MODEM_INTERFACE, "Reset", timeout_s=timeout_s)


@asynccontextmanager
async def _bounded(operation: str, timeout_s: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` whose expiry is a :class:`ModemManagerTimeoutError`; an inner
    call's own (shorter) timeout passes through as it is."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except ModemManagerError:
        raise
    except TimeoutError:
        raise ModemManagerTimeoutError(operation, timeout_s) from None


@asynccontextmanager
async def open_modemmanager(
    bus_address: str | None = None, *, modem_path: str | None = None
) -> AsyncIterator[ModemManagerClient]:
    """Connect to ModemManager (the system bus, or ``bus_address``) and yield a client for
    its first modem (lowest index), or ``modem_path``; the connection is closed on exit.

    Raises:
        ModemManagerUnavailableError: no D-Bus, or no ModemManager on it (checked with the
            bus's ``NameHasOwner``: a disabled ModemManager is not started).
        ModemAbsentError: ModemManager manages no modem (or not ``modem_path``).
        ModemManagerTimeoutError: the bus or ModemManager did not answer in time.
    """
    bus = await _connect_bus(bus_address)
    try:
        if not await _modemmanager_running(bus):
            raise ModemManagerUnavailableError("find_modem", "ModemManager is not running")
        modems = await _managed_modems(bus)
        if modem_path is None:
            if not modems:
                raise ModemAbsentError(0, "ModemManager manages no modem")
            modem_path = next(iter(modems))
        elif modem_path not in modems:
            raise ModemAbsentError(len(modems), "no such modem")
        log.info("modemmanager_modem_found", modems=len(modems), modem=_modem_index(modem_path)[0])
        yield ModemManagerClient(bus, modem_path)
    finally:
        await _disconnect_bus(bus)


# ---------------------------------------------------------------------------
# Who holds the AT port
# ---------------------------------------------------------------------------


def _resolve_port(port_path: str, sysfs_root: Path) -> tuple[str, str | None]:
    """The port's resolved device path (a by-id symlink followed) and its sysfs device path
    (``/sys/devices/…/ttyUSB2``), or None when sysfs does not know it."""
    resolved = os.path.realpath(port_path)
    sysfs = sysfs_root / "class" / "tty" / port_name(resolved)
    return resolved, (os.path.realpath(sysfs) if sysfs.exists() else None)


def _holds(interfaces: Mapping[str, Mapping[str, Any]], name: str, sysfs: str | None) -> bool:
    """Whether one modem of ModemManager's holds the port ``name``: listed in ``Ports`` as a
    port it uses, or not listed but on the USB device ModemManager manages (``Device``),
    which it re-probes, port by port, after every re-enumeration (only a port it lists as
    ignored is left alone)."""
    modem = interfaces.get(MODEM_INTERFACE, {})
    ports = modem.get("Ports")
    listed = (
        {e[0]: e[1] for e in ports if isinstance(e, Sequence) and len(e) == 2}
        if isinstance(ports, Sequence)
        else {}
    )
    if name in listed:
        return name in held_ports([(name, listed[name])])
    device = modem.get("Device")
    if sysfs is None or not isinstance(device, str) or not device.startswith("/"):
        return False
    return sysfs.startswith(device.rstrip("/") + "/")


async def port_held_by_modemmanager(
    port_path: str, *, bus_address: str | None = None, sysfs_root: Path = Path("/sys")
) -> bool:
    """Whether ModemManager holds the AT port ``port_path`` (a ``/dev/serial/by-id`` path
    is followed to its tty). False when there is no D-Bus or no ModemManager: nothing holds
    the port then.

    Raises:
        ModemManagerTimeoutError: ModemManager runs but did not answer in time.
    """
    name_path, sysfs = _resolve_port(port_path, sysfs_root)
    name = port_name(name_path)
    try:
        bus = await _connect_bus(bus_address)
    except ModemManagerUnavailableError:
        return False
    try:
        if not await _modemmanager_running(bus):
            return False
        modems = await _managed_modems(bus)
    except ModemManagerUnavailableError:
        return False
    finally:
        await _disconnect_bus(bus)
    return any(_holds(interfaces, name, sysfs) for interfaces in modems.values())


async def check_at_port(
    port_path: str, *, bus_address: str | None = None, sysfs_root: Path = Path("/sys")
) -> None:
    """Refuse an AT port that ModemManager holds, with the fix.

    Raises:
        ModemPortHeldError: ModemManager holds it; ``port`` is the resolved tty path.
        ModemManagerTimeoutError: ModemManager runs but did not answer in time.
    """
    if await port_held_by_modemmanager(port_path, bus_address=bus_address, sysfs_root=sysfs_root):
        resolved, _ = _resolve_port(port_path, sysfs_root)
        log.warning("modem_port_held", port=resolved, holder="ModemManager")
        raise port_held_fix(resolved)
