"""Logging for the hub: structlog, one JSON object a line, and a last line of defence against PHI.

Callers log snake_case event names with bound context (``device``, ``seq``) and never payloads.
Because a mistake there would leak protected health information into the journal, the
processor chain also *scrubs*: any string that looks like a full Bluetooth address is cut to
its last two octets, and keys that must never be logged (``value``, ``payload``, ``patient``,
``key`` …) are replaced by ``"<redacted>"``, at any depth of nested dicts, lists and tuples;
exceptions and tracebacks are scrubbed like any other text. The suite plants canaries and
scans every log for them (tests/phi_canaries.py).

Libraries that log through the standard library (bumble, paho) go through the same chain
(:class:`structlog.stdlib.ProcessorFormatter`): the journal gets one JSON stream, each line
with ``level``, ``timestamp``, ``logger`` and ``event``. A record's ``%``-arguments are
scrubbed before the message is formatted (bytes become their length, containers lose their
redacted keys), loggers created later or with ``propagate=False`` and no handler of their
own come out the same way (:data:`logging.lastResort` is the hub's handler), and so do
:mod:`warnings`. A record that cannot be formatted is one scrubbed line, never logging's raw
"--- Logging error ---" dump of its arguments.

Values the hub knows to be identifying but that have no telltale form (the patient's id) are
registered with :func:`protect` and replaced in every line, whatever field or library
message carries them.

**Crash output** goes through the same chain: :func:`configure` installs ``sys.excepthook``,
``threading.excepthook`` and ``sys.unraisablehook`` (where nobody else, such as a test
runner, installed one), so an unhandled exception is one ``unhandled_exception`` line with
the scrubbed traceback (tracebacks show code, never local values), not Python's raw dump.

**journald**: when the stream is the journal's (``$JOURNAL_STREAM`` names its device and
inode, systemd.exec(5)), each line starts with its syslog priority, ``<3>{...}`` for an
error, which journald takes off and keeps as the entry's priority (``SyslogLevelPrefix=``,
on by default): ``journalctl -p err`` then works; the rest of the line stays JSON.

Floods are cut: per (logger, event, level) at most :data:`RATE_ALLOWANCES` lines pass in a
:data:`RATE_WINDOW_S` window; the rest are counted and reported as one
``log_lines_suppressed`` line when the window rolls over (:class:`RateLimiter`).

**Broad ``except Exception`` sites** must keep the traceback, so that a bug is not a silent
reconnect loop: log with ``exc_info`` and the exception's type name, never ``str(exc)``
alone::

    except Exception as exc:  # noqa: BLE001 - ...
        log.error("uplink_reader_failed", error=type(exc).__name__, exc_info=exc)

(``exc_info=True`` inside the ``except`` block, or ``log.exception(...)``, work the same).
The traceback is rendered into the line's ``exception`` field and scrubbed with the rest.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_MAC_TAIL_RE: Final = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[:_-]){4}([0-9A-Fa-f]{2}[:_-][0-9A-Fa-f]{2})(?![0-9A-Fa-f])"
)
"""A full Bluetooth address, its octets joined by ``:``, ``-`` or ``_`` (BlueZ's object paths:
``/org/bluez/hci0/dev_F0_CA_7A_00_12_34``, which a library may log)."""

#: Keys whose values are never written, whatever a caller passes, at any depth.
REDACTED_KEYS: Final = frozenset(
    {
        "value",
        "values",
        "payload",
        "body",
        "data",
        "reading",
        "patient",
        "patient_id",
        "address",
        "key",
        "secret",
        "password",
        "identifier",
        "fhir",
    }
)

REDACTED: Final = "<redacted>"

SCRUB_DEPTH_MAX: Final = 8
"""Nesting levels the scrubber descends; deeper values are replaced, not written. Log context
is flat or one level deep; eight is far past that and bounds the work on a cyclic value."""

STDLIB_LEVEL: Final = logging.WARNING
"""Floor for libraries logging through the standard library: their debug and info output can
carry addresses and payload bytes, and is not the hub's to show."""

RATE_WINDOW_S: Final = 60.0
"""Rate-limit window: a flooding (logger, event, level) shows its allowance once a minute, and
its count of suppressed lines at most a minute late."""

RATE_ALLOWANCES: Final[Mapping[str, int]] = {"warning": 10, "error": 50, "critical": 50}
"""Lines per key and window that pass. 10 warnings a minute say that something repeats; the
summary says how often. Errors get more room (each may be a different failure's first line)
but are still counted, never silently dropped. Debug and info are not limited: they are the
hub's own and filtered by level."""

RATE_KEYS_MAX: Final = 1024
"""Keys the limiter remembers. Events are constants and library messages are keyed by their
template, so 1,024 is many times the keys a hub produces; past it the oldest window is closed
(its summary emitted first), so memory stays bounded and nothing is dropped uncounted."""

SUMMARY_EVENT: Final = "log_lines_suppressed"


def device_label(address: str) -> str:
    """Short, non-identifying label of a Bluetooth address: its last two octets (``..:3C:4D``)."""
    parts = address.split(":")
    return "..:" + ":".join(parts[-2:]) if len(parts) == 6 else "..?"


PROTECTED_MAX: Final = 64
"""Values :func:`protect` keeps: a hub's patient id, its devices' serials and a few more; a
bound so that a caller in a loop cannot grow the pattern every line is matched against."""

PROTECTED_MIN_CHARS: Final = 4
"""Shorter values are not taken: redacting "12" everywhere would wreck every line."""

PROTECTED_MAX_CHARS: Final = 256

_protected: re.Pattern[str] | None = None
_protected_values: list[str] = []
_protected_lock = threading.Lock()


def protect(values: Iterable[str]) -> None:
    """Redact each of ``values`` (case-insensitive) wherever it appears in any later line.

    For identifying values with no telltale form, known at start: the patient's id from the
    configuration, a device's serial number once read. Values shorter than
    :data:`PROTECTED_MIN_CHARS` or longer than :data:`PROTECTED_MAX_CHARS` are ignored, and
    past :data:`PROTECTED_MAX` values the oldest is forgotten.
    """
    global _protected
    with _protected_lock:
        for value in values:
            if PROTECTED_MIN_CHARS <= len(value) <= PROTECTED_MAX_CHARS:
                if value in _protected_values:
                    continue
                _protected_values.append(value)
                del _protected_values[:-PROTECTED_MAX]
        longest_first = sorted(_protected_values, key=len, reverse=True)
        _protected = (
            re.compile("|".join(map(re.escape, longest_first)), re.IGNORECASE)
            if longest_first
            else None
        )


def forget_protected() -> None:
    """Forget every value given to :func:`protect` (a process starting over: tests)."""
    global _protected
    with _protected_lock:
        _protected_values.clear()
        _protected = None


def scrub_text(text: str) -> str:
    """Cut every full Bluetooth address in ``text`` down to its last two octets, and replace
    every value given to :func:`protect`."""
    text = _MAC_TAIL_RE.sub(lambda m: "..:" + re.sub("[_-]", ":", m.group(1)).upper(), text)
    protected = _protected
    return protected.sub(REDACTED, text) if protected is not None else text


def scrub_value(value: Any, depth: int = 0) -> Any:
    """``value`` made safe to write: addresses cut in every string, redacted keys replaced, at
    every level of dicts, lists, tuples and sets; exceptions and other objects become their
    scrubbed text; bytes become their length (never their content)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if depth >= SCRUB_DEPTH_MAX:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {
            scrub_text(str(k)): REDACTED if k in REDACTED_KEYS else scrub_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, BaseException):
        return scrub_text(f"{type(value).__name__}: {_safe_str(value)}")
    return scrub_text(_safe_repr(value))


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def _drop_meta(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Processor: remove the stdlib bridge's ``_record`` and ``_from_structlog`` when present
    (structlog's own ``remove_processors_meta`` insists on them)."""
    event.pop("_record", None)
    event.pop("_from_structlog", None)
    return event


def _scrub(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Processor: :func:`scrub_value` over every field (after tracebacks are rendered)."""
    for key in list(event):
        event[key] = REDACTED if key in REDACTED_KEYS else scrub_value(event[key])
    return event


# ---------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    """One key's current window: when it started, lines passed and lines suppressed."""

    start: float
    passed: int = 0
    suppressed: int = 0


_Key = tuple[str, str, str]  # (logger, event or message template, level)
_KEY_TEXT_MAX: Final = 200
"""Characters of an event kept in a key: bounds the limiter's memory per key."""


class RateLimiter:
    """Processor: per (logger, event, level), the first ``allowances[level]`` lines of each
    ``window_s`` window pass; later ones are dropped (:class:`structlog.DropEvent`) and counted.

    When a key's window has ended, the next log line of *any* key (or :meth:`flush`) first
    emits, through ``emit``, one ``log_lines_suppressed`` event with the count, at the level
    of the lines it counts. Library records are keyed by their message template (``"%s"``
    unfilled) with numbers blanked, so a flood whose arguments vary is still one key.
    Windows are kept oldest first; past ``max_keys`` the oldest is closed early. Thread-safe.

    Args:
        clock: monotonic seconds (injected by tests).
        emit: where summaries go (:func:`configure` renders and writes them).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[EventDict], None] | None = None,
        window_s: float = RATE_WINDOW_S,
        allowances: Mapping[str, int] = RATE_ALLOWANCES,
        max_keys: int = RATE_KEYS_MAX,
    ) -> None:
        self.clock = clock
        self.emit = emit
        self.window_s = window_s
        self.allowances = dict(allowances)
        self.max_keys = max_keys
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()  # oldest window first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        level = str(event.get("level", _method))
        allowance = self.allowances.get(level)
        now = self.clock()
        with self._lock:
            due = self._close_ended(now)  # on every line: summaries are not held back
        self._emit(due)
        if allowance is None:
            return event
        key = (_logger_name(event), _event_key(event), level)
        with self._lock:
            due = []
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self.max_keys:
                    due.append(self._windows.popitem(last=False))
                window = self._windows[key] = _Window(now)
            drop = window.passed >= allowance
            if drop:
                window.suppressed += 1
            else:
                window.passed += 1
        self._emit(due)
        if drop:
            raise structlog.DropEvent
        return event

    def flush(self) -> None:
        """Emit the summary of every window with suppressed lines, and forget all windows."""
        with self._lock:
            due = list(self._windows.items())
            self._windows.clear()
        self._emit(due)

    def _close_ended(self, now: float) -> list[tuple[_Key, _Window]]:
        due: list[tuple[_Key, _Window]] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.start < self.window_s:
                break
            self._windows.popitem(last=False)
            due.append((key, window))
        return due

    def _emit(self, due: list[tuple[_Key, _Window]]) -> None:
        if self.emit is None:
            return
        for (logger, event, level), window in due:
            if window.suppressed:
                self.emit(
                    {
                        "event": SUMMARY_EVENT,
                        "level": level,
                        "logger": __name__,
                        "suppressed": window.suppressed,
                        "of_logger": logger,
                        "of_event": event,
                        "passed": window.passed,
                        "window_s": self.window_s,
                    }
                )


def _logger_name(event: EventDict) -> str:
    name = event.get("logger")
    return name if isinstance(name, str) else ""


_NUMBER_RE: Final = re.compile(r"\b(?:0[xX])?[0-9A-Fa-f]*[0-9][0-9A-Fa-f]*")
"""A number, decimal or hex (``18``, ``0x0012``, ``3C``): what varies between lines of a
flood whose message was formatted before it reached us."""


def _event_key(event: EventDict) -> str:
    """A library record's message template with its numbers blanked (a filter may have
    formatted it already, as hil/virtual_radio.py does), else the event name."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord) and not event.get("_from_structlog"):
        text = record.msg if isinstance(record.msg, str) else _safe_str(record.msg)
        return _NUMBER_RE.sub("#", text[: 2 * _KEY_TEXT_MAX])[:_KEY_TEXT_MAX]
    return _safe_str(event.get("event"))[:_KEY_TEXT_MAX]


# ---------------------------------------------------------------------------
# Output: one lock, one stream, for structlog's own lines and the standard library's
# ---------------------------------------------------------------------------


class _LineSink:
    """Writes whole lines to the stream under one lock (both logging paths share it)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.RLock()

    def write(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class _LineLogger:
    """The logger structlog renders into: a name (for ``logger``) and the shared sink."""

    def __init__(self, sink: _LineSink, name: str) -> None:
        self.name = name
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


@dataclass(frozen=True, slots=True)
class _LineLoggerFactory:
    sink: _LineSink

    def __call__(self, *args: Any) -> _LineLogger:
        return _LineLogger(self.sink, str(args[0]) if args else "homehub")


SYSLOG_PRIORITIES: Final[Mapping[str, int]] = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "error": 3,
    "critical": 2,
}
"""syslog(3) priorities by level name, the ``<N>`` prefix journald reads (sd-daemon(3))."""


def writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to the journal: ``$JOURNAL_STREAM`` (``<dev>:<inode>``,
    set by systemd for a unit's stdout/stderr, systemd.exec(5)) names its file."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a StringIO, closed)
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


@dataclass(frozen=True, slots=True)
class _LineRenderer:
    """Processor, the last: the event as one JSON line, with its syslog priority in front
    (``<3>``) when the lines go to the journal."""

    journal: bool
    json: structlog.processors.JSONRenderer = dataclasses.field(
        default_factory=lambda: structlog.processors.JSONRenderer(sort_keys=False)
    )

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str:
        line = self.json(logger, method, event)
        text = line if isinstance(line, str) else line.decode()
        if not self.journal:
            return text
        return f"<{SYSLOG_PRIORITIES.get(str(event.get('level')), 6)}>{text}"


def _scrub_arg(value: Any) -> Any:
    """A ``%``-argument made safe before it is formatted: bytes become their length and
    containers lose their redacted keys (their text would no longer tell keys from values);
    anything else is formatted as the library meant and scrubbed with the whole message."""
    if isinstance(value, bytes | bytearray | memoryview | Mapping | list | tuple | set | frozenset):
        return scrub_value(value)
    return value


def _scrubbed_record(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` with its arguments scrubbed (the caller's record is left as is)."""
    args = record.args
    if not args:
        return record
    copy = logging.makeLogRecord(record.__dict__)
    if isinstance(args, Mapping):
        copy.args = {k: REDACTED if k in REDACTED_KEYS else _scrub_arg(v) for k, v in args.items()}
    else:
        copy.args = tuple(_scrub_arg(v) for v in args)
    return copy


class _JsonLineHandler(logging.Handler):
    """A stdlib handler writing what its :class:`ProcessorFormatter` renders to the sink; a
    record the rate limiter drops is not written; arguments are scrubbed before formatting."""

    def __init__(self, sink: _LineSink, formatter: logging.Formatter, render: Processor) -> None:
        super().__init__()
        self._sink = sink
        self._render = render
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(_scrubbed_record(record))
        except structlog.DropEvent:
            return
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        self._sink.write(line)

    def handleError(self, record: logging.LogRecord) -> None:
        """One scrubbed line naming the logger and the template, in place of logging's own
        report, which prints the record's arguments raw to stderr."""
        error = sys.exc_info()[0]
        event: EventDict = {
            "event": "log_record_unformattable",
            "level": "error",
            "logger": __name__,
            "of_logger": record.name,
            "template": _safe_str(record.msg)[:_KEY_TEXT_MAX],
            "error": error.__name__ if error is not None else None,
        }
        with contextlib.suppress(Exception):  # the stream itself failed: nothing left to tell
            line = self._render(None, "error", _scrub(None, "error", event))
            self._sink.write(line if isinstance(line, str) else str(line))


_limiter: RateLimiter | None = None


def configure(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> RateLimiter:
    """Set up logging for the process: JSON lines on ``stream`` (stderr: journald takes it).

    structlog's events and the standard library's records (bumble, paho; ``WARNING`` and up)
    share the processors, the scrubbing and the rate limiter (returned; ``clock`` is its time
    source). Pending suppression counts are flushed at exit (:func:`flush_suppressed`).
    """
    global _limiter
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream or sys.stderr
    sink = _LineSink(out)
    renderer = _LineRenderer(journal=writes_to_journal(out))
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def emit_summary(event: EventDict) -> None:
        sink.write(renderer(None, "", _scrub(None, "", stamp(None, "", event))))

    limiter = RateLimiter(clock=clock, emit=emit_summary)
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        stamp,
    ]
    tail: list[Processor] = [
        limiter,  # before rendering tracebacks: a dropped line costs nothing more
        _drop_meta,
        structlog.processors.format_exc_info,
        _scrub,
        renderer,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LineLoggerFactory(sink),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=tail)
    handler = _JsonLineHandler(sink, formatter, renderer)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(STDLIB_LEVEL, numeric))
    # A logger with propagate=False and no handler of its own ends at lastResort, which
    # would write the bare message to stderr: it is the hub's handler too.
    handler.setLevel(max(STDLIB_LEVEL, numeric))
    logging.lastResort = handler
    logging.captureWarnings(True)  # warnings.warn(): a "py.warnings" record, not raw text
    _install_hooks()
    _limiter = limiter
    return limiter


# ---------------------------------------------------------------------------
# Crash output: unhandled exceptions through the same chain
# ---------------------------------------------------------------------------

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info(
    exc_type: type[BaseException], value: BaseException | None, tb: TracebackType | None
) -> _ExcInfo:
    """An exception triple with a value (a hook may be handed none)."""
    return (exc_type, value if value is not None else BaseException(exc_type.__name__), tb)


def _log_unhandled(
    event: str, exc_info: _ExcInfo, *, level: int = logging.CRITICAL, **fields: Any
) -> None:
    """One line with the scrubbed traceback; if even that fails, the type alone."""
    try:
        structlog.get_logger(__name__).log(
            level, event, error=exc_info[0].__name__, exc_info=exc_info, **fields
        )
    except Exception:  # noqa: BLE001 - a hook must not raise; and never print the raw dump
        with contextlib.suppress(Exception):
            sys.__stderr__.write(f"{event}: {exc_info[0].__name__}\n")  # type: ignore[union-attr]


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook``: an exception that ended the main thread."""
    _log_unhandled("unhandled_exception", (exc_type, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: an exception that ended a thread (SystemExit is not one)."""
    if issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else None
    _log_unhandled(
        "thread_exception_unhandled",
        _exc_info(args.exc_type, args.exc_value, args.exc_traceback),
        thread=thread,
    )


def _unraisablehook(unraisable: Any) -> None:
    """``sys.unraisablehook``: an exception in a finalizer (``__del__``) or a callback."""
    message = unraisable.err_msg or "Exception ignored in"
    _log_unhandled(
        "exception_unraisable",
        _exc_info(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
        level=logging.ERROR,  # the program goes on; the finalizer's work may not have
        during=_safe_str(message)[:_KEY_TEXT_MAX],
    )


_HOOKS: Final = (
    (sys, "excepthook", sys.__excepthook__, _excepthook),
    (threading, "excepthook", threading.__excepthook__, _thread_excepthook),
    (sys, "unraisablehook", sys.__unraisablehook__, _unraisablehook),
)


def _install_hooks() -> None:
    """Route unhandled exceptions through the chain, where Python's own hook is in place;
    one someone else installed (a test runner's, a debugger's) is theirs and is kept."""
    for module, name, default, ours in _HOOKS:
        if getattr(module, name) is default:
            setattr(module, name, ours)


def flush_suppressed() -> None:
    """Write the pending ``log_lines_suppressed`` summaries now (at shutdown; also at exit)."""
    if _limiter is not None:
        with contextlib.suppress(ValueError, OSError):  # the stream may be closed by then
            _limiter.flush()


atexit.register(flush_suppressed)
