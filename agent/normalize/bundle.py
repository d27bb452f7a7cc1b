"""The FHIR Bundle one uplink message carries, and its logical ids.

A Bundle of type ``collection`` holds the Observations made from one measurement, the PhdDevice
that took it, the PhgDevice (the hub) that forwarded it and, when the device's clock was read,
the coincident-timestamp Observation, so that the platform can resolve every reference inside
the message (``Patient/…`` excepted: the platform owns the patient). One Bundle per uplink
message: the daemon publishes one record per reading, and a reading's resources travel
together or not at all. Observations get ids derived from their hub identifier, so that a
re-sent message carries byte-identical resources.

**fullUrl and references (FHIR R4 Bundle "Resolving references in Bundles").** The hub has no
RESTful base, so every entry's ``fullUrl`` is a ``urn:uuid:`` (a name-based UUID of
``Type/id``, so it is the same on every re-send), and every reference to another entry is
rewritten to that ``urn:uuid:``: an absolute reference resolves to the entry whose fullUrl
equals it, whatever server receives the Bundle. This is also the form of the IG's own Bundle
example. ``Patient/<id>`` stays relative: it names the platform's Patient, resolved by the
receiving server.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

EXTERNAL_REFERENCE_TYPES: Final = frozenset({"Patient"})
"""Reference targets the platform resolves itself (the hub does not send the Patient)."""

FULL_URL_NAMESPACE: Final = uuid.UUID("6f1f4a52-3c1e-5b0a-9d43-2b6c1a0e8f11")
"""Namespace of the name-based (version 5) UUIDs in ``fullUrl``: fixed forever, or every
re-sent Bundle would change."""


@functools.lru_cache(maxsize=64)  # the Devices' recur in every reading of a device
def full_url(resource_type: str, resource_id: str) -> str:
    """The entry's ``fullUrl``: ``urn:uuid:`` + UUIDv5 of ``Type/id`` (stable on re-send)."""
    return f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, f'{resource_type}/{resource_id}')}"


def logical_id(identifier: str) -> str:
    """A FHIR id (≤ 64 chars of [A-Za-z0-9-.]) stable for one conditional-create identifier."""
    return "obs-" + hashlib.sha256(identifier.encode()).hexdigest()[:32]


def collection(resources: Sequence[dict[str, Any]], timestamp: str) -> dict[str, Any]:
    """A ``collection`` Bundle of ``resources`` (each with ``resourceType`` and ``id``).

    Each entry gets a ``fullUrl`` (:func:`full_url`) and every ``Type/id`` reference to another
    entry becomes that entry's ``fullUrl`` (module docstring).
    """
    urls = {_key(resource): _url(resource) for resource in resources}
    return _bundle(
        [{"fullUrl": urls[_key(r)], "resource": _rewritten(r, urls)} for r in resources],
        timestamp,
    )


def _key(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _url(resource: dict[str, Any]) -> str:
    return full_url(resource["resourceType"], resource["id"])


def _bundle(entries: list[dict[str, Any]], timestamp: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": timestamp,
        "entry": entries,
    }


@dataclass(frozen=True, slots=True)
class FixedEntry:
    """A Bundle entry built once and shared by every reading of a device: the PhdDevice, the
    PhgDevice, the coincident timestamp of one clock read. Its resource references only other
    fixed entries (or the Patient), so its references are rewritten once, here, and come out
    as :func:`collection` would write them in any Bundle holding the same fixed entries.

    The entry is shared: neither it nor a Bundle holding it is ever changed (nothing in the
    pipeline changes a Bundle once built; copy before editing one).
    """

    key: str  #: ``Type/id``
    url: str  #: the entry's ``fullUrl``
    entry: dict[str, Any]


def fixed_entries(resources: Sequence[dict[str, Any]]) -> tuple[FixedEntry, ...]:
    """The entries of ``resources`` as :func:`collection` writes them, for
    :func:`bundle_with_fixed`.

    Raises:
        ValueError: a resource references an entry that is not among ``resources`` (then its
            entry would depend on the reading's own resources and cannot be built once).
    """
    urls = {_key(resource): _url(resource) for resource in resources}
    out = []
    for resource in resources:
        for ref in references(resource):
            kind = ref.split("/", 1)[0]
            if ref not in urls and ":" not in kind and kind not in EXTERNAL_REFERENCE_TYPES:
                raise ValueError(f"a fixed entry references {kind}/…, not a fixed entry")
        key = _key(resource)
        out.append(
            FixedEntry(
                key, urls[key], {"fullUrl": urls[key], "resource": _rewritten(resource, urls)}
            )
        )
    return tuple(out)


def bundle_with_fixed(
    resources: Sequence[dict[str, Any]], fixed: Sequence[FixedEntry], timestamp: str
) -> dict[str, Any]:
    """``collection([*resources, *fixed resources], timestamp)``, the fixed entries taken as
    they were built (:func:`fixed_entries`) instead of rewritten again for every reading."""
    urls = {_key(resource): _url(resource) for resource in resources}
    for entry in fixed:
        urls[entry.key] = entry.url
    entries = [{"fullUrl": urls[_key(r)], "resource": _rewritten(r, urls)} for r in resources]
    entries.extend(entry.entry for entry in fixed)
    return _bundle(entries, timestamp)


def _rewritten(node: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    """``node`` with every ``reference`` naming an entry replaced by the entry's fullUrl.

    Copy on write: a dict or list with nothing to replace inside is returned as it is, not
    copied (the deep copy of every resource was half of a reading's bundle building, and
    the resources are built per reading and never changed afterwards); scalars are not
    visited by a call of their own. The Bundle's content and order are those of a deep
    copy, so its CBOR is byte-identical (tests/test_fhir_golden_*.py)."""
    out: dict[str, Any] | None = None
    for key, value in node.items():
        if isinstance(value, dict):
            new: Any = _rewritten(value, urls)
        elif isinstance(value, list):
            new = _rewritten_list(value, urls)
        elif key == "reference" and isinstance(value, str):
            new = urls.get(value, value)
        else:
            continue
        if new is not value:
            if out is None:
                out = dict(node)
            out[key] = new
    return node if out is None else out


def _rewritten_list(items: list[Any], urls: dict[str, str]) -> list[Any]:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        if isinstance(item, dict):
            new: Any = _rewritten(item, urls)
        elif isinstance(item, list):
            new = _rewritten_list(item, urls)
        else:
            continue
        if new is not item:
            if out is None:
                out = list(items)
            out[index] = new
    return items if out is None else out


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
    if coincident is not None and refers_to(observations, f"Observation/{coincident['id']}"):
        resources.append(coincident)
    return collection(resources, timestamp)


def refers_to(node: Any, target: str) -> bool:
    """Whether any ``reference`` inside ``node`` (resources, at any depth) is ``target``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value == target:
                    return True
            elif isinstance(value, dict | list) and refers_to(value, target):
                return True
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list) and refers_to(item, target):
                return True
    return False


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
    """References inside ``bundle`` that name no entry by FHIR's rules, external types excepted.

    An absolute reference (``urn:uuid:…``, ``http…``) must equal an entry's ``fullUrl``; a
    relative one (``Type/id``) is resolved against the base of its entry's ``fullUrl``, which
    a ``urn:uuid:`` fullUrl does not have: then it names a resource on the receiving server,
    allowed only for :data:`EXTERNAL_REFERENCE_TYPES`.
    """
    entries = bundle.get("entry", [])
    full_urls = {entry.get("fullUrl") for entry in entries}
    unresolved = []
    for entry in entries:
        for ref in references(entry["resource"]):
            if ":" in ref.split("/", 1)[0]:  # absolute: urn:uuid:…, urn:oid:…, http(s)://…
                if ref not in full_urls:
                    unresolved.append(ref)
            elif ref.split("/", 1)[0] not in EXTERNAL_REFERENCE_TYPES:
                unresolved.append(ref)
    return unresolved
