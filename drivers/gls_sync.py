"""The incremental sync of a Glucose Service meter, sans I/O: record joining, the high-water
mark, which RACP request comes next, and the bounds on everything the meter can push.

Nothing here touches a radio, a clock or a task: the bleak adapter
(:mod:`agent.ble.gls_session`) feeds the values the meter sent (:meth:`GlsSync.measurement`,
:meth:`GlsSync.context`, :meth:`GlsSync.racp_indication`, from its bleak callbacks), asks
what to write next (:meth:`GlsSync.next_procedure`) and what to do next
(:meth:`GlsSync.next_event`), in the style of h11's ``receive_data`` / ``next_event``.
Values are read with the drivers' own types (:class:`~drivers.glucose.GlucoseMeasurementFlags`,
:mod:`drivers.racp`); only the two header fields read for every record of a download (a
measurement's sequence number and context flag, a context's sequence number) are taken from
their octets directly, their offsets fixed by GLS §3.1 and §3.2.

Theory of operation (GLS/GLP collector procedure, ble-spec-facts §4.5)
---------------------------------------------------------------------
The committed high-water mark (:class:`SyncMark`) is the sequence number of the last record
stored and a fingerprint of its 0x2A18 value. :meth:`GlsSync.next_procedure` walks this
state machine (each arrow one RACP procedure and its outcome)::

    no mark ──────────────────────────────► report "all" (01 01) ─────────────► done
    mark ──► probe "last record" (01 06)
               ├─ none found ─────────────────────────────────────────────────► done (empty)
               ├─ is the marked record ───────────────────────────────────────► done (nothing new)
               └─ else: probe "m..m" (01 04 01 m m)
                    ├─ gone or different ──► report "all" (resync) ───────────► done
                    ├─ same, counting up ──► report ">= m+1" (01 03 01 m+1; not when m = 0xFFFF)
                    │            └─ newest < m (wrapped) ──► report "<= newest" ► done
                    └─ same, counting down ► report "<= m-1" (01 02 01 m-1; not when m = 0)
                                 └─ newest > m (wrapped) ──► report ">= newest" ► done

**Which way the meter counts** is read from the two records the probes found, the marked
one (m) and the newest (n), by their distance modulo 2^16 (:func:`counts_down`): a meter
that numbers newer records with larger numbers has n a little *after* m, (n - m) mod 2^16
below 0x8000, even across a wrap (m = 0xFFFE, n = 3: 5); one that numbers them with smaller
numbers has n a little *before* m, (n - m) mod 2^16 from 0x8000 up (m = 97, n = 95:
0xFFFE). Telling them apart needs fewer than 32,768 records since the mark: a meter holds
a few hundred to a few thousand. A meter that counts down asked for ">= m+1" would send the
records *older* than the mark again and never the new ones below it (then "<= newest" only
the newest of them): the records between were skipped for good. Both directions ask for
exactly the new records while the numbers have not wrapped since the mark; once they have,
the second report may also match old records on the other side of the wrap, which the
outbox keeps once (duplicates by identity), and the mark ends on the newest.

A resync may send readings again (the platform deduplicates them by their stable
Observation.identifier); it never leaves one out. Probed records are never handed on: they
are committed already or requested again by the following report.

Records are **joined with their context by sequence number** (:class:`RecordJoiner`): a
measurement that announces a context (flag bit 4) waits for it until the next measurement
or the end of the procedure; a later record never overtakes an earlier one.

Bounds (h11's ``max_incomplete_event_size`` for a meter)
--------------------------------------------------------
Notifications have no flow control, so every buffer the meter fills has a bound checked
**when the value arrives** (in the bleak callback, before anything is stored): the complete
records waiting to be handed on (:data:`MAX_READY_RECORDS`), the records of a probe
(:data:`MAX_PROBE_RECORDS`), the RACP indications of a procedure
(:data:`MAX_RACP_INDICATIONS`), contexts without their measurement
(:data:`MAX_ORPHAN_CONTEXTS`), the measurement waiting for its context (one, by
construction), and the records of a session (``max_records``; records arriving once Abort
was written: :data:`MAX_RECORDS_AFTER_ABORT`). A value beyond a bound raises
:class:`~drivers.errors.DeviceFloodError` naming the buffer, nothing more is accepted
(every later value raises the same error), and what was complete before stays available to
:meth:`GlsSync.next_event`, so the adapter can hand it on before it reports the device.
Reaching ``max_records`` is not a fault (a meter may hold more): the core asks for an Abort
(:data:`LIMIT_REACHED`) and refuses the rest, which the meter keeps for the next session.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NoReturn

from drivers.errors import DecodeError, DeviceFloodError, DeviceProtocolError
from drivers.glucose import GlucoseMeasurementFlags
from drivers.racp import (
    FilterType,
    NumberOfStoredRecords,
    OpCode,
    Operator,
    RacpRequest,
    RacpResponse,
    ResponseCode,
    ResponseCodeIndication,
    decode_response,
)
from drivers.wire import Cursor, flags_octet

__all__ = [
    "FINGERPRINT_SIZE",
    "LIMIT_REACHED",
    "MAX_ORPHAN_CONTEXTS",
    "MAX_PROBE_RECORDS",
    "MAX_RACP_INDICATIONS",
    "MAX_READY_RECORDS",
    "MAX_RECORDS_AFTER_ABORT",
    "MAX_RECORDS_PER_SESSION",
    "NEED_DATA",
    "GlsSync",
    "JoinedRecord",
    "Procedure",
    "ProcedureFinished",
    "Reason",
    "RecordJoiner",
    "RecordReady",
    "SyncDone",
    "SyncMark",
    "counts_down",
    "fingerprint",
    "read_mark",
]

FINGERPRINT_SIZE: Final = 8
"""Octets of SHA-256 kept in the mark: 64 bits tell a replaced record from the marked one."""

MAX_RECORDS_PER_SESSION: Final = 1000
"""Records handed on per session at most. A meter stores 500-1000 records; beyond this the
hub aborts the transfer and the meter keeps the rest for the next session (the mark says
where to continue). Reaching it ends the session normally (``LIMIT``), it is no fault."""

MAX_READY_RECORDS: Final = MAX_RECORDS_PER_SESSION
"""Complete records received but not yet handed on: a whole session's worth (1,000).

GLS records are notifications (no ATT flow control), so the meter sends at its link's pace
whatever the hub's pipeline does; what the pipeline has not taken waits here. Sized from the
two rates (hil/bench/ble.py measures both):

- *link* L: one 0x2A18 notification is ≤ 17 + 3 (ATT) + 4 (L2CAP) + 4 (MIC) octets in a
  38-octet LE PDU: 304 µs on LE 1M, + 2 × 150 µs inter-frame space + the central's empty
  PDU (80 µs) = 0.68 ms, so a connection event of the 7.5 ms minimum carries up to 10 and
  a meter filling every event sends up to ≈ 1,460 records/s (≈ 2,000/s on LE 2M; the
  performance anchors' typical meter, one per 30-50 ms event, 20-33/s). On the virtual
  radio the emulator is paced by nothing but the CPU: 1,000-4,000 records/s measured.
- *ingest* C, measured here (x86 VM, WAL + FULL): ≈ 330 records/s from a download's first
  arrival to its last commit through the daemon (its publisher sending alongside), ≈ 1,000/s
  for one 256-record commit on an idle storage thread; a Pi 4 on an SD card is several
  times slower.

While L > C the backlog of an N-record download grows to N · (1 - C/L): 774 of 1,000
records for L = 1,460/s against C = 330/s, 860 on the virtual radio (L ≈ 2,300/s; 377 to
620 measured, the first commits overlapping the transfer). The
ingest queue ahead (256, ``agent.daemon.INGEST_QUEUE_MAX``) cannot be counted on: other
devices' sessions share it. Since no bound below N is safe for every healthy link and
pipeline, this buffer holds a session's records (``max_records``, at most
:data:`MAX_RECORDS_PER_SESSION`): measured 0.28 KiB a record with its context, so
≤ 0.3 MiB. A meter's flood is cut by the session limit and
:data:`MAX_RECORDS_AFTER_ABORT`, not here; this bound still caps the memory of a session
given a larger ``max_records``."""

MAX_PROBE_RECORDS: Final = 4
"""Records one probe may bring. A probe asks for exactly one record ("last record", or the
range m..m of a unique sequence number, GLS §3.4); a few are tolerated (the first one is
used) for a meter that repeats a notification, an endless answer is cut at the fifth."""

MAX_RACP_INDICATIONS: Final = 4
"""RACP indications in one procedure. One procedure runs at a time (GLS §3.4) and ends with
one Response Code; an aborted report may add the Abort's own answer. Four leaves room for a
duplicate; more is a meter indicating without end."""

MAX_ORPHAN_CONTEXTS: Final = 16
"""Contexts held while their measurement has not arrived. A meter that sends the context
first (wrongly, GLS §3.2 says after) needs one; 16 covers any reordering seen in the field."""

MAX_RECORDS_AFTER_ABORT: Final = 10_000
"""Records counted (never kept) as "in flight" once the hub wrote Abort (GLS §3.4: the
meter stops the report before its next record); the next one is a flood.

What is in flight when the Abort lands is whatever the meter queued before: on a real link
its controller's few buffers plus a connection event or two (tens of records at most); on
the virtual radio, where nothing paces the emulator, the whole rest of its report (1,999
of the 2,000 records beyond the limit of a 3,000-record report, measured). Only a meter
that never stops can pass the fastest LE link's rate (≈ 2,000 notifications/s,
:data:`MAX_READY_RECORDS`) times the time the hub waits for the Abort's answer
(``ABORT_TIMEOUT_S``, 5 s): 10,000. A meter still streaming when that wait ends is cut too
(the adapter's :meth:`GlsSync.abort_unanswered`); one that streams on while the pipeline
is stalled is cut here all the same, since the Abort goes out from the callback that hit
the limit."""

_MEASUREMENT: Final = "0x2A18"
_CONTEXT_FOLLOWS: Final = int(GlucoseMeasurementFlags.CONTEXT_INFORMATION_FOLLOWS)
_CONTEXT: Final = "0x2A34"


def fingerprint(measurement: bytes) -> bytes:
    """A record's identity for the mark: 8 octets of SHA-256 of its 0x2A18 value."""
    return hashlib.sha256(measurement).digest()[:FINGERPRINT_SIZE]


def counts_down(marked: int, newest: int) -> bool:
    """Whether a meter whose marked record is numbered ``marked`` and whose newest record
    ``newest`` (a different record) numbers newer records with smaller numbers: ``newest``
    lies within 32,767 numbers *before* ``marked``, modulo 2^16 (module docstring)."""
    return (newest - marked) & 0xFFFF >= 0x8000


def measurement_header(data: bytes) -> tuple[int, bool]:
    """The sequence number and the Context Information Follows flag of a 0x2A18 value.

    Only the header (GLS §3.1: flags, Sequence Number) is read: a record whose body the
    pipeline rejects must still be joined and ordered, so one bad record never stalls the
    sync behind it.

    Raises:
        DecodeError: shorter than flags + sequence number.
    """
    if len(data) < 3:
        flags_octet(_MEASUREMENT, data)  # raises for an empty value
        Cursor(_MEASUREMENT, data, 1).u16("Sequence Number")  # raises, naming the field
    # Read once per record of a download (a hot path): the octets directly, the flag by its
    # driver constant; a short value took the drivers' path above.
    return data[1] | data[2] << 8, bool(data[0] & _CONTEXT_FOLLOWS)


def context_sequence_number(data: bytes) -> int:
    """The sequence number of a 0x2A34 value (GLS §3.2: flags, Sequence Number, ...).

    Raises:
        DecodeError: shorter than flags + sequence number.
    """
    if len(data) < 3:
        flags_octet(_CONTEXT, data)  # any flags: the joiner needs the number only
        Cursor(_CONTEXT, data, 1).u16("Sequence Number")  # raises, naming the field
    # As measurement_header: read for every context of a download, the octets directly.
    return data[1] | data[2] << 8


@dataclass(frozen=True, slots=True)
class SyncMark:
    """The committed high-water mark: ``sequence_number`` (uint16 LE) + 8-octet fingerprint.

    A 2-octet value (sequence number only) is accepted: continuity is then checked by the
    marked record's presence alone. ``bytes(mark)[:2]`` is the sequence number.
    """

    sequence_number: int
    fingerprint: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> SyncMark:
        """Decode a stored mark.

        Raises:
            ValueError: neither 2 nor 10 octets.
        """
        if len(data) == 2:
            return cls(int.from_bytes(data, "little"))
        if len(data) == 2 + FINGERPRINT_SIZE:
            return cls(int.from_bytes(data[:2], "little"), data[2:])
        raise ValueError(f"a sync mark has 2 or 10 octets, not {len(data)}")

    @classmethod
    def of(cls, measurement: bytes) -> SyncMark:
        """The mark a record sets once it is stored.

        Raises:
            DecodeError: shorter than flags + sequence number.
        """
        return cls(measurement_header(measurement)[0], fingerprint(measurement))

    def __bytes__(self) -> bytes:
        """The stored value."""
        return self.sequence_number.to_bytes(2, "little") + (self.fingerprint or b"")

    def matches(self, measurement: bytes) -> bool:
        """Whether ``measurement`` (a 0x2A18 value) is the marked record."""
        try:
            sequence_number, _ = measurement_header(measurement)
        except DecodeError:
            return False
        if sequence_number != self.sequence_number:
            return False
        return self.fingerprint is None or fingerprint(measurement) == self.fingerprint


def read_mark(value: bytes | None) -> SyncMark | None:
    """The committed mark, or None (never synced, or an unreadable value: resync all)."""
    if value is None:
        return None
    try:
        return SyncMark.from_bytes(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class JoinedRecord:
    """A measurement and its context (when it had one), joined by sequence number."""

    sequence_number: int
    measurement: bytes = field(repr=False)
    context: bytes | None = field(default=None, repr=False)
    received_monotonic: float = 0.0
    received_wall: datetime = field(default_factory=lambda: datetime.now(UTC))


class RecordJoiner:
    """Joins 0x2A18 and 0x2A34 values by sequence number, releasing records in order.

    A measurement whose flags announce a context is held until that context arrives, until
    the next measurement arrives, or until :meth:`flush`; records are released strictly in
    measurement order. At most **one** measurement is ever held (a new one releases the
    held one first), so that buffer is bounded by construction; contexts without their
    measurement are bounded by ``max_orphans``.

    Args:
        device: the meter's label, for errors.
        max_orphans: contexts held without their measurement at most.
    """

    def __init__(self, device: str = "", max_orphans: int = MAX_ORPHAN_CONTEXTS) -> None:
        self._device = device
        self._held: JoinedRecord | None = None
        self._contexts: dict[int, bytes] = {}
        self._max_orphans = max_orphans
        self.missing_contexts = 0
        self.dropped_contexts = 0

    @property
    def orphans(self) -> int:
        """Contexts held now without their measurement."""
        return len(self._contexts)

    def measurement(
        self, data: bytes, received_monotonic: float, received_wall: datetime
    ) -> list[JoinedRecord]:
        """Add a 0x2A18 value; returns the records now complete, in order.

        Raises:
            DecodeError: shorter than flags + sequence number.
        """
        seq, wants = measurement_header(data)
        context = self._contexts.pop(seq, None) if wants and self._contexts else None
        record = JoinedRecord(seq, data, context, received_monotonic, received_wall)
        if self._held is None and not (wants and context is None):
            return [record]  # the common case, a record complete as it arrives
        out = self._release_held()
        if wants and context is None:
            self._held = record
        else:
            out.append(record)
        return out

    def context(self, data: bytes, procedure: str = "racp") -> list[JoinedRecord]:
        """Add a 0x2A34 value; returns the records now complete, in order.

        Raises:
            DecodeError: shorter than flags + sequence number.
            DeviceFloodError: ``max_orphans`` contexts are already held (``buffer`` is
                ``"gls_orphan_contexts"``); the context is not kept.
        """
        seq = context_sequence_number(data)
        held = self._held
        if held is not None and held.sequence_number == seq:
            self._held = None
            return [
                JoinedRecord(
                    seq, held.measurement, data, held.received_monotonic, held.received_wall
                )
            ]
        if seq not in self._contexts and len(self._contexts) >= self._max_orphans:
            self.dropped_contexts += 1
            raise DeviceFloodError(
                self._device, procedure, "gls_orphan_contexts", self._max_orphans
            )
        self._contexts[seq] = data
        return []

    def flush(self) -> list[JoinedRecord]:
        """End of procedure: release everything held; forget contexts without a measurement."""
        out = self._release_held()
        self.dropped_contexts += len(self._contexts)
        self._contexts.clear()
        return out

    def discard(self) -> None:
        """The link went: forget what is held (it will be requested again)."""
        self._held = None
        self._contexts.clear()

    def _release_held(self) -> list[JoinedRecord]:
        held, self._held = self._held, None
        if held is None:
            return []
        self.missing_contexts += 1
        return [held]


# ---------------------------------------------------------------------------------------
# The sync: procedures out, values in, events out
# ---------------------------------------------------------------------------------------


class Reason(enum.Enum):
    """Why the sync writes a request or ends: its value is the adapter's log event."""

    FIRST_SYNC = "gls_sync_first"  #: no mark: report all
    PROBE_NEWEST = "gls_probe_newest"  #: is there anything after the mark?
    PROBE_MARKED = "gls_probe_marked"  #: is the marked record still there, unchanged?
    CONTINUE = "gls_sync_continue"  #: report >= mark+1
    COUNTS_DOWN = "gls_sequence_counts_down"  #: newer records numbered lower: report <= mark-1
    WRAPPED = "gls_sequence_wrapped"  #: the numbers wrapped: report <= newest (>= when down)
    RESET = "gls_sequence_reset"  #: the numbering restarted: resync all
    METER_EMPTY = "gls_sync_meter_empty"
    NOTHING_NEW = "gls_sync_nothing_new"
    COMPLETE = "gls_sync_complete"  #: every report asked for was answered
    LIMIT = "gls_sync_limit"  #: ``max_records`` reached; the meter keeps the rest


@dataclass(frozen=True, slots=True)
class Procedure:
    """Write ``request`` to the RACP; ``collect``: its records are handed on (a report), or
    only looked at (a probe)."""

    request: RacpRequest
    collect: bool
    reason: Reason

    @property
    def name(self) -> str:
        """The procedure's name in errors and logs, e.g. ``racp_report_stored_records``."""
        return _procedure_name(self.request.op_code)


@functools.cache  # read for every context value of a download (GlsSync.context): once an op
def _procedure_name(op_code: int) -> str:
    return f"racp_{OpCode(op_code).name.lower()}"


@dataclass(frozen=True, slots=True)
class SyncDone:
    """The sync is over; ``resynced``: it reported "all" because the numbering restarted."""

    resynced: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class RecordReady:
    """Hand this record on, with the mark that commits with it."""

    record: JoinedRecord
    mark: SyncMark


@dataclass(frozen=True, slots=True)
class ProcedureFinished:
    """The procedure's final RACP indication arrived and every record before it was handed
    on."""

    response: RacpResponse


class _Sentinel(enum.Enum):
    NEED_DATA = "need_data"
    LIMIT_REACHED = "limit_reached"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""Nothing to do until the meter sends more (or a timeout passes)."""

LIMIT_REACHED: Final = _Sentinel.LIMIT_REACHED
"""A record beyond ``max_records`` arrived: write Abort (``03 00``), then call
:meth:`GlsSync.aborted`."""

Event = RecordReady | ProcedureFinished | _Sentinel


class _State(enum.Enum):
    START = "start"
    PROBE_NEWEST = "probe_newest"
    PROBE_MARKED = "probe_marked"
    CONTINUE = "continue"
    WRAPPED = "wrapped"
    DONE = "done"


class GlsSync:
    """One session's sync with one meter, from ``mark`` on (module docstring).

    Args:
        mark: the committed high-water mark (None: first sync, report all).
        device: the meter's label, for errors (never its address).
        max_records: records accepted for hand-on per session at most.
    """

    def __init__(
        self,
        mark: SyncMark | None,
        *,
        device: str = "",
        max_records: int = MAX_RECORDS_PER_SESSION,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.mark = mark
        self.device = device
        self.max_records = max_records
        self.joiner = RecordJoiner(device)
        self.resynced = False
        #: The probes found a meter numbering newer records lower (:func:`counts_down`).
        self.counting_down = False
        #: Records accepted for hand-on in this session.
        self.accepted = 0
        #: Records refused once ``max_records`` were accepted (the meter keeps them).
        self.refused = 0
        #: Values received (records, contexts, RACP indications): the progress counter.
        self.progress = 0
        self.failure: DeviceProtocolError | None = None
        self._state = _State.START
        self._procedure: Procedure | None = None
        self._ready: deque[JoinedRecord] = deque()
        self._probed: list[JoinedRecord] = []
        self._indications: list[bytes] = []
        self._final: RacpResponse | None = None
        self._newest: JoinedRecord | None = None
        self._limit_signalled = False
        self._peak_ready = 0
        self._abort_written = False
        self._after_abort = 0
        #: The most each buffer ever held in this session (logged when a meter floods).
        self.peaks: dict[str, int] = {
            "gls_ready": 0,
            "racp_probe": 0,
            "racp_indications": 0,
            "gls_orphan_contexts": 0,
        }

    # -- what is buffered (for tests and logs) ----------------------------------------------

    @property
    def ready(self) -> int:
        """Complete records waiting to be handed on."""
        return len(self._ready)

    @property
    def probed(self) -> int:
        """Records of the running probe."""
        return len(self._probed)

    @property
    def indications(self) -> int:
        """RACP indications of the running procedure."""
        return len(self._indications)

    @property
    def after_abort(self) -> int:
        """Records that arrived once the Abort was written (counted, not kept)."""
        return self._after_abort

    @property
    def limit_reached(self) -> bool:
        """A record beyond ``max_records`` arrived (and was refused): the meter holds more."""
        return self.refused > 0

    # -- values in (from the bleak callbacks; never wait) ------------------------------------

    def measurement(self, data: bytes, received_monotonic: float, received_wall: datetime) -> None:
        """A 0x2A18 notification.

        Raises:
            DecodeError: too short for a sequence number.
            DeviceFloodError: a bound was hit (nothing more is accepted).
        """
        self._check_open()
        self.progress += 1
        try:
            records = self.joiner.measurement(data, received_monotonic, received_wall)
        except DecodeError as exc:
            self._fail(DeviceProtocolError(self.device, self._name, exc.reason))
        self._take(records)

    def context(self, data: bytes) -> None:
        """A 0x2A34 notification.

        Raises:
            DecodeError: too short for a sequence number.
            DeviceFloodError: a bound was hit (nothing more is accepted).
        """
        self._check_open()
        self.progress += 1
        try:
            records = self.joiner.context(data, self._name)
        except DecodeError as exc:
            self._fail(DeviceProtocolError(self.device, self._name, exc.reason))
        except DeviceFloodError as exc:
            self._fail(exc)
        self._peak("gls_orphan_contexts", self.joiner.orphans)
        self._take(records)

    def racp_indication(self, data: bytes) -> None:
        """A 0x2A52 indication. The first of a procedure ends it (its records complete);
        it is checked once every record before it was handed on (:meth:`next_event`).

        Raises:
            DeviceFloodError: more than :data:`MAX_RACP_INDICATIONS` in this procedure.
        """
        self._check_open()
        self.progress += 1
        if len(self._indications) >= MAX_RACP_INDICATIONS:
            self._flood("racp_indications", MAX_RACP_INDICATIONS)
        self._indications.append(bytes(data))
        self._peak("racp_indications", len(self._indications))
        if len(self._indications) == 1:
            self._take(self.joiner.flush())

    # -- procedures out ----------------------------------------------------------------------

    def next_procedure(self) -> Procedure | SyncDone:
        """The next RACP request to write, or the end of the sync (module docstring).

        Call it at the start and after each :class:`ProcedureFinished`.
        """
        mark = self.mark
        state = self._state
        if self.limit_reached:
            return self._done(Reason.LIMIT)
        if state is _State.START:
            if mark is None:
                return self._start(
                    _State.CONTINUE, RacpRequest.report_all(), True, Reason.FIRST_SYNC
                )
            request = RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD)
            return self._start(_State.PROBE_NEWEST, request, False, Reason.PROBE_NEWEST)
        if state is _State.PROBE_NEWEST:
            assert mark is not None
            self._newest = self._probed[0] if self._probed else None
            if self._newest is None:
                return self._done(Reason.METER_EMPTY)
            if mark.matches(self._newest.measurement):
                return self._done(Reason.NOTHING_NEW)
            request = RacpRequest.report_range(mark.sequence_number, mark.sequence_number)
            return self._start(_State.PROBE_MARKED, request, False, Reason.PROBE_MARKED)
        if state is _State.PROBE_MARKED:
            assert mark is not None
            assert self._newest is not None
            marked = self._probed[0] if self._probed else None
            if marked is None or not mark.matches(marked.measurement):
                self.resynced = True
                return self._start(_State.CONTINUE, RacpRequest.report_all(), True, Reason.RESET)
            m = mark.sequence_number
            if counts_down(m, self._newest.sequence_number):
                self.counting_down = True
                if m > 0:
                    request = _report_at_most(m - 1)
                    return self._start(_State.WRAPPED, request, True, Reason.COUNTS_DOWN)
                # Nothing below 0: the new records are all past the wrap (">= newest").
                request = RacpRequest.report_from(self._newest.sequence_number)
                return self._start(_State.CONTINUE, request, True, Reason.COUNTS_DOWN)
            if m < 0xFFFF:
                request = RacpRequest.report_from(m + 1)
                return self._start(_State.WRAPPED, request, True, Reason.CONTINUE)
            state = _State.WRAPPED
        if state is _State.WRAPPED:
            assert mark is not None
            assert self._newest is not None
            newest = self._newest.sequence_number
            if self.counting_down and newest > mark.sequence_number:
                request = RacpRequest.report_from(newest)
                return self._start(_State.CONTINUE, request, True, Reason.WRAPPED)
            if not self.counting_down and newest < mark.sequence_number:
                request = _report_at_most(newest)
                return self._start(_State.CONTINUE, request, True, Reason.WRAPPED)
        return self._done(Reason.COMPLETE)

    def aborted(self) -> None:
        """The adapter wrote Abort (after :data:`LIMIT_REACHED`): from now on records are
        only counted (:data:`MAX_RECORDS_AFTER_ABORT`), and any Response Code ends the
        procedure."""
        self._abort_written = True

    def abort_unanswered(self) -> None:
        """The adapter waited its time for the Abort's answer and the meter was still sending
        records: a meter that ignores Abort, a flood however slow.

        Raises:
            DeviceFloodError: ``records_after_abort``, with the count received after it.
        """
        self._flood("records_after_abort", self._after_abort)

    def link_lost(self) -> None:
        """The link went: forget what is held (it will be requested again)."""
        self.joiner.discard()

    # -- events out --------------------------------------------------------------------------

    def next_event(self) -> Event:
        """What the adapter does next, in this order: write Abort (:data:`LIMIT_REACHED`,
        once), hand on a record (:class:`RecordReady`), end the procedure
        (:class:`ProcedureFinished`), or wait (:data:`NEED_DATA`).

        After a failure, only the records complete before it are returned, then
        :data:`NEED_DATA`.

        Raises:
            DeviceProtocolError: the procedure's Response Code is unexpected or a failure.
        """
        if self.refused and self.failure is None and not self._limit_signalled:
            self._limit_signalled = True  # limit_reached, read as the attribute (per record)
            return LIMIT_REACHED
        if self._ready:
            record = self._ready.popleft()
            return RecordReady(
                record, SyncMark(record.sequence_number, fingerprint(record.measurement))
            )
        if self.failure is not None or not self._indications or self._final is not None:
            return NEED_DATA
        try:
            self._final = self._check(self._indications[0])
        except DeviceProtocolError as exc:
            self._fail(exc)
        return ProcedureFinished(self._final)

    # -- internals ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self._procedure.name if self._procedure is not None else "racp"

    def _start(
        self, state: _State, request: RacpRequest, collect: bool, reason: Reason
    ) -> Procedure:
        self._state = state
        self._procedure = Procedure(request, collect, reason)
        self._probed = []
        self._indications = []
        self._final = None
        return self._procedure

    def _done(self, reason: Reason) -> SyncDone:
        self._state = _State.DONE
        self._procedure = None
        return SyncDone(self.resynced, reason)

    def _check_open(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _peak(self, buffer: str, size: int) -> None:
        self.peaks[buffer] = max(self.peaks[buffer], size)

    def _fail(self, error: DeviceProtocolError) -> NoReturn:
        self.failure = error
        raise error

    def _flood(self, buffer: str, limit: int) -> NoReturn:
        self._fail(DeviceFloodError(self.device, self._name, buffer, limit))

    def _take(self, records: list[JoinedRecord]) -> None:
        """Complete records: into the probe list or the ready buffer, within their bounds."""
        collect = self._procedure is None or self._procedure.collect
        for record in records:
            if not collect:
                if len(self._probed) >= MAX_PROBE_RECORDS:
                    self._flood("racp_probe", MAX_PROBE_RECORDS)
                self._probed.append(record)
                self._peak("racp_probe", len(self._probed))
            elif self.accepted >= self.max_records:
                self.refused += 1
                if self._abort_written:
                    self._after_abort += 1
                    if self._after_abort > MAX_RECORDS_AFTER_ABORT:
                        self._flood("records_after_abort", MAX_RECORDS_AFTER_ABORT)
            else:
                ready = self._ready
                if len(ready) >= MAX_READY_RECORDS:
                    self._flood("gls_ready", MAX_READY_RECORDS)
                ready.append(record)
                if len(ready) > self._peak_ready:  # _peak, inline: once per record
                    self._peak_ready = self.peaks["gls_ready"] = len(ready)
                self.accepted += 1

    def _check(self, data: bytes) -> RacpResponse:
        """The procedure's final indication, checked against its request."""
        assert self._procedure is not None
        name = self._procedure.name
        request = self._procedure.request
        try:
            response = decode_response(data)
        except DecodeError as exc:
            raise DeviceProtocolError(
                self.device, name, f"bad RACP response: {exc.reason}"
            ) from None
        if self._abort_written and isinstance(response, ResponseCodeIndication):
            return response
        if request.op_code is OpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            if not isinstance(response, NumberOfStoredRecords):
                raise DeviceProtocolError(self.device, name, describe(response))
            return response
        if not isinstance(response, ResponseCodeIndication):
            raise DeviceProtocolError(self.device, name, "count response to a report request")
        if response.request_op_code != request.op_code:
            raise DeviceProtocolError(
                self.device, name, f"response to op code 0x{response.request_op_code:02X}"
            )
        if response.response_code not in (ResponseCode.SUCCESS, ResponseCode.NO_RECORDS_FOUND):
            raise DeviceProtocolError(self.device, name, describe(response))
        return response


def _report_at_most(sequence_number: int) -> RacpRequest:
    """Report stored records with a sequence number ``<= sequence_number`` (01 02 01 n)."""
    return RacpRequest(
        OpCode.REPORT_STORED_RECORDS,
        Operator.LESS_THAN_OR_EQUAL_TO,
        FilterType.SEQUENCE_NUMBER,
        (sequence_number,),
    )


def describe(response: RacpResponse) -> str:
    """How an unexpected RACP response reads in an error."""
    if isinstance(response, NumberOfStoredRecords):
        return "unexpected number-of-records response"
    code = response.code
    return f"RACP response code 0x{response.response_code:02X}" + (
        f" ({code.name.lower()})" if code is not None else ""
    )
