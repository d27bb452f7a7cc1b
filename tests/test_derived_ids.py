"""Reading payload version 2 (agent/derived_ids.py): without the identifiers a receiver derives.

Every kind of reading the pipeline makes is compacted and expanded back byte for byte, by the
hub's code and by the reference platform's own reading of docs/platform-protocol.md
(hil/platform_verify.py); a reading whose expansion would differ goes as version 1; a
malformed version-2 reading is refused by both, with the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose, derived_ids, dictionaries
from agent.envelopes import ReadingPayload, build_batch, build_single, open_envelope
from agent.errors import IntegrityError
from agent.ingest import Signer
from hil.pki import DevPki
from hil.platform_verify import (
    Dictionaries,
    HubDirectory,
    RejectedError,
    expand_v2,
    verify_envelope,
)
from hil.train_dictionaries import hub_backlog, synthetic_readings

SHIPPED: Final = dictionaries.load()
V2: Final = SHIPPED[2]
_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub derived ids test key 012", "big"), ec.SECP256R1()
)


def _payloads() -> list[bytes]:
    readings = [r for k in ("blood_pressure", "glucose", "pulse_oximetry")
                for r in synthetic_readings(k, 12, 424242)]  # fmt: skip
    assert any(r.with_context for r in readings)
    return [r.payload for r in readings] + [r.payload for r in hub_backlog(12, 4243)]


PAYLOADS: Final = _payloads()


def _stored(payload: bytes) -> dict[str, Any]:
    content = cbor2.loads(payload)
    assert isinstance(content, dict)
    return content


def test_every_kind_round_trips_byte_for_byte_on_both_sides() -> None:
    for payload in PAYLOADS:
        compact = derived_ids.compact(payload)
        assert compact is not None
        content = cbor2.loads(compact)
        assert 2 == content["v"]
        entries = content["fhir"]["entry"]
        assert all(set(e) == {"resource"} for e in entries)
        assert not [e for e in entries if e["resource"].get("id", "").startswith("obs-")]
        assert "urn:uuid:" not in repr(content)
        assert (payload, _stored(payload)) == derived_ids.expand(content)
        assert (payload, _stored(payload)) == expand_v2(cbor2.loads(compact), "reading")
        assert len(compact) < len(payload)


def _with_relative_reference_to_an_entry(payload: bytes) -> bytes:
    content = _stored(payload)
    entries = content["fhir"]["entry"]
    device = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Device")
    observation = entries[0]["resource"]
    observation["derivedFrom"] = [{"reference": f"Device/{device['id']}"}]
    return cbor2.dumps(content, canonical=True)


def test_a_reading_without_an_exact_version_2_goes_as_version_1() -> None:
    """A relative reference naming an entry would come back as its urn:uuid: not compacted;
    in an envelope with dictionary 2 that reading is version 1, the others version 2."""
    odd = _with_relative_reference_to_an_entry(PAYLOADS[0])
    assert derived_ids.compact(odd) is None
    signer = Signer.from_key(_KEY)
    readings = [ReadingPayload(1, "hub-0001", _reseq(odd, 1)), *_stored_readings(2, 3)]
    batch = build_batch(readings, signer, V2, 256 * 1024)
    assert (1, 2, 3) == batch.seqs
    opened = open_envelope(batch.data, _KEY.public_key(), SHIPPED)
    assert [r.payload for r in readings] == [r.payload for r in opened.readings]
    sent = cbor2.loads(_inflate(batch.data))["readings"]
    assert [1, 2, 2] == [cbor2.loads(r)["v"] for r in sent]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda e: e[0].update(fullUrl="urn:uuid:0"), id="fullUrl"),
        pytest.param(lambda e: e.clear(), id="no-entries"),
        pytest.param(lambda e: e.append(copy.deepcopy(e[-1])), id="entry-twice"),
        pytest.param(lambda e: _device(e).pop("id"), id="device-without-id"),
        pytest.param(lambda e: e[0]["resource"].pop("identifier"), id="no-hub-identifier"),
        pytest.param(lambda e: e[0]["resource"].update(identifier=5), id="identifier-not-a-list"),
        pytest.param(lambda e: e.__setitem__(0, []), id="entry-not-a-map"),
    ],
)
def test_malformed_version_2_is_refused_by_both(change: Any) -> None:
    compact = derived_ids.compact(PAYLOADS[0])
    assert compact is not None
    content = cbor2.loads(compact)
    change(content["fhir"]["entry"])
    with pytest.raises(IntegrityError) as hub_side:
        derived_ids.expand(copy.deepcopy(content))
    assert "reading" == hub_side.value.what
    with pytest.raises(RejectedError) as platform_side:
        expand_v2(copy.deepcopy(content), "reading")
    assert platform_side.value.refusable


def _device(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Device")


def test_dictionary_2_envelopes_verify_on_the_platform(dev_pki: DevPki, tmp_path: Path) -> None:
    """A single and a batch made with dictionary 2 by the hub's publisher code verify on the
    reference platform, each reading's bytes the stored version 1."""
    key = cose.load_signing_key(dev_pki.hub_key)
    signer = Signer.from_key(key)
    hubs = HubDirectory.load(dev_pki.ca_cert, [(dev_pki.hub_id, dev_pki.hub_cert)])
    (tmp_path / "2.zdict").write_bytes(V2.data)
    held = Dictionaries.load(tmp_path)
    readings = _stored_readings(1, 20, hub=dev_pki.hub_id)
    single = build_single(readings[0], signer, V2)
    batch = build_batch(readings, signer, V2, 256 * 1024)
    topic = f"homehub/v1/{dev_pki.hub_id}/readings"
    for envelope in (single, batch):
        verified = verify_envelope(topic, envelope.data, hubs, held)
        assert list(envelope.seqs) == verified.seqs
        by_seq = {r.seq: r.payload for r in readings}
        assert [by_seq[r.seq] for r in verified.readings] == [
            r.reading_bytes for r in verified.readings
        ]
    assert len(batch.data) / len(batch.seqs) < 250


def _reseq(payload: bytes, seq: int, hub: str = "hub-0001") -> bytes:
    content = _stored(payload)
    content["seq"], content["hub"] = seq, hub
    return cbor2.dumps(content, canonical=True)


def _stored_readings(first: int, last: int, hub: str = "hub-0001") -> list[ReadingPayload]:
    return [
        ReadingPayload(seq, hub, _reseq(PAYLOADS[(seq * 7) % len(PAYLOADS)], seq, hub))
        for seq in range(first, last + 1)
    ]


def _inflate(envelope: bytes) -> bytes:
    message = cose.split1(envelope, max_message_bytes=cose.MAX_BATCH_MESSAGE_BYTES)
    return zstandard.ZstdDecompressor(dict_data=V2.zstd).decompress(message.payload)
