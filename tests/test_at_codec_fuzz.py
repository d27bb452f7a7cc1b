"""The AT codec under random and malformed byte streams, fed in random chunkings.

Properties (drivers.modem.at_codec, "Bounds"): nothing escapes ``receive_data``; the bytes
held never pass ``max_buffered_bytes``; every non-blank line the modem sent is one event or
is counted in a rejection.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modem.at_codec import AtCodec, AtCommand, Event, FinalResult, LineRejected

MAX_LINE = 32
MAX_BUFFERED = 128

_TERMINATOR = re.compile(rb"[\r\n]")

#: Realistic lines, so that the state machine is exercised, not only the rejections.
LINES = [
    b"OK",
    b"ERROR",
    b"+CME ERROR: 10",
    b"+CME ERROR: SIM busy",
    b"AT+CSQ",
    b"+CSQ: 23,99",
    b"+CEREG: 5",
    b'+CEREG: 2,1,"1A2B","01A2D001",7',
    b"RDY",
    b"POWERED DOWN",
    b"NO CARRIER",
    b"CONNECT 1500",
    b"Quectel",
    b"+QIND: SMS DONE",
    b'+QENG: "servingcell","NOCONN"',
    b"  ",
]

segments = st.one_of(
    st.sampled_from(LINES),
    st.sampled_from([b"\r\n", b"\r", b"\n", b"\r\n\r\n"]),
    st.binary(max_size=40),
    st.integers(min_value=MAX_LINE - 2, max_value=3 * MAX_LINE).map(lambda n: b"x" * n),
)


def non_blank_lines(stream: bytes, max_line: int) -> int:
    """The lines the codec must account for, counted independently of it."""
    *complete, _partial = _TERMINATOR.split(stream)
    return sum(1 for line in complete if len(line) > max_line or line.strip(b" "))


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def accounted(events: list[Event]) -> int:
    """Lines the events stand for: one each, a rejection its ``lines``."""
    return sum(event.lines if isinstance(event, LineRejected) else 1 for event in events)


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(segments, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=20),
    commands=st.lists(st.sampled_from(["AT+CSQ", "ATI", "AT+CEREG?", "ATE0"]), max_size=5),
    abort_at=st.sets(st.integers(min_value=0, max_value=20), max_size=3),
)
def test_an_adapter_that_drains_after_every_read(
    parts: list[bytes], cuts: list[int], commands: list[str], abort_at: set[int]
) -> None:
    """Random bytes and real lines, random chunking, commands sent and aborted along the way."""
    stream = b"".join(parts)
    codec = AtCodec(max_line_bytes=MAX_LINE, max_buffered_bytes=MAX_BUFFERED)
    to_send = list(commands)
    events: list[Event] = []
    for index, chunk in enumerate(chunked(stream, cuts)):
        if codec.pending is None and to_send:
            codec.send(AtCommand.of(to_send.pop()), now=float(index))
        elif index in abort_at:
            codec.abort_pending()
        codec.receive_data(chunk)
        assert codec.buffered_bytes <= MAX_BUFFERED
        events += codec.events()
    assert non_blank_lines(stream, MAX_LINE) == codec.lines_received
    assert codec.lines_received == accounted(events)
    assert sum(codec.rejected.values()) == accounted(
        [event for event in events if isinstance(event, LineRejected)]
    )
    assert all(event.command is not None for event in events if isinstance(event, FinalResult))


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(segments, max_size=80),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=20),
)
def test_an_adapter_that_never_drains(parts: list[bytes], cuts: list[int]) -> None:
    """Events pile up only to the bound; what is dropped is counted."""
    stream = b"".join(parts)
    codec = AtCodec(max_line_bytes=MAX_LINE, max_buffered_bytes=MAX_BUFFERED)
    codec.send("AT+CSQ", now=0.0)
    for chunk in chunked(stream, cuts):
        codec.receive_data(chunk)
        assert codec.buffered_bytes <= MAX_BUFFERED
    events = list(codec.events())
    assert non_blank_lines(stream, MAX_LINE) == codec.lines_received == accounted(events)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=30))
def test_default_bounds_with_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """The production bounds hold for any bytes at all."""
    codec = AtCodec()
    codec.send('AT+QENG="servingcell"', now=0.0)
    events: list[Event] = []
    for chunk in chunked(data, cuts):
        codec.receive_data(chunk)
        assert codec.buffered_bytes <= 16 * 1024
        events += codec.events()
    assert non_blank_lines(data, 1024) == codec.lines_received == accounted(events)
