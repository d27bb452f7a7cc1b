"""The daily byte budget of a metered uplink (issue 9, "Affordable on a metered SIM"), sans-I/O.

``[mqtt] daily_budget_bytes`` (0: no budget) bounds what *backfill* may cost per UTC day:
the publisher asks :meth:`ByteBudget.allows` before it sends a backfill envelope and
charges every envelope it hands to the uplink, fresh ones included (:meth:`ByteBudget.charge`).
A fresh reading never waits for the budget; it still counts, so a day of many fresh readings
leaves less for backfill. At the budget, backfill pauses (``budget_paused``) until the next
UTC day (``budget_resumed``); a backfill envelope is sent only when its whole cost fits what
is left, so backfill alone never takes the day's count past the budget.

What is counted: the MQTT payload (the envelope's bytes) plus :func:`overhead_bytes`, an
estimate of what the payload costs on the wire besides itself, both directions, IPv4 over TLS
1.3 (measured for keepalives by hil/bench/idle_link.py: 52 B of TCP/IP header per segment
with timestamps, 22 B per TLS record):

- the PUBLISH: fixed header and remaining length (4), topic ``homehub/v1/<hub>/readings``
  (2 + 40 for a long hub id), packet identifier (2), property length (1): 49 B;
- TLS: one record (5 header + 1 content type + 16 AEAD tag = 22 B) per 16 KiB of payload;
- TCP/IP: 52 B per segment of at most 1,448 B (MSS on a 1,500 B path), and the peer's ACK,
  52 B for every second segment (delayed ACK);
- the PUBACK: 4 B of MQTT in a 22 B TLS record in one 52 B segment, and our ACK of it: 130 B.

So a 657 B compressed single costs 657 + 305 B, a 10 kB batch 10,000 + 773 B. Not counted:
receipts (one ~300 B message per up to 1,000 envelopes, gathered by the platform), keepalives
(hil/bench/idle_link.py: 204 B each), TLS handshakes and retransmissions of lost segments. An
envelope sent again (after a lost connection or a receipt timeout) is charged again: it is
sent again.

With a cellular module whose data counters the link manager reads (Quectel +QGDCNT and
+QGDNRCNT: every byte the module carried, the hub's and the operating system's alike), the
day's count is the larger of what was charged and what the module counted
(:meth:`ByteBudget.note_link_bytes`): the budget then also sees what the estimate leaves out
(keepalives, handshakes, retransmissions, a system update), as the SIM's bill does.

The state (UTC day, bytes used) is small and the publisher persists it in the outbox's sync
state at most every :data:`PERSIST_EVERY_S` and when backfill pauses (:meth:`to_bytes`,
:meth:`from_bytes`): a restart loses at most that long's count, never a day's.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Final

DAY_S: Final = 86_400
PUBLISH_HEADER_BYTES: Final = 49
TLS_RECORD_BYTES: Final = 22
TLS_RECORD_PAYLOAD_MAX: Final = 16 * 1024
SEGMENT_HEADER_BYTES: Final = 52
SEGMENT_PAYLOAD_MAX: Final = 1448
PUBACK_ROUND_BYTES: Final = 4 + TLS_RECORD_BYTES + 2 * SEGMENT_HEADER_BYTES
PERSIST_EVERY_S: Final = 300.0
"""The publisher writes the budget's state at most this often while sending (and when
backfill pauses): a crash forgets at most this long's bytes."""

_STATE: Final = struct.Struct(">IQ")
"""Persisted state: UTC day number (uint32), bytes used that day (uint64)."""


def overhead_bytes(payload_bytes: int) -> int:
    """The estimated wire bytes of one QoS 1 publish of ``payload_bytes`` besides the payload
    (see the module docstring)."""
    if payload_bytes < 0:
        raise ValueError("payload_bytes must be >= 0")
    message = PUBLISH_HEADER_BYTES + payload_bytes
    records = max(1, math.ceil(message / TLS_RECORD_PAYLOAD_MAX))
    wire = message + records * TLS_RECORD_BYTES
    segments = max(1, math.ceil(wire / SEGMENT_PAYLOAD_MAX))
    acks = math.ceil(segments / 2)
    return (
        PUBLISH_HEADER_BYTES
        + records * TLS_RECORD_BYTES
        + (segments + acks) * SEGMENT_HEADER_BYTES
        + PUBACK_ROUND_BYTES
    )


def cost_bytes(payload_bytes: int) -> int:
    """What one publish of ``payload_bytes`` is charged: the payload and its overhead."""
    return payload_bytes + overhead_bytes(payload_bytes)


def utc_day(wall: float) -> int:
    """The UTC day number (days since 1970-01-01) of Unix time ``wall``."""
    return int(wall // DAY_S)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What the status message reports (docs/platform-protocol.md, "Status and events")."""

    limit_bytes: int
    """The daily budget; 0: none."""
    used_bytes: int
    """Counted so far this UTC day (charged, or the module's count when larger)."""
    day: int
    """The UTC day the count is for (days since 1970-01-01)."""
    paused: bool
    """Backfill waits for the next UTC day."""

    @property
    def remaining_bytes(self) -> int | None:
        return None if self.limit_bytes == 0 else max(0, self.limit_bytes - self.used_bytes)


class ByteBudget:
    """Bytes charged per UTC day against ``limit_bytes`` (0: unlimited). Times are passed in
    (Unix seconds, the hub's wall clock); a day change resets the count. Not thread-safe."""

    def __init__(self, limit_bytes: int, *, used_bytes: int = 0, day: int = 0) -> None:
        if limit_bytes < 0 or used_bytes < 0:
            raise ValueError("limit_bytes and used_bytes must be >= 0")
        self.limit_bytes = limit_bytes
        self._used = used_bytes
        self._measured = 0
        """Bytes the cellular module counted today (:meth:`note_link_bytes`)."""
        self._day = day
        self._paused = False

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    def _roll(self, wall: float) -> bool:
        """Start a new count when ``wall`` is in another UTC day; True when it did."""
        day = utc_day(wall)
        if day == self._day:
            return False
        # Any other day resets, a clock set back included: a budget never blocks for longer
        # than the day the clock says it is.
        self._day, self._used, self._measured, self._paused = day, 0, 0, False
        return True

    @property
    def _counted(self) -> int:
        """Today's count: the larger of the charged estimate and the module's own count."""
        return max(self._used, self._measured)

    def note_link_bytes(self, delta_bytes: int, wall: float) -> None:
        """``delta_bytes`` more carried by the cellular module (sent and received) by
        ``wall``, from its data counters (the module docstring)."""
        if delta_bytes < 0:
            raise ValueError("delta_bytes must be >= 0")
        self._roll(wall)
        self._measured += delta_bytes

    def charge(self, payload_bytes: int, wall: float) -> int:
        """Count one publish of ``payload_bytes`` at ``wall``; returns what it was charged."""
        self._roll(wall)
        cost = cost_bytes(payload_bytes)
        self._used += cost
        return cost

    def allows(self, payload_bytes: int | None, wall: float) -> bool:
        """Whether backfill may send now: a publish of ``payload_bytes`` (None: any, i.e. the
        budget is not spent yet) fits what is left of today's budget. A refusal pauses backfill
        (:attr:`paused`) for the rest of the UTC day: the next envelope, maybe smaller, waits
        too, so backfill goes in order and a pause is one decision a day."""
        self._roll(wall)
        if not self.enabled:
            ok = True
        elif self._paused:
            ok = False
        elif payload_bytes is None:
            ok = self._counted < self.limit_bytes
        else:
            ok = self._counted + cost_bytes(payload_bytes) <= self.limit_bytes
        self._paused = not ok
        return ok

    @property
    def paused(self) -> bool:
        """Whether backfill waits for the next UTC day (as of the last call)."""
        return self._paused

    def seconds_to_next_day(self, wall: float) -> float:
        """Seconds from ``wall`` until the next UTC day begins (when a pause ends)."""
        return float((utc_day(wall) + 1) * DAY_S - wall)

    def state(self, wall: float) -> BudgetState:
        """The budget as the status message reports it at ``wall``."""
        if utc_day(wall) != self._day:
            return BudgetState(self.limit_bytes, 0, utc_day(wall), paused=False)
        return BudgetState(self.limit_bytes, self._counted, self._day, self._paused)

    def to_bytes(self) -> bytes:
        """The state to persist (12 bytes): the day's count as it stands."""
        return _STATE.pack(self._day, self._counted)

    @classmethod
    def from_bytes(cls, limit_bytes: int, data: bytes | None) -> ByteBudget:
        """A budget restored from :meth:`to_bytes` (a fresh one when ``data`` is None or not
        12 bytes: then the day's count starts at 0)."""
        if data is None or len(data) != _STATE.size:
            return cls(limit_bytes)
        day, used = _STATE.unpack(data)
        return cls(limit_bytes, used_bytes=used, day=day)


__all__ = [
    "DAY_S",
    "PERSIST_EVERY_S",
    "BudgetState",
    "ByteBudget",
    "cost_bytes",
    "overhead_bytes",
    "utc_day",
]
