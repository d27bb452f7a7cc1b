"""TS 27.007 command builders and parsers (drivers.modem.ts27007, drivers.modem.params)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceError, ModemProtocolError, UsageError
from drivers.modem import ts27007
from drivers.modem.at_codec import (
    AtCodec,
    AtCommand,
    FinalResult,
    InformationLine,
    UnsolicitedResult,
)
from drivers.modem.params import Param, Params
from drivers.modem.ts27007 import (
    AccessTechnology,
    ClockTime,
    ExtendedSignalQuality,
    Functionality,
    FunctionalityStatus,
    Imei,
    Imsi,
    OperatorFormat,
    OperatorMode,
    OperatorSelection,
    PdpAddress,
    PdpContext,
    PdpContextState,
    PinStatus,
    ProductIdentification,
    Registration,
    RegistrationStatus,
    SignalQuality,
    SimState,
    Technology,
)
from tests import phi_canaries

#: A test IMEI with a valid Luhn digit (a common documentation example) and a test IMSI.
IMEI = "490154203237518"
IMSI = "262019876543210"
# Identifiers must never reach a log: the suite-wide scan looks for these.
phi_canaries.plant("test IMEI", IMEI)
phi_canaries.plant("test IMSI", IMSI)


def tz(hours: float) -> dt.timezone:
    return dt.timezone(dt.timedelta(hours=hours))


# -- the tokenizer -------------------------------------------------------------------------


def test_params_split_quoted_and_omitted() -> None:
    """Quoted commas stay inside strings; ",," is omitted, "" is an empty value."""
    params = Params.parse('+X: 1, "a,b" ,,"",-', "+X")
    assert (
        Param("1", False),
        Param("a,b", True),
        Param("", False),
        Param("", True),
        Param("-", False),
    ) == params.values
    assert not params.present(2)
    assert params.present(3)
    assert None is params.optional_text(4, "dash")


@pytest.mark.parametrize(
    ("line", "field", "position"),
    [
        ('+X: "abc', "string", 0),
        ('+X: 1,"abc"d', "string", 1),
        ("+Y: 1", "prefix", None),
    ],
)
def test_params_refuse_broken_strings(line: str, field: str, position: int | None) -> None:
    """Unterminated strings and text after a closing quote are the modem's fault."""
    with pytest.raises(ModemProtocolError) as caught:
        Params.parse(line, "+X")
    assert (field, position) == (caught.value.field, caught.value.position)


# -- builders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "wire", "prefixes", "sensitive"),
    [
        (ts27007.ati(), b"ATI\r", (), False),
        (ts27007.cgmi(), b"AT+CGMI\r", ("+CGMI",), False),
        (ts27007.cgmm(), b"AT+CGMM\r", ("+CGMM",), False),
        (ts27007.cpin_query(), b"AT+CPIN?\r", ("+CPIN",), False),
        (ts27007.creg_query(), b"AT+CREG?\r", ("+CREG",), False),
        (ts27007.c5greg_query(), b"AT+C5GREG?\r", ("+C5GREG",), False),
        (ts27007.csq(), b"AT+CSQ\r", ("+CSQ",), False),
        (ts27007.cgdcont_query(), b"AT+CGDCONT?\r", ("+CGDCONT",), False),
        (ts27007.cgact_query(), b"AT+CGACT?\r", ("+CGACT",), False),
        (ts27007.cgpaddr(), b"AT+CGPADDR\r", ("+CGPADDR",), False),
        (ts27007.cclk_query(), b"AT+CCLK?\r", ("+CCLK",), False),
        (ts27007.cgmr(), b"AT+CGMR\r", ("+CGMR",), False),
        (ts27007.cgsn(), b"AT+CGSN\r", ("+CGSN",), True),
        (ts27007.cimi(), b"AT+CIMI\r", ("+CIMI",), True),
        (ts27007.cpin_enter("1234"), b'AT+CPIN="1234"\r', ("+CPIN",), True),
        (ts27007.cereg_query(), b"AT+CEREG?\r", ("+CEREG",), False),
        (ts27007.registration_urcs("+C5GREG", 2), b"AT+C5GREG=2\r", ("+C5GREG",), False),
        (ts27007.cesq(), b"AT+CESQ\r", ("+CESQ",), False),
        (ts27007.cgpaddr(1), b"AT+CGPADDR=1\r", ("+CGPADDR",), False),
        (ts27007.cfun_set(Functionality.DISABLE_RF), b"AT+CFUN=4\r", ("+CFUN",), False),
        (ts27007.cfun_set(Functionality.FULL, reset=True), b"AT+CFUN=1,1\r", ("+CFUN",), False),
        (
            ts27007.cclk_set(dt.datetime(2026, 12, 2, 18, 5, 30, tzinfo=tz(1))),
            b'AT+CCLK="26/12/02,18:05:30+04"\r',
            ("+CCLK",),
            False,
        ),
        (
            ts27007.cclk_set(dt.datetime(2026, 3, 9, 7, 0, 0, tzinfo=tz(-5))),
            b'AT+CCLK="26/03/09,07:00:00-20"\r',
            ("+CCLK",),
            False,
        ),
    ],
)
def test_builders(
    command: AtCommand, wire: bytes, prefixes: tuple[str, ...], sensitive: bool
) -> None:
    """Each builder gives the spec's command line, its response prefix and its sensitivity."""
    assert (wire, prefixes, sensitive) == (
        bytes(command),
        command.response_prefixes,
        command.sensitive,
    )


def test_slow_commands_carry_their_timeouts() -> None:
    """+CFUN and +COPS answer slowly; the adapter reads their timeouts from the command."""
    assert 15.0 == ts27007.cfun_query().timeout_s
    assert 180.0 == ts27007.cops_query().timeout_s


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: ts27007.cpin_enter('12"4'), "pin"),
        (lambda: ts27007.cpin_enter("123"), "pin"),
        (lambda: ts27007.cgpaddr(0), "cid"),
        (lambda: ts27007.registration_urcs("+COPS", 2), "command"),
        (lambda: ts27007.registration_urcs("+CEREG", 4), "n"),
        (lambda: ts27007.cclk_set(dt.datetime(2100, 1, 1, tzinfo=dt.UTC)), "when"),
        (lambda: ts27007.cclk_set(dt.datetime(2026, 1, 1)), "when"),  # noqa: DTZ001
        (lambda: ts27007.cclk_set(dt.datetime(2026, 1, 1, tzinfo=tz(5.75 + 0.1))), "when"),
    ],
)
def test_builders_refuse_bad_arguments(build: object, argument: str) -> None:
    """Bad arguments are our fault: UsageError naming the argument."""
    assert callable(build)
    with pytest.raises(UsageError) as caught:
        build()
    assert argument == caught.value.argument


# -- identification ------------------------------------------------------------------------


def test_ati() -> None:
    """Quectel's ATI: manufacturer, model, revision."""
    assert ProductIdentification("Quectel", "RM500Q-GL", "RM500QGLABR11A06M4G") == (
        ProductIdentification.from_lines(["Quectel", "RM500Q-GL", "Revision: RM500QGLABR11A06M4G"])
    )


def test_ati_too_short() -> None:
    """Fewer than three lines is not Quectel's ATI."""
    with pytest.raises(ModemProtocolError) as caught:
        ProductIdentification.from_lines(["Quectel", "RM500Q-GL"])
    assert ("ATI", "lines") == (caught.value.command, caught.value.field)


def test_empty_text_value() -> None:
    """An empty +CGMR answer is refused."""
    with pytest.raises(ModemProtocolError) as caught:
        ts27007.text_value('+CGMR: ""', "+CGMR")
    assert "value" == caught.value.field


def test_sensitive_params_never_quote_values() -> None:
    """A line marked sensitive never has a value quoted in its errors; others do when short."""
    with pytest.raises(ModemProtocolError) as caught:
        Params.parse("+X: 123456", "+X", sensitive=True).integer(0, "id", 0, 9)
    assert "out of range 0..9" == caught.value.reason
    with pytest.raises(ModemProtocolError) as caught:
        Params.parse("+X: 12", "+X").integer(0, "n", 0, 9)
    assert "out of range 0..9 '12'" == caught.value.reason


def test_hexadecimal() -> None:
    """A required hexadecimal parameter, quoted or not."""
    params = Params.parse('+X: "1A2B",ff', "+X")
    assert (0x1A2B, 0xFF) == (params.hexadecimal(0, "a", 4), params.hexadecimal(1, "b", 2))
    with pytest.raises(ModemProtocolError) as caught:
        params.hexadecimal(0, "a", 2)
    assert ("a", 0, "more than 2 hexadecimal digits") == (
        caught.value.field,
        caught.value.position,
        caught.value.reason,
    )


def test_ati_without_revision() -> None:
    """An ATI answer without its Revision line is refused."""
    with pytest.raises(ModemProtocolError) as caught:
        ProductIdentification.from_lines(["Quectel", "RM500Q-GL", "+GCAP: +CGSM"])
    assert "Revision" == caught.value.field


@pytest.mark.parametrize(
    ("line", "prefix", "value"),
    [
        ("Quectel", "+CGMI", "Quectel"),
        ("RM520N-GL", "+CGMM", "RM520N-GL"),
        ("RM520NGLAAR03A04M4G", "+CGMR", "RM520NGLAAR03A04M4G"),
        ("+CGMR: LE13B04SIM8202M44A-M2", "+CGMR", "LE13B04SIM8202M44A-M2"),
    ],
)
def test_text_values(line: str, prefix: str, value: str) -> None:
    """+CGMI/+CGMM/+CGMR answer bare (Quectel) or after their prefix (others)."""
    assert value == ts27007.text_value(line, prefix)


@pytest.mark.parametrize("line", [IMEI, f'+CGSN: "{IMEI}"'])
def test_imei(line: str) -> None:
    """The IMEI, bare or prefixed; repr never shows it."""
    imei = Imei.from_line(line)
    assert IMEI == imei.digits
    assert IMEI not in repr(imei)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("490154203237519", "check digit does not match"),
        ("49015420323751", "not 15 digits"),
        ("49015420323751X", "not 15 digits"),
    ],
)
def test_bad_imei_never_named(line: str, reason: str) -> None:
    """A bad IMEI is refused without the digits in the error."""
    with pytest.raises(ModemProtocolError) as caught:
        Imei.from_line(line)
    assert ("+CGSN", "sn", reason) == (
        caught.value.command,
        caught.value.field,
        caught.value.reason,
    )
    assert line[:6] not in str(caught.value)


def test_imsi() -> None:
    """The IMSI; only its MCC is shown."""
    imsi = Imsi.from_line(IMSI)
    assert (IMSI, "262") == (imsi.digits, imsi.mcc)
    assert IMSI not in repr(imsi)
    assert "Imsi(mcc='262', <redacted>)" == repr(imsi)


def test_bad_imsi_never_named() -> None:
    """A malformed IMSI is refused without its digits in the error."""
    with pytest.raises(ModemProtocolError) as caught:
        Imsi.from_line(IMSI[:-1] + "X")
    assert "IMSI" == caught.value.field
    assert "26201987" not in str(caught.value)


# -- SIM, operator, registration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "state", "ready"),
    [
        ("+CPIN: READY", SimState.READY, True),
        ("+CPIN: SIM PIN", SimState.SIM_PIN, False),
        ("+CPIN: PH-NET PIN", SimState.PH_NET_PIN, False),
        ("+CPIN: NOT READY", None, False),
    ],
)
def test_cpin(line: str, state: SimState | None, ready: bool) -> None:
    """+CPIN codes, unknown ones kept raw."""
    status = PinStatus.from_line(line)
    assert (state, ready) == (status.state, status.ready)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+COPS: 0", OperatorSelection(OperatorMode.AUTOMATIC)),
        (
            '+COPS: 0,0,"Telekom.de",7',
            OperatorSelection(
                OperatorMode.AUTOMATIC,
                OperatorFormat.LONG_ALPHANUMERIC,
                "Telekom.de",
                AccessTechnology.E_UTRAN,
            ),
        ),
        (
            '+COPS: 1,2,"26201",13',
            OperatorSelection(
                OperatorMode.MANUAL,
                OperatorFormat.NUMERIC,
                "26201",
                AccessTechnology.E_UTRA_NR_DUAL_CONNECTIVITY,
            ),
        ),
        (
            '+COPS: 0,0,"999 70 Magic"',
            OperatorSelection(
                OperatorMode.AUTOMATIC, OperatorFormat.LONG_ALPHANUMERIC, "999 70 Magic"
            ),
        ),
    ],
)
def test_cops(line: str, expected: OperatorSelection) -> None:
    """+COPS? with and without operator and AcT."""
    assert expected == OperatorSelection.from_line(line)


def test_cops_numeric_plmn() -> None:
    """plmn is offered only for the numeric format."""
    assert "26201" == OperatorSelection.from_line('+COPS: 0,2,"26201",7').plmn
    assert None is OperatorSelection.from_line('+COPS: 0,0,"Telekom.de",7').plmn


@pytest.mark.parametrize(
    ("line", "unsolicited", "expected"),
    [
        (
            '+CEREG: 2,1,"1A2B","01A2D001",7',
            False,
            RegistrationStatus("+CEREG", 1, 2, 0x1A2B, 0x01A2D001, AccessTechnology.E_UTRAN),
        ),
        (
            '+CEREG: 5,"1A2B","01A2D001",7',
            True,
            RegistrationStatus("+CEREG", 5, None, 0x1A2B, 0x01A2D001, AccessTechnology.E_UTRAN),
        ),
        ("+CEREG: 2", True, RegistrationStatus("+CEREG", 2)),
        ("+CEREG: 0,4", False, RegistrationStatus("+CEREG", 4, 0)),
        (
            '+CEREG: 3,3,"1A2B","01A2D001",7,0,15',
            False,
            RegistrationStatus("+CEREG", 3, 3, 0x1A2B, 0x01A2D001, AccessTechnology.E_UTRAN, 0, 15),
        ),
        (
            '+C5GREG: 2,1,"0186A0","0A1B2C3D4",11,0,',
            False,
            RegistrationStatus("+C5GREG", 1, 2, 0x0186A0, 0x0A1B2C3D4, AccessTechnology.NR_5GCN),
        ),
        (
            '+CREG: 2,5,"00C3","0001A2B3",2',
            False,
            RegistrationStatus("+CREG", 5, 2, 0xC3, 0x1A2B3, AccessTechnology.UTRAN),
        ),
        (
            '+CGREG: 2,1,"00C3","0001A2B3",6,"01",0,7',
            False,
            RegistrationStatus(
                "+CGREG", 1, 2, 0xC3, 0x1A2B3, AccessTechnology.UTRAN_HSDPA_HSUPA, 0, 7
            ),
        ),
        (
            "+CEREG: 2,1,,,7",
            False,
            RegistrationStatus("+CEREG", 1, 2, None, None, AccessTechnology.E_UTRAN),
        ),
    ],
)
def test_registration(line: str, unsolicited: bool, expected: RegistrationStatus) -> None:
    """Read responses (with <n>) and URCs (without) of the four registration commands."""
    assert expected == RegistrationStatus.from_line(line, unsolicited=unsolicited)


@pytest.mark.parametrize(
    ("stat", "registration", "registered"),
    [
        (0, Registration.NOT_REGISTERED, False),
        (1, Registration.HOME, True),
        (2, Registration.SEARCHING, False),
        (3, Registration.DENIED, False),
        (4, Registration.UNKNOWN, False),
        (5, Registration.ROAMING, True),
        (6, Registration.HOME, True),
        (7, Registration.ROAMING, True),
        (8, Registration.NOT_REGISTERED, False),
        (9, Registration.HOME, True),
        (10, Registration.ROAMING, True),
        (42, Registration.UNKNOWN, False),
    ],
)
def test_registration_states(stat: int, registration: Registration, registered: bool) -> None:
    """<stat> → registration, for the uplink's purposes."""
    status = RegistrationStatus("+CEREG", stat)
    assert (registration, registered) == (status.registration, status.registered)


@pytest.mark.parametrize(
    ("line", "field", "position"),
    [
        ('+CEREG: 2,1,"1A2B3","01A2D001",7', "tac", 2),
        ('+CEREG: 2,1,"1A2B","01A2D0011",7', "ci", 3),
        ('+CEREG: 2,1,"1A2G","01A2D001",7', "tac", 2),
        ('+CEREG: 2,1,"1A2B","01A2D001",14', "AcT", 4),
        ("+CEREG: 6,1", "n", 0),
        ("+CEREG: 2,x", "stat", 1),
        ("+COPS: 0,0,Telekom,7", "oper", 2),
        ("+COPS: 9", "mode", 0),
        ("+COPS: 0,0", "oper", 2),
    ],
)
def test_bad_registration_lines_name_field_and_position(
    line: str, field: str, position: int
) -> None:
    """A malformed field is reported by name and parameter index, as the device's fault."""
    parser = (
        OperatorSelection.from_line if line.startswith("+COPS") else RegistrationStatus.from_line
    )
    with pytest.raises(ModemProtocolError) as caught:
        parser(line)
    assert (field, position) == (caught.value.field, caught.value.position)
    assert isinstance(caught.value, DeviceError)


def test_act_technology() -> None:
    """AcT maps onto the hub's technologies."""
    assert Technology.LTE == AccessTechnology.E_UTRAN.technology
    assert Technology.NR5G_SA == AccessTechnology.NR_5GCN.technology
    assert Technology.NR5G_NSA == AccessTechnology.E_UTRA_NR_DUAL_CONNECTIVITY.technology
    assert Technology.WCDMA == AccessTechnology.UTRAN_HSDPA.technology
    assert Technology.GSM == AccessTechnology.GSM_EGPRS.technology


# -- signal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+CSQ: 23,99", SignalQuality(-67, None)),
        ("+CSQ: 0,0", SignalQuality(-113, 0)),
        ("+CSQ: 31,7", SignalQuality(-51, 7)),
        ("+CSQ: 99,99", SignalQuality(None, None)),
    ],
)
def test_csq(line: str, expected: SignalQuality) -> None:
    """rssi -113 + 2n dBm, 99 unknown; ber RXQUAL, 99 unknown."""
    assert expected == SignalQuality.from_line(line)


@pytest.mark.parametrize(
    ("line", "field", "position"),
    [("+CSQ: 32,99", "rssi", 0), ("+CSQ: 20,8", "ber", 1), ("+CSQ: 20", "parameters", 1)],
)
def test_bad_csq(line: str, field: str, position: int) -> None:
    """Out-of-range indices are refused, naming the field."""
    with pytest.raises(ModemProtocolError) as caught:
        SignalQuality.from_line(line)
    assert (field, position) == (caught.value.field, caught.value.position)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "+CESQ: 99,99,255,255,30,55",
            ExtendedSignalQuality(None, None, None, None, -5.0, -86),
        ),
        (
            "+CESQ: 99,99,255,255,255,255,70,60,80",
            ExtendedSignalQuality(None, None, None, None, None, None, -8.5, -97, 16.5),
        ),
        (
            "+CESQ: 63,0,96,49,34,97,127,127,127",
            ExtendedSignalQuality(-48, 0, -25, 0.0, -3.0, -44, 20.0, -30, 40.0),
        ),
        (
            "+CESQ: 0,7,0,0,0,0,0,0,0",
            ExtendedSignalQuality(-111, 7, -121, -24.5, -20.0, -141, -43.5, -157, -23.5),
        ),
        (
            "+CESQ: 40,99,50,20,255,255",
            ExtendedSignalQuality(-71, None, -71, -14.5, None, None),
        ),
    ],
)
def test_cesq(line: str, expected: ExtendedSignalQuality) -> None:
    """+CESQ index scalings at both ends of each range, unknowns as None."""
    assert expected == ExtendedSignalQuality.from_line(line)


@pytest.mark.parametrize(
    ("line", "field", "position"),
    [
        ("+CESQ: 99,99,255,255,35,55", "rsrq", 4),
        ("+CESQ: 99,99,255,255,30,98", "rsrp", 5),
        ("+CESQ: 99,99,255,255,30,55,128,1,1", "ss_rsrq", 6),
        ("+CESQ: 99,99,255,255,30,55,1", "parameters", 7),
    ],
)
def test_bad_cesq(line: str, field: str, position: int) -> None:
    """Indices beyond their table, and 7 or 8 parameters, are refused."""
    with pytest.raises(ModemProtocolError) as caught:
        ExtendedSignalQuality.from_line(line)
    assert (field, position) == (caught.value.field, caught.value.position)


# -- packet data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '+CGDCONT: 1,"IPV4V6","internet.telekom","0.0.0.0",0,0,0,0,0,0',
            PdpContext(1, "IPV4V6", "internet.telekom"),
        ),
        ('+CGDCONT: 2,"IPV6","ims","",0,0', PdpContext(2, "IPV6", "ims")),
        (
            '+CGDCONT: 3,"IP","","10.0.0.7",0,0',
            PdpContext(3, "IP", "", ipaddress.IPv4Address("10.0.0.7")),
        ),
    ],
)
def test_cgdcont(line: str, expected: PdpContext) -> None:
    """Contexts with their APN; a zero address is no address."""
    assert expected == PdpContext.from_line(line)


def test_cgact() -> None:
    """+CGACT: <cid>,<state>."""
    assert PdpContextState(1, True) == PdpContextState.from_line("+CGACT: 1,1")
    assert PdpContextState(2, False) == PdpContextState.from_line("+CGACT: 2,0")


def test_cgpaddr_dual_stack() -> None:
    """IPv4 and IPv6 (27.007 dotted-octet form) addresses of one context."""
    address = PdpAddress.from_line(
        '+CGPADDR: 1,"10.47.28.216","36.14.4.93.8.32.67.230.24.177.68.18.213.197.193.145"'
    )
    assert 1 == address.cid
    assert ipaddress.IPv4Address("10.47.28.216") == address.ipv4
    assert ipaddress.IPv6Address("240e:45d:820:43e6:18b1:4412:d5c5:c191") == address.ipv6


@pytest.mark.parametrize(
    ("line", "addresses"),
    [
        ("+CGPADDR: 1", ()),
        ('+CGPADDR: 1,"0.0.0.0"', ()),
        ('+CGPADDR: 1,"2001:db8::1"', (ipaddress.IPv6Address("2001:db8::1"),)),
    ],
)
def test_cgpaddr(line: str, addresses: tuple[object, ...]) -> None:
    """No address, a zero address and a colon-notation IPv6 address."""
    assert addresses == PdpAddress.from_line(line).addresses


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.300",
        "32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.256",
        ".".join(["1"] * 32),
    ],
)
def test_bad_address(address: str) -> None:
    """An address that is not one is refused, naming the parameter."""
    with pytest.raises(ModemProtocolError) as caught:
        PdpAddress.from_line(f'+CGPADDR: 1,"{address}"')
    assert ("PDP_addr_1", 1) == (caught.value.field, caught.value.position)


# -- functionality and clock ---------------------------------------------------------------


def test_cfun() -> None:
    """+CFUN levels; vendor ones kept raw."""
    assert Functionality.FULL == FunctionalityStatus.from_line("+CFUN: 1").level
    assert Functionality.DISABLE_RF == FunctionalityStatus.from_line("+CFUN: 4").level
    assert None is FunctionalityStatus.from_line("+CFUN: 7").level


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('+CCLK: "24/12/02,18:05:30+04"', dt.datetime(2024, 12, 2, 18, 5, 30, tzinfo=tz(1))),
        ('+CCLK: "26/03/09,07:00:00-20"', dt.datetime(2026, 3, 9, 7, 0, 0, tzinfo=tz(-5))),
        ('+CCLK: "25/06/30,23:59:59+22"', dt.datetime(2025, 6, 30, 23, 59, 59, tzinfo=tz(5.5))),
        ('+CCLK: "80/01/06,00:00:00+0"', dt.datetime(2080, 1, 6, tzinfo=dt.UTC)),
    ],
)
def test_cclk(line: str, expected: dt.datetime) -> None:
    """Quarter-hour zones become aware datetimes in that zone."""
    parsed = ClockTime.from_line(line).time
    assert expected == parsed
    assert expected.utcoffset() == parsed.utcoffset()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('+CCLK: "24/13/02,18:05:30+04"', "not a valid date and time"),
        ('+CCLK: "24/12/02,18:05:30+60"', "time zone 60 out of range"),
        ('+CCLK: "24/12/02 18:05:30"', "not yy/MM/dd,hh:mm:ss±zz"),
    ],
)
def test_bad_cclk(line: str, reason: str) -> None:
    """Impossible dates, zones beyond ±14 h and other layouts are refused."""
    with pytest.raises(ModemProtocolError) as caught:
        ClockTime.from_line(line)
    assert ("time", reason) == (caught.value.field, caught.value.reason)


# -- with the codec ------------------------------------------------------------------------


def test_codec_to_parser() -> None:
    """Bytes in, typed value out: the adapter's loop in four lines."""
    codec = AtCodec(echo_enabled=False)
    codec.send(ts27007.cesq(), now=0.0)
    codec.receive_data(b"\r\n+CESQ: 99,99,255,255,20,48,60,50,70\r\n\r\nOK\r\n")
    events = list(codec.events())
    lines = [event.text for event in events if isinstance(event, InformationLine)]
    assert ExtendedSignalQuality(None, None, None, None, -10.0, -93, -13.5, -107, 11.5) == (
        ExtendedSignalQuality.from_line(lines[0])
    )
    final = events[-1]
    assert isinstance(final, FinalResult)
    assert final.ok
    assert codec.pending is None


# -- URCs -----------------------------------------------------------------------------------


def test_typed_urcs_from_the_codec() -> None:
    """Boot and registration URCs, as the codec reports them, become typed values."""
    codec = AtCodec()
    codec.receive_data(
        b'\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+CEREG: 5,"1A2B","01A2D001",7\r\n'
        b"\r\n+QIND: PB DONE\r\n"
    )
    urcs = [event for event in codec.events() if isinstance(event, UnsolicitedResult)]
    assert [
        None,
        FunctionalityStatus(1),
        PinStatus("READY"),
        RegistrationStatus("+CEREG", 5, None, 0x1A2B, 0x01A2D001, AccessTechnology.E_UTRAN),
        None,
    ] == [ts27007.parse_unsolicited(urc) for urc in urcs]


def test_malformed_urc() -> None:
    """A registration URC with a bad <stat> is the modem's fault."""
    with pytest.raises(ModemProtocolError) as caught:
        ts27007.parse_unsolicited(UnsolicitedResult("+CEREG: x", "+CEREG", True))
    assert ("stat", 0) == (caught.value.field, caught.value.position)


# -- any line at all -----------------------------------------------------------------------

PARSERS: list[tuple[str, Callable[[str], object]]] = [
    ("+CSQ", SignalQuality.from_line),
    ("+CESQ", ExtendedSignalQuality.from_line),
    ("+CEREG", RegistrationStatus.from_line),
    ("+C5GREG", lambda line: RegistrationStatus.from_line(line, unsolicited=True)),
    ("+COPS", OperatorSelection.from_line),
    ("+CPIN", PinStatus.from_line),
    ("+CGDCONT", PdpContext.from_line),
    ("+CGACT", PdpContextState.from_line),
    ("+CGPADDR", PdpAddress.from_line),
    ("+CFUN", FunctionalityStatus.from_line),
    ("+CCLK", ClockTime.from_line),
    ("+CGSN", Imei.from_line),
    ("+CIMI", Imsi.from_line),
]

tokens = st.one_of(
    st.integers(min_value=-40000, max_value=10**12).map(str),
    st.sampled_from(["", "-", '""', '"1A2B"', '"01A2D001"', '"24/12/02,18:05:30+04"', "255"]),
    st.text(alphabet=string.hexdigits, max_size=10).map(lambda text: f'"{text}"'),
    st.text(alphabet=string.printable.strip(), max_size=20),
)


@settings(max_examples=100, deadline=None)
@given(
    parser=st.sampled_from(PARSERS),
    params=st.lists(tokens, max_size=12),
    bare=st.booleans(),
)
def test_parsers_raise_only_modem_protocol_error(
    parser: tuple[str, Callable[[str], object]], params: list[str], bare: bool
) -> None:
    """Whatever the line, a parser returns or raises ModemProtocolError, never quoting the line."""
    prefix, parse = parser
    body = ",".join(params)
    line = body if bare else f"{prefix}: {body}"
    message = ""
    try:
        parse(line)
    except ModemProtocolError as error:
        message = str(error)
    assert len(line) < 16 or line not in message
