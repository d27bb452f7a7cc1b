"""The emulated 5G modem's AT interpreter and state, without I/O (:mod:`hil.emulators.modem` puts
it on a pseudo-terminal).

A Quectel RG50xQ/RM5xxQ-class module (RM500Q, RM520N) as the hub sees it on its AT port,
written from the manuals, independently of ``drivers/modem/`` (the hub's own AT code): a test
that runs one against the other checks two readings of the same documents.

Sources (cited per command below):

- 3GPP TS 27.007: +CPIN, +CIMI, +COPS, +CREG/+CEREG/+C5GREG, +CSQ, +CESQ, +CGDCONT, +CGACT,
  +CGPADDR, +CGEREP/+CGEV, +CFUN, +CCLK, +CMEE and the +CME ERROR codes (§9.2); ITU-T V.250
  for the line format: every information text and result code is ``<CR><LF>text<CR><LF>``,
  a command line ends at ``<CR>`` (S3), several extended commands share one line separated
  by ``;``.
- Quectel "RG50xQ&RM5xxQ Series Network Application Note" v1.0.0 (2023-10-19), which carries
  the network chapters of the RG50xQ&RM5xxQ AT Commands Manual: §3.1.1 +COPS (AcT 11 when
  registered on NR5G SA), §3.1.4 +CEREG and §3.1.5 +C5GREG (examples), §3.2.1 +QNWINFO,
  §3.2.2 +QENG (field order, units, examples), §3.3.1 +CSQ ("does not apply to NR5G"),
  §3.4.7 +CCLK, §3.4.8 +QLTS (the example's form ``"2017/01/13,03:40:48+32,0"``), §3.5.3
  +CGPADDR (the address omitted when there is none).
- Quectel usage as seen in published host code and transcripts (no manual text at hand, so
  the shape is the commonest observed one): ``RDY`` then ``+CPIN: <code>`` after boot,
  ``+QCCID: <iccid>``, ``+QCFG: "usbnet",<n>`` (0 QMI/RmNet, 1 ECM, 2 MBIM, 3 RNDIS) and
  ``+QNETDEVCTL: <op>,<cid>,<urc_en>,<state>`` with ``+QNETDEVSTATUS: <state>`` URCs.

+QENG="servingcell" (Network Application Note §3.2.2), per technology::

    LTE:      +QENG: "servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,
                     <freq_band_ind>,<UL_bandwidth>,<DL_bandwidth>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,
                     <SINR>,<CQI>,<tx_power>,<srxlev>
    NR5G-NSA: +QENG: "servingcell",<state>
              +QENG: "LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,<freq_band_ind>,
                     <UL_bandwidth>,<DL_bandwidth>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,<CQI>,
                     <tx_power>,<srxlev>
              +QENG: "NR5G-NSA",<MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>,<ARFCN>,<band>,
                     <NR_DL_bandwidth>,<scs>
    NR5G-SA:  +QENG: "servingcell",<state>,"NR5G-SA",<duplex_mode>,<MCC>,<MNC>,<cellID>,<PCID>,
                     <TAC>,<ARFCN>,<band>,<NR_DL_bandwidth>,<RSRP>,<RSRQ>,<SINR>,<scs>,<srxlev>

Units: RSRP dBm, RSRQ dB, RSSI dBm, SINR dB, LTE and NR alike (LTE clamped to the -20..30 dB
Quectel documents for the same measurement in ``+QIND: "SQI",<RSRP>,<RSRQ>,<SINR>``; NR
-23..40). An earlier reading of §3.2.2 took the LTE <SINR> for an index X with
``dB = (1/5)·X·10 − 20`` (the Qualcomm QMI scale, 0..250 in 1/5 dB, misapplied); published
RG50xQ/RM5xxQ transcripts refute it: the LTE <SINR> of +QENG equals the RSSNR (dB) that
+QCAINFO prints for the same PCC in the same second (a RouterOS log of an RM5xxQ:
``...,D17,-104,-9,-77,18,...`` beside ``+QCAINFO: "pcc",476,50,"LTE BAND 1",1,189,-104,-9,-77,18``),
and weak cells print negative values (``...,-124,-16,-91,-5,3``), which no 0-based index can.
Cell IDs and TACs in upper-case hexadecimal; <state> "SEARCH" (no cell: the
line stops there), "LIMSRV" (camped, not registered), "NOCONN" (registered, idle), "CONNECT"
(registered, a data call up). Bandwidths and <scs> are the manual's enumerations (LTE 5 =
20 MHz, NR 12 = 100 MHz, scs 1 = 30 kHz). Idle LTE lines carry CQI 0 and tx_power -32768 and a
srxlev of RSRP + 127, as the manual's LTE example does; connected ones CQI 9, tx_power 230
and srxlev "-" (its NSA example).

Decisions where the documents leave room (each one place, here):

- Registration per domain: +CEREG (EPS) reports the configured status on LTE and NR5G-NSA
  (AcT 7, 13 on NSA) and 0 on NR5G-SA; +C5GREG (5GS) the reverse (AcT 11); +CREG mirrors
  the status whatever the technology (location only on LTE/NSA), so a client reading only
  +CREG still learns whether the module is registered. Location (<tac>, <ci>) only with
  ``n=2`` and while registered (27.007).
- A wrong APN (the APN of context 1, or of the context being activated, differs from
  :attr:`Network.apn`): :class:`WrongApn` ``AUTO`` does what networks do per technology: on
  LTE/NSA the attach needs a default bearer, so the network rejects it (EMM #19 "ESM
  failure", +CEREG stat 3, decided at attach: boot, +CFUN=1, SIM unlocked, a setter); on
  NR5G-SA registration succeeds and the PDU session is refused (+CGACT answers +CME ERROR:
  127 "missing or unknown APN"). ``DENY_REGISTRATION`` and ``NO_DATA_SESSION`` force one.
- The default bearer an LTE attach brings is not modelled: a context is active once the
  host activates it (+CGACT or +QNETDEVCTL).
- An unknown command answers ``ERROR`` under ``+CMEE=0`` and +CME ERROR 4 "operation not
  supported" otherwise (the module's CMEE starts at :attr:`ModuleIdentity.cmee`, 1).
- Text not starting with ``AT`` is ignored (no answer), as modules ignore line noise.
- The data call drop URC is ``+CGEV: NW PDN DEACT <cid>`` (27.007 §10.1.19) while
  +CGEREP's mode is not 0 (starts at 1 here), and ``+QNETDEVSTATUS: 0`` when +QNETDEVCTL
  asked for URCs; it comes when the network ends the call (:meth:`ModemState.drop_data_call`)
  or the registration is lost, not when the host deactivates or turns the radio off (no
  ``ME`` events are sent).

Thread safety: every public method takes the state's lock (an ``RLock`` the pseudo-terminal
runner shares), so a test thread may script the state while the emulator's thread answers.
Output that is not an answer (URCs, injected bytes, boot codes) waits in a bounded queue that
:meth:`ModemState.take_output` drains; the runner is told through :attr:`ModemState.notify`.
"""

from __future__ import annotations

import enum
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

# ----------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------

CRLF: Final = "\r\n"
MAX_COMMAND_LINE_BYTES: Final = 1024
"""The emulator's input line bound: bytes before the terminating CR. V.250 asks a DCE to take
at least 80; a longer line is discarded as it arrives and answered ERROR when its CR comes."""
MAX_PENDING_OUTPUT_BYTES: Final = 64 * 1024
"""Unsolicited output waiting for the runner; beyond it new output is dropped and counted (a
module whose host does not read loses URCs the same way)."""
MAX_LOGGED_COMMANDS: Final = 100_000
"""The command record keeps the latest lines (a soak's record stays bounded); the counters
count them all."""
PIN_ATTEMPTS: Final = 3
PUK_ATTEMPTS: Final = 10

LTE_SINR_MIN_DB: Final = -20
LTE_SINR_MAX_DB: Final = 30
"""The LTE <SINR> of +QENG is whole dB within -20..30 (module docstring, "Units")."""
IDLE_CQI: Final = "0"
IDLE_TX_POWER: Final = "-32768"
CONNECTED_CQI: Final = "9"
CONNECTED_TX_POWER: Final = "230"
SRXLEV_OFFSET_DB: Final = 127
"""srxlev = RSRP + 127 in idle: the manual's LTE example (-100 dBm, srxlev 27)."""


class CmeError(enum.IntEnum):
    """+CME ERROR codes used here (3GPP TS 27.007 §9.2.1, §9.2.2)."""

    PHONE_FAILURE = 0
    OPERATION_NOT_ALLOWED = 3
    OPERATION_NOT_SUPPORTED = 4
    SIM_NOT_INSERTED = 10
    SIM_PIN_REQUIRED = 11
    SIM_PUK_REQUIRED = 12
    SIM_FAILURE = 13
    INCORRECT_PASSWORD = 16
    NO_NETWORK_SERVICE = 30
    INCORRECT_PARAMETERS = 50
    UNKNOWN = 100
    MISSING_OR_UNKNOWN_APN = 127


CME_TEXT: Final[Mapping[CmeError, str]] = {
    CmeError.PHONE_FAILURE: "phone failure",
    CmeError.OPERATION_NOT_ALLOWED: "operation not allowed",
    CmeError.OPERATION_NOT_SUPPORTED: "operation not supported",
    CmeError.SIM_NOT_INSERTED: "SIM not inserted",
    CmeError.SIM_PIN_REQUIRED: "SIM PIN required",
    CmeError.SIM_PUK_REQUIRED: "SIM PUK required",
    CmeError.SIM_FAILURE: "SIM failure",
    CmeError.INCORRECT_PASSWORD: "incorrect password",
    CmeError.NO_NETWORK_SERVICE: "no network service",
    CmeError.INCORRECT_PARAMETERS: "incorrect parameters",
    CmeError.UNKNOWN: "unknown",
    CmeError.MISSING_OR_UNKNOWN_APN: "missing or unknown APN",
}
"""The verbose texts of ``+CMEE=2`` (27.007 §9.2)."""


class Registration(enum.IntEnum):
    """<stat> of +CREG/+CEREG/+C5GREG (27.007 §7.2, §10.1.22, §10.1.23)."""

    NOT_REGISTERED = 0  #: not registered, not searching (also: radio off, no SIM)
    HOME = 1
    SEARCHING = 2  #: not registered, searching: no suitable cell (no signal either)
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5


class Technology(enum.Enum):
    """The radio access the module is on (the names +QENG uses)."""

    LTE = "LTE"
    NR5G_NSA = "NR5G-NSA"  #: EN-DC: an LTE anchor plus an NR leg, EPS core
    NR5G_SA = "NR5G-SA"  #: NR only, 5G core


class SimStatus(enum.Enum):
    """What +CPIN? reports (27.007 §8.3), plus the two cases it answers with an error."""

    ABSENT = "absent"  #: +CME ERROR: 10
    PIN_REQUIRED = "SIM PIN"
    PUK_REQUIRED = "SIM PUK"
    READY = "READY"
    BLOCKED = "blocked"  #: PUK attempts exhausted: +CME ERROR: 13


class WrongApn(enum.Enum):
    """What the network does when the host asks for an APN it does not serve (module doc)."""

    AUTO = "auto"  #: LTE/NSA: registration denied; NR5G-SA: no data session
    DENY_REGISTRATION = "deny-registration"
    NO_DATA_SESSION = "no-data-session"


# ----------------------------------------------------------------------------
# Configuration (frozen; swapped whole through the setters)
# ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModuleIdentity:
    """What ATI, +CGMI, +CGMM, +CGMR and +CGSN answer; ``cmee`` is the +CMEE mode at boot."""

    manufacturer: str = "Quectel"
    model: str = "RM500Q-GL"
    revision: str = "RM500QGLABR11A06M4G"
    imei: str = "860000000000017"  #: fictional, with a valid Luhn check digit
    cmee: int = 1


@dataclass(frozen=True, slots=True)
class SimCard:
    """The inserted (U)SIM. ``pin`` None: PIN check disabled (READY at boot)."""

    iccid: str = "8988000000000000016"  #: fictional
    imsi: str = "001010000000001"  #: test PLMN 001/01
    pin: str | None = None
    puk: str = "12345678"


DEFAULT_SIM: Final = SimCard()


@dataclass(frozen=True, slots=True)
class Network:
    """The network the module finds.

    Attributes:
        operator: long alphanumeric name (+COPS format 0 and 1).
        mcc, mnc: the PLMN, printed as given (``"001"``, ``"01"``).
        apn: the APN it serves; None: any (an empty APN in a context always means "the
            subscription's default", which it serves too).
        wrong_apn: what it does with any other APN.
        ip_address: what an activated context gets (+CGPADDR).
        utc_offset_quarters: the zone its NITZ gives (+CCLK, +QLTS), in quarters of an hour.
    """

    operator: str = "HomeHub Test"
    mcc: str = "001"
    mnc: str = "01"
    apn: str | None = "hub.test"
    wrong_apn: WrongApn = WrongApn.AUTO
    ip_address: str = "10.45.0.2"
    utc_offset_quarters: int = 4

    @property
    def plmn(self) -> str:
        """MCC and MNC run together, as +COPS format 2 and +QNWINFO print them."""
        return self.mcc + self.mnc


@dataclass(frozen=True, slots=True)
class Cell:
    """The serving cell(s): identity and channel, as +QENG, +QNWINFO and the location of
    +CREG/+CEREG/+C5GREG show them. Bandwidths and ``scs`` are the manual's enumerations."""

    tac: int = 0x1A2B
    lte_cell_id: int = 0x1A2B3C4  #: 28 bits
    lte_pci: int = 101
    earfcn: int = 1850
    lte_band: int = 3
    lte_duplex: str = "FDD"
    lte_ul_bandwidth: int = 5  #: 20 MHz
    lte_dl_bandwidth: int = 5  #: 20 MHz
    nr_cell_id: int = 0x1A2B3C4D5  #: 36 bits
    nr_pci: int = 202
    nr_arfcn: int = 633984
    nr_band: int = 78
    nr_duplex: str = "TDD"
    nr_dl_bandwidth: int = 12  #: 100 MHz
    nr_scs: int = 1  #: 30 kHz


@dataclass(frozen=True, slots=True)
class Signal:
    """Radio measurements of one cell, in physical units (dBm, dB)."""

    rsrp_dbm: float = -90.0
    rsrq_db: float = -10.0
    sinr_db: float = 15.0
    rssi_dbm: float = -60.0


@dataclass(frozen=True, slots=True)
class PdpContext:
    """One +CGDCONT definition."""

    pdp_type: str = "IP"
    apn: str = ""


@dataclass(slots=True)
class Counters:
    """What the modem has seen and done since it was made (a copy from
    :attr:`ModemState.counters`)."""

    commands: int = 0  #: command lines received (answered or not)
    errors: int = 0  #: final results other than OK
    swallowed: int = 0  #: command lines never answered (:meth:`ModemState.swallow`)
    resets: int = 0  #: AT+CFUN=<fun>,1
    boots: int = 0  #: boots completed (RDY sent), the first one included
    urcs: int = 0  #: unsolicited result codes sent
    overlong_lines: int = 0  #: input lines beyond MAX_COMMAND_LINE_BYTES
    ignored_lines: int = 0  #: lines not starting with AT
    dropped_output_bytes: int = 0  #: unsolicited output lost to the bound


# ----------------------------------------------------------------------------
# Encodings (one place each)
# ----------------------------------------------------------------------------


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def csq_rssi(rssi_dbm: float) -> int:
    """+CSQ <rssi> (27.007 §8.5): 0 ≤ -113 dBm, 2-30 for -109..-53 dBm in 2 dB steps, 31 ≥ -51."""
    return _clamp(math.floor((rssi_dbm + 113) / 2), 0, 31)


def cesq_rsrq(rsrq_db: float) -> int:
    """+CESQ <rsrq> (27.007 §8.69): 0 < -19.5 dB, then 0.5 dB steps, 34 ≥ -3 dB."""
    return _clamp(math.floor((rsrq_db + 19.5) * 2) + 1, 0, 34)


def cesq_rsrp(rsrp_dbm: float) -> int:
    """+CESQ <rsrp> (27.007 §8.69): 0 < -140 dBm, then 1 dB steps, 97 ≥ -44 dBm."""
    return _clamp(math.floor(rsrp_dbm + 140) + 1, 0, 97)


def cesq_ss_rsrq(rsrq_db: float) -> int:
    """+CESQ <ss_rsrq> (27.007 §8.69, TS 38.133 §10.1.11): 0 < -43 dB, 0.5 dB steps, 127 ≥ 20."""
    return _clamp(math.floor((rsrq_db + 43) * 2) + 1, 0, 127)


def cesq_ss_rsrp(rsrp_dbm: float) -> int:
    """+CESQ <ss_rsrp> (27.007 §8.69, TS 38.133 §10.1.6): 0 < -156 dBm, 1 dB steps, 126 ≥ -31."""
    return _clamp(math.floor(rsrp_dbm + 156) + 1, 0, 126)


def cesq_ss_sinr(sinr_db: float) -> int:
    """+CESQ <ss_sinr> (27.007 §8.69, TS 38.133 §10.1.16): 0 < -23 dB, 0.5 dB steps, 127 ≥ 40."""
    return _clamp(math.floor((sinr_db + 23) * 2) + 1, 0, 127)


def qeng_lte_sinr(sinr_db: float) -> int:
    """The LTE <SINR> of +QENG: whole dB, -20..30 (module docstring, "Units")."""
    return _clamp(_half_up(sinr_db), LTE_SINR_MIN_DB, LTE_SINR_MAX_DB)


def _hex(value: int, width: int = 0) -> str:
    return f"{value:0{width}X}"


def _quoted(text: str) -> str:
    return f'"{text}"'


def _time_with_zone(moment: datetime, quarters: int, *, four_digit_year: bool) -> str:
    """``yy/MM/dd,hh:mm:ss±zz`` (+CCLK) or ``yyyy/MM/dd,…`` (+QLTS's examples)."""
    year = f"{moment.year:04d}" if four_digit_year else f"{moment.year % 100:02d}"
    sign = "-" if quarters < 0 else "+"
    return f"{year}/{moment:%m/%d,%H:%M:%S}{sign}{abs(quarters):02d}"


def _host_utc() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------
# Command line parsing
# ----------------------------------------------------------------------------


class _AtError(Exception):
    """A command's failure: ``code`` None answers plain ERROR whatever +CMEE says."""

    def __init__(self, code: CmeError | None) -> None:
        super().__init__(code)
        self.code = code


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(arg: str) -> str:
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == arg[-1] == '"':
        return arg[1:-1]
    return arg


def _int_arg(arg: str, low: int, high: int) -> int:
    try:
        value = int(_unquote(arg))
    except ValueError:
        raise _AtError(CmeError.INCORRECT_PARAMETERS) from None
    if not low <= value <= high:
        raise _AtError(CmeError.INCORRECT_PARAMETERS)
    return value


@dataclass(frozen=True, slots=True)
class _Command:
    """One extended command of a line: ``name`` upper-cased (``+CSQ``), its form and args."""

    name: str
    form: str  #: "exec" (AT+X), "read" (AT+X?), "test" (AT+X=?), "set" (AT+X=...)
    args: tuple[str, ...]


def _parse_extended(text: str) -> _Command:
    end = 1
    while end < len(text) and (text[end].isalnum() or text[end] in "_&"):
        end += 1
    name, rest = text[:end].upper(), text[end:]
    if rest == "":
        return _Command(name, "exec", ())
    if rest == "?":
        return _Command(name, "read", ())
    if rest == "=?":
        return _Command(name, "test", ())
    if rest.startswith("="):
        return _Command(name, "set", tuple(a.strip() for a in _split_top_level(rest[1:], ",")))
    raise _AtError(None)


# ----------------------------------------------------------------------------
# The state and interpreter
# ----------------------------------------------------------------------------

Handler = Callable[["ModemState", _Command], list[str]]


@dataclass(slots=True)
class _Session:
    """Settings a reset puts back to their defaults."""

    echo: bool = True
    cmee: int = 1
    creg_n: int = 0
    cereg_n: int = 0
    c5greg_n: int = 0
    cgerep_mode: int = 1
    cops_format: int = 0
    deregistered: bool = False  #: AT+COPS=2
    cfun: int = 1
    active: set[int] = field(default_factory=set)
    qnetdevctl: tuple[int, int, int] = (0, 0, 0)  #: op, cid, urc_en
    attach_denied: bool = False
    nitz_at: datetime | None = None
    lte_bytes: tuple[int, int] = (0, 0)  #: +QGDCNT: sent, received since the boot
    nr_bytes: tuple[int, int] = (0, 0)  #: +QGDNRCNT: the same on NR


class ModemState:
    """The modem: its configuration, its scripted faults and its AT interpreter.

    Args:
        identity: what it says it is.
        sim: the inserted SIM; None: no SIM.
        network: the network it finds.
        cell: the serving cell's identity.
        technology: LTE, NR5G-NSA or NR5G-SA.
        signal: the LTE cell's measurements (LTE, NSA anchor) or the NR cell's (SA).
        nr_signal: the NR leg's in NSA (default: ``signal``).
        registration: what the network does with it once it may register (a SIM ready and
            the radio on); HOME or ROAMING register it.
        contexts: the +CGDCONT definitions kept in its memory (default: context 1, "IP",
            empty APN: the subscription's default).
        utc_now: the wall clock for +CCLK and +QLTS (tests inject a fixed one).

    The setters swap one piece whole (``set_signal`` replaces single fields of the signal) and
    send the registration URCs a real module would send for the change.
    """

    def __init__(
        self,
        *,
        identity: ModuleIdentity | None = None,
        sim: SimCard | None = DEFAULT_SIM,
        network: Network | None = None,
        cell: Cell | None = None,
        technology: Technology = Technology.LTE,
        signal: Signal | None = None,
        nr_signal: Signal | None = None,
        registration: Registration = Registration.HOME,
        contexts: Mapping[int, PdpContext] | None = None,
        utc_now: Callable[[], datetime] = _host_utc,
    ) -> None:
        self.lock = threading.RLock()
        self.notify: Callable[[], None] = lambda: None
        """Called (under the lock) whenever output is queued; the runner wakes on it."""
        self._identity = identity or ModuleIdentity()
        self._sim = sim or DEFAULT_SIM
        self._sim_inserted = sim is not None
        self._network = network or Network()
        self._cell = cell or Cell()
        self._technology = technology
        self._signal = signal or Signal()
        self._nr_signal = nr_signal
        self._registration = registration
        self._contexts: dict[int, PdpContext] = dict(contexts or {1: PdpContext()})
        self._utc_now = utc_now
        self._usbnet = 0
        self._sim_status = SimStatus.READY
        self._pin_attempts = PIN_ATTEMPTS
        self._puk_attempts = PUK_ATTEMPTS
        self._session = _Session()
        self._powered = False
        self._reset_requested = False
        self._line = bytearray()
        self._line_overlong = False
        self._pending = bytearray()
        self._interleave: list[str] = []
        self._swallow: list[tuple[str | None, int]] = []
        self._log: deque[str] = deque(maxlen=MAX_LOGGED_COMMANDS)
        self._counters = Counters()
        self._insert_sim(sim)

    # -- observation -------------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """The command lines received (the latest :data:`MAX_LOGGED_COMMANDS`), in order, as
        sent (without their CR)."""
        with self.lock:
            return list(self._log)

    def count(self, command: str) -> int:
        """How many received lines equal ``command`` (case and spaces ignored outside quotes),
        e.g. ``count("AT+CFUN=1,1")``."""
        wanted = _normalise(command)
        with self.lock:
            return sum(1 for line in self._log if _normalise(line) == wanted)

    @property
    def counters(self) -> Counters:
        """A copy of the counters."""
        with self.lock:
            return replace(self._counters)

    @property
    def powered(self) -> bool:
        """The module runs and answers (False while it resets or is unplugged)."""
        with self.lock:
            return self._powered

    @property
    def sim_status(self) -> SimStatus:
        with self.lock:
            return self._sim_status

    @property
    def pin_attempts_left(self) -> int:
        with self.lock:
            return self._pin_attempts

    @property
    def active_contexts(self) -> frozenset[int]:
        """The contexts with a data session up."""
        with self.lock:
            return frozenset(self._session.active)

    @property
    def echo(self) -> bool:
        with self.lock:
            return self._session.echo

    # -- setters -------------------------------------------------------------------------

    def set_sim(self, sim: SimCard | None) -> None:
        """Insert ``sim`` (None: remove the SIM). A SIM with a PIN starts PIN-locked; the
        attempt counters start full."""
        with self._change(reattach=True):
            self._insert_sim(sim)

    def require_puk(self) -> None:
        """The SIM asks for its PUK (as after three wrong PINs)."""
        with self._change(reattach=True):
            if self._sim_inserted:
                self._sim_status = SimStatus.PUK_REQUIRED
                self._pin_attempts = 0

    def set_registration(self, registration: Registration) -> None:
        """What the network does with the module: HOME, ROAMING, SEARCHING (no cell: no
        signal either), DENIED, UNKNOWN, NOT_REGISTERED."""
        with self._change(reattach=True):
            self._registration = registration

    def set_radio(
        self,
        technology: Technology,
        signal: Signal | None = None,
        nr_signal: Signal | None = None,
    ) -> None:
        """Move to ``technology``, with new measurements when given."""
        with self._change(reattach=True):
            self._technology = technology
            if signal is not None:
                self._signal = signal
            if nr_signal is not None:
                self._nr_signal = nr_signal

    def set_signal(self, **changes: float) -> None:
        """Change some measurements of the primary cell (fading): ``set_signal(rsrp_dbm=-118,
        sinr_db=-4)``. The registration is left as it is: call :meth:`set_registration` for a
        loss of coverage."""
        with self._change():
            self._signal = replace(self._signal, **changes)

    def set_nr_signal(self, **changes: float) -> None:
        """Change some measurements of the NSA NR leg."""
        with self._change():
            self._nr_signal = replace(self._nr_signal or self._signal, **changes)

    def set_network(self, network: Network) -> None:
        """Another network (PLMN, APN served, wrong-APN behaviour, address, zone)."""
        with self._change(reattach=True):
            self._network = network

    def set_cell(self, cell: Cell) -> None:
        """Another serving cell (a handover: +CEREG/+C5GREG with n=2 report it)."""
        with self._change():
            self._cell = cell

    def add_traffic(self, sent: int, received: int, *, nr: bool = False) -> None:
        """The data session carried ``sent`` and ``received`` more bytes: the LTE counter
        (+QGDCNT) or, with ``nr``, the NR one (+QGDNRCNT). Both start at 0 at every boot."""
        with self._change():
            session = self._session
            old = session.nr_bytes if nr else session.lte_bytes
            new = (old[0] + sent, old[1] + received)
            if nr:
                session.nr_bytes = new
            else:
                session.lte_bytes = new

    def drop_data_call(self, cid: int | None = None) -> None:
        """The network ends the data session of ``cid`` (None: all): the contexts go
        inactive, with ``+CGEV: NW PDN DEACT <cid>`` and ``+QNETDEVSTATUS: 0`` as enabled."""
        with self._change():
            for dropped in sorted(self._session.active if cid is None else {cid}):
                if dropped in self._session.active:
                    self._deactivate(dropped, by_network=True)

    # -- fault injection -----------------------------------------------------------------

    def inject_urc(self, line: str, *, interleave: bool = False) -> None:
        """Send ``line`` as an unsolicited result code now, or, with ``interleave``, inside
        the next answer: after its information text and before its final result code."""
        with self.lock:
            if interleave:
                self._interleave.append(line)
            else:
                self._emit_urc(line)

    def inject_bytes(self, data: bytes) -> None:
        """Send raw bytes (line noise, a half line, bytes that are no text)."""
        with self.lock:
            self._queue(data)

    def inject_overlong_line(self, length: int = 4 * MAX_COMMAND_LINE_BYTES) -> None:
        """Send one unsolicited line of ``length`` characters (a runaway URC)."""
        body = ("+QIND: " + "9" * length)[:length]
        self.inject_bytes((CRLF + body + CRLF).encode("ascii"))

    def swallow(self, command: str | None = None, times: int = 1) -> None:
        """Leave the next ``times`` command lines (equal to ``command`` when given) without an
        answer: they are echoed and logged, then nothing comes, as from a hung module."""
        with self.lock:
            self._swallow.append((None if command is None else _normalise(command), times))

    # -- life cycle (the runner's) -------------------------------------------------------

    def boot(self) -> None:
        """Finish booting: settings back to defaults, then ``RDY`` and ``+CPIN: <code>``."""
        with self._change():
            self._session = _Session(cmee=self._identity.cmee)
            self._powered = True
            self._line.clear()
            self._line_overlong = False
            self._interleave.clear()
            if self._sim_status is SimStatus.READY and self._sim.pin is not None:
                self._sim_status = SimStatus.PIN_REQUIRED
            self._attach()
            self._counters.boots += 1
            self._emit_urc("RDY")
            if self._sim_status in (SimStatus.READY, SimStatus.PIN_REQUIRED):
                self._emit_urc(f"+CPIN: {self._sim_status.value}")
            elif self._sim_status is SimStatus.PUK_REQUIRED:
                self._emit_urc("+CPIN: SIM PUK")

    def power_off(self) -> None:
        """Stop answering (a reset begins, the module is unplugged)."""
        with self.lock:
            self._powered = False
            self._session.active.clear()
            self._line.clear()

    def take_reset_request(self) -> bool:
        """Whether an AT+CFUN=<fun>,1 was answered since the last call."""
        with self.lock:
            requested, self._reset_requested = self._reset_requested, False
            return requested

    def take_output(self) -> bytes:
        """The queued unsolicited output, emptied."""
        with self.lock:
            out = bytes(self._pending)
            self._pending.clear()
            return out

    # -- the interpreter -----------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return what the module answers (echo included)."""
        out = bytearray()
        with self.lock:
            for byte in data:
                if not self._powered:
                    break
                if self._session.echo:
                    out.append(byte)
                if byte == 0x0D:  # S3: the command line ends
                    out += self._end_of_line()
                    if self._reset_requested:
                        self._powered = False
                        break
                elif byte == 0x0A:  # S4, ignored
                    continue
                elif byte == 0x08:  # S5: backspace
                    if self._line:
                        self._line.pop()
                elif self._line_overlong or len(self._line) >= MAX_COMMAND_LINE_BYTES:
                    if not self._line_overlong:
                        self._counters.overlong_lines += 1
                    self._line_overlong = True
                    self._line.clear()
                else:
                    self._line.append(byte)
        return bytes(out)

    def _end_of_line(self) -> bytes:
        raw = self._line.decode("latin-1")
        overlong = self._line_overlong
        self._line.clear()
        self._line_overlong = False
        if overlong:
            self._counters.errors += 1
            return _result("ERROR")
        start = raw.upper().find("AT")
        if start < 0:
            if raw.strip():
                self._counters.ignored_lines += 1
            return b""
        line = raw[start:].strip()
        self._log.append(line)
        self._counters.commands += 1
        if self._take_swallow(line):
            self._counters.swallowed += 1
            return b""
        blocks, final = self._execute(line[2:])
        if final != "OK":
            self._counters.errors += 1
        out = "".join(CRLF + CRLF.join(block) + CRLF for block in blocks if block)
        for urc in self._interleave:
            out += CRLF + urc + CRLF
            self._counters.urcs += 1
        self._interleave.clear()
        return (out + CRLF + final + CRLF).encode("latin-1")

    def _take_swallow(self, line: str) -> bool:
        normalised = _normalise(line)
        for index, (command, times) in enumerate(self._swallow):
            if command is None or command == normalised:
                if times <= 1:
                    del self._swallow[index]
                else:
                    self._swallow[index] = (command, times - 1)
                return True
        return False

    def _execute(self, body: str) -> tuple[list[list[str]], str]:
        """Run the commands of one line; stop at the first failure (V.250 §5.2.1)."""
        blocks: list[list[str]] = []
        try:
            for segment in _split_top_level(body, ";"):
                segment = segment.strip()
                if segment == "":
                    continue
                with self._change():  # each command's URCs, queued after the answer
                    if segment[0] in "+$":
                        blocks.append(self._extended(_parse_extended(segment)))
                    else:
                        blocks.extend(self._basic(segment))
        except _AtError as error:
            return blocks, self._error_text(error.code)
        return blocks, "OK"

    def _error_text(self, code: CmeError | None) -> str:
        if code is None or self._session.cmee == 0:
            return "ERROR"
        if self._session.cmee == 1:
            return f"+CME ERROR: {int(code)}"
        return f"+CME ERROR: {CME_TEXT[code]}"

    def _basic(self, text: str) -> list[list[str]]:
        """V.250 basic commands: E, V, Q, I, Z, &F, chained without separators."""
        blocks: list[list[str]] = []
        rest = text.upper()
        while rest:
            if rest.startswith("&F"):
                rest = rest[2:].lstrip("0")
                continue
            letter, rest = rest[0], rest[1:]
            digits = ""
            while rest and rest[0].isdigit():
                digits, rest = digits + rest[0], rest[1:]
            value = int(digits or "0")
            if letter == "E" and value in (0, 1):
                self._session.echo = value == 1
            elif letter == "I" and value == 0:
                blocks.append(
                    [
                        self._identity.manufacturer,
                        self._identity.model,
                        f"Revision: {self._identity.revision}",
                    ]
                )
            elif letter in "VQ" and value == (1 if letter == "V" else 0):
                pass  # verbose results, results not quiet: the only modes emulated
            elif letter == "Z" and value == 0:
                self._session.echo = True
            else:
                raise _AtError(None)
        return blocks

    def _extended(self, command: _Command) -> list[str]:
        handler = _HANDLERS.get(command.name)
        if handler is None:
            raise _AtError(CmeError.OPERATION_NOT_SUPPORTED)
        return handler(self, command)

    # -- derived state (one home each) ---------------------------------------------------

    def _camped(self) -> bool:
        """On a cell (measuring it): radio on and not searching."""
        return (
            self._powered
            and self._session.cfun == 1
            and self._registration not in (Registration.SEARCHING, Registration.NOT_REGISTERED)
        )

    def _overall_stat(self) -> Registration:
        if not self._powered or self._session.cfun != 1 or self._session.deregistered:
            return Registration.NOT_REGISTERED
        if self._sim_status is not SimStatus.READY:
            return Registration.NOT_REGISTERED
        if self._session.attach_denied and self._registration in (
            Registration.HOME,
            Registration.ROAMING,
        ):
            return Registration.DENIED
        return self._registration

    def _registered(self) -> bool:
        return self._overall_stat() in (Registration.HOME, Registration.ROAMING)

    def _domain_stat(self, domain: str) -> Registration:
        stat = self._overall_stat()
        sa = self._technology is Technology.NR5G_SA
        if stat in (Registration.HOME, Registration.ROAMING) and (
            (domain == "eps" and sa) or (domain == "5gs" and not sa)
        ):
            return Registration.NOT_REGISTERED
        return stat

    def _location(self, domain: str) -> tuple[str, ...]:
        """<tac>/<lac>, <ci>, <AcT> of a registered domain (27.007; manual §3.1)."""
        sa = self._technology is Technology.NR5G_SA
        if self._domain_stat(domain) not in (Registration.HOME, Registration.ROAMING):
            return ()
        if domain == "5gs":
            return (_quoted(_hex(self._cell.tac, 6)), _quoted(_hex(self._cell.nr_cell_id)), "11")
        if sa:  # +CREG on SA: registered, no LTE location to give
            return ()
        act = "13" if self._technology is Technology.NR5G_NSA else "7"
        return (_quoted(_hex(self._cell.tac, 4)), _quoted(_hex(self._cell.lte_cell_id)), act)

    def _registration_snapshot(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        return {d: (int(self._domain_stat(d)), self._location(d)) for d in ("cs", "eps", "5gs")}

    def _wrong_apn(self, cid: int) -> bool:
        served = self._network.apn
        context = self._contexts.get(cid)
        if served is None or context is None or context.apn == "":
            return False
        return context.apn.lower() != served.lower()

    def _wrong_apn_behaviour(self) -> WrongApn:
        behaviour = self._network.wrong_apn
        if behaviour is WrongApn.AUTO:
            if self._technology is Technology.NR5G_SA:
                return WrongApn.NO_DATA_SESSION
            return WrongApn.DENY_REGISTRATION
        return behaviour

    def _attach(self) -> None:
        """An attach attempt: the network decides on the attach APN (context 1)."""
        self._session.attach_denied = (
            self._wrong_apn(1) and self._wrong_apn_behaviour() is WrongApn.DENY_REGISTRATION
        )

    # -- effects -------------------------------------------------------------------------

    @contextmanager
    def _change(self, *, reattach: bool = False) -> Iterator[None]:
        """Apply a change under the lock, then send the URCs it causes (after any answer)."""
        with self.lock:
            before = self._registration_snapshot()
            yield
            if reattach and self._powered:
                self._attach()
            if not self._registered():  # lost by the network's doing, or the radio off
                for cid in sorted(self._session.active):
                    self._deactivate(cid, by_network=self._session.cfun == 1)
            elif self._session.nitz_at is None:
                self._session.nitz_at = self._utc_now()
            after = self._registration_snapshot()
            for domain, name, n in (
                ("cs", "+CREG", self._session.creg_n),
                ("eps", "+CEREG", self._session.cereg_n),
                ("5gs", "+C5GREG", self._session.c5greg_n),
            ):
                if n and self._powered and before[domain] != after[domain]:
                    stat, location = after[domain]
                    shown = location if n == 2 else ()
                    self._emit_urc(f"{name}: " + ",".join((str(stat), *shown)))

    def _emit_urc(self, line: str) -> None:
        if self._powered:
            self._counters.urcs += 1
            self._queue((CRLF + line + CRLF).encode("latin-1"))

    def _queue(self, data: bytes) -> None:
        if len(self._pending) + len(data) > MAX_PENDING_OUTPUT_BYTES:
            self._counters.dropped_output_bytes += len(data)
            return
        self._pending += data
        self.notify()

    def _insert_sim(self, sim: SimCard | None) -> None:
        self._sim_inserted = sim is not None
        if sim is not None:
            self._sim = sim
        self._pin_attempts, self._puk_attempts = PIN_ATTEMPTS, PUK_ATTEMPTS
        if sim is None:
            self._sim_status = SimStatus.ABSENT
        elif sim.pin is None:
            self._sim_status = SimStatus.READY
        else:
            self._sim_status = SimStatus.PIN_REQUIRED

    def _require_sim(self) -> None:
        errors = {
            SimStatus.ABSENT: CmeError.SIM_NOT_INSERTED,
            SimStatus.PIN_REQUIRED: CmeError.SIM_PIN_REQUIRED,
            SimStatus.PUK_REQUIRED: CmeError.SIM_PUK_REQUIRED,
            SimStatus.BLOCKED: CmeError.SIM_FAILURE,
        }
        if self._sim_status in errors:
            raise _AtError(errors[self._sim_status])

    def _activate(self, cid: int) -> None:
        self._require_sim()
        if cid not in self._contexts:
            raise _AtError(CmeError.INCORRECT_PARAMETERS)
        if not self._registered():
            raise _AtError(CmeError.NO_NETWORK_SERVICE)
        if self._wrong_apn(cid):
            raise _AtError(CmeError.MISSING_OR_UNKNOWN_APN)
        if cid not in self._session.active:
            self._session.active.add(cid)
            op, bound, urc = self._session.qnetdevctl
            if urc and bound == cid and op:
                self._emit_urc("+QNETDEVSTATUS: 1")

    def _deactivate(self, cid: int, *, by_network: bool) -> None:
        self._session.active.discard(cid)
        if by_network and self._session.cgerep_mode:
            self._emit_urc(f"+CGEV: NW PDN DEACT {cid}")
        op, bound, urc = self._session.qnetdevctl
        if urc and bound == cid and op:
            self._emit_urc("+QNETDEVSTATUS: 0")

    def _request_reset(self) -> None:
        self._reset_requested = True
        self._counters.resets += 1

    # -- answers (read by the command handlers) ------------------------------------------

    def _qeng_state(self) -> str:
        if not self._camped():
            return "SEARCH"
        if not self._registered():
            return "LIMSRV"
        return "CONNECT" if self._session.active else "NOCONN"

    def _lte_fields(self, state: str) -> list[str]:
        cell, sig, net = self._cell, self._signal, self._network
        connected = state == "CONNECT"
        return [
            _quoted(cell.lte_duplex),
            net.mcc,
            net.mnc,
            _hex(cell.lte_cell_id),
            str(cell.lte_pci),
            str(cell.earfcn),
            str(cell.lte_band),
            str(cell.lte_ul_bandwidth),
            str(cell.lte_dl_bandwidth),
            _hex(cell.tac),
            str(_half_up(sig.rsrp_dbm)),
            str(_half_up(sig.rsrq_db)),
            str(_half_up(sig.rssi_dbm)),
            str(qeng_lte_sinr(sig.sinr_db)),
            CONNECTED_CQI if connected else IDLE_CQI,
            CONNECTED_TX_POWER if connected else IDLE_TX_POWER,
            "-" if connected else str(_half_up(sig.rsrp_dbm) + SRXLEV_OFFSET_DB),
        ]

    def servingcell_lines(self) -> list[str]:
        """The information text of AT+QENG="servingcell" now (module docstring)."""
        with self.lock:
            state = self._qeng_state()
            head = f'+QENG: "servingcell","{state}"'
            if state == "SEARCH":
                return [head]
            cell, net = self._cell, self._network
            if self._technology is Technology.LTE:
                return [head + ',"LTE",' + ",".join(self._lte_fields(state))]
            if self._technology is Technology.NR5G_NSA:
                nr = self._nr_signal or self._signal
                nr_fields = [
                    net.mcc,
                    net.mnc,
                    str(cell.nr_pci),
                    str(_half_up(nr.rsrp_dbm)),
                    str(_half_up(nr.sinr_db)),
                    str(_half_up(nr.rsrq_db)),
                    str(cell.nr_arfcn),
                    str(cell.nr_band),
                    str(cell.nr_dl_bandwidth),
                    str(cell.nr_scs),
                ]
                return [
                    head,
                    '+QENG: "LTE",' + ",".join(self._lte_fields(state)),
                    '+QENG: "NR5G-NSA",' + ",".join(nr_fields),
                ]
            sig = self._signal
            sa_fields = [
                _quoted(cell.nr_duplex),
                net.mcc,
                net.mnc,
                _hex(cell.nr_cell_id),
                str(cell.nr_pci),
                _hex(cell.tac, 6),
                str(cell.nr_arfcn),
                str(cell.nr_band),
                str(cell.nr_dl_bandwidth),
                str(_half_up(sig.rsrp_dbm)),
                str(_half_up(sig.rsrq_db)),
                str(_half_up(sig.sinr_db)),
                str(cell.nr_scs),
                "-",
            ]
            return [head + ',"NR5G-SA",' + ",".join(sa_fields)]


def _normalise(line: str) -> str:
    """Upper case and no spaces outside quotes, for matching command lines."""
    parts = line.strip().split('"')
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].upper().replace(" ", "")
    return '"'.join(parts)


def _result(text: str) -> bytes:
    return (CRLF + text + CRLF).encode("latin-1")


# ----------------------------------------------------------------------------
# Command handlers: one per command, (state, command) -> information lines
# ----------------------------------------------------------------------------


def _only(command: _Command, *forms: str) -> None:
    if command.form not in forms:
        raise _AtError(CmeError.OPERATION_NOT_SUPPORTED)


def _identity_line(value: Callable[[ModuleIdentity], str]) -> Handler:
    def handler(state: ModemState, command: _Command) -> list[str]:
        if command.form == "test":
            return []
        _only(command, "exec")
        return [value(state._identity)]

    return handler


def _cpin(state: ModemState, command: _Command) -> list[str]:
    """+CPIN (27.007 §8.3): read the SIM's lock; enter the PIN, or the PUK and a new PIN."""
    status = state._sim_status
    if command.form == "test":
        return []
    if status is SimStatus.ABSENT:
        raise _AtError(CmeError.SIM_NOT_INSERTED)
    if status is SimStatus.BLOCKED:
        raise _AtError(CmeError.SIM_FAILURE)
    if command.form == "read":
        return [f"+CPIN: {status.value}"]
    _only(command, "set")
    args = [_unquote(a) for a in command.args]
    if status is SimStatus.READY:
        raise _AtError(CmeError.OPERATION_NOT_ALLOWED)
    if status is SimStatus.PIN_REQUIRED:
        if len(args) != 1:
            raise _AtError(CmeError.INCORRECT_PARAMETERS)
        if args[0] != state._sim.pin:
            state._pin_attempts -= 1
            if state._pin_attempts <= 0:
                state._sim_status = SimStatus.PUK_REQUIRED
            raise _AtError(CmeError.INCORRECT_PASSWORD)
    else:  # PUK required: AT+CPIN=<puk>,<newpin>
        if len(args) != 2:
            raise _AtError(CmeError.SIM_PUK_REQUIRED)
        if args[0] != state._sim.puk:
            state._puk_attempts -= 1
            if state._puk_attempts <= 0:
                state._sim_status = SimStatus.BLOCKED
            raise _AtError(CmeError.INCORRECT_PASSWORD)
        state._sim = replace(state._sim, pin=args[1])
    state._sim_status = SimStatus.READY
    state._pin_attempts, state._puk_attempts = PIN_ATTEMPTS, PUK_ATTEMPTS
    state._attach()
    return []


def _cimi(state: ModemState, command: _Command) -> list[str]:
    """+CIMI (27.007 §5.6): the IMSI, once the SIM is unlocked."""
    if command.form == "test":
        return []
    _only(command, "exec")
    state._require_sim()
    return [state._sim.imsi]


def _qccid(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QCCID: the ICCID, readable while the SIM is PIN-locked."""
    if command.form == "test":
        return []
    _only(command, "exec")
    if state._sim_status is SimStatus.ABSENT:
        raise _AtError(CmeError.SIM_NOT_INSERTED)
    return [f"+QCCID: {state._sim.iccid}"]


def _cops(state: ModemState, command: _Command) -> list[str]:
    """+COPS (27.007 §7.3; manual §3.1.1): mode, format, operator, AcT (7, 13 EN-DC, 11 SA)."""
    net = state._network
    if command.form == "test":
        act = {Technology.LTE: 7, Technology.NR5G_NSA: 7, Technology.NR5G_SA: 12}
        short = net.operator.split()[0]
        entry = f'(2,"{net.operator}","{short}","{net.plmn}",{act[state._technology]})'
        return [f"+COPS: {entry},,(0-4),(0-2)"]
    if command.form == "read":
        mode = 2 if state._session.deregistered else 0
        if not state._registered():
            return [f"+COPS: {mode}"]
        fmt = state._session.cops_format
        name = net.plmn if fmt == 2 else net.operator
        act = {Technology.LTE: 7, Technology.NR5G_NSA: 13, Technology.NR5G_SA: 11}
        return [f'+COPS: {mode},{fmt},"{name}",{act[state._technology]}']
    _only(command, "set")
    mode = _int_arg(command.args[0], 0, 4)
    if mode == 3:
        state._session.cops_format = _int_arg(command.args[1], 0, 2)
    elif mode == 2:
        state._session.deregistered = True
    else:
        state._session.deregistered = False
        if len(command.args) > 1:
            state._session.cops_format = _int_arg(command.args[1], 0, 2)
    return []


def _registration_handler(name: str, domain: str, attribute: str) -> Handler:
    """+CREG (27.007 §7.2), +CEREG (§10.1.22), +C5GREG (§10.1.23): n=0..2."""

    def handler(state: ModemState, command: _Command) -> list[str]:
        if command.form == "test":
            return [f"{name}: (0-2)"]
        if command.form == "set":
            n = _int_arg(command.args[0], 0, 2) if command.args and command.args[0] else 0
            setattr(state._session, attribute, n)
            return []
        _only(command, "read")
        n = getattr(state._session, attribute)
        location = state._location(domain) if n == 2 else ()
        stat = int(state._domain_stat(domain))
        return [f"{name}: " + ",".join((str(n), str(stat), *location))]

    return handler


def _csq(state: ModemState, command: _Command) -> list[str]:
    """+CSQ (27.007 §8.5; manual §3.3.1: LTE only, so 99 on NR5G-SA and without a cell)."""
    if command.form == "test":
        return ["+CSQ: (0-31,99),(0-7,99)"]
    _only(command, "exec")
    if not state._camped() or state._technology is Technology.NR5G_SA:
        return ["+CSQ: 99,99"]
    return [f"+CSQ: {csq_rssi(state._signal.rssi_dbm)},99"]


def _cesq(state: ModemState, command: _Command) -> list[str]:
    """+CESQ (27.007 §8.69) with the Rel-15 NR fields: 255 where not known."""
    if command.form == "test":
        return []
    _only(command, "exec")
    lte = ("255", "255")
    nr = ("255", "255", "255")
    if state._camped():
        sig = state._signal
        if state._technology is Technology.NR5G_SA:
            nr = (str(cesq_ss_rsrq(sig.rsrq_db)), str(cesq_ss_rsrp(sig.rsrp_dbm)),
                  str(cesq_ss_sinr(sig.sinr_db)))  # fmt: skip
        else:
            lte = (str(cesq_rsrq(sig.rsrq_db)), str(cesq_rsrp(sig.rsrp_dbm)))
            if state._technology is Technology.NR5G_NSA:
                leg = state._nr_signal or sig
                nr = (str(cesq_ss_rsrq(leg.rsrq_db)), str(cesq_ss_rsrp(leg.rsrp_dbm)),
                      str(cesq_ss_sinr(leg.sinr_db)))  # fmt: skip
    return ["+CESQ: " + ",".join(("99", "99", "255", "255", *lte, *nr))]


def _cgdcont(state: ModemState, command: _Command) -> list[str]:
    """+CGDCONT (27.007 §10.1.1): the first eight fields of the read form (firmware appends
    more, empty); a context in use cannot be redefined (manual §3.4.3)."""
    if command.form == "test":
        return ['+CGDCONT: (1-42),"IP",,,(0-2),(0-4)', '+CGDCONT: (1-42),"IPV6",,,(0-2),(0-4)',
                '+CGDCONT: (1-42),"IPV4V6",,,(0-2),(0-4)']  # fmt: skip
    if command.form == "read":
        return [
            f'+CGDCONT: {cid},"{ctx.pdp_type}","{ctx.apn}","0.0.0.0",0,0,0,0'
            for cid, ctx in sorted(state._contexts.items())
        ]
    _only(command, "set")
    cid = _int_arg(command.args[0], 1, 42)
    if cid in state._session.active:
        raise _AtError(CmeError.OPERATION_NOT_ALLOWED)
    if len(command.args) == 1:
        state._contexts.pop(cid, None)
        return []
    pdp_type = _unquote(command.args[1]).upper()
    if pdp_type not in ("IP", "IPV6", "IPV4V6", "PPP"):
        raise _AtError(CmeError.INCORRECT_PARAMETERS)
    apn = _unquote(command.args[2]) if len(command.args) > 2 else ""
    state._contexts[cid] = PdpContext(pdp_type, apn)
    return []


def _cgact(state: ModemState, command: _Command) -> list[str]:
    """+CGACT (27.007 §10.1.10): activate or deactivate contexts; read their states."""
    if command.form == "test":
        return ["+CGACT: (0,1)"]
    if command.form == "read":
        return [
            f"+CGACT: {cid},{1 if cid in state._session.active else 0}"
            for cid in sorted(state._contexts)
        ]
    _only(command, "set")
    wanted = _int_arg(command.args[0], 0, 1)
    cids = [_int_arg(a, 1, 42) for a in command.args[1:]] or sorted(state._contexts)
    for cid in cids:
        if wanted:
            state._activate(cid)
        elif cid in state._session.active:
            state._deactivate(cid, by_network=False)
    return []


def _cgpaddr(state: ModemState, command: _Command) -> list[str]:
    """+CGPADDR (27.007 §10.1.14; manual §3.5.3: no address, no second field)."""
    if command.form == "test":
        return ["+CGPADDR: (" + ",".join(str(c) for c in sorted(state._contexts)) + ")"]
    _only(command, "exec", "set")
    cids = [_int_arg(a, 1, 42) for a in command.args] or sorted(state._contexts)
    lines = []
    for cid in cids:
        if cid in state._session.active:
            lines.append(f'+CGPADDR: {cid},"{state._network.ip_address}"')
        else:
            lines.append(f"+CGPADDR: {cid}")
    return lines


def _cgatt(state: ModemState, command: _Command) -> list[str]:
    """+CGATT (27.007 §10.1.9), read only: attached while registered."""
    _only(command, "read")
    return [f"+CGATT: {1 if state._registered() else 0}"]


def _cgerep(state: ModemState, command: _Command) -> list[str]:
    """+CGEREP (27.007 §10.1.19): whether +CGEV codes are sent."""
    if command.form == "test":
        return ["+CGEREP: (0-2),(0,1)"]
    if command.form == "read":
        return [f"+CGEREP: {state._session.cgerep_mode},0"]
    _only(command, "set")
    state._session.cgerep_mode = _int_arg(command.args[0], 0, 2)
    return []


def _cfun(state: ModemState, command: _Command) -> list[str]:
    """+CFUN (27.007 §8.2): 0 minimum, 1 full, 4 radio off; <rst>=1 resets the module after
    the OK (the runner takes the port away)."""
    if command.form == "test":
        return ["+CFUN: (0,1,4),(0,1)"]
    if command.form == "read":
        return [f"+CFUN: {state._session.cfun}"]
    _only(command, "set")
    fun = _int_arg(command.args[0], 0, 4)
    if fun not in (0, 1, 4):
        raise _AtError(CmeError.INCORRECT_PARAMETERS)
    rst = _int_arg(command.args[1], 0, 1) if len(command.args) > 1 else 0
    if rst:
        state._request_reset()
        return []
    was = state._session.cfun
    state._session.cfun = fun
    if fun == 1 and was != 1:
        state._attach()
    return []


def _cclk(state: ModemState, command: _Command) -> list[str]:
    """+CCLK (27.007 §8.15; manual §3.4.7): local time "yy/MM/dd,hh:mm:ss±zz"."""
    if command.form == "test":
        return []
    _only(command, "read")
    quarters = state._network.utc_offset_quarters
    local = state._utc_now() + timedelta(minutes=15 * quarters)
    return [f'+CCLK: "{_time_with_zone(local, quarters, four_digit_year=False)}"']


def _qlts(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QLTS (manual §3.4.8): the network time, "" before the network gave one;
    mode 0 the time of that sync (GMT), 1 now in GMT, 2 now in local time; ``,<ds>`` 0."""
    if command.form == "test":
        return ["+QLTS: (0-2)"]
    _only(command, "exec", "set")
    mode = _int_arg(command.args[0], 0, 2) if command.args else 0
    synced = state._session.nitz_at
    if synced is None:
        return ['+QLTS: ""']
    quarters = state._network.utc_offset_quarters
    moment = synced if mode == 0 else state._utc_now()
    if mode == 2:
        moment += timedelta(minutes=15 * quarters)
    return [f'+QLTS: "{_time_with_zone(moment, quarters, four_digit_year=True)},0"']


def _cmee(state: ModemState, command: _Command) -> list[str]:
    """+CMEE (27.007 §9.1): 0 ERROR, 1 numeric, 2 verbose +CME ERROR."""
    if command.form == "test":
        return ["+CMEE: (0-2)"]
    if command.form == "read":
        return [f"+CMEE: {state._session.cmee}"]
    _only(command, "set")
    state._session.cmee = _int_arg(command.args[0], 0, 2) if command.args[0] else 0
    return []


def _qeng(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QENG (manual §3.2.2): the serving cell; no neighbour cells are reported."""
    if command.form == "test":
        return ['+QENG: ("servingcell","neighbourcell")']
    _only(command, "set")
    kind = _unquote(command.args[0]).lower()
    if kind == "servingcell":
        return state.servingcell_lines()
    if kind == "neighbourcell":
        return []
    raise _AtError(CmeError.INCORRECT_PARAMETERS)


def _qnwinfo(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QNWINFO (manual §3.2.1): AcT, PLMN, band, channel; NSA gives both RATs."""
    if command.form == "test":
        return []
    _only(command, "exec")
    if not state._registered():
        return ["+QNWINFO: No Service"]
    cell, plmn = state._cell, state._network.plmn
    lte = f'+QNWINFO: "{cell.lte_duplex} LTE","{plmn}","LTE BAND {cell.lte_band}",{cell.earfcn}'
    nr = (f'+QNWINFO: "{cell.nr_duplex} NR5G","{plmn}","NR5G BAND {cell.nr_band}",'
          f"{cell.nr_arfcn}")  # fmt: skip
    return {Technology.LTE: [lte], Technology.NR5G_NSA: [lte, nr], Technology.NR5G_SA: [nr]}[
        state._technology
    ]


def _data_counter(prefix: str, nr: bool) -> Handler:
    """Quectel +QGDCNT / +QGDNRCNT read: ``<prefix>: <sent>,<received>`` since the boot."""

    def handler(state: ModemState, command: _Command) -> list[str]:
        _only(command, "read")
        sent, received = state._session.nr_bytes if nr else state._session.lte_bytes
        return [f"{prefix}: {sent},{received}"]

    return handler


def _qcfg(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QCFG, "usbnet" only: read, or store a mode for the next boot."""
    _only(command, "set")
    if _unquote(command.args[0]).lower() != "usbnet":
        raise _AtError(CmeError.OPERATION_NOT_SUPPORTED)
    if len(command.args) == 1:
        return [f'+QCFG: "usbnet",{state._usbnet}']
    state._usbnet = _int_arg(command.args[1], 0, 3)
    return []


def _qnetdevctl(state: ModemState, command: _Command) -> list[str]:
    """Quectel +QNETDEVCTL: bring the data call of <cid> up (op 1, or 3 with auto-reconnect)
    or down (op 0) on the USB network interface; read ``<op>,<cid>,<urc_en>,<state>``."""
    if command.form == "test":
        return ["+QNETDEVCTL: (0-3),(1-42),(0,1)"]
    if command.form == "read":
        op, cid, urc = state._session.qnetdevctl
        up = 1 if cid and cid in state._session.active else 0
        return [f"+QNETDEVCTL: {op},{cid},{urc},{up}"]
    _only(command, "set")
    op = _int_arg(command.args[0], 0, 3)
    cid = _int_arg(command.args[1], 1, 42)
    urc = _int_arg(command.args[2], 0, 1) if len(command.args) > 2 else 0
    if op:
        state._session.qnetdevctl = (op, cid, urc)
        state._activate(cid)
    else:
        if cid in state._session.active:
            state._deactivate(cid, by_network=False)
        state._session.qnetdevctl = (0, cid, urc)
    return []


_HANDLERS: Final[Mapping[str, Handler]] = {
    "+CGMI": _identity_line(lambda i: i.manufacturer),
    "+CGMM": _identity_line(lambda i: i.model),
    "+CGMR": _identity_line(lambda i: i.revision),
    "+CGSN": _identity_line(lambda i: i.imei),
    "+GSN": _identity_line(lambda i: i.imei),
    "+CPIN": _cpin,
    "+CIMI": _cimi,
    "+QCCID": _qccid,
    "+COPS": _cops,
    "+CREG": _registration_handler("+CREG", "cs", "creg_n"),
    "+CEREG": _registration_handler("+CEREG", "eps", "cereg_n"),
    "+C5GREG": _registration_handler("+C5GREG", "5gs", "c5greg_n"),
    "+CSQ": _csq,
    "+CESQ": _cesq,
    "+CGDCONT": _cgdcont,
    "+CGACT": _cgact,
    "+CGPADDR": _cgpaddr,
    "+CGATT": _cgatt,
    "+CGEREP": _cgerep,
    "+CFUN": _cfun,
    "+CCLK": _cclk,
    "+QLTS": _qlts,
    "+CMEE": _cmee,
    "+QENG": _qeng,
    "+QNWINFO": _qnwinfo,
    "+QCFG": _qcfg,
    "+QNETDEVCTL": _qnetdevctl,
    "+QGDCNT": _data_counter("+QGDCNT", nr=False),
    "+QGDNRCNT": _data_counter("+QGDNRCNT", nr=True),
}

__all__ = [
    "CME_TEXT",
    "MAX_COMMAND_LINE_BYTES",
    "Cell",
    "CmeError",
    "Counters",
    "ModemState",
    "ModuleIdentity",
    "Network",
    "PdpContext",
    "Registration",
    "Signal",
    "SimCard",
    "SimStatus",
    "Technology",
    "WrongApn",
    "cesq_rsrp",
    "cesq_rsrq",
    "cesq_ss_rsrp",
    "cesq_ss_rsrq",
    "cesq_ss_sinr",
    "csq_rssi",
    "qeng_lte_sinr",
]
