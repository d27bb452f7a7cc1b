"""The FHIR Bundle one uplink message carries, and its logical ids.

A Bundle of type ``collection`` holds the Observations made from one measurement, the PhdDevice
that took it and the PhgDevice (the hub) that forwarded it, so that the platform can resolve
every reference inside the message. Observations get ids derived from their identifier, so
that a re-sent message carries byte-identical resources.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any


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
