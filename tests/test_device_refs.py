"""Reading payload version 3 (agent/device_refs.py): Devices by reference.

Every kind of reading the pipeline makes, and random Bundles drawn by hypothesis, go version 1
-> version 3 -> version 1 byte for byte, with their Devices in full and by reference, by the
hub's code and by the reference platform's own reading of docs/platform-protocol.md
(hil/platform_verify.py ``expand_v3``); a malformed version-3 reading is refused by both with
the reason, and one naming a device set its reader does not hold is told apart
(``UnknownDevicesError`` / ``unknown_device``). Envelopes built with a version-3 dictionary
verify on the platform against its store's device sets.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import cose, derived_ids, device_refs, dictionaries
from agent.device_refs import ConfirmedDeviceSets
from agent.dictionaries import Dictionary
from agent.envelopes import (
    ReadingPayload,
    build_batch,
    build_single,
    device_sets_of,
    open_envelope,
)
from agent.errors import IntegrityError, UnknownDevicesError
from agent.ingest import Signer
from agent.normalize.bundle import full_url
from hil.pki import DevPki
from hil.platform_store import PlatformStore
from hil.platform_verify import (
    Dictionaries,
    HubDirectory,
    RejectedError,
    device_set_of,
    expand_v3,
    verify_envelope,
)
from hil.train_dictionaries import hub_backlog, synthetic_readings

SHIPPED: Final = dictionaries.load()
V3: Final = next(
    (d for d in SHIPPED.values() if d.reading_version == device_refs.READING_V3),
    Dictionary.from_bytes(2, SHIPPED[2].data, sha256_hex=SHIPPED[2].sha256_hex, reading_version=3),
)
"""The shipped version-3 dictionary (before it shipped: dictionary 2's bytes sent as version 3)."""

FUZZ: Final = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _payloads() -> list[bytes]:
    readings = [r for k in ("blood_pressure", "glucose", "pulse_oximetry")
                for r in synthetic_readings(k, 10, 515151)]  # fmt: skip
    assert any(r.with_context for r in readings)
    return [r.payload for r in readings] + [r.payload for r in hub_backlog(10, 5152)]


PAYLOADS: Final = _payloads()


def _set_of(payload: bytes) -> tuple[bytes, tuple[Any, ...]]:
    found = device_refs.device_set(cbor2.loads(payload))
    assert found is not None
    return found


def _both_expand(compacted: bytes, sets: dict[bytes, Any]) -> tuple[bytes, bytes]:
    """The version-1 bytes the hub's and the platform's expansions make of ``compacted``."""
    hub, _ = device_refs.expand(cbor2.loads(compacted), sets.get)

    def lookup(digest: bytes) -> list[dict[str, Any]] | None:
        held = sets.get(digest)
        return None if held is None else [dict(r) for r in held]

    platform, _ = expand_v3(cbor2.loads(compacted), "reading", lookup)
    return hub, platform


def test_every_kind_round_trips_in_full_and_by_reference() -> None:
    for payload in PAYLOADS:
        digest, devices = _set_of(payload)
        assert len(devices) == 2  # the device's and the hub's
        assert (digest, cbor2.dumps(list(devices), canonical=True)) == device_set_of(
            cbor2.loads(payload)
        )
        full = device_refs.compact(payload)
        by_reference = device_refs.compact(payload, {digest})
        assert full is not None
        assert by_reference is not None
        assert (digest, False, digest, True) == (
            full.device_set,
            full.by_reference,
            by_reference.device_set,
            by_reference.by_reference,
        )
        for compacted in (full, by_reference):
            assert (payload, payload) == _both_expand(compacted.payload, {digest: devices})
        content = cbor2.loads(by_reference.payload)
        assert (3, digest) == (content["v"], content["devices"])
        entries = content["fhir"]["entry"]
        assert [{"device": 0}, {"device": 1}] == [e for e in entries if "device" in e]
        assert "urn:uuid:" not in repr(content)
        assert len(by_reference.payload) < len(full.payload) < len(payload)


def test_a_reading_naming_a_set_not_held_is_told_apart() -> None:
    payload = PAYLOADS[0]
    digest, _ = _set_of(payload)
    compacted = device_refs.compact(payload, {digest})
    assert compacted is not None
    with pytest.raises(UnknownDevicesError) as hub_side:
        device_refs.expand(cbor2.loads(compacted.payload), lambda _d: None)
    assert (digest, "reading") == (hub_side.value.digest, hub_side.value.what)
    assert digest.hex() in hub_side.value.reason
    with pytest.raises(RejectedError) as platform_side:
        expand_v3(cbor2.loads(compacted.payload), "reading", lambda _d: None)
    assert ("unknown_device", True) == (platform_side.value.code, platform_side.value.refusable)


def _placeholders(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in content["fhir"]["entry"] if "device" in e]


def _observation(content: dict[str, Any]) -> dict[str, Any]:
    resource = content["fhir"]["entry"][0]["resource"]
    assert isinstance(resource, dict)
    return resource


@pytest.mark.parametrize(
    ("change", "hub_reason"),
    [
        pytest.param(lambda c: c.update(devices=b"\x01" * 8), "devices is not", id="short-digest"),
        pytest.param(lambda c: c.pop("devices"), "names no device set", id="no-digest"),
        pytest.param(
            lambda c: [e.update(resource={}) for e in _placeholders(c)],
            "no entry is a Device by reference",
            id="placeholder-and-resource",
        ),
        pytest.param(
            lambda c: _placeholders(c)[0].update(device=1), "numbered 0, 1", id="misnumbered"
        ),
        pytest.param(
            lambda c: _placeholders(c)[0].update(device=True), "numbered 0, 1", id="bool-index"
        ),
        pytest.param(
            lambda c: c["fhir"]["entry"].remove(_placeholders(c)[1]),
            "holds 2 Devices, the reading names 1",
            id="a-device-missing",
        ),
        pytest.param(
            lambda c: _observation(c)["subject"].update(reference=99),
            "neither text nor the index",
            id="index-out-of-range",
        ),
        pytest.param(
            lambda c: _observation(c)["subject"].update(reference=-1),
            "neither text nor the index",
            id="negative-index",
        ),
        pytest.param(
            lambda c: _observation(c)["subject"].update(reference=1.0),
            "neither text nor the index",
            id="float-reference",
        ),
        pytest.param(
            lambda c: c["fhir"]["entry"].append(copy.deepcopy(c["fhir"]["entry"][0])),
            "id twice",
            id="entry-twice",
        ),
        pytest.param(
            lambda c: _observation(c).pop("identifier"), "no one hub identifier", id="no-hub-id"
        ),
        pytest.param(lambda c: c.update(v=2), "version is not 3", id="version"),
    ],
)
def test_malformed_version_3_is_refused_by_both(
    change: Callable[[dict[str, Any]], object], hub_reason: str
) -> None:
    payload = PAYLOADS[0]
    digest, devices = _set_of(payload)
    compacted = device_refs.compact(payload, {digest})
    assert compacted is not None
    content = cbor2.loads(compacted.payload)
    change(content)
    with pytest.raises(IntegrityError) as hub_side:
        device_refs.expand(copy.deepcopy(content), {digest: devices}.get)
    assert not isinstance(hub_side.value, UnknownDevicesError)
    assert ("reading", True) == (hub_side.value.what, hub_reason in hub_side.value.reason)
    if content["v"] != 3:
        return  # the platform picks the expansion by version: not expand_v3's to refuse
    with pytest.raises(RejectedError) as platform_side:
        expand_v3(copy.deepcopy(content), "reading", lambda _d: [dict(r) for r in devices])
    assert ("malformed", True) == (platform_side.value.code, platform_side.value.refusable)
    assert platform_side.value.reason.startswith("reading: ")


def test_no_exact_version_3_means_none() -> None:
    """What expansion could not give back exactly is not compacted (it goes as version 1)."""
    content = cbor2.loads(PAYLOADS[0])
    content["devices"] = b"x"
    odd = [cbor2.dumps(content, canonical=True)]
    content = cbor2.loads(PAYLOADS[0])
    _observation(content)["subject"]["reference"] = 3  # not text
    odd.append(cbor2.dumps(content, canonical=True))
    content = cbor2.loads(PAYLOADS[0])
    content["fhir"]["entry"][0]["fullUrl"] = "urn:uuid:" + str(uuid.uuid4())
    odd.append(cbor2.dumps(content, canonical=True))
    content = cbor2.loads(PAYLOADS[0])
    content["v"] = 2
    odd.append(cbor2.dumps(content, canonical=True))
    assert [None] * 4 == [device_refs.compact(p) for p in odd]


# ---------------------------------------------------------------------------
# Random Bundles (hypothesis)
# ---------------------------------------------------------------------------

_TYPES: Final = ("Observation", "Device", "Device", "Patient", "Location")
_HUB_SYSTEM: Final = "urn:homehub:fhir:reading-id"
_ids = st.text("abcXYZ019.-", min_size=1, max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=12)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2).map(Decimal)
    | st.floats(allow_nan=False, width=32)
)


@st.composite
def _v1_readings(draw: st.DrawFn) -> bytes:
    """A version-1 reading with a random Bundle: entries of several types (Devices among
    them), references to entries by fullUrl, relative ones naming entries, foreign ones."""
    count = draw(st.integers(1, 6))
    keys = [(draw(st.sampled_from(_TYPES)), draw(_ids)) for _ in range(count)]
    urls = [full_url(t, i) for t, i in keys]

    def reference() -> st.SearchStrategy[str]:
        return (
            st.sampled_from(urls)
            | st.sampled_from([f"{t}/{i}" for t, i in keys])
            | (st.text(max_size=10))
        )

    body = st.recursive(
        _scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "value", "code"]), inner, max_size=3)
            | st.builds(lambda r: {"reference": r}, reference())
        ),
        max_leaves=8,
    )
    entries = []
    for (kind, ident), url in zip(keys, urls, strict=True):
        resource: dict[str, Any] = {"resourceType": kind, "id": ident, "x": draw(body)}
        if kind == "Observation" and draw(st.booleans()):
            value = draw(st.text(max_size=12))
            resource["identifier"] = [{"system": _HUB_SYSTEM, "value": value}]
            if draw(st.booleans()):  # the id the hub derives, left out by version 2 and 3
                resource["id"] = derived_ids.observation_id(resource)
                url = full_url(kind, resource["id"])
        entries.append({"fullUrl": url, "resource": resource})
    reading = {
        "v": 1,
        "hub": "hub-0001",
        "seq": draw(st.integers(1, 2**40)),
        "kind": "observation",
        "id": draw(st.text(max_size=8)),
        "fhir": {"resourceType": "Bundle", "type": "collection", "entry": entries},
    }
    return cbor2.dumps(reading, canonical=True)


@FUZZ
@given(payload=_v1_readings(), by_reference=st.booleans())
def test_random_readings_round_trip_v1_v3_v1(payload: bytes, by_reference: bool) -> None:
    found = device_refs.device_set(cbor2.loads(payload))
    sets = {} if found is None else {found[0]: found[1]}
    compacted = device_refs.compact(payload, set(sets) if by_reference else ())
    if compacted is None:
        return  # no exact version 3 (two entries of one Type/id, say): it goes as version 1
    assert compacted.by_reference == (by_reference and found is not None)
    assert (payload, payload) == _both_expand(compacted.payload, sets)


_noise = st.recursive(
    _scalars | st.binary(max_size=17),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["device", "resource", "reference", "id"]), inner, max_size=2
        )
    ),
    max_leaves=5,
)


@FUZZ
@given(data=st.data())
def test_altered_version_3_is_refused_or_expanded_alike(data: st.DataObject) -> None:
    """One value anywhere in a version-3 reading replaced by noise: each side expands it or
    refuses it with its own error, never anything else, and when both expand, alike."""
    payload = PAYLOADS[data.draw(st.integers(0, len(PAYLOADS) - 1))]
    digest, devices = _set_of(payload)
    compacted = device_refs.compact(payload, {digest} if data.draw(st.booleans()) else ())
    assert compacted is not None
    content = cbor2.loads(compacted.payload)
    node: Any = content
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
            node[key] = data.draw(_noise)
            break
        node = child
    try:
        hub: bytes | None = device_refs.expand(copy.deepcopy(content), {digest: devices}.get)[0]
    except IntegrityError:
        hub = None
    try:
        platform: bytes | None = expand_v3(
            copy.deepcopy(content), "reading", lambda d: [dict(r) for r in devices]
        )[0]
    except RejectedError:
        platform = None
    if hub is not None and platform is not None:
        assert hub == platform


# ---------------------------------------------------------------------------
# Envelopes
# ---------------------------------------------------------------------------


def _reseq(payload: bytes, seq: int, hub: str) -> bytes:
    content = cbor2.loads(payload)
    content["seq"], content["hub"] = seq, hub
    return cbor2.dumps(content, canonical=True)


def test_envelopes_verify_on_the_platform_from_its_store(dev_pki: DevPki, tmp_path: Path) -> None:
    """A single and a batch with dictionary 3: the first carry their Devices in full and verify
    on any platform; once the platform's store holds the sets, the Devices go by reference,
    verify against the store (each reading's bytes the stored version 1), and are refused
    ``unknown_device`` by a platform whose store lost them. ``homehub verify``'s side
    (open_envelope) expands them given an earlier envelope's sets, and says it needs them
    otherwise."""
    hub = dev_pki.hub_id
    key = cose.load_signing_key(dev_pki.hub_key)
    signer = Signer.from_key(key)
    hubs = HubDirectory.load(dev_pki.ca_cert, [(hub, dev_pki.hub_cert)])
    (tmp_path / f"{V3.id}.zdict").write_bytes(V3.data)
    held = Dictionaries.load(tmp_path)
    backlog = hub_backlog(12, 9191, ("blood_pressure",))
    readings = [
        ReadingPayload(seq, hub, _reseq(r.payload, seq, hub)) for seq, r in enumerate(backlog, 1)
    ]
    store = PlatformStore(None)
    topic = f"homehub/v1/{hub}/readings"

    first = build_single(readings[0], signer, V3)
    digest = _set_of(readings[0].payload)[0]
    assert (frozenset({digest}), frozenset()) == (
        first.device_sets_carried,
        first.device_sets_referenced,
    )
    verified = verify_envelope(topic, first.data, hubs, held, device_sets=store.device_set)
    with store.transaction():
        store.store_envelope(verified, 0.0)
    assert 1 == store.count("device_sets")

    single = build_single(readings[1], signer, V3, known_device_sets={digest})
    batch = build_batch(readings[2:], signer, V3, 256 * 1024, known_device_sets={digest})
    for envelope in (single, batch):
        assert (frozenset(), frozenset({digest})) == (
            envelope.device_sets_carried,
            envelope.device_sets_referenced,
        )
        verified = verify_envelope(topic, envelope.data, hubs, held, device_sets=store.device_set)
        by_seq = {r.seq: r.payload for r in readings}
        assert [by_seq[s] for s in envelope.seqs] == [r.reading_bytes for r in verified.readings]
        opened = open_envelope(
            envelope.data, key.public_key(), {V3.id: V3}, device_sets_of(
                open_envelope(first.data, key.public_key(), {V3.id: V3})
            ),
        )  # fmt: skip
        assert [by_seq[s] for s in envelope.seqs] == [r.payload for r in opened.readings]
        with pytest.raises(UnknownDevicesError, match="not held"):
            open_envelope(envelope.data, key.public_key(), {V3.id: V3})
    assert len(single.data) < len(first.data)

    store.forget_device_sets(hub)
    with pytest.raises(RejectedError) as lost:
        verify_envelope(topic, batch.data, hubs, held, device_sets=store.device_set)
    assert ("unknown_device", True) == (lost.value.code, lost.value.refusable)
    assert list(batch.seqs) == lost.value.seqs


# ---------------------------------------------------------------------------
# The hub's memory of what the platform holds
# ---------------------------------------------------------------------------


def test_confirmed_sets_are_bounded_and_bound_to_the_platform() -> None:
    kid, other = b"k" * 16, b"o" * 16
    sets = ConfirmedDeviceSets(kid, max_sets=3)
    digests = [bytes([n]) * 16 for n in range(5)]
    assert sets.confirm(digests[:2])
    assert not sets.confirm(digests[:1])  # known already: nothing new
    assert sets.confirm(digests[2:])
    assert frozenset(digests[2:]) == sets.known  # the oldest confirmed forgotten first
    again = ConfirmedDeviceSets.from_bytes(sets.to_bytes(), kid, max_sets=3)
    assert sets.known == again.known
    assert 0 == len(ConfirmedDeviceSets.from_bytes(sets.to_bytes(), other))
    assert sets.forget()
    assert not sets.forget()
    assert frozenset() == sets.known
    with pytest.raises(IntegrityError):
        ConfirmedDeviceSets.from_bytes(b"\xa1\x61v\x02", kid)
    with pytest.raises(ValueError, match="16 bytes"):
        sets.confirm([b"short"])
    full = ConfirmedDeviceSets(kid, (bytes([n]) * 16 for n in range(128)))
    assert len(full.to_bytes()) <= 4096  # the outbox's sync-state bound
