"""The FHIR Bundle one uplink message carries, and its logical ids.

A Bundle of type ``collection`` holds the Observations made from one measurement, the PhdDevice
that took it, the PhgDevice (the hub) that forwarded it and, when the device's clock was read,
the coincident-timestamp Observation, so that the platform can resolve every reference inside
the message (``Patient/…`` excepted: the platform owns the patient). One Bundle per uplink
message: the daemon publishes one record per reading, and a reading's resources travel
together or not at all. Observations get ids derived from their identifier, so
that a re-sent message carries byte-identical resources.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Final

EXTERNAL_REFERENCE_TYPES: Final = frozenset({"Patient"})
"""Reference targets the platform resolves itself (the hub does not send the Patient)."""


def logical_id(identifier: str) -> str:
    """A FHIR id (≤ 64 chars of [A-Za-z0-9-.]) stable for one conditional-create identifier."""
    return "obs-" + hashlib.sha256(identifier.encode()).hexdigest()[:32]


def collection(resources: Sequence[dict[str, Any]], timestamp: str) -> dict[str, Any]:
    """A ``collection`` Bundle of ``resources``.

    Entries carry no ``fullUrl``: the hub has no RESTful base. References inside the Bundle are
    relative (``Device/phd-…``) and resolve by ``resourceType`` and ``id`` among the entries.
    """
    entries = []
    for resource in resources:
        if "id" not in resource:
            resource = {**resource, "id": logical_id(resource["identifier"][0]["value"])}
        entries.append({"resource": resource})
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": timestamp,
        "entry": entries,
    }


def reading_bundle(
    observations: Sequence[dict[str, Any]],
    phd: dict[str, Any],
    phg: dict[str, Any],
    coincident: dict[str, Any] | None,
    timestamp: str,
) -> dict[str, Any]:
    """The Bundle of one reading: its Observations, both Devices, and the coincident timestamp
    when an Observation references it (omitted otherwise: the IG reports none for a reading
    without a device time stamp)."""
    resources = [*observations, phd, phg]
    if coincident is not None and _referenced(observations, f"Observation/{coincident['id']}"):
        resources.append(coincident)
    return collection(resources, timestamp)


def _referenced(resources: Sequence[dict[str, Any]], target: str) -> bool:
    return any(ref == target for resource in resources for ref in references(resource))


def references(node: Any) -> Iterator[str]:
    """Every ``reference`` string inside a resource (any depth)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def unresolved_references(bundle: dict[str, Any]) -> list[str]:
    """References inside ``bundle`` that name no entry (``Type/id``), external types excepted."""
    present = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
    }
    return [
        ref
        for entry in bundle.get("entry", [])
        for ref in references(entry["resource"])
        if ref not in present and ref.split("/", 1)[0] not in EXTERNAL_REFERENCE_TYPES
    ]
