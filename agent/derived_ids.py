"""Reading payload version 2: version 1 without the identifiers a receiver derives (sans-I/O).

docs/platform-protocol.md "Derived identifiers". A reading's FHIR Bundle names each entry
three times over with 128-bit values no dictionary can predict: every entry's ``fullUrl``
(``urn:uuid:`` + UUIDv5 of ``Type/id``, :func:`agent.normalize.bundle.full_url`), every
Observation's ``id`` (``obs-`` + 32 hex digits of SHA-256 over its hub identifier,
:func:`agent.normalize.bundle.logical_id`), and the references between entries, which repeat
the ``fullUrl``. Compressed, they were about half of a reading in a batch. All of them follow
from the rest of the Bundle, so a compressed envelope (dictionary 2 on) leaves them out:

- ``"v": 2`` instead of ``1``;
- no entry has a ``fullUrl``;
- an Observation whose ``id`` is the one derived from its hub identifier
  (:data:`~agent.normalize.codes.HUB_IDENTIFIER_SYSTEM`) has no ``id``;
- a ``reference`` to another entry of the Bundle is that entry's ``Type/id``.

Expanding (:func:`expand_content`) reverses each step, and the version-1 reading is the
deterministic CBOR of the result: byte for byte what the hub stored and signed, so the
platform's duplicate detection, the reading's identity and every receipt work on version 1.
The hub compacts a reading only when the expansion gives it back exactly
(:func:`compact` checks the conditions for that; a reading that fails them, such as a
relative reference that happens to name an entry, goes as version 1), so version 2 never
changes what a platform reads.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any, Final, NoReturn

import cbor2

from agent.errors import IntegrityError
from agent.normalize.bundle import full_url
from agent.normalize.codes import HUB_IDENTIFIER_SYSTEM

READING_V1: Final = 1
READING_V2: Final = 2
"""Payload versions: 2 is 1 with the derived identifiers left out (module docstring)."""

OBSERVATION: Final = "Observation"
OBSERVATION_ID_PREFIX: Final = "obs-"
OBSERVATION_ID_HEX_DIGITS: Final = 32

MAX_ENTRIES: Final = 64
"""Most entries a version-2 Bundle may hold (ours hold at most ~12): expansion is bounded."""


def decode_noting_references(payload: bytes) -> tuple[Any, list[dict[Any, Any]]]:
    """``payload`` decoded, with the maps that hold a ``reference`` (noted while decoding, so
    that compacting them needs no walk over the whole Bundle)."""
    holders: list[dict[Any, Any]] = []

    def note_references(value: Mapping[Any, Any], _immutable: bool) -> Mapping[Any, Any]:
        if "reference" in value and isinstance(value, dict):
            holders.append(value)
        return value

    return cbor2.loads(payload, object_hook=note_references), holders


def compact(payload: bytes) -> bytes | None:
    """The version-2 form of a stored version-1 reading payload, or None when it has none:
    not a version-1 reading with a Bundle, or expanding the result would not give the same
    reading back exactly.

    Made in place on a fresh decode: the maps holding a ``reference`` are noted while the
    payload is decoded, so no walk over the whole Bundle and no copy is needed (the publisher
    compacts every reading of a backlog). The result is plain CBOR, not deterministic: only
    version 1, which the receiver makes, needs to be.
    """
    content, holders = decode_noting_references(payload)
    if not _compact_in_place(content, holders):
        return None
    return cbor2.dumps(content)


def v1_bundle_entries(content: object) -> list[Any] | None:
    """The Bundle entries of a decoded version-1 reading (1 to :data:`MAX_ENTRIES`), or None
    when ``content`` is not one."""
    if not isinstance(content, dict) or content.get("v") != READING_V1:
        return None
    fhir = content.get("fhir")
    if not isinstance(fhir, dict):
        return None
    entries = fhir.get("entry")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ENTRIES:
        return None
    return entries


def _compact_in_place(content: object, holders: list[dict[Any, Any]]) -> bool:
    """Make ``content`` (a decoded version-1 reading, whose maps holding a ``reference`` are
    ``holders``) version 2; False (``content`` then half done) when it cannot be."""
    entries = v1_bundle_entries(content)
    if entries is None or not isinstance(content, dict):  # (a dict when it has entries)
        return False
    key_of_url: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.keys() != {"fullUrl", "resource"}:
            return False
        key = _key(entry["resource"])
        if key is None or entry["fullUrl"] != full_url(*key.split("/", 1)):
            return False
        key_of_url[entry["fullUrl"]] = key
    keys = frozenset(key_of_url.values())
    if len(keys) != len(entries):
        return False  # an entry twice: its references could not say which
    for holder in holders:
        reference = holder["reference"]
        if isinstance(reference, str):
            if reference in keys:
                return False  # a relative reference naming an entry: expansion would change it
            holder["reference"] = key_of_url.get(reference, reference)
    for entry in entries:
        del entry["fullUrl"]
        resource = entry["resource"]
        if resource["resourceType"] == OBSERVATION and resource["id"] == _observation_id(resource):
            del resource["id"]
    content["v"] = READING_V2
    return True


def entries_to_expand(content: Mapping[str, Any], version: int) -> list[Any]:
    """The Bundle entries of a decoded reading of ``version`` (2 or 3) to expand;
    :class:`IntegrityError` (``what="reading"``) when it is not one."""
    if content.get("v") != version:
        _refuse(f"version is not {version}")
    fhir = content.get("fhir")
    if not isinstance(fhir, dict):
        _refuse("fhir is not a map")
    entries = fhir.get("entry")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ENTRIES:
        _refuse(f"fhir.entry is not an array of 1 to {MAX_ENTRIES} entries")
    return entries


def expand_content(content: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded version-2 reading as the version-1 reading it stands for.

    Raises :class:`IntegrityError` (``what="reading"``) naming what cannot be expanded.
    """
    entries = entries_to_expand(content, READING_V2)
    resources: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.keys() != {"resource"}:
            _refuse(f"entry {index} is not a map of exactly resource")
        resource = entry["resource"]
        if not isinstance(resource, dict):
            _refuse(f"entry {index}: resource is not a map")
        if "id" not in resource:
            if resource.get("resourceType") != OBSERVATION:
                _refuse(f"entry {index}: only an Observation may leave its id out")
            derived = _observation_id(resource)
            if derived is None:
                _refuse(f"entry {index}: no id and no one hub identifier to derive it from")
            resource = {**resource, "id": derived}
        resources.append(resource)
    url_of_key: dict[str, str] = {}
    for index, resource in enumerate(resources):
        key = _key(resource)
        if key is None:
            _refuse(f"entry {index}: resourceType or id is not a text string")
        if key in url_of_key:
            _refuse(f"entry {index}: {key.split('/', 1)[0]} id twice in the Bundle")
        url_of_key[key] = full_url(*key.split("/", 1))
    expanded = [
        {"fullUrl": url_of_key[key], "resource": _references_to_urls(r, url_of_key)}
        for r, key in zip(resources, url_of_key, strict=True)
    ]
    return {**content, "v": READING_V1, "fhir": {**content["fhir"], "entry": expanded}}


def expand(content: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The version-1 bytes (deterministic CBOR) and content of a decoded version-2 reading.

    Raises :class:`IntegrityError` as :func:`expand_content` does."""
    expanded = expand_content(content)
    return cbor2.dumps(expanded, canonical=True), expanded


def entry_key(resource: object) -> str | None:
    """An entry's ``Type/id`` (``resourceType``, ``/``, ``id``), or None when its resource has
    no text ``resourceType`` (without ``/``) and ``id``."""
    return _key(resource)


def observation_id(resource: Mapping[str, Any]) -> str | None:
    """The id rule 3 derives for an Observation from its one hub identifier (``obs-`` and 32
    hex digits of SHA-256 over its value); None without exactly one such identifier."""
    return _observation_id(resource)


def _key(resource: object) -> str | None:
    if not isinstance(resource, dict):
        return None
    kind, ident = resource.get("resourceType"), resource.get("id")
    if not (isinstance(kind, str) and isinstance(ident, str) and kind and ident):
        return None
    if "/" in kind:
        return None
    return f"{kind}/{ident}"


def _observation_id(resource: Mapping[str, Any]) -> str | None:
    """The id derived from the Observation's one hub identifier; None without exactly one."""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return None
    values = [
        i.get("value")
        for i in identifiers
        if isinstance(i, dict) and i.get("system") == HUB_IDENTIFIER_SYSTEM
    ]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    return _derived_observation_id(values[0])


@functools.lru_cache(maxsize=256)
def _derived_observation_id(hub_identifier: str) -> str:
    digest = hashlib.sha256(hub_identifier.encode()).hexdigest()
    return OBSERVATION_ID_PREFIX + digest[:OBSERVATION_ID_HEX_DIGITS]


def _references_to_urls(value: Any, url_of_key: Mapping[str, str]) -> Any:
    """A copy of ``value`` with every reference naming an entry's ``Type/id`` made its URL."""
    if isinstance(value, dict):
        return {
            name: (
                url_of_key.get(item, item)
                if name == "reference" and isinstance(item, str)
                else _references_to_urls(item, url_of_key)
            )
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_references_to_urls(item, url_of_key) for item in value]
    return value


def _refuse(reason: str) -> NoReturn:
    raise IntegrityError("reading", reason)
