"""The AT command connection, sans-I/O: ``send`` → bytes, ``receive_data`` ← bytes, events out.

ITU-T V.250 frames a command as ``AT<body><CR>`` (§5.2.1, S3 = CR) and, in verbose mode
(V1, every modem we drive), a response as ``<CR><LF><text><CR><LF>`` lines ending with one
final result code (§5.7.1). 3GPP TS 27.007 adds ``+CME ERROR: <err>`` as a final result code
(§9.2) and unsolicited result codes (URCs) that the modem may emit at any moment, *between
or inside* a command's response lines. :class:`AtCodec` frames the bytes into lines and tells
those apart, with no port, no thread and no clock: the pyserial adapter feeds it, owns the
timeouts and says what time it is.

Theory of operation
-------------------

State: at most one command is **pending** (sent, final result code not seen yet).
``send()`` while one is pending raises :class:`~drivers.errors.AtStateError`: AT has no
command identifiers, so a second command in flight would make every answer ambiguous.

::

    idle ──send()──▶ pending ──final result code──▶ idle
                       │
                       ├─ abort_pending() ─▶ draining ──its final result code──▶ idle
                       └─ too many lines ──▶ draining        (send() also ends draining)

Lines: a line is a non-blank run of bytes between CR or LF bytes. V.250's ``<CR><LF>``
framing, the echo's lone ``<CR>`` and modems that send a bare ``<LF>`` all reduce to this.
Spaces around a line are dropped. Each line becomes exactly one event, in arrival order, or
is counted in a :class:`LineRejected` (which may stand for several consecutive lines).

Which line is whose (the URC rule), decided once per line as it arrives:

1. A **final result code** (:class:`FinalKind`) ends the pending command:
   :class:`FinalResult`. With nothing pending, ``NO CARRIER``/``BUSY``/``NO ANSWER``/
   ``NO DIALTONE`` are call events (:class:`UnsolicitedResult`); a stray ``OK``, ``ERROR``,
   ``+CME ERROR``, ``+CMS ERROR`` or ``CONNECT`` is rejected (:attr:`RejectReason.STRAY_FINAL`).
2. The first line of a response that repeats the command (case-insensitive) is its
   :class:`Echo` (ATE1, the factory default). Echo is recognised whether or not the codec
   believes echo is on (:attr:`AtCodec.echo_enabled` follows ATE0/ATE1/ATZ/AT&F): a modem
   that reset itself comes back with echo on.
3. A line with a prefix (``+NAME:``, also ``^``, ``$``, ``#``, ``%``) **belongs to the pending
   command when the prefix is one the command expects** (:attr:`AtCommand.response_prefixes`,
   derived from the command's name: ``AT+QENG="servingcell"`` expects ``+QENG``). This wins
   over the URC table: a ``+CEREG:`` line answers a pending ``AT+CEREG?`` (a real +CEREG URC
   arriving in that window is taken for the answer; its parser sees one field fewer).
4. Any other prefixed line, and the bare lines of :data:`BARE_URCS` (``RDY``,
   ``POWERED DOWN``…), are unsolicited: :class:`UnsolicitedResult`, ``known`` saying whether
   the prefix is in :data:`URC_PREFIXES`. Unknown prefixes are still reported, never dropped.
5. Any other bare line belongs to the pending command (``ATI``, ``+CGMR``, ``+CIMI`` and
   Quectel's ``+CGSN`` answer with bare lines): :class:`InformationLine`. With nothing
   pending it is unsolicited (``known=False``).

Draining: after :meth:`AtCodec.abort_pending` (the adapter's timeout) or a response cut
short for having too many lines, the rest of that command's response may still arrive. Its
lines (its prefixes and bare lines) are rejected (:attr:`RejectReason.ABORTED_RESPONSE`) up
to and including its final result code; URCs still pass. ``send()`` ends draining, so a late
``OK`` of the aborted command can be taken as the new command's: after a timeout an adapter
should resynchronise with a plain ``AT`` and its ``OK`` before relying on answers again.

Bounds (nothing grows with what the modem sends):

- a line longer than ``max_line_bytes`` is discarded as it arrives, up to its end, and
  reported once (:attr:`RejectReason.LINE_TOO_LONG`);
- bytes outside printable ASCII reject their line (:attr:`RejectReason.NON_PRINTABLE`):
  boot noise, a baud-rate mismatch, or a charset other than IRA/GSM;
- a response of more than ``max_information_lines`` lines ends the pending command with a
  :attr:`RejectReason.RESPONSE_TOO_LONG` rejection;
- the partial line plus queued events never exceed ``max_buffered_bytes``; lines arriving
  while the queue is full (an adapter that does not call :meth:`AtCodec.next_event`) are
  dropped and counted, then reported as one :attr:`RejectReason.QUEUE_FULL` rejection.
  A dropped line does not advance the state: a dropped final result code leaves its
  command pending until the adapter's timeout. An adapter that drains the events after
  every read of at most 4 KiB never fills the default queue (15 KiB: a queued line costs
  its length plus 2 bytes, at most 1.5 times what it took on the wire).

``receive_data`` never raises for anything the modem sends.

Not handled here: V0 (numeric) result codes, the SMS ``> `` prompt, and the data mode that
follows ``CONNECT`` (the RM5xx carries data over QMI/MBIM/ECM, not over the AT port).
"""

from __future__ import annotations

import collections
import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Self

from drivers.errors import AtCommandError, AtStateError, UsageError

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: Longest response line kept. The longest lines we parse (+QENG="servingcell" in LTE, about
#: 110 characters; +CGDCONT? with a 100-octet APN and IPv6 addresses, about 250) fit several
#: times over; Quectel documents no longer line on the AT port.
MAX_LINE_BYTES: Final = 1024
#: Bound on the partial line plus the queued events: 16 lines of the maximum length
#: (h11's DEFAULT_MAX_INCOMPLETE_EVENT_SIZE is 16 KiB for the same reason).
MAX_BUFFERED_BYTES: Final = 16 * MAX_LINE_BYTES
#: Information lines one response may carry. The longest answers we ask for are
#: AT+CGDCONT? (one line per defined context, a handful in practice) and
#: AT+QENG="neighbourcell" (a few dozen cells).
MAX_INFORMATION_LINES: Final = 64
#: Longest command line we send, terminator excluded. V.250 §5.2.1 requires a modem to
#: accept at least 40 characters; the longest we build (+CGDCONT with a 100-octet APN,
#: +CGAUTH with 127-octet credentials) stays under 400.
MAX_COMMAND_BYTES: Final = 512
#: Default response time an adapter should allow a command, in seconds. Quectel's manual
#: gives 300 ms for most queries; slow ones (+COPS=? 180 s, +CFUN 15 s) say theirs.
DEFAULT_TIMEOUT_S: Final = 5.0

#: Prefixes of the URCs a Quectel RM5xx can emit (TS 27.007: registration §7.2, §10.1.20-22,
#: +CPIN §8.3, +CFUN §8.2, +CGEV §10.1.19, time zone §7.30; Quectel RG50xQ/RM5xxQ AT
#: manual: +QIND, +QIURC, +QUSIM, +QSIMSTAT, +QNETDEVCTL, +QNETDEVSTATUS).
URC_PREFIXES: Final = frozenset(
    {
        "+CREG",
        "+CGREG",
        "+CEREG",
        "+C5GREG",
        "+CPIN",
        "+CFUN",
        "+CGEV",
        "+CTZV",
        "+CTZE",
        "+CTZEU",
        "+CMTI",
        "+CDSI",
        "+CUSD",
        "+CRING",
        "+CLIP",
        "+QIND",
        "+QIURC",
        "+QUSIM",
        "+QSIMSTAT",
        "+QNETDEVCTL",
        "+QNETDEVSTATUS",
    }
)
#: URCs without a prefix (V.250 §6.3.4 RING; Quectel: RDY after boot, POWERED DOWN).
BARE_URCS: Final = frozenset({"RDY", "POWERED DOWN", "RING"})

#: Echo switches (V.250 §6.2.4 E) and the resets that restore the factory default (echo on).
_BASIC_COMMANDS: Final = re.compile(r"(?:&?[A-Z]\d*)*", re.ASCII)
_BASIC_COMMAND: Final = re.compile(r"&?[A-Z]\d*", re.ASCII)
#: Basic commands setting echo: E/E0 off, E1 on; Z (reset) and &F (factory) restore on.
_ECHO_SETTINGS: Final = {
    "E": False,
    "E0": False,
    "E1": True,
    "Z": True,
    "Z0": True,
    "&F": True,
    "&F0": True,
}
_EXTENDED_NAME: Final = re.compile(r"AT([+^$#%][A-Z0-9_]+)", re.ASCII | re.IGNORECASE)
_LINE_PREFIX: Final = re.compile(r"([+^$#%][A-Za-z0-9_]+):", re.ASCII)
_RESPONSE_PREFIX: Final = re.compile(r"[+^$#%][A-Z0-9_]+", re.ASCII)
_TERMINATOR: Final = re.compile(rb"[\r\n]")
_NON_PRINTABLE: Final = re.compile(rb"[^\x20-\x7e]")
_ERROR_CODE: Final = re.compile(r"\+(CME|CMS) ERROR: *(.*)", re.ASCII)
#: Cost of a queued event beyond its line's bytes (the terminator it arrived with).
_EVENT_OVERHEAD_BYTES: Final = 2


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _check_command_text(text: str) -> None:
    """Refuse what would break the one-command-one-line framing (V.250 §5.2.1)."""
    if len(text) > MAX_COMMAND_BYTES:
        raise AtCommandError(f"longer than {MAX_COMMAND_BYTES} characters")
    if text[:2].upper() != "AT":
        raise AtCommandError('does not start with "AT"', 0)
    quoted = False
    for position, char in enumerate(text):
        if not " " <= char <= "~":
            # CR, LF, Ctrl-Z (SMS end), ESC and anything beyond ASCII: each would end the
            # command early, send a message or reach the modem as bytes we did not mean.
            raise AtCommandError("not printable ASCII", position)
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            raise AtCommandError("more than one command on the line", position)
    if quoted:
        raise AtCommandError("unterminated string")


@dataclass(frozen=True, slots=True)
class AtCommand:
    """One command line to send, without its terminating CR, and what its answer looks like.

    Build it with :meth:`of` (or a builder of :mod:`drivers.modem.ts27007` or
    :mod:`drivers.modem.quectel`), which derives the expected response prefix.

    Attributes:
        text: the command line, e.g. ``AT+CSQ``; printable ASCII, one command.
        response_prefixes: prefixes of the information lines that answer it (rule 3 of the
            module's URC rule), upper case, e.g. ``("+CSQ",)``.
        timeout_s: how long the adapter should wait for the final result code.
        sensitive: the command or its answer carries a secret or an identifier (PIN, IMSI,
            ICCID, IMEI): its text and its information lines are kept out of ``repr``.
    """

    text: str
    response_prefixes: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    sensitive: bool = False

    def __post_init__(self) -> None:
        _check_command_text(self.text)
        for prefix in self.response_prefixes:
            if not _RESPONSE_PREFIX.fullmatch(prefix):
                raise UsageError("response_prefixes", "a prefix is +NAME in upper case")
        if not 0 < self.timeout_s <= 3600:
            raise UsageError("timeout_s", "must be in (0, 3600] seconds")

    @classmethod
    def of(
        cls, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, sensitive: bool = False
    ) -> Self:
        """A command whose response prefix is its extended name (``AT+CGDCONT?`` → ``+CGDCONT``).

        Basic commands (``ATI``, ``ATE0``, ``AT&F``) expect bare lines only.
        """
        match = _EXTENDED_NAME.match(text)
        prefixes = (match.group(1).upper(),) if match else ()
        return cls(text, prefixes, timeout_s, sensitive)

    def __bytes__(self) -> bytes:
        return self.text.encode("ascii") + b"\r"

    def __repr__(self) -> str:
        text = "<redacted>" if self.sensitive else repr(self.text)
        return f"AtCommand({text}, response_prefixes={self.response_prefixes!r})"

    @property
    def echo_setting(self) -> bool | None:
        """The echo state this command sets once it succeeds (ATE0/ATE1/ATZ/AT&F), if any."""
        body = self.text[2:].upper()
        if not _BASIC_COMMANDS.fullmatch(body):
            return None
        setting: bool | None = None
        for token in _BASIC_COMMAND.findall(body):
            setting = _ECHO_SETTINGS.get(token, setting)
        return setting


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


class FinalKind(enum.StrEnum):
    """Final result codes (V.250 §5.7.1 table 1; TS 27.007 §9.2 +CME ERROR, 27.005 +CMS)."""

    OK = "OK"
    CONNECT = "CONNECT"
    ERROR = "ERROR"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"
    NO_CARRIER = "NO CARRIER"
    BUSY = "BUSY"
    NO_ANSWER = "NO ANSWER"
    NO_DIALTONE = "NO DIALTONE"


#: Final result codes that are whole lines; CONNECT may carry text, the errors a code.
_BARE_FINALS: Final = {
    kind.value: kind
    for kind in (
        FinalKind.OK,
        FinalKind.ERROR,
        FinalKind.NO_CARRIER,
        FinalKind.BUSY,
        FinalKind.NO_ANSWER,
        FinalKind.NO_DIALTONE,
    )
}
#: Final result codes that also arrive with nothing pending, when a call ends.
_CALL_EVENTS: Final = frozenset(
    {FinalKind.NO_CARRIER, FinalKind.BUSY, FinalKind.NO_ANSWER, FinalKind.NO_DIALTONE}
)


class CmeError(enum.IntEnum):
    """The +CME ERROR codes the hub reacts to (TS 27.007 §9.2.1); others are kept as ints."""

    PHONE_FAILURE = 0
    OPERATION_NOT_ALLOWED = 3
    OPERATION_NOT_SUPPORTED = 4
    SIM_NOT_INSERTED = 10
    SIM_PIN_REQUIRED = 11
    SIM_PUK_REQUIRED = 12
    SIM_FAILURE = 13
    SIM_BUSY = 14
    SIM_WRONG = 15
    INCORRECT_PASSWORD = 16
    NO_NETWORK_SERVICE = 30
    NETWORK_TIMEOUT = 31
    INCORRECT_PARAMETERS = 50
    UNKNOWN = 100


class RejectReason(enum.StrEnum):
    """Why lines were rejected; the value is the log code."""

    #: Longer than ``max_line_bytes``: discarded up to its end.
    LINE_TOO_LONG = "line_too_long"
    #: A byte outside printable ASCII (0x20-0x7E).
    NON_PRINTABLE = "non_printable"
    #: The pending command's response passed ``max_information_lines``: the command ends.
    RESPONSE_TOO_LONG = "response_too_long"
    #: A final result code with no command pending.
    STRAY_FINAL = "stray_final_result"
    #: The rest of an aborted (or cut short) command's response.
    ABORTED_RESPONSE = "aborted_response"
    #: Dropped because the event queue was full.
    QUEUE_FULL = "queue_full"


@dataclass(frozen=True, slots=True)
class Echo:
    """The modem repeating the pending command (V.250 §6.2.4, ATE1)."""

    command: AtCommand


@dataclass(frozen=True, slots=True)
class InformationLine:
    """One intermediate line of the pending command's response (V.250 §5.7.2).

    Attributes:
        text: the whole line, e.g. ``+CSQ: 23,99``; parse it with the command's parser.
        prefix: its ``+NAME`` prefix, or None for a bare line.
        command: the command it answers; when that is ``sensitive`` the text stays out of
            ``repr`` (an IMSI, ICCID or IMEI line must never reach a log).
    """

    text: str
    prefix: str | None
    command: AtCommand

    def __repr__(self) -> str:
        text = "<redacted>" if self.command.sensitive else repr(self.text)
        return f"InformationLine({text}, prefix={self.prefix!r}, command={self.command!r})"


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The final result code that ends a command's response.

    Attributes:
        kind: which final result code.
        command: the command it ends.
        code: the numeric +CME/+CMS error (AT+CMEE=1), else None.
        text: the verbose error (AT+CMEE=2) or CONNECT's text, else None.
    """

    kind: FinalKind
    command: AtCommand
    code: int | None = None
    text: str | None = None

    @property
    def ok(self) -> bool:
        """The command succeeded (OK, or CONNECT into data mode)."""
        return self.kind in (FinalKind.OK, FinalKind.CONNECT)

    @property
    def cme_error(self) -> CmeError | None:
        """The +CME ERROR code, when it is one the hub names."""
        if self.kind is not FinalKind.CME_ERROR or self.code is None:
            return None
        try:
            return CmeError(self.code)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class UnsolicitedResult:
    """A line the modem sent on its own (a URC: TS 27.007 §4.1, e.g. ``+CEREG: 5``).

    Attributes:
        text: the whole line.
        prefix: its ``+NAME`` prefix, or None for a bare line (``RDY``).
        known: the prefix (or bare line) is one of the codec's known URCs.
    """

    text: str
    prefix: str | None
    known: bool


@dataclass(frozen=True, slots=True)
class LineRejected:
    """Lines the codec refused; consecutive rejections for one reason are merged.

    Carries no content: a rejected line may hold an identifier.

    Attributes:
        reason: why.
        lines: how many lines this stands for.
        length_bytes: their total length, terminators excluded.
        command: the command pending (or being drained) when they arrived, if any.
    """

    reason: RejectReason
    lines: int
    length_bytes: int
    command: AtCommand | None = None


Event = Echo | InformationLine | FinalResult | UnsolicitedResult | LineRejected


@dataclass(frozen=True, slots=True)
class Pending:
    """The command awaiting its final result code, for the adapter's timeout.

    Attributes:
        command: what was sent.
        started_at: the adapter's clock (monotonic seconds) when it was sent.
        information_lines: how many information lines have arrived so far.
        echo_seen: whether its echo has arrived.
    """

    command: AtCommand
    started_at: float
    information_lines: int = 0
    echo_seen: bool = False

    @property
    def deadline(self) -> float:
        """When the adapter should give up on it: ``started_at + command.timeout_s``."""
        return self.started_at + self.command.timeout_s

    def expired(self, now: float) -> bool:
        """Whether ``now`` (the adapter's clock) is past :attr:`deadline`."""
        return now > self.deadline


# ---------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------


def _final_result(text: str) -> tuple[FinalKind, int | None, str | None] | None:
    """``(kind, code, text)`` when ``text`` is a final result code, else None."""
    kind = _BARE_FINALS.get(text)
    if kind is not None:
        return kind, None, None
    if text == "CONNECT":
        return FinalKind.CONNECT, None, None
    if text.startswith("CONNECT "):
        return FinalKind.CONNECT, None, text[8:].strip() or None
    match = _ERROR_CODE.fullmatch(text)
    if match is None:
        return None
    error = FinalKind.CME_ERROR if match.group(1) == "CME" else FinalKind.CMS_ERROR
    detail = match.group(2).strip()
    if detail.isascii() and detail.isdigit() and len(detail) <= 5:
        return error, int(detail), None
    return error, None, detail or None


def _line_prefix(text: str) -> str | None:
    match = _LINE_PREFIX.match(text)
    return match.group(1).upper() if match else None


@dataclass(slots=True)
class _Stats:
    lines: int = 0
    rejected: collections.Counter[RejectReason] = field(default_factory=collections.Counter)


class AtCodec:
    """The AT connection to one modem port: an h11-style sans-I/O state machine.

    Use: ``port.write(codec.send(command, now=clock()))``; for each read,
    ``codec.receive_data(chunk)`` then drain ``codec.events()``. The module docstring gives
    the URC rule and the bounds.

    Args:
        max_line_bytes: longest line kept (:data:`MAX_LINE_BYTES`).
        max_buffered_bytes: bound on the partial line plus queued events; at least twice
            ``max_line_bytes`` (:data:`MAX_BUFFERED_BYTES`).
        max_information_lines: information lines one response may carry.
        urc_prefixes: the prefixes reported as known URCs.
        bare_urcs: the bare lines reported as known URCs.
        echo_enabled: what is known of the modem's echo setting (None: not known yet).
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        max_information_lines: int = MAX_INFORMATION_LINES,
        urc_prefixes: frozenset[str] = URC_PREFIXES,
        bare_urcs: frozenset[str] = BARE_URCS,
        echo_enabled: bool | None = None,
    ) -> None:
        if max_line_bytes < 16:
            raise UsageError("max_line_bytes", "must be at least 16")
        if max_buffered_bytes < 2 * max_line_bytes:
            raise UsageError("max_buffered_bytes", "must be at least twice max_line_bytes")
        if max_information_lines < 1:
            raise UsageError("max_information_lines", "must be at least 1")
        self._max_line = max_line_bytes
        # The queue may hold what the partial line cannot be using.
        self._max_queued = max_buffered_bytes - max_line_bytes
        self._max_information_lines = max_information_lines
        self._urc_prefixes = frozenset(prefix.upper() for prefix in urc_prefixes)
        self._bare_urcs = bare_urcs
        self._echo_enabled = echo_enabled
        self._pending: Pending | None = None
        self._draining: AtCommand | None = None
        self._partial = bytearray()
        self._discarding = 0  # length of the over-long line being discarded, 0 if none
        self._events: collections.deque[tuple[Event, int]] = collections.deque()
        self._queued_bytes = 0
        self._overflow_lines = 0
        self._overflow_bytes = 0
        self._stats = _Stats()

    # -- state the adapter reads ---------------------------------------------------------------

    @property
    def pending(self) -> Pending | None:
        """The command awaiting its final result code, or None."""
        return self._pending

    @property
    def draining(self) -> AtCommand | None:
        """The aborted command whose late response is being discarded, or None."""
        return self._draining

    @property
    def echo_enabled(self) -> bool | None:
        """The echo setting as last set by a successful ATE0/ATE1/ATZ/AT&F (None: unknown)."""
        return self._echo_enabled

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the partial line plus the queued events (≤ ``max_buffered_bytes``)."""
        return len(self._partial) + self._queued_bytes

    @property
    def lines_received(self) -> int:
        """Non-blank lines received so far, rejected ones included."""
        return self._stats.lines

    @property
    def rejected(self) -> Mapping[RejectReason, int]:
        """Lines rejected so far, by reason (a copy)."""
        return dict(self._stats.rejected)

    # -- sending -------------------------------------------------------------------------------

    def send(self, command: AtCommand | str, *, now: float) -> bytes:
        """Make ``command`` the pending command and return the bytes to write.

        Args:
            command: an :class:`AtCommand`, or a command line for :meth:`AtCommand.of`.
            now: the adapter's monotonic clock, kept as :attr:`Pending.started_at`.

        Raises:
            AtStateError: a command is already pending.
            AtCommandError: the command line is malformed (control characters, CR/LF/Ctrl-Z,
                more than one command, too long, not starting with AT).
        """
        if self._pending is not None:
            raise AtStateError("send", "a command is pending; wait for its final result code")
        if isinstance(command, str):
            command = AtCommand.of(command)
        self._pending = Pending(command, now)
        self._draining = None
        return bytes(command)

    def abort_pending(self) -> AtCommand | None:
        """Give up on the pending command (the adapter's timeout); returns it, or None.

        The rest of its response, if it still comes, is discarded (module docstring,
        "Draining").
        """
        pending = self._pending
        if pending is None:
            return None
        self._pending = None
        self._draining = pending.command
        return pending.command

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the port; never raises for anything the modem sends."""
        start = 0
        size = len(data)
        while start < size:
            match = _TERMINATOR.search(data, start)
            end = size if match is None else match.start()
            self._extend(data[start:end])
            if match is None:
                break
            self._end_of_line()
            start = end + 1

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed."""
        if self._events:
            event, cost = self._events.popleft()
            self._queued_bytes -= cost
            return event
        if self._overflow_lines:
            return self._overflow_event()
        return None

    def events(self) -> Iterator[Event]:
        """Every event available now, in order."""
        while (event := self.next_event()) is not None:
            yield event

    # -- framing -------------------------------------------------------------------------------

    def _extend(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._discarding:
            self._discarding += len(chunk)
        elif len(self._partial) + len(chunk) > self._max_line:
            self._discarding = len(self._partial) + len(chunk)
            self._partial.clear()
        else:
            self._partial += chunk

    def _end_of_line(self) -> None:
        if self._discarding:
            length, self._discarding = self._discarding, 0
            self._stats.lines += 1
            self._reject(RejectReason.LINE_TOO_LONG, length)
            return
        line = bytes(self._partial).strip(b" ")
        self._partial.clear()
        if not line:
            return  # the empty halves of <CR><LF> framing
        self._stats.lines += 1
        if _NON_PRINTABLE.search(line):
            self._reject(RejectReason.NON_PRINTABLE, len(line))
            return
        if not self._has_room(len(line)):
            self._overflow(len(line))
            return
        event = self._classify(line.decode("ascii"))
        if isinstance(event, LineRejected):
            self._reject(event.reason, len(line), event.command)
        else:
            self._enqueue(event, len(line) + _EVENT_OVERHEAD_BYTES)

    # -- the URC rule --------------------------------------------------------------------------

    def _classify(self, text: str) -> Event:
        final = _final_result(text)
        pending = self._pending
        if pending is not None:
            return self._classify_pending(pending, text, final)
        prefix = _line_prefix(text)
        draining = self._draining
        if draining is not None:
            if final is not None:
                self._draining = None
                return LineRejected(RejectReason.ABORTED_RESPONSE, 1, len(text), draining)
            if (prefix is None and text not in self._bare_urcs) or (
                prefix in draining.response_prefixes
            ):
                return LineRejected(RejectReason.ABORTED_RESPONSE, 1, len(text), draining)
        if final is not None:
            if final[0] in _CALL_EVENTS:
                return UnsolicitedResult(text, None, True)
            return LineRejected(RejectReason.STRAY_FINAL, 1, len(text))
        return UnsolicitedResult(text, prefix, self._known(text, prefix))

    def _classify_pending(
        self, pending: Pending, text: str, final: tuple[FinalKind, int | None, str | None] | None
    ) -> Event:
        command = pending.command
        if final is not None:
            self._pending = None
            kind, code, detail = final
            if kind is FinalKind.OK and command.echo_setting is not None:
                self._echo_enabled = command.echo_setting
            return FinalResult(kind, command, code, detail)
        if (
            not pending.echo_seen
            and not pending.information_lines
            and text.casefold() == command.text.casefold()
        ):
            self._pending = replace(pending, echo_seen=True)
            return Echo(command)
        prefix = _line_prefix(text)
        if prefix is not None and prefix not in command.response_prefixes:
            return UnsolicitedResult(text, prefix, prefix in self._urc_prefixes)
        if prefix is None and text in self._bare_urcs:
            return UnsolicitedResult(text, None, True)
        if pending.information_lines >= self._max_information_lines:
            self._pending = None
            self._draining = command
            return LineRejected(RejectReason.RESPONSE_TOO_LONG, 1, len(text), command)
        self._pending = replace(pending, information_lines=pending.information_lines + 1)
        return InformationLine(text, prefix, command)

    def _known(self, text: str, prefix: str | None) -> bool:
        if prefix is None:
            return text in self._bare_urcs
        return prefix in self._urc_prefixes

    # -- the bounded queue ---------------------------------------------------------------------

    def _has_room(self, length: int) -> bool:
        """Room for an event of a ``length``-byte line (and the pending overflow report)."""
        reserve = _EVENT_OVERHEAD_BYTES if self._overflow_lines else 0
        return self._queued_bytes + length + _EVENT_OVERHEAD_BYTES + reserve <= self._max_queued

    def _overflow(self, length: int) -> None:
        self._overflow_lines += 1
        self._overflow_bytes += length
        self._stats.rejected[RejectReason.QUEUE_FULL] += 1

    def _overflow_event(self) -> LineRejected:
        event = LineRejected(RejectReason.QUEUE_FULL, self._overflow_lines, self._overflow_bytes)
        self._overflow_lines = 0
        self._overflow_bytes = 0
        return event

    def _enqueue(self, event: Event, cost: int) -> None:
        if self._overflow_lines:
            overflow = self._overflow_event()
            self._events.append((overflow, _EVENT_OVERHEAD_BYTES))
            self._queued_bytes += _EVENT_OVERHEAD_BYTES
        self._events.append((event, cost))
        self._queued_bytes += cost

    def _reject(self, reason: RejectReason, length: int, command: AtCommand | None = None) -> None:
        """Count a rejected line, merging it into the last queued rejection when alike."""
        if command is None and reason is not RejectReason.STRAY_FINAL:
            command = self._pending.command if self._pending else self._draining
        if self._events and not self._overflow_lines:
            last, cost = self._events[-1]
            if isinstance(last, LineRejected) and last.reason is reason and last.command is command:
                self._events[-1] = (
                    LineRejected(reason, last.lines + 1, last.length_bytes + length, command),
                    cost,
                )
                self._stats.rejected[reason] += 1
                return
        if not self._has_room(0):
            self._overflow(length)
            return
        self._stats.rejected[reason] += 1
        self._enqueue(LineRejected(reason, 1, length, command), _EVENT_OVERHEAD_BYTES)
