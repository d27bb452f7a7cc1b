"""The demo's live view: each reading's hops, one short line per hop as it happens (sans-I/O).

The hops, in order: measured on the device, (paired), received by the hub over BLE, stored
in the outbox (sealed and signed), published, verified at the platform, the platform's
signed receipt, deleted on the hub. The hub's hops come from ``homehub run``'s own JSON log
lines (:class:`HubLog`): the daemon runs as its own process and its log is all the demo sees
of it, as an operator would; its log never carries a value, a patient id or a full address,
and neither does a line here but the values the platform verified (synthetic data).

Lines of one device and hop that follow each other are merged (:class:`Timeline`): three
readings stored in one commit read as one line, so the view stays a few lines per reading.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from rich.table import Table

HUB: Final = "hub"
PLATFORM: Final = "platform"


class Hop(enum.Enum):
    """One hop of a reading's way, as the view names it."""

    MEASURED = "measured"
    PAIRED = "paired"
    RECEIVED = "BLE"
    STORED = "stored"
    PUBLISHED = "published"
    VERIFIED = "verified"
    RECEIPT = "receipt"
    DELETED = "deleted"


MERGED_HOPS: Final = frozenset({Hop.RECEIVED, Hop.STORED, Hop.PUBLISHED, Hop.DELETED})
"""Hops whose consecutive lines for one device are one line (counts and seqs added up)."""


@dataclass(frozen=True, slots=True)
class HopEvent:
    """One hop that happened: when (seconds since the demo started), for which device (its
    label, or :data:`HUB` / :data:`PLATFORM` when it spans devices), which readings."""

    at: float
    device: str
    hop: Hop
    seqs: tuple[int, ...] = ()
    count: int = 1
    """Measurements received over BLE, envelopes published, readings deleted."""
    size: int = 0
    """Bytes on the wire (published envelopes)."""
    text: str = ""
    """The line's own words (measured, paired, verified)."""

    def merged(self, later: HopEvent) -> HopEvent:
        """This event and a ``later`` one of the same device and hop, as one."""
        return replace(
            self,
            seqs=self.seqs + later.seqs,
            count=self.count + later.count,
            size=self.size + later.size,
        )


def seq_text(seqs: Iterable[int]) -> str:
    """``1-3, 5``: sequence numbers as ranges, in order."""
    ordered = sorted(set(seqs))
    parts: list[str] = []
    start = prev = None
    for seq in [*ordered, None]:
        if prev is not None and seq == prev + 1:
            prev = seq
            continue
        if start is not None and prev is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = seq
    return ", ".join(parts)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(event: HopEvent) -> str:
    """What a hop's line says after its time, device and hop name."""
    seqs = seq_text(event.seqs)
    match event.hop:
        case Hop.RECEIVED:
            how = f", {event.text}" if event.text else ""
            return f"{_plural(event.count, 'measurement')} received by the hub{how}"
        case Hop.STORED:
            return f"seq {seqs} sealed (AEAD) and signed (COSE_Sign1 ES256) in the outbox"
        case Hop.PUBLISHED:
            return (
                f"seq {seqs} in {_plural(event.count, 'envelope')} ({event.size:,} B), "
                "MQTT 5 over mutual TLS, through the broker"
            )
        case Hop.RECEIPT:
            return f"signed by the platform, names seq {seqs}"
        case Hop.DELETED:
            named = f"seq {seqs}" if event.seqs else _plural(event.count, "reading")
            return f"{named} deleted on the hub (receipt verified)"
        case _:
            return event.text


def line(event: HopEvent) -> str:
    """The event's line: time, device, hop, what happened."""
    return f"{event.at:6.2f}s  {event.device:<10}  {event.hop.value:<9}  {describe(event)}"


class Timeline:
    """Merges consecutive events of one device and hop; hands back the lines to print."""

    def __init__(self) -> None:
        self._held: HopEvent | None = None

    def add(self, event: HopEvent) -> list[str]:
        """Take ``event``; the lines now complete (the held one, when this one differs)."""
        held = self._held
        if (
            held is not None
            and held.hop is event.hop
            and held.device == event.device
            and event.hop in MERGED_HOPS
        ):
            self._held = held.merged(event)
            return []
        self._held = event
        return [] if held is None else [line(held)]

    def flush(self) -> list[str]:
        """The held line, if any (nothing more came for a moment, or the end)."""
        held, self._held = self._held, None
        return [] if held is None else [line(held)]


class HubLog:
    """Reads ``homehub run``'s JSON log lines into hops (stateful: which device stored which
    seq, how many readings were deleted). ``devices``: the log's scrubbed device name (the
    address's last two octets, ``..:10:01``) to the device's label; ``racp``: the labels of
    devices whose records come in RACP reports, logged as a count at the session's end (a
    glucometer) rather than one line per measurement."""

    def __init__(self, devices: Mapping[str, str], racp: Collection[str] = ()) -> None:
        self.devices = dict(devices)
        self.racp = frozenset(racp)
        self.device_of: dict[int, str] = {}
        """seq → label, from ``measurement_stored``."""
        self.stored = 0
        self.deleted = 0
        """Readings deleted on the hub, by the platform's receipts (``measurements_delivered``)."""

    def feed(self, text: str, at: float) -> list[HopEvent]:
        """The hops one log line tells of: none (another event, or not JSON) or some."""
        try:
            record: Any = json.loads(text)
        except ValueError:
            return []
        if not isinstance(record, dict):
            return []
        event = record.get("event")
        device = self.devices.get(str(record.get("device")), HUB)
        if event == "ble_measurement_received":  # BPS and PLXS: one line per measurement
            return [HopEvent(at, device, Hop.RECEIVED)]
        count = record.get("measurements")
        if event == "ble_session_ended" and device in self.racp:
            # The records the session handed on (possibly stored already: the hub hands each
            # on as it is complete), counted as the session ends; none: nothing new.
            if isinstance(count, int) and count > 0:
                return [HopEvent(at, device, Hop.RECEIVED, count=count, text="RACP report")]
            return []
        if event == "ble_paired":
            how = "Secure Connections" if record.get("secure_connections") else "legacy"
            method = str(record.get("method") or "just works").replace("_", " ")
            text = f"bonded on first contact ({method}, {how}); the link is encrypted"
            return [HopEvent(at, device, Hop.PAIRED, text=text)]
        if event == "measurement_stored" and isinstance(record.get("seq"), int):
            seq: int = record["seq"]
            self.device_of[seq] = device
            self.stored += 1
            return [HopEvent(at, device, Hop.STORED, (seq,))]
        if event == "measurements_delivered":
            return self._deleted(record, at)
        return []

    def _deleted(self, record: Mapping[str, Any], at: float) -> list[HopEvent]:
        first, last, count = record.get("first_seq"), record.get("last_seq"), record.get("count")
        if not (isinstance(first, int) and isinstance(last, int) and isinstance(count, int)):
            return []
        self.deleted += count
        if last - first + 1 != count:
            # The log names a batch by its first and last seq: which ones, when not a run?
            return [HopEvent(at, HUB, Hop.DELETED, count=count)]
        by_device: dict[str, list[int]] = {}
        for seq in range(first, last + 1):
            by_device.setdefault(self.device_of.get(seq, HUB), []).append(seq)
        return [
            HopEvent(at, device, Hop.DELETED, tuple(seqs), count=len(seqs))
            for device, seqs in by_device.items()
        ]

    def owner(self, seqs: Sequence[int]) -> str:
        """The one device these seqs came from, else :data:`HUB`."""
        owners = {self.device_of.get(seq, HUB) for seq in seqs}
        return owners.pop() if len(owners) == 1 else HUB


@dataclass(frozen=True, slots=True)
class TableRow:
    """One reading of the closing table: as the platform verified it, and whether it equals
    what the device held."""

    device: str
    seq: int
    reading: str
    matches: bool


def summary_table(rows: Sequence[TableRow]) -> Table:
    """The readings as the platform verified them, per device kind (rich)."""
    table = Table(title="at the platform, verified", title_justify="left")
    table.add_column("device")
    table.add_column("seq", justify="right")
    table.add_column("reading (values as the platform read them)", no_wrap=True)
    table.add_column("= device", justify="center")
    previous = None
    for row in sorted(rows, key=lambda r: (r.device, r.seq)):
        device = row.device if row.device != previous else ""
        table.add_row(device, str(row.seq), row.reading, "yes" if row.matches else "NO")
        previous = row.device
    return table
