"""The sans-I/O GLS sync (``drivers.gls_sync``), driven directly: values in, requests and
events out. No radio, no clock: which request follows which probe result, the joining, and
every bound a meter can push against (with hypothesis over arbitrary value sequences)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceFloodError, DeviceProtocolError
from drivers.gls_sync import (
    LIMIT_REACHED,
    MAX_ORPHAN_CONTEXTS,
    MAX_PROBE_RECORDS,
    MAX_RACP_INDICATIONS,
    MAX_READY_RECORDS,
    MAX_RECORDS_AFTER_ABORT,
    NEED_DATA,
    GlsSync,
    Procedure,
    ProcedureFinished,
    Reason,
    RecordReady,
    SyncDone,
    SyncMark,
    fingerprint,
    read_mark,
)

WALL = datetime(2026, 1, 1, tzinfo=UTC)
SUCCESS = bytes.fromhex("06000101")
NONE_FOUND = bytes.fromhex("06000106")
CONTEXT_FOLLOWS = 0x10


def value(seq: int, flags: int = 0, body: int = 0) -> bytes:
    """A 0x2A18 value: flags, sequence number, a Base Time (``body`` makes it differ)."""
    return bytes((flags,)) + seq.to_bytes(2, "little") + bytes((body,)) * 7


def context(seq: int) -> bytes:
    """A 0x2A34 value with the Meal field."""
    return bytes((0x02,)) + seq.to_bytes(2, "little") + b"\x01"


def mark_of(data: bytes) -> SyncMark:
    return SyncMark.from_bytes(data[1:3] + fingerprint(data))


def start(sync: GlsSync) -> Procedure:
    step = sync.next_procedure()
    assert isinstance(step, Procedure)
    return step


def finish(sync: GlsSync, *records: bytes, final: bytes = SUCCESS) -> list[bytes]:
    """Feed a procedure's records and final response; the records handed on."""
    for data in records:
        sync.measurement(data, 0.0, WALL)
    sync.racp_indication(final)
    out: list[bytes] = []
    while not isinstance(event := sync.next_event(), ProcedureFinished):
        assert isinstance(event, RecordReady), event
        out.append(event.record.measurement)
    return out


class TestNextProcedure:
    """Which request follows which probe result (module docstring's state machine)."""

    def test_first_sync_reports_all(self) -> None:
        """No mark: "all", each record handed on with its own mark, then done."""
        sync = GlsSync(None)
        assert bytes(start(sync).request) == bytes.fromhex("0101")
        records = [value(1), value(2)]
        assert finish(sync, *records) == records
        assert SyncDone(False, Reason.COMPLETE) == sync.next_procedure()

    def test_marks_go_with_their_records(self) -> None:
        """The mark handed on is the record's sequence number and fingerprint."""
        sync = GlsSync(None)
        start(sync)
        sync.measurement(value(7), 0.0, WALL)
        event = sync.next_event()
        assert isinstance(event, RecordReady)
        assert mark_of(value(7)) == event.mark

    @pytest.mark.parametrize(
        ("newest", "marked", "expected"),
        [
            (None, None, ["0106"]),
            (value(5), None, ["0106"]),
            (value(9), value(5), ["0106", "0104010500 0500", "0103010600"]),
            (value(9), value(5, body=1), ["0106", "0104010500 0500", "0101"]),
            (value(9), None, ["0106", "0104010500 0500", "0101"]),
            # Newest 2 below mark 5: numbered downwards (drivers.gls_sync.counts_down).
            (value(2), value(5), ["0106", "0104010500 0500", "0102010400"]),
        ],
        ids=["empty", "nothing-new", "continue", "replaced", "gone", "counts-down"],
    )
    def test_incremental(
        self, newest: bytes | None, marked: bytes | None, expected: list[str]
    ) -> None:
        """From mark 5: the requests in order for each answer of the meter."""
        sync = GlsSync(mark_of(value(5)))
        written = [bytes(start(sync).request)]
        finish(sync, *([newest] if newest else []), final=SUCCESS if newest else NONE_FOUND)
        while isinstance(step := sync.next_procedure(), Procedure):
            written.append(bytes(step.request))
            if step.reason is Reason.PROBE_MARKED:
                finish(sync, *([marked] if marked else []), final=SUCCESS if marked else NONE_FOUND)
            else:
                finish(sync, final=NONE_FOUND)
        assert [bytes.fromhex(e) for e in expected] == written
        assert isinstance(step, SyncDone)
        assert step.resynced == (written[-1] == bytes.fromhex("0101"))

    def test_mark_at_0xffff_asks_only_below_newest(self) -> None:
        """At 0xFFFF there is no ">= mark+1": only "<= newest"."""
        sync = GlsSync(mark_of(value(0xFFFF)))
        start(sync)
        finish(sync, value(1))
        start(sync)
        finish(sync, value(0xFFFF))
        step = start(sync)
        assert (bytes(step.request), step.reason) == (bytes.fromhex("0102010100"), Reason.WRAPPED)

    def test_failed_response_is_a_protocol_error(self) -> None:
        """``06 00 01 05`` ends the procedure with DeviceProtocolError naming the code."""
        sync = GlsSync(None, device="..:12:34")
        start(sync)
        sync.racp_indication(bytes.fromhex("06000105"))
        with pytest.raises(DeviceProtocolError) as caught:
            sync.next_event()
        assert "invalid_operand" in caught.value.reason
        assert caught.value.device == "..:12:34"


class TestBounds:
    """Each buffer refuses the value that would pass its bound, and stays refused."""

    def test_probe(self) -> None:
        """The fifth record of a probe is a flood; nothing of a probe is handed on."""
        sync = GlsSync(mark_of(value(1)))
        start(sync)
        for seq in range(MAX_PROBE_RECORDS):
            sync.measurement(value(seq), 0.0, WALL)
        with pytest.raises(DeviceFloodError) as caught:
            sync.measurement(value(99), 0.0, WALL)
        assert (caught.value.buffer, caught.value.limit) == ("racp_probe", 4)
        assert (sync.probed, NEED_DATA) == (4, sync.next_event())

    def test_ready_then_what_was_complete_is_still_handed_on(self) -> None:
        """With ``max_records`` above the ready bound (a session's worth, 1,000), the 1,001st
        record waiting is a flood; the 1,000 before it are still handed on, then every later
        value raises the same error."""
        sync = GlsSync(None, max_records=MAX_READY_RECORDS + 1)
        start(sync)
        for seq in range(MAX_READY_RECORDS):
            sync.measurement(value(seq), 0.0, WALL)
        with pytest.raises(DeviceFloodError) as caught:
            sync.measurement(value(999), 0.0, WALL)
        assert caught.value.buffer == "gls_ready"
        handed = []
        while isinstance(event := sync.next_event(), RecordReady):
            handed.append(event.record.sequence_number)
        assert (list(range(MAX_READY_RECORDS)), NEED_DATA) == (handed, event)
        with pytest.raises(DeviceFloodError):
            sync.racp_indication(SUCCESS)

    def test_orphan_contexts(self) -> None:
        """The 17th context without its measurement is a flood."""
        sync = GlsSync(None)
        start(sync)
        for seq in range(MAX_ORPHAN_CONTEXTS):
            sync.context(context(seq))
        with pytest.raises(DeviceFloodError) as caught:
            sync.context(context(100))
        assert (caught.value.buffer, caught.value.limit) == ("gls_orphan_contexts", 16)

    def test_racp_indications(self) -> None:
        """The fifth RACP indication of one procedure is a flood."""
        sync = GlsSync(None)
        start(sync)
        for _ in range(MAX_RACP_INDICATIONS):
            sync.racp_indication(SUCCESS)
        with pytest.raises(DeviceFloodError) as caught:
            sync.racp_indication(SUCCESS)
        assert caught.value.buffer == "racp_indications"

    def test_a_full_session_waits_without_a_flood(self) -> None:
        """A session's worth of records (1,000) waiting for a stalled pipeline is no flood:
        every one is handed on, in order, and the procedure then finishes."""
        sync = GlsSync(None)
        start(sync)
        assert MAX_READY_RECORDS == 1000
        for seq in range(1, MAX_READY_RECORDS + 1):
            sync.measurement(value(seq), 0.0, WALL)
        sync.racp_indication(SUCCESS)
        assert (sync.ready, sync.peaks["gls_ready"]) == (1000, 1000)
        handed = []
        while isinstance(event := sync.next_event(), RecordReady):
            handed.append(event.record.sequence_number)
        assert list(range(1, 1001)) == handed
        assert isinstance(event, ProcedureFinished)

    def test_limit_asks_for_abort_then_cuts_a_meter_that_streams_on(self) -> None:
        """Beyond max_records: LIMIT_REACHED first (write Abort); records after the Abort
        are counted, the 10,001st is a flood; the accepted ones are handed on."""
        sync = GlsSync(None, max_records=3)
        start(sync)
        for seq in range(5):
            sync.measurement(value(seq), 0.0, WALL)
        assert LIMIT_REACHED is sync.next_event()
        sync.aborted()
        for seq in range(MAX_RECORDS_AFTER_ABORT):
            sync.measurement(value(10 + seq), 0.0, WALL)
        with pytest.raises(DeviceFloodError) as caught:
            sync.measurement(value(50), 0.0, WALL)
        assert (caught.value.buffer, caught.value.limit) == ("records_after_abort", 10_000)
        assert [0, 1, 2] == [e.record.sequence_number for e in _drain(sync)]

    def test_a_meter_still_streaming_when_the_abort_wait_ends_is_a_flood(self) -> None:
        """The adapter reports an Abort left unanswered while records kept coming: a flood
        with the count received after the Abort; what was accepted is still handed on."""
        sync = GlsSync(None, max_records=2)
        start(sync)
        for seq in range(3):
            sync.measurement(value(seq), 0.0, WALL)
        assert LIMIT_REACHED is sync.next_event()
        sync.aborted()
        for seq in range(7):
            sync.measurement(value(10 + seq), 0.0, WALL)
        assert sync.after_abort == 7
        with pytest.raises(DeviceFloodError) as caught:
            sync.abort_unanswered()
        assert (caught.value.buffer, caught.value.limit) == ("records_after_abort", 7)
        assert [0, 1] == [e.record.sequence_number for e in _drain(sync)]

    def test_meter_with_exactly_max_records_completes(self) -> None:
        """max_records records and the final response: no limit, the sync completes."""
        sync = GlsSync(None, max_records=3)
        start(sync)
        assert 3 == len(finish(sync, value(1), value(2), value(3)))
        assert SyncDone(False, Reason.COMPLETE) == sync.next_procedure()


def _drain(sync: GlsSync) -> list[RecordReady]:
    out = []
    while isinstance(event := sync.next_event(), RecordReady):
        out.append(event)
    return out


Input = tuple[str, int, bool]
inputs = st.lists(
    st.tuples(
        st.sampled_from(["measurement", "context", "racp"]),
        st.integers(0, 40),
        st.booleans(),
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(inputs, st.booleans(), st.integers(1, 50))
def test_buffers_never_pass_their_bounds(
    values: list[Input], probing: bool, max_records: int
) -> None:
    """For any sequence a meter sends, no buffer ever holds more than its bound, only
    DeviceProtocolError is raised, and records come out in the order they were sent."""
    sync = GlsSync(mark_of(value(1)) if probing else None, max_records=max_records)
    start(sync)
    sent: list[int] = []
    out: list[int] = []
    failed = False
    for kind, seq, flag in values:
        try:
            if kind == "measurement":
                sync.measurement(value(seq, CONTEXT_FOLLOWS if flag else 0), 0.0, WALL)
                sent.append(seq)
            elif kind == "context":
                sync.context(context(seq))
            else:
                sync.racp_indication(SUCCESS if flag else NONE_FOUND)
        except DeviceProtocolError:
            failed = True
        assert sync.ready <= MAX_READY_RECORDS
        assert sync.probed <= MAX_PROBE_RECORDS
        assert sync.indications <= MAX_RACP_INDICATIONS
        assert sync.joiner.orphans <= MAX_ORPHAN_CONTEXTS
        if not failed and kind == "racp" and not probing:
            out += [e.record.sequence_number for e in _drain(sync)]
    out += [e.record.sequence_number for e in _drain(sync)]
    assert out == sent[: len(out)]  # in the meter's order, none skipped
    assert not probing or out == []  # probes are never handed on
    assert len(out) <= max_records
    if failed:
        with pytest.raises(DeviceProtocolError):
            sync.racp_indication(SUCCESS)


@given(st.binary(max_size=20))
def test_stored_marks_read_back_or_resync(data: bytes) -> None:
    """Any stored value reads as its mark (2 or 10 octets) or as None: resync all."""
    mark = read_mark(data)
    if len(data) in (2, 10):
        assert mark is not None
        assert bytes(mark) == data
    else:
        assert mark is None
