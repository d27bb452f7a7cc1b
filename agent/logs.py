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
with ``level``, ``timestamp``, ``logger`` and ``event``.

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
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_MAC_TAIL_RE: Final = re.compile(r"\b(?:[0-9A-Fa-f]{2}[:-]){4}([0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2})\b")

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


def scrub_text(text: str) -> str:
    """Cut every full Bluetooth address in ``text`` down to its last two octets."""
    return _MAC_TAIL_RE.sub(lambda m: "..:" + m.group(1).replace("-", ":").upper(), text)


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


class _JsonLineHandler(logging.Handler):
    """A stdlib handler writing what its :class:`ProcessorFormatter` renders to the sink; a
    record the rate limiter drops is not written."""

    def __init__(self, sink: _LineSink, formatter: logging.Formatter) -> None:
        super().__init__()
        self._sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except structlog.DropEvent:
            return
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        self._sink.write(line)


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
    sink = _LineSink(stream or sys.stderr)
    renderer = structlog.processors.JSONRenderer(sort_keys=False)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def emit_summary(event: EventDict) -> None:
        line = renderer(None, "", _scrub(None, "", stamp(None, "", event)))
        sink.write(line if isinstance(line, str) else line.decode())

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
    root = logging.getLogger()
    root.handlers[:] = [_JsonLineHandler(sink, formatter)]
    root.setLevel(max(STDLIB_LEVEL, numeric))
    _limiter = limiter
    return limiter


def flush_suppressed() -> None:
    """Write the pending ``log_lines_suppressed`` summaries now (at shutdown; also at exit)."""
    if _limiter is not None:
        with contextlib.suppress(ValueError, OSError):  # the stream may be closed by then
            _limiter.flush()


atexit.register(flush_suppressed)
