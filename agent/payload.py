"""The signed payload of one uplink message: a deterministic CBOR map (docs/wire-format.md).

    {"v": 1, "hub": <hub id>, "seq": <64-bit hub sequence>, "kind": "observation",
     "id": <the reading's identity: the hub identifier of the primary Observation>,
     "hub_time": <RFC 3339 UTC time the hub stored it>, "fhir": <FHIR Bundle>,
     ["conflict_of": <seq of the first record with the same identity>]}

``conflict_of`` is present only on a *conflict*: a reading whose identity (device, patient,
code and the record's sequence number or time stamp) equals an earlier one's while its
content differs. The hub stores and sends both; the platform must keep both and flag them
for review, never merge the second into the first.

Encoded with cbor2's canonical (RFC 8949 §4.2.1 core deterministic) encoding, so the same
content always gives the same bytes and therefore, with deterministic ECDSA, the same
signature. Decimals are CBOR decimal fractions (tag 4) so a value keeps the precision the
device sent ("2.0" stays "2.0").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import cbor2

PAYLOAD_VERSION: Final = 1
CONTENT_TYPE: Final = "application/vnd.homehub.reading+cbor"
MAX_PAYLOAD_BYTES: Final = 32 * 1024
"""A BP reading with its Devices is ~2 KiB; 32 KiB leaves room for glucose context and batches."""


@dataclass(frozen=True, slots=True)
class Payload:
    """The fields of a payload, before encoding."""

    hub: str
    seq: int
    kind: str
    id: str
    hub_time: str
    fhir: dict[str, Any]
    conflict_of: int | None = None

    def encode(self) -> bytes:
        """Deterministic CBOR."""
        fields: dict[str, Any] = {
            "v": PAYLOAD_VERSION,
            "hub": self.hub,
            "seq": self.seq,
            "kind": self.kind,
            "id": self.id,
            "hub_time": self.hub_time,
            "fhir": self.fhir,
        }
        if self.conflict_of is not None:
            fields["conflict_of"] = self.conflict_of
        return cbor2.dumps(fields, canonical=True)
