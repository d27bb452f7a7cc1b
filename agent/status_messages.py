"""The hub's status and event messages (docs/platform-protocol.md, "Status and events").

Sans-I/O: the values in, one signed COSE_Sign1 out. :mod:`agent.platform_link` decides when
to send them and signs them on the storage thread (the hub's key may live in a PKCS#11 token).

``status`` (:data:`STATUS_CONTENT_TYPE`, retained where the profile keeps retained messages)::

    {"v": 1, "hub": <hub id>, "iat": uint, "state": "online" | "offline",
     ; online only:
     "pending": uint, "refused": uint, "damaged": uint,
     "oldest_age_s": uint,            ; absent when nothing is pending
     "awaiting_receipt": uint,
     "budget": tstr,                  ; absent while the hub has no byte budget state
     "dictionaries": [uint, ...]}     ; the dictionaries the hub compresses with (announced
                                      ; by the platform and shipped with the hub), ascending

The last will is the ``offline`` status: only ``v``, ``hub``, ``iat``, ``state``.

``events`` (:data:`EVENT_CONTENT_TYPE`)::

    {"v": 1, "hub": <hub id>, "iat": uint, "event": tstr, <the event's small fixed fields>}

=======================  ==================================================================
event                    fields
=======================  ==================================================================
``storage_critical``     ``level``: ``"critical"`` (90 % of the quota) or ``"full"``
``battery_low``          ``device``: the log label (last two address octets), ``kind``,
                         ``battery_pct``
``clock_unsynced``       ``check``: ``"implausible"`` (the hub's clock is before its floor) or
                         ``"network_time"`` (more than 15 min from the cellular network's)
``security``             ``source`` (``device``, ``receipt``, ``command``), ``check``
``outbox_quarantined``   ``what``: ``"file"`` (a corrupt outbox moved aside) or ``"records"``
                         (records set aside as damaged), ``count``
=======================  ==================================================================

Neither message carries PHI: no reading value, no patient id, no full device address, no
text from a platform message; every text field is one of a fixed set of short codes or a
label the hub's logs show anyway. :func:`build_event` refuses fields not in the table.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import cbor2

from agent import cose
from agent.commands import ReplySigner

STATUS_CONTENT_TYPE: Final = "application/vnd.homehub.status+cbor"
EVENT_CONTENT_TYPE: Final = "application/vnd.homehub.event+cbor"
PROTOCOL_VERSION: Final = 1

MAX_FIELD_TEXT: Final = 64
"""An event's text field: a short code or a label; nothing longer is sent."""


class HubState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class EventKind(StrEnum):
    """The alarms of docs/platform-protocol.md."""

    STORAGE_CRITICAL = "storage_critical"
    BATTERY_LOW = "battery_low"
    CLOCK_UNSYNCED = "clock_unsynced"
    SECURITY = "security"
    OUTBOX_QUARANTINED = "outbox_quarantined"


EVENT_FIELDS: Final[Mapping[EventKind, frozenset[str]]] = {
    EventKind.STORAGE_CRITICAL: frozenset({"level"}),
    EventKind.BATTERY_LOW: frozenset({"device", "kind", "battery_pct"}),
    EventKind.CLOCK_UNSYNCED: frozenset({"check"}),
    EventKind.SECURITY: frozenset({"source", "check"}),
    EventKind.OUTBOX_QUARANTINED: frozenset({"what", "count"}),
}
"""Exactly the fields each event carries (the table in the module docstring)."""


@dataclass(frozen=True, slots=True)
class HubStatus:
    """What an ``online`` status reports."""

    pending: int
    refused: int
    damaged: int
    oldest_age_s: float | None
    awaiting_receipt: int
    budget: str | None = None
    dictionaries: tuple[int, ...] = ()
    modem: Mapping[str, str | int | float | None] | None = None
    """The cellular link's figures (:data:`MODEM_STATUS_KEYS`), None without a modem."""


MODEM_STATUS_KEYS: Final = (
    "registration",
    "technology",
    "band",
    "rsrp_dbm",
    "rsrq_db",
    "sinr_db",
    "rssi_dbm",
    "last_recovery",
)
"""What of ``homehub modem status`` the status message carries: the link's health only. Not
the IMEI or ICCID (identifiers), nor the cell id and tracking area (they locate the patient's
home), nor the IP address."""


def modem_figures(figures: Mapping[str, object]) -> dict[str, str | int | float | None]:
    """:data:`MODEM_STATUS_KEYS` of a :meth:`agent.modem.status.ModemStatus.to_dict`, with
    ``last_recovery`` reduced to its step."""
    out: dict[str, str | int | float | None] = {}
    for name in MODEM_STATUS_KEYS:
        value = figures.get(name)
        if name == "last_recovery":
            value = value.get("step") if isinstance(value, Mapping) else None
        out[name] = value if isinstance(value, str | int | float) else None
    return out


@dataclass(frozen=True, slots=True)
class Event:
    """One alarm. ``source`` says who raised it (a device label, ``receipt``...): the rate
    limit is per ``(kind, source)``; it is not sent unless it is also one of ``fields``."""

    kind: EventKind
    source: str
    fields: Mapping[str, int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_event_fields(self.kind, self.fields)


def check_event_fields(kind: EventKind, fields: Mapping[str, int | str]) -> None:
    """Raise ``ValueError`` unless ``fields`` are exactly ``kind``'s, each a small uint or a
    short text."""
    if set(fields) != EVENT_FIELDS[kind]:
        raise ValueError(f"{kind.value}: fields are not exactly {sorted(EVENT_FIELDS[kind])}")
    for name, value in fields.items():
        if type(value) is int:
            if not 0 <= value < 2**32:
                raise ValueError(f"{kind.value}.{name}: not a uint32")
        elif not isinstance(value, str) or len(value) > MAX_FIELD_TEXT:
            raise ValueError(f"{kind.value}.{name}: not a text of at most {MAX_FIELD_TEXT}")


def status_body(hub_id: str, iat: int, status: HubStatus | None) -> dict[str, object]:
    """The status map: ``online`` with ``status``, ``offline`` (the last will) without."""
    body: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "hub": hub_id,
        "iat": _uint(iat, "iat"),
        "state": (HubState.ONLINE if status is not None else HubState.OFFLINE).value,
    }
    if status is None:
        return body
    body["pending"] = _uint(status.pending, "pending")
    body["refused"] = _uint(status.refused, "refused")
    body["damaged"] = _uint(status.damaged, "damaged")
    if status.oldest_age_s is not None:
        body["oldest_age_s"] = max(0, round(status.oldest_age_s))
    body["awaiting_receipt"] = _uint(status.awaiting_receipt, "awaiting_receipt")
    if status.budget is not None:
        body["budget"] = status.budget
    body["dictionaries"] = sorted(set(status.dictionaries))
    if status.modem is not None:
        body["modem"] = dict(status.modem)
    return body


def build_status(*, hub_id: str, iat: int, status: HubStatus | None, signer: ReplySigner) -> bytes:
    """The signed status message (``offline`` when ``status`` is None: the last will)."""
    payload = cbor2.dumps(status_body(hub_id, iat, status), canonical=True)
    return cose.sign1_with(payload, signer.sign, signer.kid, STATUS_CONTENT_TYPE)


def event_body(hub_id: str, iat: int, event: Event) -> dict[str, object]:
    body: dict[str, object] = dict(event.fields)
    body.update({"v": PROTOCOL_VERSION, "hub": hub_id, "iat": _uint(iat, "iat")})
    body["event"] = event.kind.value
    return body


def build_event(*, hub_id: str, iat: int, event: Event, signer: ReplySigner) -> bytes:
    """The signed event message."""
    payload = cbor2.dumps(event_body(hub_id, iat, event), canonical=True)
    return cose.sign1_with(payload, signer.sign, signer.kid, EVENT_CONTENT_TYPE)


EVENT_INTERVAL_S: Final = 3600.0
"""At most one event per ``(kind, source)`` an hour: an alarm that keeps firing (a disk that
stays critical, a platform sending forged receipts all day) costs a metered SIM one small
message an hour, not one per occurrence."""

BATTERY_INTERVAL_S: Final = 86_400.0
"""``battery_low`` at most once per device a day."""

EVENT_QUEUE_MAX: Final = 32
"""Events waiting to be signed and sent (while offline, say). When full, a new event is
dropped and counted: events are best effort, never a reason to hold anything up."""


class EventGate:
    """Which events go out: at most one per ``(kind, source)`` per interval, at most
    :data:`EVENT_QUEUE_MAX` waiting (sans-I/O; the caller supplies the monotonic time).

    Events are best effort: the queue is memory only (a crash loses what waits), a full
    queue drops the newest, and an event dropped by the rate limit is only counted.
    """

    def __init__(
        self,
        *,
        interval_s: float = EVENT_INTERVAL_S,
        intervals: Mapping[EventKind, float] | None = None,
        queue_max: int = EVENT_QUEUE_MAX,
    ) -> None:
        self._interval_s = interval_s
        self._intervals = dict(intervals or {EventKind.BATTERY_LOW: BATTERY_INTERVAL_S})
        self._queue: collections.deque[Event] = collections.deque()
        self._queue_max = queue_max
        self._last: dict[tuple[EventKind, str], float] = {}
        self.limited = 0
        """Events not queued because one like it went out within the interval."""
        self.dropped = 0
        """Events not queued because the queue was full."""

    def offer(self, event: Event, now: float) -> bool:
        """Queue ``event`` unless the rate limit or the bound says no; whether queued."""
        key = (event.kind, event.source)
        last = self._last.get(key)
        if last is not None and now - last < self._intervals.get(event.kind, self._interval_s):
            self.limited += 1
            return False
        if len(self._queue) >= self._queue_max:
            self.dropped += 1
            return False
        if len(self._last) >= 4 * self._queue_max:  # bounded: forget the stale ones
            horizon = max(self._intervals.values(), default=0.0)
            horizon = max(horizon, self._interval_s)
            kept = sorted(
                ((t, k) for k, t in self._last.items() if now - t < horizon), reverse=True
            )[: 2 * self._queue_max]
            self._last = {k: t for t, k in kept}
        self._last[key] = now
        self._queue.append(event)
        return True

    def take(self) -> Event | None:
        """The oldest queued event, or None."""
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


def _uint(value: int, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int")
    return value


__all__ = [
    "BATTERY_INTERVAL_S",
    "EVENT_CONTENT_TYPE",
    "EVENT_FIELDS",
    "EVENT_INTERVAL_S",
    "EVENT_QUEUE_MAX",
    "STATUS_CONTENT_TYPE",
    "Event",
    "EventGate",
    "EventKind",
    "HubState",
    "HubStatus",
    "build_event",
    "build_status",
    "check_event_fields",
    "event_body",
    "status_body",
]
