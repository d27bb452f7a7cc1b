"""Quectel RG50xQ/RM5xxQ (RM500Q, RM502Q, RM520N) vendor commands: builders and parsers.

A vendor is a file: the commands the hub sends to this family beyond TS 27.007
(:data:`COMMANDS`), and a frozen dataclass per answer with a ``from_line`` /
``from_lines`` classmethod. Sources: Quectel "RG50xQ&RM5xxQ Series AT Commands Manual"
(the section is named in each docstring), the RG50xQ&RM5xxQ "5G Network Searching Scheme
Introduction" V1.0 for the worked +QENG examples, and field captures of RM500Q/RM520N
answers in the manuals' formats.

Conventions of these answers:

- ``-`` stands for a value the modem does not have in its current state, and so does
  -32768 in numeric fields (the NR5G-NSA line before the NR leg is up): both become None.
- RSRP and RSSI are in dBm, RSRQ and SINR in dB, as integers, for LTE and NR alike.
  SINR is dB as printed, LTE included: not Qualcomm QMI's 1/5-dB index (0..250 → -20..30
  dB), nor the ``dB = (1/5)·X·10 − 20`` index an earlier reading of the Network Application
  Note §3.2.2 took from it. Published RM5xxQ transcripts settle it: the LTE <SINR> of
  +QENG equals the RSSNR (dB) +QCAINFO prints for the same PCC in the same second (a
  RouterOS log: ``…,D17,-104,-9,-77,18,…`` beside ``+QCAINFO: "pcc",476,50,"LTE BAND
  1",1,189,-104,-9,-77,18``), weak cells print negative values (``…,-124,-16,-91,-5,3``),
  and Quectel documents the same measurement as dB in ``+QIND: "SQI"`` (range -20..30 dB).
  The emulator (hil/emulators/modem_at.py) sends it the same way.
- ``tx_power`` is in 0.1 dBm (captures: 100, -190).
- Bandwidths are indices: LTE 0..5 → 1.4, 3, 5, 10, 15, 20 MHz; NR 0..14 → 5, 10, 15, 20,
  25, 30, 40, 50, 60, 70, 80, 90, 100, 200, 400 MHz. NR ``<scs>`` 0..4 → 15·2ⁿ kHz.
- Cell identities and TACs are hexadecimal, MCC and MNC decimal strings (an MNC keeps its
  leading zero: "01" and "001" are different networks).

Identifiers: the ICCID (+QCCID) is kept out of ``repr`` and errors; its command is sensitive.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self, TypeVar

from drivers.errors import ModemProtocolError, UsageError
from drivers.modem.at_codec import AtCommand
from drivers.modem.params import Params, is_digits
from drivers.modem.ts27007 import Technology, parse_clock

__all__ = [
    "COMMANDS",
    "CellState",
    "DataCounter",
    "Iccid",
    "LteCell",
    "NetDevControl",
    "NetDevOperation",
    "NetworkInfo",
    "NetworkTime",
    "NrCell",
    "QltsMode",
    "ServingCell",
    "Technology",
    "UsbNet",
    "UsbNetMode",
    "WcdmaCell",
    "qccid",
    "qcfg_usbnet_query",
    "qcfg_usbnet_set",
    "qeng_servingcell",
    "qgdcnt",
    "qgdnrcnt",
    "qlts",
    "qnetdevctl_query",
    "qnetdevctl_set",
    "qnwinfo",
]

#: Numeric "no value" in Quectel answers (the int16 minimum).
UNKNOWN_NUMBER: Final = -32768

_T = TypeVar("_T")

# ---------------------------------------------------------------------------
# Command builders
# ---------------------------------------------------------------------------


def qccid() -> AtCommand:
    """``AT+QCCID``: the SIM's ICCID (manual: AT+QCCID); an identifier, so sensitive."""
    return AtCommand.of("AT+QCCID", sensitive=True)


def qeng_servingcell() -> AtCommand:
    """``AT+QENG="servingcell"``: the serving cell(s) (manual: AT+QENG)."""
    return AtCommand.of('AT+QENG="servingcell"')


def qnwinfo() -> AtCommand:
    """``AT+QNWINFO``: access technology, operator, band, channel (manual: AT+QNWINFO)."""
    return AtCommand.of("AT+QNWINFO")


class QltsMode(enum.IntEnum):
    """``<mode>`` of AT+QLTS (manual: AT+QLTS)."""

    #: The time the network last sent (NITZ), in the network's local time.
    LAST_SYNCED = 0
    #: The current time, computed from the last NITZ, in UTC ("GMT").
    CURRENT_UTC = 1
    #: The current time, computed from the last NITZ, in local time.
    CURRENT_LOCAL = 2


def qlts(mode: QltsMode = QltsMode.LAST_SYNCED) -> AtCommand:
    """``AT+QLTS=<mode>``: time from the network (NITZ)."""
    return AtCommand.of(f"AT+QLTS={int(mode)}")


def qcfg_usbnet_query() -> AtCommand:
    """``AT+QCFG="usbnet"``: the USB network interface protocol (manual: AT+QCFG="usbnet")."""
    return AtCommand.of('AT+QCFG="usbnet"')


class UsbNetMode(enum.IntEnum):
    """``<net>`` of AT+QCFG="usbnet"; takes effect after the module restarts."""

    #: RmNet (QMI): qmi_wwan.
    RMNET = 0
    ECM = 1
    MBIM = 2
    RNDIS = 3
    #: NCM, on the firmware that offers it (seen as 5 on RG500U/RM500U).
    NCM = 5


def qcfg_usbnet_set(mode: UsbNetMode) -> AtCommand:
    """``AT+QCFG="usbnet",<net>``."""
    return AtCommand.of(f'AT+QCFG="usbnet",{int(mode)}')


def qnetdevctl_query() -> AtCommand:
    """``AT+QNETDEVCTL?``: the data call bound to the USB network device (manual)."""
    return AtCommand.of("AT+QNETDEVCTL?")


class NetDevOperation(enum.IntEnum):
    """``<op>`` of AT+QNETDEVCTL."""

    DISCONNECT = 0
    CONNECT = 1
    AUTO_CONNECT = 2
    CONNECT_AND_AUTO_CONNECT = 3


#: A data call takes up to 10 s to come up (the network's PDN connectivity procedure).
QNETDEVCTL_TIMEOUT_S: Final = 10.0


def qnetdevctl_set(operation: NetDevOperation, cid: int, *, urc: bool = True) -> AtCommand:
    """``AT+QNETDEVCTL=<op>,<cid>,<urc_en>``: start or stop the data call on ``cid``.

    The setting does not survive a module reset (field reports): send it after each boot.
    """
    if not 1 <= cid <= 16:
        raise UsageError("cid", "1..16")
    return AtCommand.of(
        f"AT+QNETDEVCTL={int(operation)},{cid},{int(urc)}", timeout_s=QNETDEVCTL_TIMEOUT_S
    )


#: The queries the hub sends to this family, by name (the adapter's and the CLI's table).
def qgdcnt() -> AtCommand:
    """``AT+QGDCNT?``: bytes the module sent and received on its LTE data contexts since it
    booted (``+QGDCNT: <sent>,<received>``; the RM5xxQ keeps NR's apart, :func:`qgdnrcnt`)."""
    return AtCommand.of("AT+QGDCNT?")


def qgdnrcnt() -> AtCommand:
    """``AT+QGDNRCNT?``: the same for NR (5G) on RM5xxQ modules; older modules answer
    ERROR (then only +QGDCNT counts)."""
    return AtCommand.of("AT+QGDNRCNT?")


COMMANDS: Final = {
    "iccid": qccid(),
    "serving_cell": qeng_servingcell(),
    "network_info": qnwinfo(),
    "network_time": qlts(),
    "usbnet": qcfg_usbnet_query(),
    "netdev": qnetdevctl_query(),
    "data_counter": qgdcnt(),
    "nr_data_counter": qgdnrcnt(),
}


# ---------------------------------------------------------------------------
# +QGDCNT, +QGDNRCNT
# ---------------------------------------------------------------------------

MAX_DATA_COUNTER: Final = 2**63 - 1
"""A counter past this is not a byte count (the firmware prints 32- or 64-bit values)."""


@dataclass(frozen=True, slots=True)
class DataCounter:
    """The module's data counter (``+QGDCNT`` for LTE, ``+QGDNRCNT`` for NR): bytes sent
    and received since the module booted (not reset by a dropped data call). Which of the
    two comes first differs between sources; :attr:`total_bytes` does not care."""

    first_bytes: int
    second_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.first_bytes + self.second_bytes

    @classmethod
    def from_line(cls, line: str, prefix: str = "+QGDCNT") -> Self:
        """Parse ``<prefix>: <bytes>,<bytes>``."""
        params = Params.parse(line, prefix)
        params.expect_count("parameters", 2, 2)
        first = params.integer(0, "first count", 0, MAX_DATA_COUNTER)
        second = params.integer(1, "second count", 0, MAX_DATA_COUNTER)
        return cls(first, second)


# ---------------------------------------------------------------------------
# +QCCID
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Iccid:
    """The SIM's ICCID (ITU-T E.118): an identifier, never in ``repr``, logs or errors."""

    digits: str = field(repr=False)

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse ``+QCCID: <iccid>``: 18 to 20 digits, a trailing F (padding) dropped."""
        params = Params.parse(line, "+QCCID", sensitive=True)
        params.expect_count("parameters", 1, 1)
        value = params.text(0, "ICCID")
        if value[-1:] in ("F", "f"):
            value = value[:-1]
        if not 18 <= len(value) <= 20 or not is_digits(value):
            raise params.error(0, "ICCID", "not 18 to 20 digits")
        return cls(value)

    def __repr__(self) -> str:
        return "Iccid(<redacted>)"


# ---------------------------------------------------------------------------
# +QENG="servingcell"
# ---------------------------------------------------------------------------


class CellState(enum.StrEnum):
    """``<state>`` of +QENG="servingcell"."""

    #: Searching: no cell found yet.
    SEARCH = "SEARCH"
    #: Camped, limited service (emergency calls only, e.g. no SIM or registration denied).
    LIMSRV = "LIMSRV"
    #: Camped and registered, RRC idle.
    NOCONN = "NOCONN"
    #: Camped and registered, RRC connected.
    CONNECT = "CONNECT"


_LTE_BANDWIDTH_MHZ: Final = (1.4, 3.0, 5.0, 10.0, 15.0, 20.0)
_NR_BANDWIDTH_MHZ: Final = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 200, 400)
_NR_SCS_KHZ: Final = (15, 30, 60, 120, 240)

# Bounds wide enough for any real cell and narrow enough to catch a column shifted by a
# firmware with another layout (an ARFCN read as an RSRP, a band as an RSRQ).
_RSRP_DBM: Final = (-160, -20)
_RSRQ_DB: Final = (-50, 30)
_RSSI_DBM: Final = (-130, 0)
_SINR_DB: Final = (-30, 60)


def _measure(params: Params, index: int, name: str, bounds: tuple[int, int]) -> int | None:
    return params.optional_integer(index, name, *bounds, unknown=(UNKNOWN_NUMBER,))


def _indexed(params: Params, index: int, name: str, table: tuple[_T, ...]) -> _T | None:
    value = params.optional_integer(index, name, 0, 255, unknown=(UNKNOWN_NUMBER,))
    if value is None or value >= len(table):
        return None
    return table[value]


def _plmn_part(params: Params, index: int, name: str, digits: tuple[int, int]) -> str | None:
    text = params.optional_text(index, name)
    if text is None:
        return None
    if not is_digits(text) or not digits[0] <= len(text) <= digits[1]:
        raise params.error(index, name, f"not {digits[0]} to {digits[1]} digits")
    return text


@dataclass(frozen=True, slots=True)
class LteCell:
    """The LTE serving cell of +QENG="servingcell" (LTE mode, or the EN-DC anchor)."""

    duplex: str
    mcc: str | None
    mnc: str | None
    cell_id: int | None
    pci: int | None
    earfcn: int | None
    band: int | None
    ul_bandwidth_mhz: float | None
    dl_bandwidth_mhz: float | None
    tac: int | None
    rsrp_dbm: int | None
    rsrq_db: int | None
    rssi_dbm: int | None
    sinr_db: int | None
    cqi: int | None
    tx_power_dbm: float | None
    srxlev_db: int | None

    #: Parameters from ``<is_tdd>`` to ``<srxlev>``.
    FIELDS: ClassVar[int] = 17

    @classmethod
    def from_params(cls, params: Params, first: int) -> Self:
        """Read ``<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,<freq_band_ind>,<UL_bandwidth>,
        <DL_bandwidth>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,<CQI>,<tx_power>,<srxlev>`` from
        parameter ``first`` on."""
        params.expect_count("LTE", first + cls.FIELDS)
        i = first
        tx_power = params.optional_integer(
            i + 15, "tx_power", -1000, 500, unknown=(UNKNOWN_NUMBER,)
        )
        return cls(
            duplex=_duplex(params, i),
            mcc=_plmn_part(params, i + 1, "MCC", (3, 3)),
            mnc=_plmn_part(params, i + 2, "MNC", (2, 3)),
            cell_id=params.optional_hexadecimal(i + 3, "cellID", 7),
            pci=params.optional_integer(i + 4, "PCID", 0, 503),
            earfcn=params.optional_integer(i + 5, "earfcn", 0, 262143),
            band=params.optional_integer(i + 6, "freq_band_ind", 1, 255),
            ul_bandwidth_mhz=_indexed(params, i + 7, "UL_bandwidth", _LTE_BANDWIDTH_MHZ),
            dl_bandwidth_mhz=_indexed(params, i + 8, "DL_bandwidth", _LTE_BANDWIDTH_MHZ),
            tac=params.optional_hexadecimal(i + 9, "TAC", 4),
            rsrp_dbm=_measure(params, i + 10, "RSRP", _RSRP_DBM),
            rsrq_db=_measure(params, i + 11, "RSRQ", _RSRQ_DB),
            rssi_dbm=_measure(params, i + 12, "RSSI", _RSSI_DBM),
            sinr_db=_measure(params, i + 13, "SINR", _SINR_DB),
            cqi=params.optional_integer(i + 14, "CQI", 0, 15),
            tx_power_dbm=None if tx_power is None else tx_power / 10,
            srxlev_db=params.optional_integer(i + 16, "srxlev", -200, 200),
        )


@dataclass(frozen=True, slots=True)
class NrCell:
    """An NR serving cell of +QENG="servingcell": standalone, or the EN-DC secondary leg.

    ``duplex``, ``cell_id``, ``tac`` and ``srxlev_db`` exist in SA only.
    """

    mcc: str | None
    mnc: str | None
    pci: int | None
    arfcn: int | None
    band: int | None
    dl_bandwidth_mhz: int | None
    rsrp_dbm: int | None
    rsrq_db: int | None
    sinr_db: int | None
    scs_khz: int | None
    duplex: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    srxlev_db: int | None = None

    #: Parameters of the SA layout, ``<duplex_mode>`` to ``<srxlev>``.
    SA_FIELDS: ClassVar[int] = 14
    #: Parameters of the NSA line after ``"NR5G-NSA"``, ``<MCC>`` to ``<scs>``.
    NSA_FIELDS: ClassVar[int] = 10

    @classmethod
    def from_sa_params(cls, params: Params, first: int) -> Self:
        """Read ``<duplex_mode>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,<band>,
        <NR_DL_bandwidth>,<RSRP>,<RSRQ>,<SINR>,<scs>,<srxlev>`` from ``first`` on.

        Some firmware leaves out ``<srxlev>``; parameters after it are not read.
        """
        params.expect_count("NR5G-SA", first + cls.SA_FIELDS - 1)
        i = first
        return cls(
            duplex=_duplex(params, i),
            mcc=_plmn_part(params, i + 1, "MCC", (3, 3)),
            mnc=_plmn_part(params, i + 2, "MNC", (2, 3)),
            cell_id=params.optional_hexadecimal(i + 3, "cellID", 9),
            pci=params.optional_integer(i + 4, "PCID", 0, 1007),
            tac=params.optional_hexadecimal(i + 5, "TAC", 6),
            arfcn=params.optional_integer(i + 6, "ARFCN", 0, 3279165),
            band=params.optional_integer(i + 7, "band", 1, 1024),
            dl_bandwidth_mhz=_indexed(params, i + 8, "NR_DL_bandwidth", _NR_BANDWIDTH_MHZ),
            rsrp_dbm=_measure(params, i + 9, "RSRP", _RSRP_DBM),
            rsrq_db=_measure(params, i + 10, "RSRQ", _RSRQ_DB),
            sinr_db=_measure(params, i + 11, "SINR", _SINR_DB),
            scs_khz=_indexed(params, i + 12, "scs", _NR_SCS_KHZ),
            srxlev_db=params.optional_integer(i + 13, "srxlev", -200, 200),
        )

    @classmethod
    def from_nsa_params(cls, params: Params) -> Self:
        """Read ``"NR5G-NSA",<MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>,<ARFCN>,<band>,
        <NR_DL_bandwidth>,<scs>`` (note SINR before RSRQ, unlike SA)."""
        params.expect_count("NR5G-NSA", 1 + cls.NSA_FIELDS)
        return cls(
            mcc=_plmn_part(params, 1, "MCC", (3, 3)),
            mnc=_plmn_part(params, 2, "MNC", (2, 3)),
            pci=params.optional_integer(3, "PCID", 0, 1007, unknown=(UNKNOWN_NUMBER,)),
            rsrp_dbm=_measure(params, 4, "RSRP", _RSRP_DBM),
            sinr_db=_measure(params, 5, "SINR", _SINR_DB),
            rsrq_db=_measure(params, 6, "RSRQ", _RSRQ_DB),
            arfcn=params.optional_integer(7, "ARFCN", 0, 3279165, unknown=(UNKNOWN_NUMBER,)),
            band=params.optional_integer(8, "band", 1, 1024, unknown=(UNKNOWN_NUMBER,)),
            dl_bandwidth_mhz=_indexed(params, 9, "NR_DL_bandwidth", _NR_BANDWIDTH_MHZ),
            scs_khz=_indexed(params, 10, "scs", _NR_SCS_KHZ),
        )


@dataclass(frozen=True, slots=True)
class WcdmaCell:
    """The WCDMA serving cell of +QENG="servingcell" (3G fallback)."""

    mcc: str | None
    mnc: str | None
    lac: int | None
    cell_id: int | None
    uarfcn: int | None
    psc: int | None
    rscp_dbm: int | None
    ecio_db: int | None

    #: Parameters read, ``<MCC>`` to ``<ecio>`` (the call parameters after it are not).
    FIELDS: ClassVar[int] = 10

    @classmethod
    def from_params(cls, params: Params, first: int) -> Self:
        """Read ``<MCC>,<MNC>,<LAC>,<cellID>,<uarfcn>,<PSC>,<RAC>,<RSCP>,<ecio>,…``."""
        params.expect_count("WCDMA", first + cls.FIELDS - 1)
        i = first
        return cls(
            mcc=_plmn_part(params, i, "MCC", (3, 3)),
            mnc=_plmn_part(params, i + 1, "MNC", (2, 3)),
            lac=params.optional_hexadecimal(i + 2, "LAC", 4),
            cell_id=params.optional_hexadecimal(i + 3, "cellID", 7),
            uarfcn=params.optional_integer(i + 4, "uarfcn", 0, 16383),
            psc=params.optional_integer(i + 5, "PSC", 0, 511),
            rscp_dbm=params.optional_integer(i + 7, "RSCP", -130, 0),
            ecio_db=params.optional_integer(i + 8, "ecio", -50, 0),
        )


def _duplex(params: Params, index: int) -> str:
    duplex = params.text(index, "duplex_mode")
    if duplex not in ("FDD", "TDD"):
        raise params.error(index, "duplex_mode", "not FDD or TDD")
    return duplex


def _state(params: Params, index: int) -> CellState:
    text = params.quoted(index, "state")
    try:
        return CellState(text)
    except ValueError:
        raise params.error(index, "state", "not SEARCH, LIMSRV, NOCONN or CONNECT") from None


@dataclass(frozen=True, slots=True)
class ServingCell:
    """+QENG="servingcell" (manual: AT+QENG), in the layouts of the RG50xQ/RM5xxQ manual.

    - LTE: one line, ``"servingcell",<state>,"LTE",<is_tdd>,…`` (:class:`LteCell`).
    - NR5G-SA: one line, ``"servingcell",<state>,"NR5G-SA",<duplex_mode>,…``
      (:class:`NrCell`).
    - NR5G-NSA (EN-DC): ``"servingcell",<state>`` then an ``"LTE",…`` line (the anchor)
      and an ``"NR5G-NSA",…`` line. Without the NR line the technology is LTE.
    - WCDMA: one line, ``"servingcell",<state>,"WCDMA",<MCC>,…`` (:class:`WcdmaCell`).
    - SEARCH (and a LIMSRV without a cell): ``"servingcell",<state>`` alone:
      :attr:`Technology.NONE`.
    """

    state: CellState
    technology: Technology
    lte: LteCell | None = None
    nr: NrCell | None = None
    wcdma: WcdmaCell | None = None

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> Self:
        """Parse every information line of ``AT+QENG="servingcell"``."""
        if not lines:
            raise ModemProtocolError("+QENG", "servingcell", "no lines", None)
        head = Params.parse(lines[0], "+QENG")
        if head.quoted(0, "cell_type") != "servingcell":
            raise head.error(0, "cell_type", "not servingcell")
        state = _state(head, 1)
        if len(head) > 2:
            if len(lines) > 1:
                raise ModemProtocolError("+QENG", "servingcell", "more than one line", None)
            return cls._single(head, state)
        return cls._multi(state, [Params.parse(line, "+QENG") for line in lines[1:]])

    @classmethod
    def _single(cls, params: Params, state: CellState) -> Self:
        rat = params.quoted(2, "RAT")
        if rat == "LTE":
            return cls(state, Technology.LTE, lte=LteCell.from_params(params, 3))
        if rat == "NR5G-SA":
            return cls(state, Technology.NR5G_SA, nr=NrCell.from_sa_params(params, 3))
        if rat == "WCDMA":
            return cls(state, Technology.WCDMA, wcdma=WcdmaCell.from_params(params, 3))
        if rat == "GSM":  # no GSM on the RM5xx; reported, not read
            return cls(state, Technology.GSM)
        raise params.error(2, "RAT", "not LTE, NR5G-SA, WCDMA or GSM")

    @classmethod
    def _multi(cls, state: CellState, rows: list[Params]) -> Self:
        lte: LteCell | None = None
        nr: NrCell | None = None
        for params in rows:
            rat = params.quoted(0, "RAT")
            if rat == "LTE" and lte is None:
                lte = LteCell.from_params(params, 1)
            elif rat == "NR5G-NSA" and nr is None:
                nr = NrCell.from_nsa_params(params)
            else:
                raise params.error(0, "RAT", "not one LTE and one NR5G-NSA line")
        if nr is not None and lte is None:
            raise ModemProtocolError("+QENG", "LTE", "NR5G-NSA line without its LTE anchor")
        if lte is None:
            return cls(state, Technology.NONE)
        technology = Technology.LTE if nr is None else Technology.NR5G_NSA
        return cls(state, technology, lte=lte, nr=nr)

    @property
    def registered(self) -> bool:
        """Camped with full service (NOCONN or CONNECT)."""
        return self.state in (CellState.NOCONN, CellState.CONNECT)


# ---------------------------------------------------------------------------
# +QNWINFO
# ---------------------------------------------------------------------------

#: ``<Act>`` of +QNWINFO → technology ("FDD LTE", "TDD NR5G"…, matched by the last word).
_QNWINFO_TECHNOLOGY: Final = {
    "GSM": Technology.GSM,
    "GPRS": Technology.GSM,
    "EDGE": Technology.GSM,
    "WCDMA": Technology.WCDMA,
    "HSDPA": Technology.WCDMA,
    "HSUPA": Technology.WCDMA,
    "HSPA+": Technology.WCDMA,
    "TDSCDMA": Technology.WCDMA,
    "LTE": Technology.LTE,
    "NR5G": Technology.NR5G_SA,
    "NR5G-SA": Technology.NR5G_SA,
    "NR5G-NSA": Technology.NR5G_NSA,
}


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """``+QNWINFO: <Act>,<oper>,<band>,<channel>`` or ``+QNWINFO: No Service`` (manual).

    ``technology`` is None for an ``<Act>`` this module does not know; ``access`` keeps the
    text. In EN-DC the RM5xx reports its LTE anchor here: use :class:`ServingCell` to tell
    NSA from LTE.
    """

    access: str
    technology: Technology | None
    plmn: str | None = None
    band: str | None = None
    channel: int | None = None

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+QNWINFO``."""
        params = Params.parse(line, "+QNWINFO")
        access = params.text(0, "Act")
        if access == "No Service":
            params.expect_count("parameters", 1, 1)
            return cls(access, Technology.NONE)
        params.expect_count("parameters", 4, 4)
        technology = _QNWINFO_TECHNOLOGY.get(access.rsplit(" ", 1)[-1])
        plmn = params.quoted(1, "oper")
        if not (is_digits(plmn) and 5 <= len(plmn) <= 6):
            raise params.error(1, "oper", "not 5 or 6 digits")
        return cls(
            access,
            technology,
            plmn,
            params.quoted(2, "band"),
            params.integer(3, "channel", 0, 3279165),
        )


# ---------------------------------------------------------------------------
# +QLTS
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkTime:
    """``+QLTS: "yyyy/MM/dd,hh:mm:ss±zz,d"`` (manual: AT+QLTS): time from the network.

    Attributes:
        time: aware; in the network's zone for modes 0 and 2, in UTC for mode 1.
        zone: the network's local zone (``±zz`` quarter hours), daylight saving included.
        dst_hours: the daylight saving adjustment the network announced (0, 1 or 2).
    """

    time: dt.datetime
    zone: dt.timezone
    dst_hours: int

    @classmethod
    def from_line(cls, line: str, *, mode: QltsMode = QltsMode.LAST_SYNCED) -> Self | None:
        """Parse the answer to ``AT+QLTS=<mode>``; None when the network sent no time yet."""
        params = Params.parse(line, "+QLTS")
        params.expect_count("parameters", 1, 1)
        text = params.quoted(0, "time")
        if not text:
            return None
        stamp, comma, dst = text.rpartition(",")
        if not comma or dst not in ("0", "1", "2"):
            raise params.error(0, "dst", "not 0, 1 or 2")
        local = parse_clock(stamp, "+QLTS", "time")
        zone = local.tzinfo
        assert isinstance(zone, dt.timezone)
        if mode is QltsMode.CURRENT_UTC:
            local = local.replace(tzinfo=dt.UTC)
        return cls(local, zone, int(dst))


# ---------------------------------------------------------------------------
# +QCFG="usbnet", +QNETDEVCTL
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsbNet:
    """``+QCFG: "usbnet",<net>``: the USB network protocol; unknown values kept in ``net``."""

    net: int

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+QCFG="usbnet"``."""
        params = Params.parse(line, "+QCFG")
        params.expect_count("parameters", 2, 2)
        if params.quoted(0, "function").lower() != "usbnet":
            raise params.error(0, "function", "not usbnet")
        return cls(params.integer(1, "net", 0, 255))

    @property
    def mode(self) -> UsbNetMode | None:
        """The named mode, None for one this module does not know."""
        try:
            return UsbNetMode(self.net)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class NetDevControl:
    """``+QNETDEVCTL: <op>,<cid>,<urc_en>,<state>`` (manual: AT+QNETDEVCTL).

    ``state`` is kept raw: 1 the data call is up on the USB network device, 0 it is not.
    """

    operation: NetDevOperation
    cid: int
    urc_enabled: bool
    state: int

    @classmethod
    def from_line(cls, line: str) -> Self:
        """Parse the answer to ``AT+QNETDEVCTL?``."""
        params = Params.parse(line, "+QNETDEVCTL")
        params.expect_count("parameters", 4, 4)
        return cls(
            params.code(0, "op", NetDevOperation),
            params.integer(1, "cid", 0, 16),
            bool(params.integer(2, "urc_en", 0, 1)),
            params.integer(3, "state", 0, 255),
        )

    @property
    def connected(self) -> bool | None:
        """Whether the data call is up; None for a state this module does not know."""
        return {0: False, 1: True}.get(self.state)
