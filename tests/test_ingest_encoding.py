"""The record's bytes do not depend on how they were made: a Bundle assembled from fixed
entries built once per device, and a payload whose Bundle was encoded beforehand, give exactly
what building and encoding everything per reading gives (agent.ingest, agent.normalize.bundle).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.ingest import SOFTWARE_VERSION, Prepared, Signer, payload_bytes, prepare
from agent.normalize import codes
from agent.normalize.bundle import (
    collection,
    fixed_entries,
    reading_bundle,
    references,
    refers_to,
)
from agent.normalize.clock import coincident_for
from agent.normalize.device import DeviceFacts, phd_device, phg_device
from agent.normalize.phd import Context, fhir_datetime
from agent.payload import CONTENT_TYPE, Payload
from tests.test_phd_ig_conformance import CTX, DEVICE, PIPELINE

SIGNER: Final = Signer.from_key(
    ec.derive_private_key(0x5EED_0F_1C0DE, ec.SECP256R1())  # deterministic: RFC 6979
)
SPECIALIZATION: Final = {
    "bp": codes.MDC_DEV_SPEC_PROFILE_BPM,
    "spo2": codes.MDC_DEV_SPEC_PROFILE_PULS_OXIM,
    "glucose": codes.MDC_DEV_SPEC_PROFILE_GLUCOSE,
}


def _reference_envelope(prepared: Prepared, seq: int, conflict_of: int | None) -> bytes:
    """The envelope as built before any part was encoded ahead: Payload.encode of the dict."""
    payload = Payload(
        hub=prepared.hub_id,
        seq=seq,
        kind=prepared.kind,
        id=prepared.identifier,
        hub_time=fhir_datetime(prepared.stored_at),
        fhir=prepared.bundle,
        conflict_of=conflict_of,
    ).encode()
    return cose.sign1_with(payload, SIGNER.sign, SIGNER.kid, CONTENT_TYPE)


def _reference_bundle(name: str, prepared: Prepared, device: DeviceFacts) -> dict[str, Any]:
    """The Bundle built per reading with reading_bundle from the prepared Observations."""
    observations = [
        e["resource"]
        for e in prepared.bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and not e["resource"]["id"].startswith("coin-")
    ]
    # Back to relative references, as the normalizers make them.
    urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in prepared.bundle["entry"]}  # fmt: skip
    relative = [_unrewritten(o, urls) for o in observations]
    return reading_bundle(
        relative,
        phd_device(device, SPECIALIZATION[name.split("-")[0]]),
        phg_device(CTX.hub_id, SOFTWARE_VERSION),
        coincident_for(device, CTX),
        fhir_datetime(CTX.received),
    )


def _unrewritten(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: urls.get(v, v) if k == "reference" and isinstance(v, str) else _unrewritten(v, urls)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_unrewritten(v, urls) for v in node]
    return node


@pytest.mark.parametrize("name", sorted(PIPELINE))
@pytest.mark.parametrize("conflict_of", [None, 7])
def test_envelope_is_byte_identical_to_encoding_everything(
    name: str, conflict_of: int | None
) -> None:
    """Every kind, plain and as a conflict: the same signed bytes as Payload.encode gives."""
    raw, device = PIPELINE[name]
    prepared = prepare(raw, device, CTX)
    assert prepared.fhir_cbor == cbor2.dumps(prepared.bundle, canonical=True)
    assert prepared.envelope(42, SIGNER, conflict_of) == _reference_envelope(
        prepared, 42, conflict_of
    )


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_bundle_equals_the_one_built_per_reading(name: str) -> None:
    """The Bundle with shared fixed entries equals reading_bundle's, entry order included."""
    raw, device = PIPELINE[name]
    prepared = prepare(raw, device, CTX)
    assert prepared.bundle == _reference_bundle(name, prepared, device)


def test_a_download_shares_the_fixed_entries_and_each_reading_stays_its_own() -> None:
    """Readings of one session share the Device and coincident entries (built once) while
    each payload still equals its own full encoding."""
    raw, device = PIPELINE["glucose-context-status"]
    readings = [
        prepare(
            dataclasses.replace(raw, received_wall=raw.received_wall + timedelta(seconds=i)),
            device,
            dataclasses.replace(CTX, received=CTX.received + timedelta(seconds=i)),
        )
        for i in range(3)
    ]
    fixed = [[id(e) for e in p.bundle["entry"][-3:]] for p in readings]
    assert fixed[0] == fixed[1] == fixed[2]
    for seq, prepared in enumerate(readings, 1):
        assert prepared.envelope(seq, SIGNER) == _reference_envelope(prepared, seq, None)
    assert len({p.fhir_cbor for p in readings}) == 3


def test_a_new_clock_read_gets_its_own_coincident_entry() -> None:
    """The next session's clock read is another coincident timestamp, not the cached one."""
    raw, device = PIPELINE["glucose-context-status"]
    assert device.clock is not None
    later = dataclasses.replace(
        device,
        clock=dataclasses.replace(
            device.clock, hub_time=device.clock.hub_time + timedelta(hours=1)
        ),
    )
    first, second = prepare(raw, device, CTX), prepare(raw, later, CTX)
    assert first.bundle["entry"][-1] != second.bundle["entry"][-1]
    assert second.bundle == _reference_bundle("glucose-context-status", second, later)


def test_payload_bytes_matches_payload_encode() -> None:
    """payload_bytes with the Bundle encoded beforehand is Payload.encode, with and without
    conflict_of."""
    bundle = {"resourceType": "Bundle", "entry": [{"b": 1, "a": [2.5, "x"]}]}
    for conflict_of in (None, 0, 2**40):
        payload = Payload("hub-1", 2**63 - 1, "observation", "id-1", "2026-01-01T00:00:00Z",
                          bundle, conflict_of)  # fmt: skip
        assert payload_bytes(payload, cbor2.dumps(bundle, canonical=True)) == payload.encode()


def test_fixed_entries_refuse_a_reference_to_a_reading_resource() -> None:
    """A fixed entry may reference only fixed entries (or the Patient): else its rewritten
    form would depend on the reading."""
    device = {"resourceType": "Device", "id": "d", "parent": {"reference": "Observation/o"}}
    with pytest.raises(ValueError, match="not a fixed entry"):
        fixed_entries([device])
    patient = {"resourceType": "Device", "id": "d", "owner": {"reference": "Patient/p"}}
    (entry,) = fixed_entries([patient])
    assert entry.entry == collection([patient], "t")["entry"][0]


def test_refers_to_agrees_with_references() -> None:
    """The early-exit check finds exactly what the full walk finds."""
    raw, device = PIPELINE["bp-status-clock"]
    bundle = prepare(raw, device, CTX).bundle
    found = set(references(bundle))
    assert found
    for target in found:
        assert refers_to(bundle, target)
    assert not refers_to(bundle, "Observation/none")
    assert not refers_to({"reference": {"reference": "x"}}, "y")
    assert refers_to({"reference": {"reference": "x"}}, "x")


def test_no_clock_no_coincident_entry() -> None:
    """A device without a clock read: Devices only, as before."""
    raw, _ = PIPELINE["glucose-context-status"]
    device = dataclasses.replace(DEVICE, clock=None)
    ctx = Context(CTX.hub_id, CTX.patient_id, "UTC", datetime(2026, 1, 2, tzinfo=UTC))
    prepared = prepare(raw, device, ctx)
    kinds = [e["resource"]["resourceType"] for e in prepared.bundle["entry"]]
    assert kinds[-2:] == ["Device", "Device"]
    assert prepared.fhir_cbor == cbor2.dumps(prepared.bundle, canonical=True)
