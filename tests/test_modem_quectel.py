"""Quectel RG50xQ/RM5xxQ commands and answers (drivers.modem.quectel)."""

from __future__ import annotations

import contextlib
import datetime as dt
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ModemProtocolError, UsageError
from drivers.modem import quectel
from drivers.modem.at_codec import AtCodec, AtCommand, Echo, FinalResult, InformationLine
from drivers.modem.quectel import (
    CellState,
    Iccid,
    LteCell,
    NetDevControl,
    NetDevOperation,
    NetworkInfo,
    NetworkTime,
    NrCell,
    QltsMode,
    ServingCell,
    Technology,
    UsbNet,
    UsbNetMode,
    WcdmaCell,
)
from tests import phi_canaries

ICCID = "89490200001234567895"
# Identifiers must never reach a log: the suite-wide scan looks for it.
phi_canaries.plant("test ICCID", ICCID)

LTE_LINE = (
    '+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,'
    "-96,-11,-56,14,0,-,29"
)
NSA_LINES = [
    '+QENG: "servingcell","NOCONN"',
    '+QENG: "LTE","FDD",262,01,1929500,321,1300,3,5,5,34BA,-75,-7,-48,25,15,100,-',
    '+QENG: "NR5G-NSA",262,01,774,-82,30,-11,431070,1,3,0',
]
SA_LINE = (
    '+QENG: "servingcell","NOCONN","NR5G-SA","TDD",460,01,9013B004,299,690E0F,633984,78,12,'
    "-107,-13,2,1,-"
)


# -- builders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "wire", "prefixes", "sensitive"),
    [
        (quectel.qccid(), b"AT+QCCID\r", ("+QCCID",), True),
        (quectel.qeng_servingcell(), b'AT+QENG="servingcell"\r', ("+QENG",), False),
        (quectel.qnwinfo(), b"AT+QNWINFO\r", ("+QNWINFO",), False),
        (quectel.qlts(), b"AT+QLTS=0\r", ("+QLTS",), False),
        (quectel.qlts(QltsMode.CURRENT_LOCAL), b"AT+QLTS=2\r", ("+QLTS",), False),
        (quectel.qcfg_usbnet_query(), b'AT+QCFG="usbnet"\r', ("+QCFG",), False),
        (quectel.qcfg_usbnet_set(UsbNetMode.MBIM), b'AT+QCFG="usbnet",2\r', ("+QCFG",), False),
        (quectel.qnetdevctl_query(), b"AT+QNETDEVCTL?\r", ("+QNETDEVCTL",), False),
        (
            quectel.qnetdevctl_set(NetDevOperation.CONNECT_AND_AUTO_CONNECT, 1),
            b"AT+QNETDEVCTL=3,1,1\r",
            ("+QNETDEVCTL",),
            False,
        ),
        (
            quectel.qnetdevctl_set(NetDevOperation.DISCONNECT, 2, urc=False),
            b"AT+QNETDEVCTL=0,2,0\r",
            ("+QNETDEVCTL",),
            False,
        ),
    ],
)
def test_builders(
    command: AtCommand, wire: bytes, prefixes: tuple[str, ...], sensitive: bool
) -> None:
    """Each builder gives the manual's command line, its prefix and its sensitivity."""
    assert (wire, prefixes, sensitive) == (
        bytes(command),
        command.response_prefixes,
        command.sensitive,
    )


def test_qnetdevctl_cid_is_checked() -> None:
    """A cid outside 1..16 is our mistake."""
    with pytest.raises(UsageError) as caught:
        quectel.qnetdevctl_set(NetDevOperation.CONNECT, 0)
    assert "cid" == caught.value.argument


def test_the_command_table() -> None:
    """The vendor's query table names each query once."""
    assert b"AT+QCCID\r" == bytes(quectel.COMMANDS["iccid"])
    assert {
        "iccid",
        "serving_cell",
        "network_info",
        "network_time",
        "usbnet",
        "netdev",
        "data_counter",
        "nr_data_counter",
    } == set(quectel.COMMANDS)


# -- +QCCID --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "digits"),
    [
        (f"+QCCID: {ICCID}", ICCID),
        (f"+QCCID: {ICCID[:19]}F", ICCID[:19]),
    ],
)
def test_qccid(line: str, digits: str) -> None:
    """The ICCID, F padding dropped; repr never shows it."""
    iccid = Iccid.from_line(line)
    assert digits == iccid.digits
    assert digits not in repr(iccid)
    assert "Iccid(<redacted>)" == repr(iccid)


@pytest.mark.parametrize("line", [f"+QCCID: {ICCID[:10]}X{ICCID[11:]}", "+QCCID: 8949020000"])
def test_bad_qccid_is_never_named(line: str) -> None:
    """A malformed ICCID is refused without its digits in the error."""
    with pytest.raises(ModemProtocolError) as caught:
        Iccid.from_line(line)
    assert ("+QCCID", "ICCID", 0) == (
        caught.value.command,
        caught.value.field,
        caught.value.position,
    )
    assert "89490200" not in str(caught.value)


# -- +QENG="servingcell" -------------------------------------------------------------------


def test_servingcell_lte() -> None:
    """LTE: one line; IDs in hex, bandwidth indices in MHz, tx_power unknown when idle."""
    assert ServingCell(
        CellState.NOCONN,
        Technology.LTE,
        lte=LteCell(
            duplex="FDD",
            mcc="311",
            mnc="480",
            cell_id=0x334220,
            pci=221,
            earfcn=66536,
            band=66,
            ul_bandwidth_mhz=20.0,
            dl_bandwidth_mhz=20.0,
            tac=0xD00,
            rsrp_dbm=-96,
            rsrq_db=-11,
            rssi_dbm=-56,
            sinr_db=14,
            cqi=0,
            tx_power_dbm=None,
            srxlev_db=29,
        ),
    ) == ServingCell.from_lines([LTE_LINE])


def test_servingcell_nr5g_nsa() -> None:
    """EN-DC: state line, LTE anchor, NR leg (SINR before RSRQ on the NSA line)."""
    cell = ServingCell.from_lines(NSA_LINES)
    assert (CellState.NOCONN, Technology.NR5G_NSA) == (cell.state, cell.technology)
    assert (
        LteCell(
            duplex="FDD",
            mcc="262",
            mnc="01",
            cell_id=0x1929500,
            pci=321,
            earfcn=1300,
            band=3,
            ul_bandwidth_mhz=20.0,
            dl_bandwidth_mhz=20.0,
            tac=0x34BA,
            rsrp_dbm=-75,
            rsrq_db=-7,
            rssi_dbm=-48,
            sinr_db=25,
            cqi=15,
            tx_power_dbm=10.0,
            srxlev_db=None,
        )
        == cell.lte
    )
    assert (
        NrCell(
            mcc="262",
            mnc="01",
            pci=774,
            arfcn=431070,
            band=1,
            dl_bandwidth_mhz=20,
            rsrp_dbm=-82,
            rsrq_db=-11,
            sinr_db=30,
            scs_khz=15,
        )
        == cell.nr
    )
    assert cell.registered


def test_servingcell_nsa_before_the_nr_leg_is_up() -> None:
    """-32768 in the NR line means no value yet."""
    cell = ServingCell.from_lines(
        [
            NSA_LINES[0],
            NSA_LINES[1],
            '+QENG: "NR5G-NSA",262,01,-32768,-32768,-32768,-32768,-32768,-32768,-,-',
        ]
    )
    assert NrCell("262", "01", None, None, None, None, None, None, None, None) == cell.nr


def test_servingcell_anchor_without_nr_is_lte() -> None:
    """An EN-DC layout with only its LTE line reports LTE."""
    cell = ServingCell.from_lines(NSA_LINES[:2])
    assert (Technology.LTE, None) == (cell.technology, cell.nr)
    assert cell.lte is not None


def test_servingcell_nr5g_sa() -> None:
    """SA: one line; 36-bit cell id, 24-bit TAC in hex; bandwidth 12 → 100 MHz, scs 1 → 30 kHz."""
    assert ServingCell(
        CellState.NOCONN,
        Technology.NR5G_SA,
        nr=NrCell(
            mcc="460",
            mnc="01",
            pci=299,
            arfcn=633984,
            band=78,
            dl_bandwidth_mhz=100,
            rsrp_dbm=-107,
            rsrq_db=-13,
            sinr_db=2,
            scs_khz=30,
            duplex="TDD",
            cell_id=0x9013B004,
            tac=0x690E0F,
            srxlev_db=None,
        ),
    ) == ServingCell.from_lines([SA_LINE])


def test_servingcell_sa_connected() -> None:
    """CONNECT is RRC-connected; srxlev present."""
    cell = ServingCell.from_lines(
        [
            '+QENG: "servingcell","CONNECT","NR5G-SA","TDD",311,480,1A2B3C4,505,D00,504990,41,'
            "12,-88,-11,15,1,31"
        ]
    )
    assert CellState.CONNECT == cell.state
    assert cell.nr is not None
    assert (0x1A2B3C4, 0xD00, 41, 31) == (
        cell.nr.cell_id,
        cell.nr.tac,
        cell.nr.band,
        cell.nr.srxlev_db,
    )


def test_servingcell_wcdma() -> None:
    """3G fallback."""
    assert ServingCell(
        CellState.NOCONN,
        Technology.WCDMA,
        wcdma=WcdmaCell("440", "10", 0x1234, 0xABCDEF, 10700, 300, -80, -5),
    ) == ServingCell.from_lines(
        ['+QENG: "servingcell","NOCONN","WCDMA",440,10,1234,ABCDEF,10700,300,0,-80,-5,-,-,-,-,-']
    )


def test_servingcell_limited_service_without_plmn() -> None:
    """LIMSRV on an LTE cell whose PLMN the modem does not report: '-' is None."""
    cell = ServingCell.from_lines(
        [LTE_LINE.replace('"NOCONN"', '"LIMSRV"').replace("311,480", "-,-")]
    )
    assert cell.lte is not None
    assert (CellState.LIMSRV, None, None) == (cell.state, cell.lte.mcc, cell.lte.mnc)
    assert not cell.registered


def test_servingcell_gsm_is_reported_not_read() -> None:
    """The RM5xx has no GSM; a GSM layout is reported as such without details."""
    assert ServingCell(CellState.NOCONN, Technology.GSM) == ServingCell.from_lines(
        ['+QENG: "servingcell","NOCONN","GSM",262,01,1A2B,C3D4,20,50,-75']
    )


@pytest.mark.parametrize("state", ["SEARCH", "LIMSRV"])
def test_servingcell_without_a_cell(state: str) -> None:
    """Searching (or limited service with no cell): technology none."""
    cell = ServingCell.from_lines([f'+QENG: "servingcell","{state}"'])
    assert ServingCell(CellState(state), Technology.NONE) == cell
    assert not cell.registered


@pytest.mark.parametrize(
    ("lines", "field", "position"),
    [
        ([LTE_LINE.replace('"NOCONN"', '"IDLE"')], "state", 1),
        ([LTE_LINE.replace('"LTE"', '"CDMA"')], "RAT", 2),
        ([LTE_LINE.replace('"FDD"', '"XDD"')], "duplex_mode", 3),
        # RSRP column holding an ARFCN: a firmware with another layout.
        ([LTE_LINE.replace("-96,-11", "66536,-11")], "RSRP", 13),
        ([LTE_LINE.rsplit(",", 3)[0]], "LTE", 17),
        ([SA_LINE.replace(",78,12,", ",78,x,", 1)], "NR_DL_bandwidth", 11),
        ([NSA_LINES[0], NSA_LINES[2]], "LTE", None),
        ([NSA_LINES[0], NSA_LINES[1], NSA_LINES[1]], "RAT", 0),
        ([LTE_LINE, LTE_LINE], "servingcell", None),
        (['+QENG: "neighbourcell","LTE"'], "cell_type", 0),
        ([], "servingcell", None),
    ],
)
def test_bad_servingcell(lines: list[str], field: str, position: int | None) -> None:
    """Unknown states, RATs and layouts are refused, naming the field and its position."""
    with pytest.raises(ModemProtocolError) as caught:
        ServingCell.from_lines(lines)
    assert (field, position) == (caught.value.field, caught.value.position)


# -- +QNWINFO ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '+QNWINFO: "FDD LTE","26201","LTE BAND 3",1300',
            NetworkInfo("FDD LTE", Technology.LTE, "26201", "LTE BAND 3", 1300),
        ),
        (
            '+QNWINFO: "TDD NR5G","46001","NR5G BAND 78",627264',
            NetworkInfo("TDD NR5G", Technology.NR5G_SA, "46001", "NR5G BAND 78", 627264),
        ),
        (
            '+QNWINFO: "HSPA+","310410","WCDMA 1900",9800',
            NetworkInfo("HSPA+", Technology.WCDMA, "310410", "WCDMA 1900", 9800),
        ),
        (
            '+QNWINFO: "CDMA1X","46003","BC0",283',
            NetworkInfo("CDMA1X", None, "46003", "BC0", 283),
        ),
        ("+QNWINFO: No Service", NetworkInfo("No Service", Technology.NONE)),
    ],
)
def test_qnwinfo(line: str, expected: NetworkInfo) -> None:
    """Access technology text, PLMN, band name, channel."""
    assert expected == NetworkInfo.from_line(line)


def test_bad_qnwinfo() -> None:
    """An operator that is not a numeric PLMN is refused."""
    with pytest.raises(ModemProtocolError) as caught:
        NetworkInfo.from_line('+QNWINFO: "FDD LTE","Telekom","LTE BAND 3",1300')
    assert ("oper", 1) == (caught.value.field, caught.value.position)


# -- +QLTS ---------------------------------------------------------------------------------


def test_qlts_local() -> None:
    """Mode 0: the network's local time with its zone (+32 quarters = UTC+8)."""
    utc8 = dt.timezone(dt.timedelta(hours=8))
    assert NetworkTime(dt.datetime(2019, 1, 13, 3, 40, 48, tzinfo=utc8), utc8, 0) == (
        NetworkTime.from_line('+QLTS: "2019/01/13,03:40:48+32,0"')
    )


def test_qlts_utc() -> None:
    """Mode 1: the time is UTC; the network's zone (here CEST, DST 1) is kept beside it."""
    cest = dt.timezone(dt.timedelta(hours=2))
    parsed = NetworkTime.from_line('+QLTS: "2026/07/02,17:40:48+08,1"', mode=QltsMode.CURRENT_UTC)
    assert NetworkTime(dt.datetime(2026, 7, 2, 17, 40, 48, tzinfo=dt.UTC), cest, 1) == parsed


def test_qlts_before_nitz() -> None:
    """No time from the network yet: None, not an error."""
    assert None is NetworkTime.from_line('+QLTS: ""')


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('+QLTS: "2019/01/13,03:40:48+32,5"', "dst"),
        ('+QLTS: "2019/01/13,03:40:48+32"', "dst"),
        ('+QLTS: "2019/02/30,03:40:48+32,0"', "time"),
    ],
)
def test_bad_qlts(line: str, field: str) -> None:
    """A bad DST flag, a missing one or an impossible date is refused."""
    with pytest.raises(ModemProtocolError) as caught:
        NetworkTime.from_line(line)
    assert field == caught.value.field


# -- +QCFG="usbnet", +QNETDEVCTL -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "mode"),
    [
        ('+QCFG: "usbnet",0', UsbNetMode.RMNET),
        ('+QCFG: "usbnet",1', UsbNetMode.ECM),
        ('+QCFG: "usbnet",2', UsbNetMode.MBIM),
        ('+QCFG: "usbnet",9', None),
    ],
)
def test_usbnet(line: str, mode: UsbNetMode | None) -> None:
    """usbnet modes; unknown ones kept raw."""
    assert mode == UsbNet.from_line(line).mode


def test_usbnet_refuses_another_qcfg() -> None:
    """A +QCFG line of another function is not a usbnet answer."""
    with pytest.raises(ModemProtocolError) as caught:
        UsbNet.from_line('+QCFG: "nat",0')
    assert ("function", 0) == (caught.value.field, caught.value.position)


@pytest.mark.parametrize(
    ("line", "expected", "connected"),
    [
        (
            "+QNETDEVCTL: 3,1,1,1",
            NetDevControl(NetDevOperation.CONNECT_AND_AUTO_CONNECT, 1, True, 1),
            True,
        ),
        ("+QNETDEVCTL: 1,1,1,0", NetDevControl(NetDevOperation.CONNECT, 1, True, 0), False),
        ("+QNETDEVCTL: 0,0,0,2", NetDevControl(NetDevOperation.DISCONNECT, 0, False, 2), None),
    ],
)
def test_qnetdevctl(line: str, expected: NetDevControl, connected: bool | None) -> None:
    """op, cid, urc_en, state."""
    parsed = NetDevControl.from_line(line)
    assert (expected, connected) == (parsed, parsed.connected)


def test_bad_qnetdevctl() -> None:
    """An unknown operation is refused."""
    with pytest.raises(ModemProtocolError) as caught:
        NetDevControl.from_line("+QNETDEVCTL: 7,1,1,1")
    assert ("op", 0) == (caught.value.field, caught.value.position)


# -- with the codec ------------------------------------------------------------------------


def test_codec_to_servingcell() -> None:
    """A whole EN-DC answer, echoed, with a URC in the middle, parsed from the byte stream."""
    codec = AtCodec()
    command = quectel.qeng_servingcell()
    codec.send(command, now=0.0)
    stream = (
        b'AT+QENG="servingcell"\r\r\n'
        + b"\r\n".join(line.encode() for line in NSA_LINES[:2])
        + b"\r\n\r\n+QIND: SMS DONE\r\n"
        + NSA_LINES[2].encode()
        + b"\r\n\r\nOK\r\n"
    )
    codec.receive_data(stream)
    events = list(codec.events())
    assert isinstance(events[0], Echo)
    assert isinstance(events[-1], FinalResult)
    assert events[-1].ok
    lines = [event.text for event in events if isinstance(event, InformationLine)]
    assert Technology.NR5G_NSA == ServingCell.from_lines(lines).technology


def test_codec_redacts_the_iccid() -> None:
    """The ICCID line of a sensitive command is delivered but never shown by repr."""
    codec = AtCodec(echo_enabled=False)
    codec.send(quectel.qccid(), now=0.0)
    codec.receive_data(f"\r\n+QCCID: {ICCID}\r\n\r\nOK\r\n".encode())
    line, _final = codec.events()
    assert isinstance(line, InformationLine)
    assert ICCID == Iccid.from_line(line.text).digits
    assert ICCID not in repr(line)


# -- any line at all -----------------------------------------------------------------------

tokens = st.one_of(
    st.sampled_from(
        [
            '"servingcell"',
            '"NOCONN"',
            '"SEARCH"',
            '"LTE"',
            '"NR5G-SA"',
            '"NR5G-NSA"',
            '"WCDMA"',
            '"FDD"',
            "TDD",
            "-",
            "",
            "-32768",
            '"usbnet"',
            '"2019/01/13,03:40:48+32,0"',
            ICCID,
        ]
    ),
    st.integers(min_value=-200, max_value=700000).map(str),
    st.text(alphabet=string.hexdigits, max_size=9),
    st.text(alphabet=string.printable.strip(), max_size=12),
)
lines = st.lists(tokens, max_size=22).map(lambda params: "+QENG: " + ",".join(params))

LINE_PARSERS: list[tuple[str, Callable[[str], object]]] = [
    ("+QCCID", Iccid.from_line),
    ("+QNWINFO", NetworkInfo.from_line),
    ("+QLTS", NetworkTime.from_line),
    ("+QCFG", UsbNet.from_line),
    ("+QNETDEVCTL", NetDevControl.from_line),
]


@st.composite
def mutated(draw: st.DrawFn) -> list[str]:
    """A real answer (LTE, SA or EN-DC) with some of its fields replaced by random tokens."""
    answer = draw(st.sampled_from([[LTE_LINE], [SA_LINE], NSA_LINES]))
    result = []
    for line in answer:
        fields = line[len("+QENG: ") :].split(",")
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            fields[draw(st.integers(0, len(fields) - 1))] = draw(tokens)
        result.append("+QENG: " + ",".join(fields))
    return result


@settings(max_examples=100, deadline=None)
@given(answer=st.one_of(st.lists(lines, max_size=3), mutated()))
def test_servingcell_raises_only_modem_protocol_error(answer: list[str]) -> None:
    """Any +QENG lines, random or real ones with fields replaced: a ServingCell or the error."""
    with contextlib.suppress(ModemProtocolError):
        ServingCell.from_lines(answer)


@settings(max_examples=100, deadline=None)
@given(parser=st.sampled_from(LINE_PARSERS), params=st.lists(tokens, max_size=6))
def test_line_parsers_raise_only_modem_protocol_error(
    parser: tuple[str, Callable[[str], object]], params: list[str]
) -> None:
    """Any line: a value or a ModemProtocolError that never carries the ICCID."""
    prefix, parse = parser
    message = ""
    try:
        parse(f"{prefix}: " + ",".join(params))
    except ModemProtocolError as error:
        message = str(error)
    assert ICCID not in message


class TestDataCounter:
    """+QGDCNT / +QGDNRCNT: bytes sent and received since the module booted."""

    def test_lte_and_nr(self) -> None:
        lte = quectel.DataCounter.from_line("+QGDCNT: 237505722,614994307")
        nr = quectel.DataCounter.from_line("+QGDNRCNT: 1045858,280306954", "+QGDNRCNT")
        assert (237505722, 614994307, 852500029) == (
            lte.first_bytes,
            lte.second_bytes,
            lte.total_bytes,
        )
        assert 281352812 == nr.total_bytes
        assert "AT+QGDCNT?" == quectel.qgdcnt().text
        assert "AT+QGDNRCNT?" == quectel.qgdnrcnt().text

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            ("+QGDCNT: 1", "parameters"),
            ("+QGDCNT: -1,3", "first count: out of range"),
            ("+QGDCNT: 1,x", "second count: not an integer"),
            ("+QGDCNT: 1,2,3", "parameters"),
        ],
    )
    def test_malformed(self, line: str, reason: str) -> None:
        with pytest.raises(ModemProtocolError) as refused:
            quectel.DataCounter.from_line(line)
        assert reason in str(refused.value)
