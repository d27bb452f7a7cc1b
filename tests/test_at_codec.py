"""The sans-I/O AT codec (drivers.modem.at_codec): framing, the URC rule, echo, aborts, bounds."""

from __future__ import annotations

import pytest

from drivers.errors import AtCommandError, AtStateError, DeviceError, LocalError, UsageError
from drivers.modem.at_codec import (
    MAX_LINE_BYTES,
    AtCodec,
    AtCommand,
    CmeError,
    Echo,
    Event,
    FinalKind,
    FinalResult,
    InformationLine,
    LineRejected,
    Pending,
    RejectReason,
    UnsolicitedResult,
)
from tests import phi_canaries

CSQ = AtCommand.of("AT+CSQ")
#: A test IMSI; identifiers must never reach a log, and the suite-wide scan looks for it.
IMSI = "262019876543210"
phi_canaries.plant("test IMSI", IMSI)


def feed(codec: AtCodec, data: bytes) -> list[Event]:
    """Feed ``data`` and drain every event."""
    codec.receive_data(data)
    return list(codec.events())


# -- commands ------------------------------------------------------------------------------


def test_send_returns_the_command_line_with_cr() -> None:
    """send() writes the command and its S3 terminator (CR), nothing else."""
    codec = AtCodec()
    assert b"AT+CSQ\r" == codec.send(CSQ, now=10.0)
    assert Pending(CSQ, 10.0) == codec.pending


@pytest.mark.parametrize(
    ("text", "prefixes"),
    [
        ("AT+CSQ", ("+CSQ",)),
        ("AT+CEREG?", ("+CEREG",)),
        ('AT+QENG="servingcell"', ("+QENG",)),
        ("at+cgdcont?", ("+CGDCONT",)),
        ("AT+CGPADDR=1", ("+CGPADDR",)),
        ("ATI", ()),
        ("ATE0", ()),
        ("AT", ()),
    ],
)
def test_expected_prefix_is_the_extended_name(text: str, prefixes: tuple[str, ...]) -> None:
    """AtCommand.of derives the response prefix from the command's name."""
    assert prefixes == AtCommand.of(text).response_prefixes


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("AT+CSQ\r", "not printable ASCII", 6),
        ("AT+CSQ\nAT+CFUN=0", "not printable ASCII", 6),
        ('AT+CMGS="1"\x1a', "not printable ASCII", 11),
        ("AT+COPS=\x1b", "not printable ASCII", 8),
        ("AT+COPS?é", "not printable ASCII", 8),
        ("AT+CSQ;+CFUN=0", "more than one command on the line", 6),
        ('AT+CGDCONT=1,"IP","apn', "unterminated string", None),
        ("+CSQ", 'does not start with "AT"', 0),
        ("", 'does not start with "AT"', 0),
        ("AT+" + "X" * 600, "longer than 512 characters", None),
    ],
)
def test_malformed_commands_are_refused(text: str, reason: str, position: int | None) -> None:
    """CR/LF/Ctrl-Z/ESC injection, concatenation and over-long lines are our fault, refused."""
    codec = AtCodec()
    with pytest.raises(AtCommandError) as caught:
        codec.send(text, now=0.0)
    assert (reason, position) == (caught.value.reason, caught.value.position)
    assert isinstance(caught.value, LocalError)
    assert isinstance(caught.value, ValueError)
    assert codec.pending is None


def test_semicolon_inside_a_string_is_allowed() -> None:
    """Only an unquoted ';' concatenates commands."""
    assert b'AT+CGDCONT=1,"IP","a;b"\r' == bytes(AtCommand.of('AT+CGDCONT=1,"IP","a;b"'))


def test_a_sensitive_command_stays_out_of_repr() -> None:
    """A PIN in a command line never reaches a log through repr."""
    command = AtCommand.of('AT+CPIN="1234"', sensitive=True)
    assert "1234" not in repr(command)
    assert "1234" not in repr(Echo(command))


def test_send_while_pending_is_refused() -> None:
    """One command at a time: AT has no identifiers to match answers with."""
    codec = AtCodec()
    codec.send(CSQ, now=0.0)
    with pytest.raises(AtStateError) as caught:
        codec.send("AT", now=1.0)
    assert "send" == caught.value.operation
    assert Pending(CSQ, 0.0) == codec.pending


def test_bounds_are_checked() -> None:
    """A codec whose queue could not hold a single maximal line is refused."""
    with pytest.raises(UsageError) as caught:
        AtCodec(max_line_bytes=1024, max_buffered_bytes=1500)
    assert "max_buffered_bytes" == caught.value.argument


# -- responses -----------------------------------------------------------------------------


def test_a_response_with_echo() -> None:
    """Echo, information line, final result code, as a Quectel sends them with ATE1."""
    codec = AtCodec()
    codec.send(CSQ, now=0.0)
    events = feed(codec, b"AT+CSQ\r\r\n+CSQ: 23,99\r\n\r\nOK\r\n")
    assert [
        Echo(CSQ),
        InformationLine("+CSQ: 23,99", "+CSQ", CSQ),
        FinalResult(FinalKind.OK, CSQ),
    ] == events
    assert codec.pending is None


def test_a_response_without_echo() -> None:
    """With ATE0 the response starts with its information line."""
    codec = AtCodec(echo_enabled=False)
    codec.send(CSQ, now=0.0)
    assert [
        InformationLine("+CSQ: 31,99", "+CSQ", CSQ),
        FinalResult(FinalKind.OK, CSQ),
    ] == feed(codec, b"\r\n+CSQ: 31,99\r\n\r\nOK\r\n")


def test_any_chunking_gives_the_same_events() -> None:
    """Lines split across reads (even between CR and LF) are framed alike."""
    stream = b"AT+CSQ\r\r\n+CSQ: 23,99\r\n\r\nOK\r\n"
    codec = AtCodec()
    codec.send(CSQ, now=0.0)
    events: list[Event] = []
    for byte in stream:
        events += feed(codec, bytes([byte]))
    whole = AtCodec()
    whole.send(CSQ, now=0.0)
    assert feed(whole, stream) == events


def test_bare_information_lines_belong_to_the_command() -> None:
    """ATI answers with bare lines (Quectel: manufacturer, model, revision)."""
    codec = AtCodec()
    ati = AtCommand.of("ATI")
    codec.send(ati, now=0.0)
    events = feed(
        codec, b"ATI\r\r\nQuectel\r\nRM500Q-GL\r\nRevision: RM500QGLABR11A06M4G\r\n\r\nOK\r\n"
    )
    assert [
        Echo(ati),
        InformationLine("Quectel", None, ati),
        InformationLine("RM500Q-GL", None, ati),
        InformationLine("Revision: RM500QGLABR11A06M4G", None, ati),
        FinalResult(FinalKind.OK, ati),
    ] == events


def test_urcs_inside_a_response_are_told_apart() -> None:
    """A +CEREG URC and RDY between +QENG lines are unsolicited; the +QENG lines are the answer."""
    codec = AtCodec(echo_enabled=False)
    qeng = AtCommand.of('AT+QENG="servingcell"')
    codec.send(qeng, now=0.0)
    events = feed(
        codec,
        b'\r\n+QENG: "servingcell","NOCONN"\r\n'
        b"\r\n+CEREG: 5\r\n"
        b'+QENG: "LTE","FDD",262,01,1929500,321,1300,3,5,5,34BA,-75,-7,-48,25,15,100,-\r\n'
        b"\r\nRDY\r\n"
        b"+QWHATEVER: 1\r\n"
        b'+QENG: "NR5G-NSA",262,01,774,-82,30,-11,431070,1,3,0\r\n'
        b"\r\nOK\r\n",
    )
    assert [
        InformationLine('+QENG: "servingcell","NOCONN"', "+QENG", qeng),
        UnsolicitedResult("+CEREG: 5", "+CEREG", True),
        InformationLine(
            '+QENG: "LTE","FDD",262,01,1929500,321,1300,3,5,5,34BA,-75,-7,-48,25,15,100,-',
            "+QENG",
            qeng,
        ),
        UnsolicitedResult("RDY", None, True),
        UnsolicitedResult("+QWHATEVER: 1", "+QWHATEVER", False),
        InformationLine('+QENG: "NR5G-NSA",262,01,774,-82,30,-11,431070,1,3,0', "+QENG", qeng),
        FinalResult(FinalKind.OK, qeng),
    ] == events


def test_the_command_prefix_wins_over_the_urc_table() -> None:
    """A +CEREG: line while AT+CEREG? is pending is its answer, not a URC."""
    codec = AtCodec(echo_enabled=False)
    cereg = AtCommand.of("AT+CEREG?")
    codec.send(cereg, now=0.0)
    assert [
        InformationLine('+CEREG: 2,1,"1A2B","01A2D001",7', "+CEREG", cereg),
        FinalResult(FinalKind.OK, cereg),
    ] == feed(codec, b'\r\n+CEREG: 2,1,"1A2B","01A2D001",7\r\n\r\nOK\r\n')
    # And once the command is over, the same prefix is a URC again.
    assert [UnsolicitedResult('+CEREG: 1,"1A2B","01A2D001",7', "+CEREG", True)] == feed(
        codec, b'\r\n+CEREG: 1,"1A2B","01A2D001",7\r\n'
    )


def test_urcs_while_idle() -> None:
    """With nothing pending every line is unsolicited: boot URCs of a Quectel RM500Q."""
    codec = AtCodec()
    events = feed(
        codec,
        b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
        b"\r\n+QIND: SMS DONE\r\n\r\nPOWERED DOWN\r\n\r\nhello\r\n",
    )
    assert [
        UnsolicitedResult("RDY", None, True),
        UnsolicitedResult("+CFUN: 1", "+CFUN", True),
        UnsolicitedResult("+CPIN: READY", "+CPIN", True),
        UnsolicitedResult("+QUSIM: 1", "+QUSIM", True),
        UnsolicitedResult("+QIND: SMS DONE", "+QIND", True),
        UnsolicitedResult("POWERED DOWN", None, True),
        UnsolicitedResult("hello", None, False),
    ] == events


@pytest.mark.parametrize(
    ("line", "kind", "code", "text"),
    [
        (b"OK", FinalKind.OK, None, None),
        (b"ERROR", FinalKind.ERROR, None, None),
        (b"+CME ERROR: 10", FinalKind.CME_ERROR, 10, None),
        (b"+CME ERROR: SIM not inserted", FinalKind.CME_ERROR, None, "SIM not inserted"),
        (b"+CMS ERROR: 500", FinalKind.CMS_ERROR, 500, None),
        (b"NO CARRIER", FinalKind.NO_CARRIER, None, None),
        (b"BUSY", FinalKind.BUSY, None, None),
        (b"NO ANSWER", FinalKind.NO_ANSWER, None, None),
        (b"NO DIALTONE", FinalKind.NO_DIALTONE, None, None),
        (b"CONNECT", FinalKind.CONNECT, None, None),
        (b"CONNECT 150000000", FinalKind.CONNECT, None, "150000000"),
    ],
)
def test_final_result_codes(
    line: bytes, kind: FinalKind, code: int | None, text: str | None
) -> None:
    """Every V.250 / TS 27.007 final result code ends the command, with its code or text."""
    codec = AtCodec()
    command = AtCommand.of("AT+CFUN=1")
    codec.send(command, now=0.0)
    assert [FinalResult(kind, command, code, text)] == feed(codec, b"\r\n" + line + b"\r\n")
    assert codec.pending is None


def test_cme_error_names() -> None:
    """Known +CME ERROR codes are named; unknown ones stay ints."""
    command = AtCommand.of("AT+CPIN?")
    assert CmeError.SIM_NOT_INSERTED == FinalResult(FinalKind.CME_ERROR, command, 10).cme_error
    assert None is FinalResult(FinalKind.CME_ERROR, command, 9999).cme_error
    assert None is FinalResult(FinalKind.ERROR, command).cme_error
    assert FinalResult(FinalKind.OK, command).ok
    assert not FinalResult(FinalKind.CME_ERROR, command, 10).ok


def test_call_events_while_idle_are_unsolicited() -> None:
    """NO CARRIER with nothing pending is a call ending; a stray OK is rejected."""
    codec = AtCodec()
    assert [UnsolicitedResult("NO CARRIER", None, True)] == feed(codec, b"\r\nNO CARRIER\r\n")
    assert [LineRejected(RejectReason.STRAY_FINAL, 2, 7)] == feed(codec, b"\r\nOK\r\n\r\nERROR\r\n")
    assert {RejectReason.STRAY_FINAL: 2} == codec.rejected


# -- echo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "echo"),
    [("ATE0", False), ("ATE1", True), ("ATE", False), ("ATE0Q0V1", False), ("ATZ", True)],
)
def test_echo_setting_follows_successful_commands(text: str, echo: bool) -> None:
    """ATE0/ATE1/ATZ change echo_enabled once they succeed."""
    codec = AtCodec()
    codec.send(text, now=0.0)
    feed(codec, text.encode() + b"\r\r\nOK\r\n")
    assert echo is codec.echo_enabled


def test_failed_echo_command_changes_nothing() -> None:
    """An ATE0 answered with ERROR leaves the setting unknown."""
    codec = AtCodec()
    codec.send("ATE0", now=0.0)
    feed(codec, b"ATE0\r\r\nERROR\r\n")
    assert None is codec.echo_enabled


def test_echo_is_recognised_only_before_the_response() -> None:
    """A line repeating the command after an information line is an information line."""
    codec = AtCodec()
    command = AtCommand.of("ATI")
    codec.send(command, now=0.0)
    assert [
        Echo(command),
        InformationLine("Quectel", None, command),
        InformationLine("ATI", None, command),
    ] == feed(codec, b"ATI\r\r\nQuectel\r\nATI\r\n")


# -- identifiers ---------------------------------------------------------------------------


def test_sensitive_information_lines_are_redacted_in_repr() -> None:
    """An IMSI line is delivered whole but never printed by repr."""
    codec = AtCodec(echo_enabled=False)
    cimi = AtCommand.of("AT+CIMI", sensitive=True)
    codec.send(cimi, now=0.0)
    (line, final) = feed(codec, f"\r\n{IMSI}\r\n\r\nOK\r\n".encode())
    assert isinstance(line, InformationLine)
    assert IMSI == line.text
    assert IMSI not in repr(line)
    assert IMSI not in repr(final)


# -- timeouts and aborts -------------------------------------------------------------------


def test_pending_exposes_the_deadline() -> None:
    """The adapter times a command out from what pending says."""
    codec = AtCodec()
    codec.send(AtCommand.of("AT+COPS=?", timeout_s=180.0), now=100.0)
    pending = codec.pending
    assert pending is not None
    assert 280.0 == pending.deadline
    assert not pending.expired(280.0)
    assert pending.expired(280.5)


def test_abort_drains_the_late_response() -> None:
    """After abort_pending the late answer is rejected up to its final code; URCs pass."""
    codec = AtCodec(echo_enabled=False)
    cops = AtCommand.of("AT+COPS?")
    codec.send(cops, now=0.0)
    assert cops == codec.abort_pending()
    assert None is codec.abort_pending()
    assert cops == codec.draining
    events = feed(
        codec, b'\r\n+COPS: 0,0,"Telekom.de",7\r\n\r\n+CEREG: 1\r\n\r\nOK\r\n\r\n+CEREG: 5\r\n'
    )
    assert [
        LineRejected(RejectReason.ABORTED_RESPONSE, 1, 25, cops),
        UnsolicitedResult("+CEREG: 1", "+CEREG", True),
        LineRejected(RejectReason.ABORTED_RESPONSE, 1, 2, cops),
        UnsolicitedResult("+CEREG: 5", "+CEREG", True),
    ] == events
    assert codec.draining is None


def test_send_ends_draining() -> None:
    """A new command is free to go once the adapter decides to."""
    codec = AtCodec()
    codec.send("AT+COPS?", now=0.0)
    codec.abort_pending()
    codec.send("AT", now=1.0)
    assert codec.draining is None


# -- bounds --------------------------------------------------------------------------------


def test_an_over_long_line_is_discarded_and_reported_once() -> None:
    """A line past max_line_bytes is dropped as it arrives, up to its end, reported once."""
    codec = AtCodec()
    codec.send(CSQ, now=0.0)
    events: list[Event] = []
    for _ in range(10):
        events += feed(codec, b"x" * 500)
    events += feed(codec, b"\r\n+CSQ: 23,99\r\nOK\r\n")
    assert [
        LineRejected(RejectReason.LINE_TOO_LONG, 1, 5000, CSQ),
        InformationLine("+CSQ: 23,99", "+CSQ", CSQ),
        FinalResult(FinalKind.OK, CSQ),
    ] == events
    assert codec.buffered_bytes == 0


def test_a_line_of_the_maximum_length_is_kept() -> None:
    """max_line_bytes itself is allowed."""
    codec = AtCodec()
    line = b"+X: " + b"a" * (MAX_LINE_BYTES - 4)
    (event,) = feed(codec, line + b"\r\n")
    assert UnsolicitedResult(line.decode(), "+X", False) == event


def test_non_printable_lines_are_rejected_and_merged() -> None:
    """Boot noise (NULs, 0xFF) is rejected; consecutive rejections make one event."""
    codec = AtCodec()
    events = feed(codec, b"\x00\x00\r\n\xff\xfe\r\n+CEREG: 1\r\n")
    assert [
        LineRejected(RejectReason.NON_PRINTABLE, 2, 4),
        UnsolicitedResult("+CEREG: 1", "+CEREG", True),
    ] == events
    assert {RejectReason.NON_PRINTABLE: 2} == codec.rejected
    assert 3 == codec.lines_received


def test_an_endless_response_ends_with_a_rejection() -> None:
    """Past max_information_lines the command ends; the rest of its response is drained."""
    codec = AtCodec(max_information_lines=3, echo_enabled=False)
    command = AtCommand.of("AT+CGDCONT?")
    codec.send(command, now=0.0)
    lines = b"".join(b'+CGDCONT: %d,"IP","a"\r\n' % cid for cid in range(1, 7))
    events = feed(codec, lines + b"OK\r\n")
    assert [
        InformationLine(f'+CGDCONT: {cid},"IP","a"', "+CGDCONT", command) for cid in (1, 2, 3)
    ] == events[:3]
    assert [LineRejected(RejectReason.RESPONSE_TOO_LONG, 1, 20, command)] == events[3:4]
    assert [LineRejected(RejectReason.ABORTED_RESPONSE, 3, 42, command)] == events[4:]
    assert codec.pending is None
    assert codec.draining is None


def test_a_full_queue_drops_and_counts() -> None:
    """An adapter that never drains events cannot make the codec grow."""
    codec = AtCodec(max_line_bytes=64, max_buffered_bytes=256)
    codec.receive_data(b"+CEREG: 1\r\n" * 100)
    assert codec.buffered_bytes <= 256
    events = list(codec.events())
    urcs = [event for event in events if isinstance(event, UnsolicitedResult)]
    (overflow,) = [event for event in events if isinstance(event, LineRejected)]
    assert RejectReason.QUEUE_FULL == overflow.reason
    assert 100 == len(urcs) + overflow.lines
    assert 100 == codec.lines_received
    assert codec.buffered_bytes == 0


def test_dropped_lines_are_reported_before_the_next_event() -> None:
    """Once the adapter drains some events, the QUEUE_FULL report precedes newer lines."""
    codec = AtCodec(max_line_bytes=64, max_buffered_bytes=160)
    codec.receive_data(b"+CEREG: 1\r\n" * 20)
    first = codec.next_event()
    assert UnsolicitedResult("+CEREG: 1", "+CEREG", True) == first
    codec.receive_data(b"+CEREG: 5\r\n")
    events = list(codec.events())
    (overflow,) = [event for event in events if isinstance(event, LineRejected)]
    assert UnsolicitedResult("+CEREG: 5", "+CEREG", True) == events[-1]
    assert events.index(overflow) == len(events) - 2
    assert 21 == codec.lines_received == 1 + len(events) - 1 + overflow.lines


def test_rejections_count_even_when_the_queue_is_full() -> None:
    """A garbage line arriving while the queue is exactly full is counted as dropped."""
    # 96 bytes of queue: eight 10-byte lines cost 12 each and fill it to the byte.
    codec = AtCodec(max_line_bytes=64, max_buffered_bytes=160)
    codec.receive_data(b"+CEREG: 10\r\n" * 20 + b"\x00\r\n")
    events = list(codec.events())
    assert [UnsolicitedResult("+CEREG: 10", "+CEREG", True)] * 8 == events[:8]
    assert [LineRejected(RejectReason.QUEUE_FULL, 13, 121)] == events[8:]
    assert {RejectReason.QUEUE_FULL: 13} == codec.rejected
    assert 21 == codec.lines_received


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"max_line_bytes": 8}, "max_line_bytes"),
        ({"max_information_lines": 0}, "max_information_lines"),
    ],
)
def test_codec_arguments_are_checked(arguments: dict[str, int], argument: str) -> None:
    """Bounds too small to work are refused."""
    with pytest.raises(UsageError) as caught:
        AtCodec(**arguments)
    assert argument == caught.value.argument


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"response_prefixes": ("CSQ",)}, "response_prefixes"),
        ({"timeout_s": 0.0}, "timeout_s"),
    ],
)
def test_command_arguments_are_checked(arguments: dict[str, object], argument: str) -> None:
    """A prefix without its +, or a timeout of zero, is refused."""
    with pytest.raises(UsageError) as caught:
        AtCommand("AT+CSQ", **arguments)  # type: ignore[arg-type]
    assert argument == caught.value.argument


@pytest.mark.parametrize("line", [b"A\n", b"OK\r\n", b"\x00\n", b"+CEREG: 1\r\n"])
def test_a_4_kib_read_never_fills_the_default_queue(line: bytes) -> None:
    """Drained after every 4 KiB read, the default queue never drops a line."""
    codec = AtCodec()
    codec.receive_data(line * (4096 // len(line)))
    assert RejectReason.QUEUE_FULL not in codec.rejected


def test_the_modem_is_never_blamed_by_raising() -> None:
    """receive_data reports, it does not raise: DeviceError is for parsers, not framing."""
    codec = AtCodec()
    codec.receive_data(bytes(range(256)) * 10)
    assert all(not isinstance(event, DeviceError) for event in codec.events())
