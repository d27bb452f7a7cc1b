"""Platform receipts, sans-I/O (agent/receipts.py): parsing, verifying and judging receipts
built by the reference platform's independent COSE code (hil/platform_signing.py, pycose).

The hub's wall clock is a plain number passed in (:data:`NOW`); monotonic times for the
receipt timeout likewise: the named clock edge of these tests.
"""

from __future__ import annotations

from typing import Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.errors import ReceiptRejectedError, ReceiptRejection
from agent.network_time import TOLERANCE_S
from agent.receipts import (
    CLOCK_SKEW_S,
    RECEIPT_CONTENT_TYPE,
    ItemFate,
    Receipt,
    ReceiptBook,
    ReceiptWindow,
    envelope_digest,
)
from agent.security import load_platform_key
from hil.pki import DevPki
from hil.platform_signing import PlatformSigner
from hil.platform_signing import envelope_digest as platform_digest
from tests.conftest import HUB_ID

NOW: Final = 1_800_000_000
"""The hub's wall clock (Unix seconds) in these tests."""

ENV_A: Final = b"envelope A: the MQTT payload of seq 1"
ENV_B: Final = b"envelope B: the MQTT payload of seqs 2 and 3"
ENV_C: Final = b"envelope C: seq 4"
A, B, C = (envelope_digest(e) for e in (ENV_A, ENV_B, ENV_C))


@pytest.fixture(scope="module")
def signer(dev_pki: DevPki) -> PlatformSigner:
    return PlatformSigner.from_pem_file(dev_pki.platform_key)


@pytest.fixture(scope="module")
def platform_key(dev_pki: DevPki) -> ec.EllipticCurvePublicKey:
    """The platform key as the hub loads it: from ``[platform] cert_file``."""
    return load_platform_key(dev_pki.platform_cert)


@pytest.fixture(scope="module")
def other_signer(foreign_pki: DevPki) -> PlatformSigner:
    """A platform key the hub was not configured with."""
    return PlatformSigner.from_pem_file(foreign_pki.platform_key)


def _book() -> ReceiptBook:
    """A book that sent A (seq 1), B (seqs 2, 3) and C (seq 4), all PUBACKed at t=10."""
    book = ReceiptBook(HUB_ID, timeout_s=60.0)
    book.sent(A, [1])
    book.sent(B, [2, 3])
    book.sent(C, [4])
    for digest in (A, B, C):
        book.acked(digest, 10.0)
    return book


def _receipt(
    signer: PlatformSigner,
    held: list[tuple[bytes, list[int]]],
    refused: list[tuple[bytes, list[int], str]] | None = None,
    *,
    hub: str = HUB_ID,
    iat: int = NOW - 1,
    exp: int = NOW + 600,
    rid: bytes | None = None,
) -> bytes:
    return signer.receipt(hub, held, refused or (), iat=iat, exp=exp, rid=rid)


def _rejected(excinfo: pytest.ExceptionInfo[ReceiptRejectedError]) -> ReceiptRejection:
    return excinfo.value.reason


def test_digest_is_the_platforms() -> None:
    assert platform_digest(ENV_A) == envelope_digest(ENV_A)
    assert 16 == len(A)


class TestParse:
    def test_valid_receipt_decodes(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        rid = bytes(range(16))
        message = _receipt(signer, [(A, [1]), (B, [3, 2])], [(C, [4], "bad_signature")], rid=rid)
        receipt = Receipt.from_bytes(message, platform_key)
        assert (HUB_ID, rid, NOW - 1, NOW + 600) == (
            receipt.hub,
            receipt.rid,
            receipt.iat,
            receipt.exp,
        )
        assert [(A, (1,), None), (B, (3, 2), None), (C, (4,), "bad_signature")] == [
            (i.digest, i.seqs, i.reason) for i in receipt.items
        ]
        assert frozenset({1, 2, 3, 4}) == receipt.seqs

    def test_other_key_is_wrong_key(
        self, other_signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(_receipt(other_signer, [(A, [1])]), platform_key)
        assert ReceiptRejection.WRONG_KEY is _rejected(excinfo)

    def test_forged_signature(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """The platform's kid, a signature that does not verify (last byte flipped)."""
        message = bytearray(_receipt(signer, [(A, [1])]))
        message[-1] ^= 0x01
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(bytes(message), platform_key)
        assert ReceiptRejection.FORGED is _rejected(excinfo)

    def test_forged_payload(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """A seq changed inside the signed payload (same length): the signature fails."""
        message = _receipt(signer, [(A, [1])])
        tampered = message.replace(bytes([0x81, 0x01]), bytes([0x81, 0x05]))
        assert tampered != message
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(tampered, platform_key)
        assert ReceiptRejection.FORGED is _rejected(excinfo)

    def test_command_is_not_a_receipt(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        message = signer.command(HUB_ID, "sync_now", {}, iat=NOW, exp=NOW + 60)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(message, platform_key)
        assert ReceiptRejection.MALFORMED is _rejected(excinfo)

    @pytest.mark.parametrize(
        ("body", "why"),
        [
            ({"v": 2}, "version"),
            ({"extra": 1}, "unknown key"),
            ({"rid": b"short"}, "rid length"),
            ({"iat": -1}, "negative iat"),
            ({"exp": NOW + 3601}, "lifetime over an hour"),
            ({"exp": NOW - 10}, "exp before iat"),
            ({"held": []}, "no items"),
            ({"held": [[A[:15], [1]]]}, "short digest"),
            ({"held": [[A, []]]}, "no seqs"),
            ({"held": [[A, [0]]]}, "seq 0"),
            ({"held": [[A, [1, 1]]]}, "seq twice"),
            ({"held": [[A, [True]]]}, "bool seq"),
            ({"held": [[A, [1], "x"]]}, "held item of 3"),
            ({"held": [[A, [1]]] * 1001}, "over 1000 items"),
            ({"refused": [[B, [2, 3], "has space"]]}, "reason not a code"),
            ({"hub": 7}, "hub not text"),
        ],
    )
    def test_malformed_payloads(
        self,
        signer: PlatformSigner,
        platform_key: ec.EllipticCurvePublicKey,
        body: dict[str, object],
        why: str,
    ) -> None:
        payload = {
            "v": 1,
            "hub": HUB_ID,
            "rid": bytes(16),
            "iat": NOW,
            "exp": NOW + 60,
            "held": [[A, [1]]],
            **body,
        }
        message = signer.sign(RECEIPT_CONTENT_TYPE, payload)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(message, platform_key)
        assert ReceiptRejection.MALFORMED is _rejected(excinfo), why

    @pytest.mark.parametrize(
        "payload",
        [
            cbor2.dumps({"v": 1}, canonical=True) + b"\x00",  # trailing byte
            b"\xbf\x61v\x01\xff",  # indefinite-length map
            b"\xa2\x61v\x01\x61v\x01",  # duplicate key
            cbor2.dumps(cbor2.CBORTag(1, 5)),  # a tag
            b"\xa2\x63hub\x60\x61v\x01",  # keys not in deterministic order
        ],
    )
    def test_strict_cbor(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey, payload: bytes
    ) -> None:
        message = signer.sign(RECEIPT_CONTENT_TYPE, payload)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            Receipt.from_bytes(message, platform_key)
        assert ReceiptRejection.MALFORMED is _rejected(excinfo)


class TestSettle:
    def test_held_and_refused(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        receipt = Receipt.from_bytes(
            _receipt(signer, [(A, [1]), (B, [3, 2])], [(C, [4], "bad_signature")]),
            platform_key,
        )
        assert frozenset() == book.unknown_seqs(receipt)
        settlement = book.settle(receipt, NOW)
        assert (1, 3, 2) == settlement.held
        assert ((4, "bad_signature"),) == settlement.refused
        assert (0, 0) == (len(book), book.awaiting)
        assert not any(book.holds(s) for s in (1, 2, 3, 4))

    def test_receipt_before_puback_is_accepted(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = ReceiptBook(HUB_ID)
        book.sent(A, [1])
        settlement = book.settle(
            Receipt.from_bytes(_receipt(signer, [(A, [1])]), platform_key), NOW
        )
        assert (1,) == settlement.held
        book.acked(A, 5.0)  # the PUBACK after the receipt changes nothing
        assert (0, None) == (book.awaiting, book.next_deadline())

    def test_replayed_rid(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        rid = b"r" * 16
        book.settle(Receipt.from_bytes(_receipt(signer, [(A, [1])], rid=rid), platform_key), NOW)
        again = Receipt.from_bytes(_receipt(signer, [(B, [2, 3])], rid=rid), platform_key)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(again, NOW + 1)
        assert ReceiptRejection.REPLAYED is _rejected(excinfo)
        assert book.holds(2)  # nothing deleted

    def test_the_same_receipt_again_is_repeated_not_replayed(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """QoS 1 is at least once: an exact copy of an accepted receipt changes nothing and
        is no replay (the platform's client sent it again after a lost connection)."""
        book = _book()
        message = _receipt(signer, [(A, [1])], rid=b"r" * 16)
        assert (1,) == book.settle(Receipt.from_bytes(message, platform_key), NOW).held
        again = book.settle(Receipt.from_bytes(message, platform_key), NOW + 1)
        assert (True, (), ()) == (again.repeated, again.held, again.refused)

    def test_rid_forgotten_after_its_exp(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        rid = b"r" * 16
        first = _receipt(signer, [(A, [1])], rid=rid, iat=NOW, exp=NOW + 10)
        book.settle(Receipt.from_bytes(first, platform_key), NOW)
        # Still accepted by its exp and the skew: remembered, a replay.
        replay = _receipt(signer, [(B, [2, 3])], rid=rid, iat=NOW + 20, exp=NOW + 30)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(Receipt.from_bytes(replay, platform_key), NOW + 10 + CLOCK_SKEW_S)
        assert ReceiptRejection.REPLAYED is _rejected(excinfo)
        after = NOW + 11 + CLOCK_SKEW_S
        later = _receipt(signer, [(B, [2, 3])], rid=rid, iat=after, exp=after + 10)
        assert (2, 3) == book.settle(Receipt.from_bytes(later, platform_key), after).held

    def test_replay_memory_is_bounded_and_never_opens_a_replay(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """Two rids remembered at most: the third accepted forgets the earliest-expiring one,
        and a receipt expiring no later than it is then refused as replayed."""
        book = ReceiptBook(HUB_ID, replay_memory_max=2)
        for seq in range(1, 6):
            book.sent(envelope_digest(bytes([seq])), [seq])
        d = [envelope_digest(bytes([s])) for s in range(1, 6)]
        for i, exp in enumerate((NOW + 100, NOW + 200, NOW + 300)):
            message = _receipt(signer, [(d[i], [i + 1])], rid=bytes([i]) * 16, exp=exp)
            book.settle(Receipt.from_bytes(message, platform_key), NOW)
        replay = _receipt(signer, [(d[3], [4])], rid=bytes([0]) * 16, exp=NOW + 100)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(Receipt.from_bytes(replay, platform_key), NOW)
        assert ReceiptRejection.REPLAYED is _rejected(excinfo)
        fresh = _receipt(signer, [(d[3], [4])], exp=NOW + 400)
        assert (4,) == book.settle(Receipt.from_bytes(fresh, platform_key), NOW).held

    @pytest.mark.parametrize(
        ("iat", "exp", "wall"),
        [
            (NOW - 100 - CLOCK_SKEW_S, NOW - 1 - CLOCK_SKEW_S, NOW),  # expired, past the skew
            (NOW + CLOCK_SKEW_S + 1, NOW + CLOCK_SKEW_S + 60, NOW),  # issued too far ahead
        ],
    )
    def test_expired(
        self,
        signer: PlatformSigner,
        platform_key: ec.EllipticCurvePublicKey,
        iat: int,
        exp: int,
        wall: int,
    ) -> None:
        book = _book()
        receipt = Receipt.from_bytes(_receipt(signer, [(A, [1])], iat=iat, exp=exp), platform_key)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(receipt, wall)
        assert ReceiptRejection.EXPIRED is _rejected(excinfo)
        assert book.holds(1)

    def test_within_clock_skew_is_accepted(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        message = _receipt(signer, [(A, [1])], iat=NOW + CLOCK_SKEW_S, exp=NOW + CLOCK_SKEW_S)
        assert (1,) == _book().settle(Receipt.from_bytes(message, platform_key), NOW).held
        past = _receipt(signer, [(A, [1])], iat=NOW - CLOCK_SKEW_S - 60, exp=NOW - CLOCK_SKEW_S)
        assert (1,) == _book().settle(Receipt.from_bytes(past, platform_key), NOW).held

    @pytest.mark.parametrize("hub_off_s", [-TOLERANCE_S, TOLERANCE_S])
    def test_a_hub_clock_the_network_time_leaves_alone_takes_receipts(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey, hub_off_s: float
    ) -> None:
        """A hub clock 15 minutes off (agent/network_time.py corrects it only beyond that),
        behind or ahead, with a receipt valid for 15 minutes: accepted."""
        message = _receipt(signer, [(A, [1])], iat=NOW, exp=NOW + 900)
        wall = NOW + hub_off_s + (900 if hub_off_s > 0 else 0)
        assert (1,) == _book().settle(Receipt.from_bytes(message, platform_key), wall).held

    def test_other_hub(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        receipt = Receipt.from_bytes(_receipt(signer, [(A, [1])], hub="hub-0002"), platform_key)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(receipt, NOW)
        assert ReceiptRejection.WRONG_HUB is _rejected(excinfo)

    def test_mismatched_seqs_delete_nothing(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """A valid item for A and an item naming B with one seq too many: all refused."""
        book = _book()
        receipt = Receipt.from_bytes(_receipt(signer, [(A, [1]), (B, [2, 3, 4])]), platform_key)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(receipt, NOW)
        assert ReceiptRejection.MISMATCHED is _rejected(excinfo)
        assert (3, 3) == (len(book), book.awaiting)
        # Its rid was not remembered: the platform's corrected receipt may reuse nothing,
        # but a valid one afterwards goes through.
        ok = Receipt.from_bytes(_receipt(signer, [(A, [1])]), platform_key)
        assert (1,) == book.settle(ok, NOW).held

    def test_unknown_envelope_with_readings_not_pending(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        unknown = envelope_digest(b"never sent")
        receipt = Receipt.from_bytes(_receipt(signer, [(A, [1]), (unknown, [99])]), platform_key)
        assert frozenset({1, 99}) == book.unknown_seqs(receipt)
        with pytest.raises(ReceiptRejectedError) as excinfo:
            book.settle(receipt, NOW, pending={1})  # 99 is not pending in the outbox
        assert ReceiptRejection.UNKNOWN_ENVELOPE is _rejected(excinfo)
        assert book.holds(1)

    def test_stale_item_deletes_nothing(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """An envelope sent before a restart: its seqs are still pending; the rest of the
        receipt is taken."""
        book = _book()
        before_restart = envelope_digest(b"sent by the last run")
        receipt = Receipt.from_bytes(
            _receipt(signer, [(A, [1]), (before_restart, [7, 8])]), platform_key
        )
        settlement = book.settle(receipt, NOW, pending=book.unknown_seqs(receipt))
        assert (1,) == settlement.held
        assert [ItemFate.HELD, ItemFate.STALE] == [f for _, f in settlement.fates]

    def test_duplicate_item(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        """The platform receipts every copy it got: the second receipt for A is a duplicate,
        as is A named twice in one receipt."""
        book = _book()
        book.settle(Receipt.from_bytes(_receipt(signer, [(A, [1])]), platform_key), NOW)
        receipt = Receipt.from_bytes(
            _receipt(signer, [(A, [1]), (B, [2, 3]), (B, [2, 3])]), platform_key
        )
        assert frozenset() == book.unknown_seqs(receipt)
        settlement = book.settle(receipt, NOW)
        assert (2, 3) == settlement.held
        assert (2, 1) == (settlement.count(ItemFate.DUPLICATE), settlement.count(ItemFate.HELD))


class TestTimeouts:
    def test_receipt_timeout_releases_for_sending_again(self) -> None:
        book = ReceiptBook(HUB_ID, timeout_s=60.0)
        book.sent(A, [1])
        book.sent(B, [2, 3])
        book.acked(A, 10.0)
        book.acked(B, 20.0)
        assert 70.0 == book.next_deadline()
        assert [] == book.expire(69.9)
        assert [1] == book.expire(70.0)
        assert not book.holds(1)
        assert book.holds(2)
        assert [2, 3] == sorted(book.expire(80.0))
        assert (0, None) == (len(book), book.next_deadline())

    def test_late_receipt_of_a_released_envelope_still_deletes(
        self, signer: PlatformSigner, platform_key: ec.EllipticCurvePublicKey
    ) -> None:
        book = _book()
        assert [1, 2, 3, 4] == sorted(book.release_all())  # the connection ended
        receipt = Receipt.from_bytes(_receipt(signer, [(B, [2, 3])]), platform_key)
        assert frozenset() == book.unknown_seqs(receipt)
        assert (2, 3) == book.settle(receipt, NOW).held

    def test_resent_envelope_rejoins_the_window(self) -> None:
        book = _book()
        book.failed(A)
        assert not book.holds(1)
        book.sent(A, [1])  # the same bytes again
        assert book.holds(1)
        with pytest.raises(ValueError, match="already"):
            book.sent(A, [1])

    def test_window_is_bounded(self) -> None:
        book = ReceiptBook(HUB_ID, awaiting_max=2)
        book.sent(A, [1])
        book.sent(B, [2, 3])
        assert book.full
        with pytest.raises(OverflowError):
            book.sent(C, [4])

    def test_released_memory_is_bounded(self) -> None:
        book = ReceiptBook(HUB_ID, released_max=2)
        for digest, seqs in ((A, [1]), (B, [2, 3]), (C, [4])):
            book.sent(digest, seqs)
        book.release_all()
        receipt_seqs = {A: None, B: None, C: None}
        known = [d for d in receipt_seqs if book._known(d) is not None]
        assert [B, C] == known


def test_receipt_window_grows_with_receipts_and_halves_on_timeouts() -> None:
    window = ReceiptWindow(40, 100)
    window.receipted(40)
    assert 80 == window.size
    window.receipted(40)
    assert 100 == window.size
    window.timed_out()
    assert 50 == window.size
    window.timed_out()
    window.timed_out()
    assert 40 == window.size


# ---------------------------------------------------------------------------
# Fuzz: whatever arrives on the receipts topic, a clean rejection or a receipt, never a crash
# ---------------------------------------------------------------------------

_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data: bytes, dev_pki_key: ec.EllipticCurvePublicKey) -> None:
    with pytest.raises(ReceiptRejectedError):
        Receipt.from_bytes(data, dev_pki_key)


_cbor_leaves = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.binary(max_size=20)
    | st.text(max_size=10)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=True)
)
_cbor_values = st.recursive(
    _cbor_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "hub", "rid", "iat", "exp", "held", "refused"]), inner, max_size=7
        )
    ),
    max_leaves=20,
)


@_FUZZ
@given(body=_cbor_values)
def test_fuzz_signed_payloads(
    body: object, dev_pki_signer: PlatformSigner, dev_pki_key: ec.EllipticCurvePublicKey
) -> None:
    """Payloads signed by the platform key itself: a receipt or a clean rejection."""
    message = dev_pki_signer.sign(RECEIPT_CONTENT_TYPE, cbor2.dumps(body, canonical=True))
    reason: ReceiptRejection | None = None
    try:
        receipt = Receipt.from_bytes(message, dev_pki_key)
    except ReceiptRejectedError as exc:
        reason = exc.reason
    else:
        assert receipt.items
    assert reason in (None, ReceiptRejection.MALFORMED)


@_FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_fuzz_altered_receipts(
    flips: list[tuple[int, int]],
    dev_pki_signer: PlatformSigner,
    dev_pki_key: ec.EllipticCurvePublicKey,
) -> None:
    """A valid receipt with bytes altered: never accepted, always a clean rejection."""
    message = bytearray(
        dev_pki_signer.receipt(
            HUB_ID, [(A, [1]), (B, [2, 3])], iat=NOW, exp=NOW + 60, rid=bytes(16)
        )
    )
    original = bytes(message)
    for position, xor in flips:
        message[position % len(message)] ^= xor
    assume(bytes(message) != original)  # two flips of one byte may cancel out
    with pytest.raises(ReceiptRejectedError):
        Receipt.from_bytes(bytes(message), dev_pki_key)


@pytest.fixture(scope="module")
def dev_pki_key(platform_key: ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    """Module-scoped (hypothesis reuses it across examples)."""
    return platform_key


@pytest.fixture(scope="module")
def dev_pki_signer(signer: PlatformSigner) -> PlatformSigner:
    return signer
