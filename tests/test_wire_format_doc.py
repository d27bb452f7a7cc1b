"""docs/wire-format.md shows the exact bytes the pipeline produces for its example."""

from __future__ import annotations

from pathlib import Path

import cbor2

from agent import cose
from hil import wire_example

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"


def test_doc_example_is_what_the_pipeline_produces() -> None:
    """The example section equals a fresh run of hil.wire_example (regenerate with --write-doc)."""
    assert wire_example.markdown_example() in DOC.read_text()


def test_example_envelope_verifies_and_names_what_the_doc_says() -> None:
    """The example is a valid ES256 COSE_Sign1 with the documented header and payload keys."""
    envelope = wire_example.example_envelope()
    public_key = wire_example.example_signer().key.public_key()
    message = cose.verify1(envelope, public_key)
    assert message.alg == -7
    assert message.content_type == "application/vnd.homehub.reading+cbor"
    payload = cbor2.loads(message.payload)
    assert set(payload) == {"v", "hub", "seq", "kind", "id", "hub_time", "fhir"}
    assert payload["v"] == 1
    assert payload["fhir"]["resourceType"] == "Bundle"


def test_resigning_gives_identical_bytes() -> None:
    """Deterministic ECDSA: the same reading and seq give byte-identical envelopes."""
    assert wire_example.example_envelope(7) == wire_example.example_envelope(7)
