"""Logging for the hub: structlog, one JSON object a line, and a last line of defence against PHI.

Callers log snake_case event names with bound context (``device``, ``seq``) and never payloads.
Because a mistake there would leak protected health information into the journal, the
processor chain also *scrubs*: any string that looks like a full Bluetooth address is cut to
its last two octets, and keys that must never be logged (``value``, ``payload``, ``patient``,
``key`` …) are replaced by ``"<redacted>"``. The suite plants canaries and scans every log
for them (tests/test_phi_canaries.py).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

_MAC_TAIL_RE: Final = re.compile(r"\b(?:[0-9A-Fa-f]{2}[:-]){4}([0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2})\b")

#: Keys whose values are never written, whatever a caller passes.
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


def device_label(address: str) -> str:
    """Short, non-identifying label of a Bluetooth address: its last two octets (``..:3C:4D``)."""
    parts = address.split(":")
    return "..:" + ":".join(parts[-2:]) if len(parts) == 6 else "..?"


def scrub_text(text: str) -> str:
    """Cut every full Bluetooth address in ``text`` down to its last two octets."""
    return _MAC_TAIL_RE.sub(lambda m: "..:" + m.group(1).replace("-", ":").upper(), text)


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key in REDACTED_KEYS:
            event[key] = "<redacted>"
            continue
        v = event[key]
        if isinstance(v, str):
            event[key] = scrub_text(v)
    return event


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the process: JSON lines on ``stream`` (stderr: journald takes it)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through stdlib logging (bumble, paho) go to the same place, at
    # WARNING and above only: their debug output can carry addresses and payload bytes.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_ScrubbingFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


class _ScrubbingFormatter(logging.Formatter):
    """A stdlib formatter that applies :func:`scrub_text` to the finished line."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))
