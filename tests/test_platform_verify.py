"""The reference platform's verification (hil/platform_verify.py): batches, compression, and
what it can say about an envelope it refuses. Envelopes are built here with cryptography and
cbor2 (not with the hub's code, whose compression is built in parallel), exactly as
docs/platform-protocol.md describes them."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agent import cose, envelopes
from agent import dictionaries as hub_dictionaries
from hil.pki import DevPki
from hil.platform_verify import (
    BATCH_CONTENT_TYPE,
    CONTENT_TYPE,
    MAX_DECOMPRESSED_BYTES,
    Dictionaries,
    HubDirectory,
    RejectedError,
    verify_envelope,
)

TOPIC: Final = "homehub/v1/hub-0001/readings"
DICT_ID: Final = 4242


def reading(seq: int, *, hub: str = "hub-0001", rng: random.Random | None = None) -> bytes:
    """A synthetic reading payload (deterministic CBOR), no real person's data."""
    rng = rng or random.Random(seq)
    body: dict[str, Any] = {
        "v": 1,
        "hub": hub,
        "seq": seq,
        "id": f"dev-{rng.randrange(10**6):06d}-patient-x-150020-sha256:{rng.getrandbits(128):032x}",
        "kind": "observation",
        "hub_time": f"2026-11-{rng.randrange(1, 28):02d}T10:00:00Z",
        "fhir": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {
                            "coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "150020"}]
                        },
                        "valueQuantity": {
                            "value": Decimal(rng.randrange(900, 1800)) / 10,
                            "unit": "mm[Hg]",
                            "system": "http://unitsofmeasure.org",
                        },
                    }
                }
            ],
        },
    }
    return cbor2.dumps(body, canonical=True)


def sign(
    key: ec.EllipticCurvePrivateKey,
    payload: bytes,
    content_type: str = CONTENT_TYPE,
    **extra: Any,
) -> bytes:
    """A tagged COSE_Sign1 with ``{1: -7, 3: ct, 4: kid}`` plus ``extra`` labels (by name
    ``encoding`` -> -70001, ``dictionary`` -> -70002)."""
    header: dict[int, Any] = {1: -7, 3: content_type, 4: cose.key_id(key.public_key())}
    if "encoding" in extra:
        header[-70001] = extra["encoding"]
    if "dictionary" in extra:
        header[-70002] = extra["dictionary"]
    protected = cbor2.dumps(header, canonical=True)
    tbs = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]), canonical=True)


def batch(seqs: list[int], hub: str = "hub-0001") -> bytes:
    """A batch payload of readings ``seqs``."""
    return cbor2.dumps({"v": 1, "hub": hub, "readings": [reading(s) for s in seqs]}, canonical=True)


@pytest.fixture(scope="module")
def hub_key(dev_pki: DevPki) -> ec.EllipticCurvePrivateKey:
    """The dev hub's key."""
    return cose.load_signing_key(dev_pki.hub_key)


@pytest.fixture(scope="module")
def hubs(dev_pki: DevPki) -> HubDirectory:
    """The platform's directory with the dev hub."""
    return HubDirectory.load(dev_pki.ca_cert, [(dev_pki.hub_id, dev_pki.hub_cert)])


@pytest.fixture(scope="module")
def zdict() -> zstandard.ZstdCompressionDict:
    """A dictionary trained here on 400 synthetic readings, with our id."""
    rng = random.Random(9)
    samples: list[bytes | bytearray | memoryview[int]] = [reading(n, rng=rng) for n in range(400)]
    return zstandard.train_dictionary(8192, samples, dict_id=DICT_ID)


@pytest.fixture
def dictionaries(zdict: zstandard.ZstdCompressionDict, tmp_path: Path) -> Dictionaries:
    """The trained dictionary loaded from ``<id>.zdict`` as the receiver loads it."""
    (tmp_path / f"{DICT_ID}.zdict").write_bytes(zdict.as_bytes())
    return Dictionaries.load(tmp_path)


def _error(
    topic: str, envelope: bytes, hubs: HubDirectory, d: Dictionaries | None = None
) -> RejectedError:
    with pytest.raises(RejectedError) as caught:
        verify_envelope(topic, envelope, hubs, d)
    return caught.value


class TestBatch:
    def test_batch_verifies_reading_by_reading(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A batch of three: three readings, each with its own bytes, the envelope's seqs."""
        envelope = sign(hub_key, batch([3, 1, 2]), BATCH_CONTENT_TYPE)
        verified = verify_envelope(TOPIC, envelope, hubs)
        assert ([3, 1, 2], BATCH_CONTENT_TYPE, False) == (
            verified.seqs,
            verified.content_type,
            verified.compressed,
        )
        assert [reading(3), reading(1), reading(2)] == [r.reading_bytes for r in verified.readings]
        assert {envelope} == {r.envelope for r in verified.readings}

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            (
                cbor2.dumps({"v": 1, "hub": "hub-0001", "readings": []}),
                "batch must hold 1 to 500 readings",
            ),
            (
                cbor2.dumps({"v": 1, "hub": "hub-0001", "readings": [reading(1)] * 2}),
                "batch names a seq twice",
            ),
            (
                cbor2.dumps({"v": 1, "hub": "hub-0001", "readings": [cbor2.loads(reading(1))]}),
                "batch readings must be byte strings (bstr .cbor reading)",
            ),
            (
                cbor2.dumps(
                    {
                        "v": 1,
                        "hub": "hub-0001",
                        "readings": [reading(1), reading(2, hub="hub-0002")],
                    }
                ),
                "batch reading 1 hub differs from the topic's hub id",
            ),
            (
                cbor2.dumps({"v": 1, "hub": "hub-0001", "readings": [reading(1)] * 501}),
                "batch must hold 1 to 500 readings",
            ),
        ],
    )
    def test_bad_batches(
        self, payload: bytes, reason: str, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A signed batch that breaks the contract is refused by name."""
        assert reason == _error(TOPIC, sign(hub_key, payload, BATCH_CONTENT_TYPE), hubs).reason

    def test_refused_batch_names_its_seqs(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A batch with one reading for another hub: refusable, the hub and all seqs named."""
        payload = cbor2.dumps(
            {"v": 1, "hub": "hub-0001", "readings": [reading(5), reading(6, hub="hub-0002")]},
            canonical=True,
        )
        error = _error(TOPIC, sign(hub_key, payload, BATCH_CONTENT_TYPE), hubs)
        assert (True, "hub_mismatch", "hub-0001", [5, 6]) == (
            error.refusable,
            error.code,
            error.hub_id,
            error.seqs,
        )

    def test_bad_signature_names_seqs(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A signature that does not verify (pycose): refusable, with the payload's seq."""
        envelope = bytearray(sign(hub_key, reading(7)))
        envelope[-1] ^= 1
        error = _error(TOPIC, bytes(envelope), hubs)
        assert ("signature does not verify", "bad_signature", True, [7]) == (
            error.reason,
            error.code,
            error.refusable,
            error.seqs,
        )

    def test_pycose_own_ecdsa_agrees(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """pure_pycose (pycose's ES256, python-ecdsa) accepts and refuses the same envelopes."""
        good = sign(hub_key, batch([1, 2]), BATCH_CONTENT_TYPE)
        bad = bytearray(good)
        bad[-1] ^= 1
        assert [1, 2] == verify_envelope(TOPIC, good, hubs, pure_pycose=True).seqs
        with pytest.raises(RejectedError, match="signature does not verify"):
            verify_envelope(TOPIC, bytes(bad), hubs, pure_pycose=True)

    def test_platform_faults_are_parked_not_refused(self, hubs: HubDirectory) -> None:
        """An unknown key is the platform's problem: not refusable (the hub sends it again)."""
        other = ec.generate_private_key(ec.SECP256R1())
        error = _error(TOPIC, sign(other, reading(1)), hubs)
        assert (False, "unknown_kid") == (error.refusable, error.code)


class TestCompression:
    def test_dictionary_compressed_single_and_batch(
        self,
        hub_key: ec.EllipticCurvePrivateKey,
        hubs: HubDirectory,
        zdict: zstandard.ZstdCompressionDict,
        dictionaries: Dictionaries,
    ) -> None:
        """zstd with dictionary 4242: verified over the compressed bytes, then decompressed."""
        cctx = zstandard.ZstdCompressor(level=19, dict_data=zdict)
        plain = reading(11)
        frame = cctx.compress(plain)
        assert len(frame) < len(plain) / 3
        verified = verify_envelope(
            TOPIC, sign(hub_key, frame, encoding="zstd", dictionary=DICT_ID), hubs, dictionaries
        )
        assert ([11], True, DICT_ID, plain) == (
            verified.seqs,
            verified.compressed,
            verified.dictionary,
            verified.readings[0].reading_bytes,
        )
        frame = cctx.compress(batch([20, 21]))
        envelope = sign(hub_key, frame, BATCH_CONTENT_TYPE, encoding="zstd", dictionary=DICT_ID)
        assert [20, 21] == verify_envelope(TOPIC, envelope, hubs, dictionaries).seqs

    def test_zstd_without_dictionary(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """-70001 "zstd" alone: a plain zstd frame."""
        frame = zstandard.ZstdCompressor().compress(reading(12))
        assert [12] == verify_envelope(TOPIC, sign(hub_key, frame, encoding="zstd"), hubs).seqs

    def test_unknown_dictionary_is_parked(
        self,
        hub_key: ec.EllipticCurvePrivateKey,
        hubs: HubDirectory,
        zdict: zstandard.ZstdCompressionDict,
    ) -> None:
        """A dictionary the platform does not hold: its fault, not the hub's: parked."""
        frame = zstandard.ZstdCompressor(dict_data=zdict).compress(reading(13))
        error = _error(TOPIC, sign(hub_key, frame, encoding="zstd", dictionary=DICT_ID), hubs)
        assert ("unknown_dictionary", False) == (error.code, error.refusable)

    def test_declared_size_over_the_bound(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A frame stating more than 1 MiB is refused before anything is allocated."""
        frame = zstandard.ZstdCompressor().compress(b"\0" * (MAX_DECOMPRESSED_BYTES + 1))
        assert len(frame) < 1000
        error = _error(TOPIC, sign(hub_key, frame, encoding="zstd"), hubs)
        assert ("too_large", None) == (error.code, error.seqs)

    def test_frame_must_declare_its_size(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A streamed frame (no size in its header) is refused before inflating anything,
        even one that would stay far below the bound."""
        for plain in (reading(15), b"\0" * (4 * MAX_DECOMPRESSED_BYTES)):
            chunker = zstandard.ZstdCompressor(write_content_size=False).chunker()
            frame = b"".join([*chunker.compress(plain), *chunker.finish()])  # type: ignore[no-untyped-call]
            unknown = zstandard.get_frame_parameters(frame).content_size
            assert zstandard.CONTENTSIZE_UNKNOWN == unknown
            error = _error(TOPIC, sign(hub_key, frame, encoding="zstd"), hubs)
            assert "payload: zstd frame does not declare its content size" == error.reason

    def test_trailing_bytes_after_the_frame(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """One frame and nothing after it."""
        frame = zstandard.ZstdCompressor().compress(reading(14)) + b"\0"
        error = _error(TOPIC, sign(hub_key, frame, encoding="zstd"), hubs)
        assert error.reason.startswith("payload: zstd frame malformed")

    @pytest.mark.parametrize(
        ("extra", "reason"),
        [
            ({"encoding": "gzip"}, 'payload encoding (-70001) is not "zstd"'),
            (
                {"dictionary": DICT_ID},
                "zstd dictionary (-70002) without zstd, or not a positive id",
            ),
            (
                {"encoding": "zstd", "dictionary": "4242"},
                "zstd dictionary (-70002) without zstd, or not a positive id",
            ),
        ],
    )
    def test_bad_compression_headers(
        self,
        extra: dict[str, Any],
        reason: str,
        hub_key: ec.EllipticCurvePrivateKey,
        hubs: HubDirectory,
    ) -> None:
        """The compression labels are checked like the others."""
        assert reason == _error(TOPIC, sign(hub_key, reading(1), **extra), hubs).reason

    def test_dictionary_file_must_carry_its_id(
        self, zdict: zstandard.ZstdCompressionDict, tmp_path: Path
    ) -> None:
        """A file named 5.zdict holding dictionary 4242 is refused at load."""
        (tmp_path / "5.zdict").write_bytes(zdict.as_bytes())
        with pytest.raises(ValueError, match="its zstd dictionary id is 4242"):
            Dictionaries.load(tmp_path)


class TestHubEnvelopes:
    """The hub's own envelopes (agent/envelopes.py, dictionaries 1, 2 and 3 of
    agent/dictionaries/) verify in the independent platform, single and batched, compressed or
    not."""

    @pytest.mark.parametrize("dictionary_id", [1, 2, 3])
    def test_single_and_batch_with_the_shipped_dictionary(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory, dictionary_id: int
    ) -> None:
        """Each way the hub can send readings 1-3 verifies, with the same reading bytes."""
        shipped = Path(hub_dictionaries.__file__).parent
        platform_dictionaries = Dictionaries.load(shipped)
        dictionary = hub_dictionaries.load(shipped)[dictionary_id]
        kid = cose.key_id(hub_key.public_key())

        class Signer:
            @property
            def sign(self) -> cose.Es256Sign:
                return lambda message: cose.es256_sign(hub_key, message)

            @property
            def kid(self) -> bytes:
                return kid

        payloads = [envelopes.ReadingPayload(s, "hub-0001", reading(s)) for s in (1, 2, 3)]
        built = [
            envelopes.build_single(payloads[0], Signer(), None),
            envelopes.build_single(payloads[0], Signer(), dictionary),
            envelopes.build_batch(payloads, Signer(), dictionary, 64 * 1024),
            envelopes.build_batch(payloads, Signer(), None, 64 * 1024, compress=False),
        ]
        for envelope in built:
            verified = verify_envelope(TOPIC, envelope.data, hubs, platform_dictionaries)
            assert (list(envelope.seqs), envelope.compressed, envelope.digest) == (
                verified.seqs,
                verified.compressed,
                verified.digest,
            )
            assert [p.payload for p in payloads[: len(envelope.seqs)]] == [
                r.reading_bytes for r in verified.readings
            ]
        assert [1, 2, 3] == platform_dictionaries.ids
