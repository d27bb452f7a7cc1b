"""Platform receipts: delivery the platform vouches for (docs/platform-protocol.md, "Receipts").

Sans-I/O: bytes and clock readings in, typed results out; the publisher (agent/publisher.py)
feeds it and acts on what it returns.

A broker's PUBACK is not the hospital holding a reading. With ``ack = "receipt"`` the platform
signs a receipt (COSE_Sign1, ES256, the platform key) naming each envelope it stored by its
*digest* (:func:`envelope_digest`: SHA-256 of the MQTT payload, first 16 bytes) and the seqs
in it, and the hub deletes a reading only on such a receipt.

:class:`Receipt` is one receipt, verified and strictly decoded (:meth:`Receipt.from_bytes`).
:class:`ReceiptBook` remembers what the hub sent and still waits for (digest -> seqs), and
judges each receipt (:meth:`ReceiptBook.settle`) by the contract's rules:

1. it verifies with the platform key (else ``forged``; another key's kid: ``wrong_key``;
   not a receipt at all: ``malformed``);
2. ``hub`` is this hub (``wrong_hub``); ``iat - 300 <= now <= exp`` (``expired``);
3. its ``rid`` was not accepted before (``replayed``; remembered until ``exp``), except the
   very same bytes again: QoS 1 is at least once (a platform's client re-sends a receipt whose
   PUBACK a lost connection took), so an exact copy of an accepted receipt is a ``repeated``
   settlement that changes nothing and raises no alarm;
4. every item's digest names an envelope this hub sent, with exactly its seqs
   (``mismatched``); a digest the hub does not know is ``stale`` when all its seqs are still
   pending in the outbox (an envelope sent before a restart), else ``unknown_envelope``; an
   item for an envelope already receipted is a ``duplicate``.

A rejected receipt raises :class:`~agent.errors.ReceiptRejectedError` and changes nothing.
An accepted one returns a :class:`Settlement`: the seqs to delete (held), to mark refused,
and how many items were stale or duplicates (logged, nothing deleted).

Timeouts: an envelope PUBACKed but not receipted within ``timeout_s`` (:data:`RECEIPT_TIMEOUT_S`)
is *released* (:meth:`ReceiptBook.expire`), as is everything still unreceipted when a
connection ends (:meth:`ReceiptBook.release_all`): its seqs may be sent again. A released
envelope is still recognised for a while (a receipt that arrives late deletes its readings),
so releasing never turns a late, genuine receipt into a security event.

Everything is bounded: envelopes awaiting receipt (:data:`AWAITING_MAX`), released ones
remembered (:data:`RELEASED_MAX`), receipted digests remembered for duplicate detection
(:data:`RECEIPTED_MAX`), accepted rids remembered against replay (:data:`REPLAY_MEMORY_MAX`;
past it the earliest-expiring rid is forgotten and any receipt expiring no later than it is
refused as possibly replayed, so a bound never opens a replay).

The replay memory lives for the process: after a restart a replayed receipt can only name
digests the hub sends again byte-identically, i.e. readings the platform did hold.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from agent.cose import key_id, strict_loads, verify1
from agent.errors import IntegrityError, ReceiptRejectedError, ReceiptRejection
from agent.network_time import TOLERANCE_S

# ---------------------------------------------------------------------------
# Constants (docs/platform-protocol.md)
# ---------------------------------------------------------------------------

RECEIPT_CONTENT_TYPE: Final = "application/vnd.homehub.receipt+cbor"
"""Protected header 3 of a receipt."""

PROTOCOL_VERSION: Final = 1
DIGEST_BYTES: Final = 16
"""An envelope's digest: SHA-256 over its MQTT payload, first 16 bytes."""
RID_BYTES: Final = 16

MAX_VALIDITY_S: Final = 3600
"""``exp - iat`` of a receipt is at most an hour (the contract)."""

CLOCK_SKEW_S: Final = 1200
"""How far the hub's clock may be from the platform's when it judges a receipt's ``iat`` and
``exp``: 20 minutes either way. The hub corrects its wall clock by the network's time only
once the two are more than :data:`agent.network_time.TOLERANCE_S` (15 minutes) apart, so a hub
up to that far off is a healthy hub, and the platform's clock may be off by a few minutes
more. With a narrower bound a hub 10 minutes behind refused every receipt as "issued in the
future" (raising a ``security`` event each time) and never emptied its outbox. A wider bound
costs nothing against a forger (a receipt is signed) and little against a replay: a rid is
remembered until ``exp`` + this skew, and the receipt must still name envelopes this hub sent
and has not had receipted."""
if CLOCK_SKEW_S <= TOLERANCE_S:  # pragma: no cover - a static relation between constants
    raise ImportError("a hub the network's time leaves alone would refuse receipts")

MAX_ITEMS: Final = 1000
"""``held`` and ``refused`` together name 1 to 1,000 envelopes (the contract)."""

MAX_SEQS_PER_ITEM: Final = 500
"""Readings in one envelope: a batch holds 1 to 500 (the contract's batches)."""

MAX_SEQ: Final = 2**63 - 1
"""The outbox's seqs live in 1..2**63-1 (agent/outbox.py)."""

REASON_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""A refused item's ``reason``: a short code, logged as it is, so printable and bounded."""

RECEIPT_TIMEOUT_S: Final = 60.0
"""From an envelope's PUBACK to its receipt, at most; then it is sent again. The platform
gathers items for up to 100 ms and a cellular round trip takes up to 2 s: 60 s is far past
any healthy platform and short next to how long a reading may wait."""

AWAITING_MAX: Final = 10_000
"""Envelopes sent and not yet receipted, at most (the publisher's receipt window never
exceeds it). At ≈ 150 bytes of bookkeeping each (a digest, a seq, two times) that is
≈ 1.5 MB; a drain of 2,000 envelopes/s with a second of receipt latency needs 2,000."""

RELEASED_MAX: Final = 10_000
"""Released envelopes (timed out, or cut off by a lost connection) still recognised when
their receipt comes late; the oldest are forgotten first (then a late receipt is ``stale``
when its readings are still pending, which deletes nothing and costs one more send)."""

RECEIPTED_MAX: Final = 16_384
"""Receipted digests remembered to tell a duplicate receipt (the platform receipts every copy
it gets) from an unknown envelope; oldest forgotten first."""

REPLAY_MEMORY_MAX: Final = 65_536
"""Accepted rids remembered until their ``exp``. A platform gathering for 100 ms sends at
most 10 receipts a second: an hour of them is 36,000. ≈ 100 bytes each."""

_MAX_DEPTH: Final = 5
"""map -> held -> item -> seqs: four levels, one of slack."""

_KEYS: Final = frozenset({"v", "hub", "rid", "iat", "exp", "held", "refused"})
_REQUIRED: Final = frozenset({"v", "hub", "rid", "iat", "exp", "held"})


def envelope_digest(payload: bytes) -> bytes:
    """How a receipt names an envelope: SHA-256 over the MQTT payload as sent, first 16 B."""
    return hashlib.sha256(payload).digest()[:DIGEST_BYTES]


# ---------------------------------------------------------------------------
# One receipt
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiptItem:
    """One envelope a receipt names: held (``reason`` None) or refused (``reason`` set)."""

    digest: bytes
    seqs: tuple[int, ...]
    reason: str | None = None

    @property
    def refused(self) -> bool:
        return self.reason is not None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt whose signature verified with the platform key and whose payload has the
    contract's shape (types, sizes, lifetime). Whether it is for this hub, current, new and
    about envelopes this hub sent is :meth:`ReceiptBook.settle`'s to judge."""

    hub: str
    rid: bytes
    iat: int
    exp: int
    items: tuple[ReceiptItem, ...]
    message_digest: bytes = b""
    """:func:`envelope_digest` of the whole signed message: tells an at-least-once
    redelivery of an accepted receipt (the same bytes) from a replay with other bytes."""

    @property
    def seqs(self) -> frozenset[int]:
        """Every seq the receipt names."""
        return frozenset(s for item in self.items for s in item.seqs)

    @classmethod
    def from_bytes(cls, message: bytes, platform_key: ec.EllipticCurvePublicKey) -> Receipt:
        """Verify ``message`` (a tagged COSE_Sign1) with the platform key and decode it.

        Raises :class:`ReceiptRejectedError`: ``wrong_key`` when its kid is another key's,
        ``forged`` when the signature does not verify, ``malformed`` for anything that is not
        a receipt of the contract (bad CBOR, another content type, a missing, extra or
        mistyped field, a lifetime over an hour, too many items).
        """
        try:
            verified = verify1(message, platform_key, expected_content_type=RECEIPT_CONTENT_TYPE)
        except IntegrityError:
            kid = _peek_kid(message)
            if kid is None:
                _malformed("not a COSE_Sign1 receipt")
            if kid != key_id(platform_key):
                raise ReceiptRejectedError(
                    ReceiptRejection.WRONG_KEY, "signed with another key than the platform's"
                ) from None
            content_type = _peek_content_type(message)
            if content_type is not None and content_type != RECEIPT_CONTENT_TYPE:
                _malformed("another content type than a receipt's")
            raise ReceiptRejectedError(
                ReceiptRejection.FORGED, "signature does not verify with the platform key"
            ) from None
        return _parse_payload(verified.payload, envelope_digest(message))


def _parse_payload(payload: bytes, message_digest: bytes) -> Receipt:
    body = _strict_loads(payload)
    if not isinstance(body, dict):
        _malformed("payload is not a map")
    if cbor2.dumps(body, canonical=True) != payload:
        _malformed("payload not in deterministic CBOR encoding")
    keys = set(body)
    if not keys <= _KEYS:
        _malformed("payload has keys the contract does not define")
    if not _REQUIRED <= keys:
        _malformed("payload lacks a required key")
    version, hub, rid = body["v"], body["hub"], body["rid"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        _malformed("unknown version")
    if not isinstance(hub, str) or not 1 <= len(hub) <= 63:
        _malformed("hub is not a hub id")
    if not isinstance(rid, bytes) or len(rid) != RID_BYTES:
        _malformed(f"rid is not {RID_BYTES} bytes")
    iat, exp = _uint(body["iat"], "iat"), _uint(body["exp"], "exp")
    if not 0 <= exp - iat <= MAX_VALIDITY_S:
        _malformed(f"exp - iat is not 0..{MAX_VALIDITY_S} s")
    held = _array(body["held"], "held")
    refused = _array(body.get("refused", []), "refused")
    if not 1 <= len(held) + len(refused) <= MAX_ITEMS:
        _malformed(f"not 1 to {MAX_ITEMS} items")
    items = [_item(raw, refused=False) for raw in held]
    items += [_item(raw, refused=True) for raw in refused]
    return Receipt(
        hub=hub, rid=rid, iat=iat, exp=exp, items=tuple(items), message_digest=message_digest
    )


def _item(raw: object, *, refused: bool) -> ReceiptItem:
    length = 3 if refused else 2
    if not isinstance(raw, list) or len(raw) != length:
        _malformed(f"an item is not an array of {length}")
    digest, seqs = raw[0], raw[1]
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        _malformed(f"a digest is not {DIGEST_BYTES} bytes")
    if not isinstance(seqs, list) or not 1 <= len(seqs) <= MAX_SEQS_PER_ITEM:
        _malformed(f"an item's seqs are not an array of 1 to {MAX_SEQS_PER_ITEM}")
    for seq in seqs:
        if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
            _malformed("a seq is not 1..2**63-1")
    if len(set(seqs)) != len(seqs):
        _malformed("an item names a seq twice")
    reason: str | None = None
    if refused:
        reason = raw[2]
        if not isinstance(reason, str) or not REASON_RE.fullmatch(reason):
            _malformed("a refusal's reason is not a short code")
    return ReceiptItem(digest=digest, seqs=tuple(seqs), reason=reason)


def _uint(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        _malformed(f"{name} is not Unix seconds")
    return value


def _array(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        _malformed(f"{name} is not an array")
    return value


def _malformed(detail: str) -> NoReturn:
    raise ReceiptRejectedError(ReceiptRejection.MALFORMED, detail)


def _strict_loads(payload: bytes) -> object:
    try:
        return strict_loads(payload, "receipt", _MAX_DEPTH)
    except (IntegrityError, RecursionError):
        _malformed("payload is not one strict CBOR item")


def _protected_header(message: bytes) -> dict[Any, Any] | None:
    """The protected header map of a would-be COSE_Sign1, or None when there is none to read
    (only to say why a verification failed; nothing here is trusted)."""
    if message[:1] != b"\xd2":
        return None
    try:
        body = strict_loads(message[1:], "COSE_Sign1", 3)
        if not isinstance(body, list) or len(body) != 4 or not isinstance(body[0], bytes):
            return None
        header = strict_loads(body[0], "protected header", 2)
    except (IntegrityError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _peek_kid(message: bytes) -> bytes | None:
    header = _protected_header(message)
    kid = header.get(4) if header is not None else None
    return kid if isinstance(kid, bytes) else None


def _peek_content_type(message: bytes) -> str | None:
    header = _protected_header(message)
    content_type = header.get(3) if header is not None else None
    return content_type if isinstance(content_type, str) else None


# ---------------------------------------------------------------------------
# What was sent and what a receipt settles
# ---------------------------------------------------------------------------


class ItemFate(enum.Enum):
    """How an accepted receipt's item was taken (one log line each for the last two)."""

    HELD = "held"
    REFUSED = "refused"
    STALE = "stale"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Settlement:
    """What an accepted receipt asks of the hub."""

    rid: bytes
    held: tuple[int, ...]
    """Seqs the platform holds: delete them."""
    refused: tuple[tuple[int, str], ...]
    """``(seq, reason)`` the platform will never accept: mark them refused."""
    fates: tuple[tuple[ReceiptItem, ItemFate], ...] = field(repr=False)
    """Every item and how it was taken (stale and duplicate ones are logged)."""
    repeated: bool = False
    """The very receipt (same bytes) was accepted before: MQTT's at-least-once delivery (the
    platform's client sent it again after a lost connection). Nothing to do, no alarm."""

    def count(self, fate: ItemFate) -> int:
        return sum(1 for _, f in self.fates if f is fate)


@dataclass(slots=True)
class _Sent:
    seqs: frozenset[int]
    acked_at: float | None = None
    """Monotonic time of the PUBACK (None while in flight)."""


class ReceiptBook:
    """The envelopes this hub sent and awaits a receipt for, and the judge of receipts.

    All times are passed in: ``now`` (monotonic seconds) for timeouts, ``wall`` (Unix seconds,
    the hub's clock) for a receipt's ``iat``/``exp``. Not thread-safe: one event loop.
    """

    def __init__(
        self,
        hub_id: str,
        *,
        timeout_s: float = RECEIPT_TIMEOUT_S,
        awaiting_max: int = AWAITING_MAX,
        released_max: int = RELEASED_MAX,
        receipted_max: int = RECEIPTED_MAX,
        replay_memory_max: int = REPLAY_MEMORY_MAX,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if min(awaiting_max, released_max, receipted_max, replay_memory_max) < 1:
            raise ValueError("every bound must be >= 1")
        self.hub_id = hub_id
        self.timeout_s = timeout_s
        self._awaiting_max = awaiting_max
        self._released_max = released_max
        self._receipted_max = receipted_max
        self._replay_max = replay_memory_max
        self._sent: dict[bytes, _Sent] = {}
        """Envelopes in the window: handed to the uplink, not receipted, not released."""
        self._deadlines: OrderedDict[bytes, float] = OrderedDict()
        """PUBACKed envelopes of :attr:`_sent` by receipt deadline (PUBACK order = deadline
        order: one timeout for all)."""
        self._window_seqs: dict[int, bytes] = {}
        """Every seq in the window -> its envelope's digest."""
        self._released: OrderedDict[bytes, frozenset[int]] = OrderedDict()
        self._receipted: OrderedDict[bytes, None] = OrderedDict()
        self._rids: dict[bytes, tuple[int, bytes]] = {}
        """Accepted rid -> (its exp, its message's digest)."""
        self._rid_heap: list[tuple[int, bytes]] = []
        self._replay_floor = -1
        """Receipts expiring at or before this were possibly forgotten: refused as replayed."""

    # -- what was sent ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Envelopes in the window (sent or PUBACKed, not receipted, not released)."""
        return len(self._sent)

    @property
    def awaiting(self) -> int:
        """Envelopes PUBACKed and waiting for their receipt."""
        return len(self._deadlines)

    @property
    def full(self) -> bool:
        return len(self._sent) >= self._awaiting_max

    def holds(self, seq: int) -> bool:
        """Whether ``seq`` is in an envelope of the window (not to be sent again now)."""
        return seq in self._window_seqs

    def sent(self, digest: bytes, seqs: Collection[int]) -> None:
        """An envelope named ``digest`` holding ``seqs`` was handed to the uplink.

        Raises ``OverflowError`` when the window is full (the caller checks :attr:`full`) and
        ``ValueError`` when a seq is already in another envelope of the window.
        """
        if digest in self._sent:
            raise ValueError("this envelope is already in the window")
        if self.full:
            raise OverflowError(f"{self._awaiting_max} envelopes already await a receipt")
        entry = _Sent(frozenset(seqs))
        if not entry.seqs or any(s in self._window_seqs for s in entry.seqs):
            raise ValueError("an envelope's seqs must be new to the window")
        self._released.pop(digest, None)
        self._sent[digest] = entry
        for seq in entry.seqs:
            self._window_seqs[seq] = digest

    def acked(self, digest: bytes, now: float) -> None:
        """The broker PUBACKed envelope ``digest`` at ``now``: its receipt is due by
        ``now + timeout_s``. Nothing happens when it was receipted or released meanwhile."""
        entry = self._sent.get(digest)
        if entry is None or entry.acked_at is not None:
            return
        entry.acked_at = now
        self._deadlines[digest] = now + self.timeout_s

    def failed(self, digest: bytes) -> frozenset[int]:
        """The publish of ``digest`` failed (no PUBACK): release it; returns its seqs."""
        return self._release(digest)

    def next_deadline(self) -> float | None:
        """When the oldest PUBACKed envelope's receipt is due, or None."""
        for deadline in self._deadlines.values():
            return deadline
        return None

    def expire(self, now: float) -> list[int]:
        """Release every envelope whose receipt is overdue at ``now``; their seqs."""
        seqs: list[int] = []
        while self._deadlines:
            digest, deadline = next(iter(self._deadlines.items()))
            if deadline > now:
                break
            seqs.extend(self._release(digest))
        return seqs

    def release_all(self) -> list[int]:
        """The connection ended: every envelope of the window is released; their seqs."""
        seqs: list[int] = []
        for digest in list(self._sent):
            seqs.extend(self._release(digest))
        return seqs

    def _release(self, digest: bytes) -> frozenset[int]:
        entry = self._sent.pop(digest, None)
        if entry is None:
            return frozenset()
        self._deadlines.pop(digest, None)
        for seq in entry.seqs:
            self._window_seqs.pop(seq, None)
        self._released[digest] = entry.seqs
        self._released.move_to_end(digest)
        while len(self._released) > self._released_max:
            self._released.popitem(last=False)
        return entry.seqs

    # -- judging a receipt ---------------------------------------------------------------

    def unknown_seqs(self, receipt: Receipt) -> frozenset[int]:
        """The seqs whose pending state :meth:`settle` needs: every seq of ``receipt`` when
        one of its items names a digest this book does not know, else none (no look-up)."""
        for item in receipt.items:
            if self._known(item.digest) is None and item.digest not in self._receipted:
                return receipt.seqs
        return frozenset()

    def settle(
        self, receipt: Receipt, wall: float, pending: Collection[int] = frozenset()
    ) -> Settlement:
        """Judge ``receipt`` at the hub's wall time ``wall`` and, when it is accepted, take it
        into account (its envelopes leave the window, its rid is remembered).

        ``pending``: of :meth:`unknown_seqs`, those still pending in the outbox. Raises
        :class:`ReceiptRejectedError` (``wrong_hub``, ``expired``, ``replayed``,
        ``mismatched``, ``unknown_envelope``) having changed nothing.
        """
        if receipt.hub != self.hub_id:
            raise ReceiptRejectedError(ReceiptRejection.WRONG_HUB, "for another hub")
        if not receipt.iat - CLOCK_SKEW_S <= wall <= receipt.exp + CLOCK_SKEW_S:
            detail = "expired" if wall > receipt.exp else "issued in the future"
            raise ReceiptRejectedError(ReceiptRejection.EXPIRED, detail)
        self._forget_rids(wall)
        seen = self._rids.get(receipt.rid)
        if seen is not None:
            if receipt.message_digest and seen[1] == receipt.message_digest:
                again = tuple((item, ItemFate.DUPLICATE) for item in receipt.items)
                return Settlement(receipt.rid, (), (), again, repeated=True)
            raise ReceiptRejectedError(ReceiptRejection.REPLAYED, "its rid was accepted before")
        if receipt.exp <= self._replay_floor:
            raise ReceiptRejectedError(
                ReceiptRejection.REPLAYED, "older than the replay memory reaches"
            )
        fates = self._judge_items(receipt.items, pending)
        # Accepted: nothing below raises.
        self._remember_rid(receipt.rid, receipt.exp, receipt.message_digest)
        held: list[int] = []
        refused: list[tuple[int, str]] = []
        for item, fate in fates:
            if fate is ItemFate.HELD:
                held.extend(item.seqs)
            elif fate is ItemFate.REFUSED:
                assert item.reason is not None
                refused.extend((seq, item.reason) for seq in item.seqs)
            if fate in (ItemFate.HELD, ItemFate.REFUSED):
                self._receipted_now(item.digest)
        return Settlement(receipt.rid, tuple(held), tuple(refused), tuple(fates))

    def _judge_items(
        self, items: Iterable[ReceiptItem], pending: Collection[int]
    ) -> list[tuple[ReceiptItem, ItemFate]]:
        fates: list[tuple[ReceiptItem, ItemFate]] = []
        this_receipt: set[bytes] = set()
        for item in items:
            if item.digest in this_receipt or item.digest in self._receipted:
                fates.append((item, ItemFate.DUPLICATE))
                continue
            seqs = self._known(item.digest)
            if seqs is None:
                if all(s in pending for s in item.seqs):
                    fates.append((item, ItemFate.STALE))
                    continue
                raise ReceiptRejectedError(
                    ReceiptRejection.UNKNOWN_ENVELOPE,
                    "an item names an envelope this hub did not send, with readings not pending",
                )
            if seqs != frozenset(item.seqs):
                raise ReceiptRejectedError(
                    ReceiptRejection.MISMATCHED, "an item's seqs are not its envelope's"
                )
            this_receipt.add(item.digest)
            fates.append((item, ItemFate.REFUSED if item.refused else ItemFate.HELD))
        return fates

    def _known(self, digest: bytes) -> frozenset[int] | None:
        entry = self._sent.get(digest)
        if entry is not None:
            return entry.seqs
        return self._released.get(digest)

    def _receipted_now(self, digest: bytes) -> None:
        entry = self._sent.pop(digest, None)
        if entry is not None:
            self._deadlines.pop(digest, None)
            for seq in entry.seqs:
                self._window_seqs.pop(seq, None)
        self._released.pop(digest, None)
        self._receipted[digest] = None
        self._receipted.move_to_end(digest)
        while len(self._receipted) > self._receipted_max:
            self._receipted.popitem(last=False)

    def _forget_rids(self, wall: float) -> None:
        # Kept while a receipt with that exp is still accepted (the skew past exp).
        while self._rid_heap and self._rid_heap[0][0] + CLOCK_SKEW_S < wall:
            _, rid = heapq.heappop(self._rid_heap)
            self._rids.pop(rid, None)

    def _remember_rid(self, rid: bytes, exp: int, message_digest: bytes) -> None:
        while len(self._rids) >= self._replay_max:
            forgotten_exp, forgotten = heapq.heappop(self._rid_heap)
            self._rids.pop(forgotten, None)
            self._replay_floor = max(self._replay_floor, forgotten_exp)
        self._rids[rid] = (exp, message_digest)
        heapq.heappush(self._rid_heap, (exp, rid))


# ---------------------------------------------------------------------------
# How many envelopes may await a receipt
# ---------------------------------------------------------------------------


class ReceiptWindow:
    """The number of envelopes that may await a receipt at once: grows by one for each
    envelope receipted (doubling every receipt round trip, as TCP's slow start), halves when
    a receipt times out, between ``floor`` and ``ceiling``.

    So a draining backlog is never held back by receipt latency once the window exceeds
    rate x latency, while a platform that sends no receipts (misconfigured: ``ack =
    "receipt"`` against a platform that only PUBACKs) costs ``floor`` envelopes per
    timeout, not the whole outbox every minute.
    """

    def __init__(self, floor: int, ceiling: int = AWAITING_MAX) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        self.floor = floor
        self.ceiling = ceiling
        self.size = floor

    def receipted(self, envelopes: int) -> None:
        self.size = min(self.ceiling, self.size + max(0, envelopes))

    def timed_out(self) -> None:
        self.size = max(self.floor, self.size // 2)


__all__ = [
    "AWAITING_MAX",
    "CLOCK_SKEW_S",
    "MAX_ITEMS",
    "MAX_VALIDITY_S",
    "RECEIPT_CONTENT_TYPE",
    "RECEIPT_TIMEOUT_S",
    "ItemFate",
    "Receipt",
    "ReceiptBook",
    "ReceiptItem",
    "ReceiptWindow",
    "Settlement",
    "envelope_digest",
]
