"""3GPP TS 27.007 commands: builders returning :class:`AtCommand`, typed parsers of their lines.

Each parser is a frozen dataclass with a ``from_line`` (one information line) classmethod;
the section of TS 27.007 (Release 17) is in its docstring. Values carry their units in their
names (``rsrp_dbm``, ``rsrq_db``); an "unknown" code (99, 255, ``-``) becomes None.

Identifiers: the IMEI (+CGSN), the IMSI (+CIMI) and the ICCID are kept out of ``repr`` and
out of every error; their commands are ``sensitive`` so the codec redacts their lines too.

Signal scalings (§8.5 +CSQ, §8.69 +CESQ): an index stands for an interval; the value given
is the interval's lower bound, and index 0 ("less than the first bound") one step below it:
+CESQ rsrp 0 → -141 dBm means "below -140 dBm", 97 → -44 dBm means "-44 dBm or more".
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Self

from drivers.errors import ModemProtocolError, UsageError
from drivers.modem.at_codec import AtCommand, UnsolicitedResult
from drivers.modem.params import Params, is_digits

# ---------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------


class Technology(enum.StrEnum):
    """The radio technology a modem is on, as the hub reports it (value: the log code)."""

    GSM = "GSM"
    WCDMA = "WCDMA"
    LTE = "LTE"
    #: EN-DC: LTE anchor with an NR secondary cell (5G non-standalone).
    NR5G_NSA = "NR5G-NSA"
    #: NR on a 5G core (standalone).
    NR5G_SA = "NR5G-SA"
    NONE = "none"


class AccessTechnology(enum.IntEnum):
    """``<AcT>`` of +COPS, +CREG, +CEREG, +C5GREG (TS 27.007 §7.3)."""

    GSM = 0
    GSM_COMPACT = 1
    UTRAN = 2
    GSM_EGPRS = 3
    UTRAN_HSDPA = 4
    UTRAN_HSUPA = 5
    UTRAN_HSDPA_HSUPA = 6
    E_UTRAN = 7
    EC_GSM_IOT = 8
    E_UTRAN_NB_S1 = 9
    E_UTRA_5GCN = 10
    NR_5GCN = 11
    NG_RAN = 12
    E_UTRA_NR_DUAL_CONNECTIVITY = 13

    @property
    def technology(self) -> Technology:
        """The hub's :class:`Technology` for this AcT."""
        return _ACT_TECHNOLOGY[self]


_ACT_TECHNOLOGY: Final = {
    AccessTechnology.GSM: Technology.GSM,
    AccessTechnology.GSM_COMPACT: Technology.GSM,
    AccessTechnology.GSM_EGPRS: Technology.GSM,
    AccessTechnology.EC_GSM_IOT: Technology.GSM,
    AccessTechnology.UTRAN: Technology.WCDMA,
    AccessTechnology.UTRAN_HSDPA: Technology.WCDMA,
    AccessTechnology.UTRAN_HSUPA: Technology.WCDMA,
    AccessTechnology.UTRAN_HSDPA_HSUPA: Technology.WCDMA,
    AccessTechnology.E_UTRAN: Technology.LTE,
    AccessTechnology.E_UTRAN_NB_S1: Technology.LTE,
    AccessTechnology.E_UTRA_5GCN: Technology.LTE,
    AccessTechnology.NR_5GCN: Technology.NR5G_SA,
    AccessTechnology.NG_RAN: Technology.NR5G_SA,
    AccessTechnology.E_UTRA_NR_DUAL_CONNECTIVITY: Technology.NR5G_NSA,
}


class Registration(enum.StrEnum):
    """What a ``<stat>`` means for the hub's uplink (value: the log code)."""

    HOME = "home"
    ROAMING = "roaming"
    SEARCHING = "searching"
    DENIED = "denied"
    NOT_REGISTERED = "not_registered"
    UNKNOWN = "unknown"


#: ``<stat>`` of +CREG/+CEREG/+C5GREG (TS 27.007 §7.2, §10.1.21, §10.1.22) → registration.
#: 6/7 are "SMS only" and 9/10 "CSFB not preferred": registered for data all the same;
#: 8 is "emergency services only": no data, not registered for the hub's purposes;
#: 11 (+C5GREG) is "registered for disaster roaming services".
_STAT_REGISTRATION: Final = {
    0: Registration.NOT_REGISTERED,
    1: Registration.HOME,
    2: Registration.SEARCHING,
    3: Registration.DENIED,
    4: Registration.UNKNOWN,
    5: Registration.ROAMING,
    6: Registration.HOME,
    7: Registration.ROAMING,
    8: Registration.NOT_REGISTERED,
    9: Registration.HOME,
    10: Registration.ROAMING,
    11: Registration.ROAMING,
}


class SimState(enum.StrEnum):
    """``<code>`` of +CPIN? (TS 27.007 §8.3)."""

    READY = "READY"
    SIM_PIN = "SIM PIN"
    SIM_PUK = "SIM PUK"
    PH_SIM_PIN = "PH-SIM PIN"
    PH_FSIM_PIN = "PH-FSIM PIN"
    PH_FSIM_PUK = "PH-FSIM PUK"
    SIM_PIN2 = "SIM PIN2"
    SIM_PUK2 = "SIM PUK2"
    PH_NET_PIN = "PH-NET PIN"
    PH_NET_PUK = "PH-NET PUK"
    PH_NETSUB_PIN = "PH-NETSUB PIN"
    PH_NETSUB_PUK = "PH-NETSUB PUK"
    PH_SP_PIN = "PH-SP PIN"
    PH_SP_PUK = "PH-SP PUK"
    PH_CORP_PIN = "PH-CORP PIN"
    PH_CORP_PUK = "PH-CORP PUK"


class OperatorMode(enum.IntEnum):
    """``<mode>`` of +COPS (TS 27.007 §7.3)."""

    AUTOMATIC = 0
    MANUAL = 1
    DEREGISTER = 2
    SET_FORMAT_ONLY = 3
    MANUAL_THEN_AUTOMATIC = 4


class OperatorFormat(enum.IntEnum):
    """``<format>`` of +COPS (TS 27.007 §7.3)."""

    LONG_ALPHANUMERIC = 0
    SHORT_ALPHANUMERIC = 1
    NUMERIC = 2


class Functionality(enum.IntEnum):
    """``<fun>`` of +CFUN (TS 27.007 §8.2); 5-127 are vendor-specific, kept as ints."""

    MINIMUM = 0
    FULL = 1
    DISABLE_TRANSMIT = 2
    DISABLE_RECEIVE = 3
    #: Airplane mode: transmit and receive RF circuits off.
    DISABLE_RF = 4


# ---------------------------------------------------------------------------
# Command builders
# ---------------------------------------------------------------------------

#: +CFUN changes take the RM5xx up to 15 s (Quectel RG50xQ/RM5xxQ AT manual, AT+CFUN).
CFUN_TIMEOUT_S: Final = 15.0
#: +COPS answers within 180 s (Quectel RG50xQ/RM5xxQ AT manual, AT+COPS).
COPS_TIMEOUT_S: Final = 180.0
_PIN: Final = re.compile(r"\d{4,8}", re.ASCII)


def ati() -> AtCommand:
    """``ATI``: product identification (V.250 §6.1.3), bare lines."""
    return AtCommand.of("ATI")


def cgmi() -> AtCommand:
    """``AT+CGMI``: manufacturer (§5.1)."""
    return AtCommand.of("AT+CGMI")


def cgmm() -> AtCommand:
    """``AT+CGMM``: model (§5.2)."""
    return AtCommand.of("AT+CGMM")


def cgmr() -> AtCommand:
    """``AT+CGMR``: firmware revision (§5.3)."""
    return AtCommand.of("AT+CGMR")


def cgsn() -> AtCommand:
    """``AT+CGSN``: the IMEI (§5.4); an identifier, so sensitive."""
    return AtCommand.of("AT+CGSN", sensitive=True)


def cimi() -> AtCommand:
    """``AT+CIMI``: the IMSI (§5.6); an identifier, so sensitive."""
    return AtCommand.of("AT+CIMI", sensitive=True)


def cpin_query() -> AtCommand:
    """``AT+CPIN?``: SIM state (§8.3)."""
    return AtCommand.of("AT+CPIN?")


def cpin_enter(pin: str) -> AtCommand:
    """``AT+CPIN="<pin>"`` (§8.3); the PIN is a secret, so the command is sensitive."""
    if not _PIN.fullmatch(pin):
        raise UsageError("pin", "4 to 8 digits")
    return AtCommand.of(f'AT+CPIN="{pin}"', sensitive=True)


def cops_query() -> AtCommand:
    """``AT+COPS?``: the selected operator (§7.3)."""
    return AtCommand.of("AT+COPS?", timeout_s=COPS_TIMEOUT_S)


def creg_query() -> AtCommand:
    """``AT+CREG?``: CS registration (§7.2)."""
    return AtCommand.of("AT+CREG?")


def cereg_query() -> AtCommand:
    """``AT+CEREG?``: EPS registration (§10.1.21)."""
    return AtCommand.of("AT+CEREG?")


def c5greg_query() -> AtCommand:
    """``AT+C5GREG?``: 5GS registration (§10.1.22)."""
    return AtCommand.of("AT+C5GREG?")


def registration_urcs(command: str, n: int) -> AtCommand:
    """``AT+CEREG=<n>`` (or +CREG, +C5GREG): which registration URCs the modem sends.

    ``n`` 0 none, 1 ``<stat>`` only, 2 with location and AcT, 3 with cause too.
    """
    if command not in ("+CREG", "+CEREG", "+C5GREG"):
        raise UsageError("command", "one of +CREG, +CEREG, +C5GREG")
    if not 0 <= n <= 3:
        raise UsageError("n", "0..3")
    return AtCommand.of(f"AT{command}={n}")


def csq() -> AtCommand:
    """``AT+CSQ``: signal quality (§8.5)."""
    return AtCommand.of("AT+CSQ")


def cesq() -> AtCommand:
    """``AT+CESQ``: extended signal quality (§8.69)."""
    return AtCommand.of("AT+CESQ")


def cgdcont_query() -> AtCommand:
    """``AT+CGDCONT?``: defined PDP contexts (§10.1.1)."""
    return AtCommand.of("AT+CGDCONT?")


def cgact_query() -> AtCommand:
    """``AT+CGACT?``: PDP context activation states (§10.1.10)."""
    return AtCommand.of("AT+CGACT?")


def cgpaddr(cid: int | None = None) -> AtCommand:
    """``AT+CGPADDR[=<cid>]``: PDP addresses (§10.1.14)."""
    if cid is None:
        return AtCommand.of("AT+CGPADDR")
    if not 1 <= cid <= 255:
        raise UsageError("cid", "1..255")
    return AtCommand.of(f"AT+CGPADDR={cid}")


def cfun_query() -> AtCommand:
    """``AT+CFUN?``: functionality level (§8.2)."""
    return AtCommand.of("AT+CFUN?", timeout_s=CFUN_TIMEOUT_S)


def cfun_set(fun: Functionality, *, reset: bool = False) -> AtCommand:
    """``AT+CFUN=<fun>[,1]``: set the functionality level, ``reset`` the MT first (§8.2)."""
    suffix = ",1" if reset else ""
    return AtCommand.of(f"AT+CFUN={int(fun)}{suffix}", timeout_s=CFUN_TIMEOUT_S)


def cclk_query() -> AtCommand:
    """``AT+CCLK?``: the MT's clock (§8.15)."""
    return AtCommand.of("AT+CCLK?")


def cclk_set(when: dt.datetime) -> AtCommand:
    """``AT+CCLK="yy/MM/dd,hh:mm:ss±zz"`` (§8.15) from an aware datetime.

    Raises:
        UsageError: ``when`` is naive, outside 2000-2099, or its offset is not a whole
            number of quarter hours within ±14 h.
    """
    return AtCommand.of(f'AT+CCLK="{_format_clock(when)}"')


# ---------------------------------------------------------------------------
# Identification
# ---------------------------------------------------------------------------


def _bare_or_prefixed(line: str, prefix: str) -> str:
    """The value of a line that is either bare or ``<prefix>: <value>`` (quotes removed)."""
    if line.startswith(prefix + ":"):
        line = line[len(prefix) + 1 :].strip(" ")
    if len(line) >= 2 and line[0] == line[-1] == '"':
        line = line[1:-1]
    return line


@dataclass(frozen=True, slots=True)
class ProductIdentification:
    """``ATI`` (V.250 §6.1.3) as Quectel answers it: manufacturer, model, ``Revision: …``."""

    manufacturer: str
    model: str
    revision: str

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> Self:
        """Parse the information lines of ``ATI``; extra lines (e.g. ``+GCAP``) are ignored."""
        if len(lines) < 3:
            raise ModemProtocolError("ATI", "lines", f"{len(lines)} lines, at least 3 expected")
        for line in lines[2:]:
            if line.startswith("Revision:"):
                return cls(lines[0], lines[1], line[len("Revision:") :].strip(" "))
        raise ModemProtocolError("ATI", "Revision", "no Revision: line")


def text_value(line: str, prefix: str) -> str:
    """The value of +CGMI, +CGMM or +CGMR (§5.1-5.3): bare, or after ``prefix:``."""
    value = _bare_or_prefixed(line, prefix)
    if not value:
        raise ModemProtocolError(prefix, "value", "empty")
    return value


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class Imei:
    """The IMEI (+CGSN, §5.4): an identifier, never in ``repr``, logs or errors."""

    digits: str = field(repr=False)

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse a bare ``<sn>`` line (Quectel) or ``+CGSN: "<sn>"``; 15 digits, Luhn-checked."""
        value = _bare_or_prefixed(line, "+CGSN")
        if len(value) != 15 or not is_digits(value):
            raise ModemProtocolError("+CGSN", "sn", "not 15 digits", 0)
        if not _luhn_ok(value):
            raise ModemProtocolError("+CGSN", "sn", "check digit does not match", 0)
        return cls(value)

    def __repr__(self) -> str:
        return "Imei(<redacted>)"


@dataclass(frozen=True, slots=True)
class Imsi:
    """The IMSI (+CIMI, §5.6): an identifier, never in ``repr``, logs or errors.

    Only the MCC (the first three digits, a country) is offered for display.
    """

    digits: str = field(repr=False)

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the bare ``<IMSI>`` line: 6 to 15 digits (TS 23.003 §2.2)."""
        value = _bare_or_prefixed(line, "+CIMI")
        if not 6 <= len(value) <= 15 or not is_digits(value):
            raise ModemProtocolError("+CIMI", "IMSI", "not 6 to 15 digits", 0)
        return cls(value)

    @property
    def mcc(self) -> str:
        """Mobile country code."""
        return self.digits[:3]

    def __repr__(self) -> str:
        return f"Imsi(mcc={self.mcc!r}, <redacted>)"


# ---------------------------------------------------------------------------
# SIM, operator, registration
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PinStatus:
    """``+CPIN: <code>`` (§8.3); a code this module does not name is kept in ``code``."""

    code: str

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse ``+CPIN: READY`` (also sent as a URC after boot)."""
        params = Params.parse(line, "+CPIN")
        params.expect_count("code", 1, 1)
        return cls(params.text(0, "code"))

    @property
    def state(self) -> SimState | None:
        """The named state, None for a code TS 27.007 does not define."""
        try:
            return SimState(self.code)
        except ValueError:
            return None

    @property
    def ready(self) -> bool:
        """No PIN or PUK is wanted."""
        return self.code == SimState.READY


@dataclass(frozen=True, slots=True)
class OperatorSelection:
    """``+COPS: <mode>[,<format>,<oper>[,<AcT>]]`` (§7.3)."""

    mode: OperatorMode
    format: OperatorFormat | None = None
    operator: str | None = None
    access_technology: AccessTechnology | None = None

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+COPS?``."""
        params = Params.parse(line, "+COPS")
        params.expect_count("parameters", 1, 4)
        mode = params.code(0, "mode", OperatorMode)
        if len(params) == 1:
            return cls(mode)
        if len(params) == 2:
            raise params.error(2, "oper", "missing")
        fmt = params.code(1, "format", OperatorFormat)
        operator = params.quoted(2, "oper")
        act = params.code(3, "AcT", AccessTechnology) if params.present(3) else None
        return cls(mode, fmt, operator, act)

    @property
    def plmn(self) -> str | None:
        """The MCC+MNC when the operator is given in numeric format."""
        if self.format is OperatorFormat.NUMERIC:
            return self.operator
        return None


#: Per command: (area code field, its hex digits, cell id digits, index of cause_type after AcT).
_REGISTRATION_LAYOUT: Final = {
    "+CREG": ("lac", 4, 8, 1),
    "+CGREG": ("lac", 4, 8, 2),  # <rac> sits between <AcT> and <cause_type>
    "+CEREG": ("tac", 4, 8, 1),
    "+C5GREG": ("tac", 6, 9, 3),  # <Allowed_NSSAI_length>,<Allowed_NSSAI> first
}


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """+CREG (§7.2), +CGREG (§10.1.20), +CEREG (§10.1.21), +C5GREG (§10.1.22).

    Read response: ``<n>,<stat>[,[<lac|tac>],[<ci>],[<AcT>]…]``; URC: the same without
    ``<n>``. ``area_code`` is the LAC or TAC (2 octets; 3 for +C5GREG), ``cell_id`` the
    28-bit E-UTRAN / 36-bit NR cell identity, both given in hexadecimal on the wire.

    Attributes:
        command: which of the four.
        stat: the raw ``<stat>``.
        n: the URC setting (read response only).
        area_code: LAC or TAC.
        cell_id: cell identity.
        access_technology: ``<AcT>``.
        cause_type: 0 (EMM/5GMM cause, TS 24.301/24.501) or 1 (manufacturer), with…
        reject_cause: …the cause, when the modem gives one (n=3).
    """

    command: str
    stat: int
    n: int | None = None
    area_code: int | None = None
    cell_id: int | None = None
    access_technology: AccessTechnology | None = None
    cause_type: int | None = None
    reject_cause: int | None = None

    @classmethod
    def from_line(cls, line: str, *, unsolicited: bool = False) -> Self:
        """Parse a read response (``unsolicited=False``) or a URC of any of the four.

        The codec says which: an :class:`~drivers.modem.at_codec.InformationLine` answers
        ``AT+CEREG?``, an :class:`~drivers.modem.at_codec.UnsolicitedResult` is a URC.
        """
        prefix = line.split(":", 1)[0]
        if prefix not in _REGISTRATION_LAYOUT:
            raise ModemProtocolError("registration", "prefix", "not +CREG/+CGREG/+CEREG/+C5GREG")
        area_field, area_digits, cell_digits, cause_offset = _REGISTRATION_LAYOUT[prefix]
        params = Params.parse(line, prefix)
        first = 0 if unsolicited else 1
        n = None if unsolicited else params.integer(0, "n", 0, 5)
        stat = params.integer(first, "stat", 0, 255)
        area = params.optional_hexadecimal(first + 1, area_field, area_digits)
        cell = params.optional_hexadecimal(first + 2, "ci", cell_digits)
        act = None
        if params.present(first + 3):
            act = params.code(first + 3, "AcT", AccessTechnology)
        cause_index = first + 3 + cause_offset
        cause_type = params.optional_integer(cause_index, "cause_type", 0, 1)
        reject = params.optional_integer(cause_index + 1, "reject_cause", 0, 65535)
        return cls(prefix, stat, n, area, cell, act, cause_type, reject)

    @property
    def registration(self) -> Registration:
        """What ``stat`` means for the uplink (:data:`_STAT_REGISTRATION`)."""
        return _STAT_REGISTRATION.get(self.stat, Registration.UNKNOWN)

    @property
    def registered(self) -> bool:
        """Registered, at home or roaming."""
        return self.registration in (Registration.HOME, Registration.ROAMING)


# ---------------------------------------------------------------------------
# Signal
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalQuality:
    """``+CSQ: <rssi>,<ber>`` (§8.5).

    ``rssi`` 0 → -113 dBm or less, 1 → -111, 2..30 → -109..-53 (2 dB steps), 31 → -51 dBm
    or more: ``-113 + 2·rssi``; 99 unknown. ``ber`` is RXQUAL 0..7 (TS 45.008 §8.2.4); 99
    unknown (always, outside a GSM call).
    """

    rssi_dbm: int | None
    ber_rxqual: int | None

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+CSQ``."""
        params = Params.parse(line, "+CSQ")
        params.expect_count("parameters", 2, 2)
        rssi = params.optional_integer(0, "rssi", 0, 31, unknown=(99,))
        ber = params.optional_integer(1, "ber", 0, 7, unknown=(99,))
        return cls(None if rssi is None else -113 + 2 * rssi, ber)


def _scaled(
    params: Params, index: int, name: str, top: int, offset: float, step: float
) -> float | None:
    """An index 0..top (255 unknown) as ``offset + step·index``."""
    value = params.optional_integer(index, name, 0, top, unknown=(255,))
    return None if value is None else offset + step * value


def _scaled_int(params: Params, index: int, name: str, top: int, offset: int) -> int | None:
    value = params.optional_integer(index, name, 0, top, unknown=(255,))
    return None if value is None else offset + value


@dataclass(frozen=True, slots=True)
class ExtendedSignalQuality:
    """``+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>[,<ss_rsrq>,<ss_rsrp>,<ss_sinr>]``.

    TS 27.007 §8.69 (the NR triple since Release 15); 99 (rxlev, ber) or 255 unknown.
    Each value is its interval's lower bound (module docstring):

    - rxlev 0..63 → -111 + n dBm (TS 45.008 §8.1.4);
    - rscp 0..96 → -121 + n dBm, ecno 0..49 → -24.5 + n/2 dB (TS 25.133 §9.1);
    - rsrq 0..34 → -20 + n/2 dB, rsrp 0..97 → -141 + n dBm (TS 36.133 §9.1);
    - ss_rsrq 0..127 → -43.5 + n/2 dB, ss_rsrp 0..127 → -157 + n dBm,
      ss_sinr 0..127 → -23.5 + n/2 dB (TS 38.133 §10.1).
    """

    rxlev_dbm: int | None
    ber_rxqual: int | None
    rscp_dbm: int | None
    ecno_db: float | None
    rsrq_db: float | None
    rsrp_dbm: int | None
    ss_rsrq_db: float | None = None
    ss_rsrp_dbm: int | None = None
    ss_sinr_db: float | None = None

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+CESQ`` (6 or 9 parameters)."""
        params = Params.parse(line, "+CESQ")
        params.expect_count("parameters", 6, 9)
        if len(params) not in (6, 9):
            raise params.error(len(params), "parameters", f"{len(params)} parameters, 6 or 9")
        rxlev = params.optional_integer(0, "rxlev", 0, 63, unknown=(99,))
        return cls(
            rxlev_dbm=None if rxlev is None else -111 + rxlev,
            ber_rxqual=params.optional_integer(1, "ber", 0, 7, unknown=(99,)),
            rscp_dbm=_scaled_int(params, 2, "rscp", 96, -121),
            ecno_db=_scaled(params, 3, "ecno", 49, -24.5, 0.5),
            rsrq_db=_scaled(params, 4, "rsrq", 34, -20.0, 0.5),
            rsrp_dbm=_scaled_int(params, 5, "rsrp", 97, -141),
            ss_rsrq_db=_scaled(params, 6, "ss_rsrq", 127, -43.5, 0.5),
            ss_rsrp_dbm=_scaled_int(params, 7, "ss_rsrp", 127, -157),
            ss_sinr_db=_scaled(params, 8, "ss_sinr", 127, -23.5, 0.5),
        )


# ---------------------------------------------------------------------------
# Packet data
# ---------------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(params: Params, index: int, name: str) -> IpAddress | None:
    """An address as 27.007 writes it: IPv4 dotted, IPv6 as 16 dotted octets or with colons.

    A zero address (``0.0.0.0``, ``::``, all-zero octets) means "none assigned": None.
    """
    text = params.optional_text(index, name)
    if not text:
        return None
    parts = text.split(".")
    try:
        if len(parts) == 16:  # TS 27.007 §10.1.1: IPv6 as "a1.a2.….a16" (without +CGPIAF)
            octets = bytes(int(part) for part in parts if is_digits(part) and len(part) <= 3)
            if len(octets) != 16:
                raise ValueError(name)
            address: IpAddress = ipaddress.IPv6Address(octets)
        elif len(parts) == 32:  # IPv4v6 address and subnet mask: the address half
            raise ValueError(name)
        else:
            address = ipaddress.ip_address(text)
    except ValueError:
        raise params.error(index, name, "not an IP address") from None
    return None if address.packed == bytes(len(address.packed)) else address


@dataclass(frozen=True, slots=True)
class PdpContext:
    """``+CGDCONT: <cid>,<PDP_type>,<APN>,<PDP_addr>,<d_comp>,<h_comp>[,…]`` (§10.1.1).

    Parameters after ``<h_comp>`` (IPv4 address allocation, request type, P-CSCF…) are not
    read.
    """

    cid: int
    pdp_type: str
    apn: str
    address: IpAddress | None = None

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse one line of the answer to ``AT+CGDCONT?``."""
        params = Params.parse(line, "+CGDCONT")
        params.expect_count("parameters", 3)
        return cls(
            params.integer(0, "cid", 0, 255),
            params.quoted(1, "PDP_type"),
            params.quoted(2, "APN"),
            _address(params, 3, "PDP_addr"),
        )


@dataclass(frozen=True, slots=True)
class PdpContextState:
    """``+CGACT: <cid>,<state>`` (§10.1.10)."""

    cid: int
    active: bool

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse one line of the answer to ``AT+CGACT?``."""
        params = Params.parse(line, "+CGACT")
        params.expect_count("parameters", 2, 2)
        return cls(params.integer(0, "cid", 0, 255), bool(params.integer(1, "state", 0, 1)))


@dataclass(frozen=True, slots=True)
class PdpAddress:
    """``+CGPADDR: <cid>[,<PDP_addr_1>[,<PDP_addr_2>]]`` (§10.1.14): IPv4 then IPv6."""

    cid: int
    addresses: tuple[IpAddress, ...] = ()

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse one line of the answer to ``AT+CGPADDR``; zero addresses are dropped."""
        params = Params.parse(line, "+CGPADDR")
        params.expect_count("parameters", 1, 3)
        found = (_address(params, index, f"PDP_addr_{index}") for index in (1, 2))
        return cls(
            params.integer(0, "cid", 0, 255),
            tuple(address for address in found if address is not None),
        )

    @property
    def ipv4(self) -> ipaddress.IPv4Address | None:
        """The IPv4 address, if any."""
        return next((a for a in self.addresses if isinstance(a, ipaddress.IPv4Address)), None)

    @property
    def ipv6(self) -> ipaddress.IPv6Address | None:
        """The IPv6 address, if any."""
        return next((a for a in self.addresses if isinstance(a, ipaddress.IPv6Address)), None)


# ---------------------------------------------------------------------------
# Functionality and clock
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionalityStatus:
    """``+CFUN: <fun>`` (§8.2); vendor levels (5-127) are kept in ``fun``."""

    fun: int

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+CFUN?`` (and the ``+CFUN: 1`` URC after boot)."""
        params = Params.parse(line, "+CFUN")
        params.expect_count("parameters", 1, 1)
        return cls(params.integer(0, "fun", 0, 127))

    @property
    def level(self) -> Functionality | None:
        """The named level, None for a vendor-specific one."""
        try:
            return Functionality(self.fun)
        except ValueError:
            return None


#: ``yy/MM/dd,hh:mm:ss±zz`` (§8.15); Quectel's +QLTS writes the year with four digits.
_CLOCK: Final = re.compile(
    r"(\d{2}|\d{4})/(\d{2})/(\d{2}),(\d{2}):(\d{2}):(\d{2})([+-]\d{1,2})", re.ASCII
)
#: Time zones run from UTC-12 to UTC+14: -48..+56 quarter hours.
_MIN_QUARTERS: Final = -48
_MAX_QUARTERS: Final = 56


def parse_clock(text: str, command: str, field_name: str) -> dt.datetime:
    """``yy/MM/dd,hh:mm:ss±zz`` (zz in quarter hours) → an aware datetime in that zone.

    Two-digit years are 20yy. Raises :class:`ModemProtocolError` naming ``command`` and
    ``field_name`` for a malformed or impossible time.
    """
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ModemProtocolError(command, field_name, "not yy/MM/dd,hh:mm:ss±zz", 0)
    year, month, day, hour, minute, second, zone = match.groups()
    quarters = int(zone)
    if not _MIN_QUARTERS <= quarters <= _MAX_QUARTERS:
        raise ModemProtocolError(command, field_name, f"time zone {quarters} out of range", 0)
    full_year = int(year) + (2000 if len(year) == 2 else 0)
    offset = dt.timezone(dt.timedelta(minutes=15 * quarters))
    try:
        return dt.datetime(
            full_year, int(month), int(day), int(hour), int(minute), int(second), tzinfo=offset
        )
    except ValueError:
        raise ModemProtocolError(command, field_name, "not a valid date and time", 0) from None


def _format_clock(when: dt.datetime) -> str:
    offset = when.utcoffset()
    if offset is None:
        raise UsageError("when", "must be timezone-aware")
    quarters, rest = divmod(int(offset.total_seconds()), 900)
    if rest or not _MIN_QUARTERS <= quarters <= _MAX_QUARTERS:
        raise UsageError("when", "offset must be whole quarter hours within -12..+14 h")
    if not 2000 <= when.year <= 2099:
        raise UsageError("when", "year must be 2000..2099")
    return f"{when:%y/%m/%d,%H:%M:%S}{quarters:+03d}"


@dataclass(frozen=True, slots=True)
class ClockTime:
    """``+CCLK: "yy/MM/dd,hh:mm:ss±zz"`` (§8.15): the MT's clock, as an aware datetime."""

    time: dt.datetime

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+CCLK?``."""
        params = Params.parse(line, "+CCLK")
        params.expect_count("parameters", 1, 1)
        return cls(parse_clock(params.quoted(0, "time"), "+CCLK", "time"))


# ---------------------------------------------------------------------------
# Unsolicited result codes
# ---------------------------------------------------------------------------

TypedUrc = RegistrationStatus | PinStatus | FunctionalityStatus


def parse_unsolicited(event: UnsolicitedResult) -> TypedUrc | None:
    """The typed value of a TS 27.007 URC: registration (+CREG, +CGREG, +CEREG, +C5GREG, in
    their URC form, without ``<n>``), ``+CPIN: <code>`` and ``+CFUN: <fun>`` (both sent after
    boot); None for any other URC.

    Raises:
        ModemProtocolError: the URC is one of these and malformed.
    """
    if event.prefix in _REGISTRATION_LAYOUT:
        return RegistrationStatus.from_line(event.text, unsolicited=True)
    if event.prefix == "+CPIN":
        return PinStatus.from_line(event.text)
    if event.prefix == "+CFUN":
        return FunctionalityStatus.from_line(event.text)
    return None
