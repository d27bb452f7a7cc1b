"""Reading payload version 3: Devices by reference (sans-I/O).

docs/platform-protocol.md "Devices by reference (reading version 3)". Every reading's Bundle
carries the Device resources of the cuff, meter or oximeter that took it (PhdDevice) and of
the hub that forwarded it (PhgDevice): ~1.5 KB of CBOR that repeat, byte for byte, in every
reading of that device. Once the platform holds them, a compressed envelope (dictionary 3 on)
names them by one digest instead:

- ``"v": 3``;
- what version 2 leaves out is left out (agent/derived_ids.py): no ``fullUrl``, no
  Observation ``id`` that follows from its hub identifier;
- every ``reference`` whose value is an entry's ``fullUrl`` is that entry's index in
  ``fhir.entry`` (an unsigned integer: a reference in a version-1 reading is always text);
- the reading's **device set** (its Device resources, in Bundle order, as in version 1) is
  named by its digest, :func:`device_set_digest`: the first 16 bytes of SHA-256 over the
  deterministic CBOR of the array of those resources. When the platform holds that set
  (``known``: :class:`ConfirmedDeviceSets`), the reading carries the digest under
  ``"devices"`` and each Device entry is ``{"device": k}``, ``k`` its place in the set
  (0, 1, ...); otherwise every Device goes in full.

One digest for the whole set, not one per Device: at the same 128-bit strength it costs 16
bytes of a reading where two digests cost 32 (measured on held-out blood-pressure readings
with a dictionary trained on each form: 234 against 259 bytes of payload); a new device, or
a hub with new software, is a new set, sent in full once.

:func:`expand_content` reverses it and the deterministic CBOR of the result is the version-1
reading byte for byte, so deduplication, identities and receipts work on version 1 only.
:func:`compact` makes version 3 only when that holds (it checks the conditions for it and
returns None otherwise: the reading then goes as version 2 or 1).

The version-3 bytes need not be deterministic: the hub writes each resource's keys in an
order that keeps together what one Observation repeats of another (subject, device,
extension, times: :data:`RESOURCE_KEY_ORDER`), which compresses ~12 bytes better than the
deterministic order; the receiver's expansion is deterministic whatever the order.

A platform that does not hold a named set (it lost its store, another deployment) cannot
expand the reading: :class:`~agent.errors.UnknownDevicesError`; it refuses the envelope
``unknown_device`` in its receipt, and the hub forgets every set it believed held and sends
the reading again with its Devices in full (agent/publisher.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import cbor2

from agent import derived_ids
from agent.errors import IntegrityError, UnknownDevicesError
from agent.normalize.bundle import full_url

READING_V3: Final = 3
"""Payload version: 2, with Devices by reference and references to entries by index."""

DEVICE: Final = "Device"
DEVICES_KEY: Final = "devices"
"""Top-level key of a version-3 reading whose Devices go by reference: the set's digest."""
PLACEHOLDER_KEY: Final = "device"
"""A Device entry by reference is ``{"device": k}``."""
DIGEST_BYTES: Final = 16
MAX_DEVICES: Final = 16
"""Device entries in one Bundle at most (ours hold two)."""
MAX_ENTRIES: Final = derived_ids.MAX_ENTRIES

UNKNOWN_DEVICE_REASON: Final = "unknown_device"
"""The receipt's reason code for an envelope naming a device set the platform does not hold."""

RESOURCE_KEY_ORDER: Final = (
    "resourceType", "status", "meta", "category", "code", "subject", "device", "extension",
    "issued", "effectiveDateTime", "identifier",
)  # fmt: skip
"""The order the hub writes a resource's first keys in (the rest follow in deterministic
order): what the Observations of one reading share comes in one run."""
_TOP_KEY_ORDER: Final = ("v", "kind", "hub", "seq", "hub_time", "id", DEVICES_KEY, "fhir")
_RANK: Final = {name: i for i, name in enumerate(RESOURCE_KEY_ORDER)}
_TOP_RANK: Final = {name: i for i, name in enumerate(_TOP_KEY_ORDER)}

DeviceSets = Callable[[bytes], Sequence[Mapping[str, Any]] | None]
"""Looks a device set up by digest: its Device resources in order, None when not held."""


def device_set_digest(resources: Sequence[Mapping[str, Any]]) -> bytes:
    """The digest naming a device set: SHA-256 over the deterministic CBOR of the array of
    its Device resources (version-1 form, Bundle order), first 16 bytes."""
    encoded = cbor2.dumps(list(resources), canonical=True)
    return hashlib.sha256(encoded).digest()[:DIGEST_BYTES]


def device_set(content: Mapping[str, Any]) -> tuple[bytes, tuple[Mapping[str, Any], ...]] | None:
    """The device set of a decoded version-1 reading: its digest and its Device resources in
    Bundle order; None when the reading has no Device entry (or no Bundle to look in)."""
    fhir = content.get("fhir")
    entries = fhir.get("entry") if isinstance(fhir, Mapping) else None
    if not isinstance(entries, list):
        return None
    resources = tuple(
        e["resource"]
        for e in entries
        if isinstance(e, Mapping)
        and isinstance(e.get("resource"), Mapping)
        and e["resource"].get("resourceType") == DEVICE
    )
    if not resources or len(resources) > MAX_DEVICES:
        return None
    return device_set_digest(resources), resources


# ---------------------------------------------------------------------------
# Compacting (the hub)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compacted:
    """A reading's version-3 form."""

    payload: bytes = field(repr=False)
    device_set: bytes | None
    """The digest of the reading's device set (None: it has no Device entry)."""
    by_reference: bool
    """Whether its Devices went by reference (else in full)."""


def compact(payload: bytes, known: Container[bytes] = frozenset()) -> Compacted | None:
    """The version-3 form of a stored version-1 reading payload, its Devices by reference
    when their set's digest is in ``known`` (sets the platform holds); None when it has no
    exact version-3 form: not a version-1 reading with a Bundle whose entries each hold a
    resource with a ``Type/id`` of their own and the ``fullUrl`` derived from it, a
    ``reference`` that is not text, more than :data:`MAX_DEVICES` Devices.

    Made in place on a fresh decode (the maps holding a ``reference`` are noted while
    decoding), the device set's digest taken before anything changes.
    """
    content, holders = derived_ids.decode_noting_references(payload)
    entries = derived_ids.v1_bundle_entries(content)
    if entries is None or DEVICES_KEY in content:
        return None
    index_of_url: dict[str, int] = {}
    devices: list[int] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.keys() != {"fullUrl", "resource"}:
            return None
        key = derived_ids.entry_key(entry["resource"])
        if key is None or entry["fullUrl"] != full_url(*key.split("/", 1)):
            return None
        if entry["fullUrl"] in index_of_url:
            return None  # an entry twice: its references could not say which
        index_of_url[entry["fullUrl"]] = index
        if entry["resource"]["resourceType"] == DEVICE:
            devices.append(index)
    if len(devices) > MAX_DEVICES:
        return None
    digest = device_set_digest([entries[i]["resource"] for i in devices]) if devices else None
    for holder in holders:
        reference = holder["reference"]
        if not isinstance(reference, str):
            return None  # only text is a version-1 reference; an index would be ambiguous
        target = index_of_url.get(reference)
        if target is not None:
            holder["reference"] = target
    by_reference = digest is not None and digest in known
    place = {index: k for k, index in enumerate(devices)}
    compacted: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        if by_reference and index in place:
            compacted.append({PLACEHOLDER_KEY: place[index]})
            continue
        derived = derived_ids.observation_id(resource)
        if resource["resourceType"] == derived_ids.OBSERVATION and resource["id"] == derived:
            del resource["id"]
        compacted.append({"resource": _ordered(resource, _RANK)})
    content["fhir"]["entry"] = compacted
    content["v"] = READING_V3
    if by_reference:
        content[DEVICES_KEY] = digest
    return Compacted(cbor2.dumps(_ordered(content, _TOP_RANK)), digest, by_reference)


def _ordered(value: dict[str, Any], rank: Mapping[str, int]) -> dict[str, Any]:
    """``value``'s keys: the ranked ones first, in rank order, then the rest as they were
    (deterministic order, as decoded)."""
    last = len(rank)
    return {k: value[k] for k in sorted(value, key=lambda k: rank.get(k, last))}


# ---------------------------------------------------------------------------
# Expanding (the platform, and homehub verify)
# ---------------------------------------------------------------------------


def expand_content(content: Mapping[str, Any], device_sets: DeviceSets) -> dict[str, Any]:
    """A decoded version-3 reading as the version-1 reading it stands for; ``device_sets``
    looks up the Device resources a ``devices`` digest names.

    Raises :class:`~agent.errors.UnknownDevicesError` when the set is not held (the
    reading may be fine), :class:`~agent.errors.IntegrityError` (``what="reading"``) naming
    what is malformed.
    """
    entries = derived_ids.entries_to_expand(content, READING_V3)
    placeholders = {
        i: k
        for k, i in enumerate(
            i
            for i, e in enumerate(entries)
            if isinstance(e, dict) and e.keys() == {PLACEHOLDER_KEY}
        )
    }
    stored = _stored_devices(content, len(placeholders), device_sets)
    resources: list[Mapping[str, Any]] = []
    for index, entry in enumerate(entries):
        if index in placeholders:
            k = entry[PLACEHOLDER_KEY]
            if type(k) is not int or k != placeholders[index]:
                _refuse(f"entry {index}: the Devices by reference are not numbered 0, 1, …")
            resources.append(dict(stored[k]))  # as it is (a Mapping given: a map again)
            continue
        if not isinstance(entry, dict) or entry.keys() != {"resource"}:
            _refuse(f"entry {index} is not a map of exactly resource, or of exactly device")
        resource = entry["resource"]
        if not isinstance(resource, dict):
            _refuse(f"entry {index}: resource is not a map")
        if "id" not in resource:
            if resource.get("resourceType") != derived_ids.OBSERVATION:
                _refuse(f"entry {index}: only an Observation may leave its id out")
            derived = derived_ids.observation_id(resource)
            if derived is None:
                _refuse(f"entry {index}: no id and no one hub identifier to derive it from")
            resource = {**resource, "id": derived}
        resources.append(resource)
    urls: list[str] = []
    seen: set[str] = set()
    for index, resource in enumerate(resources):
        key = derived_ids.entry_key(resource)
        if key is None:
            _refuse(f"entry {index}: resourceType or id is not a text string")
        if key in seen:
            _refuse(f"entry {index}: {key.split('/', 1)[0]} id twice in the Bundle")
        seen.add(key)
        urls.append(full_url(*key.split("/", 1)))
    expanded = [
        {
            "fullUrl": url,
            # A Device by reference is the platform's own copy, in version-1 form: as it is.
            "resource": resource if index in placeholders else _resolved(resource, urls),
        }
        for index, (url, resource) in enumerate(zip(urls, resources, strict=True))
    ]
    out = {k: v for k, v in content.items() if k != DEVICES_KEY}
    out["v"] = derived_ids.READING_V1
    out["fhir"] = {**content["fhir"], "entry": expanded}
    return out


def expand(content: Mapping[str, Any], device_sets: DeviceSets) -> tuple[bytes, dict[str, Any]]:
    """The version-1 bytes (deterministic CBOR) and content of a decoded version-3 reading.

    Raises as :func:`expand_content` does."""
    expanded = expand_content(content, device_sets)
    return cbor2.dumps(expanded, canonical=True), expanded


def _stored_devices(
    content: Mapping[str, Any], n: int, device_sets: DeviceSets
) -> Sequence[Mapping[str, Any]]:
    """The Device resources the reading's ``devices`` digest names (none without one)."""
    if DEVICES_KEY not in content:
        if n:
            _refuse("an entry names a Device by reference and the reading names no device set")
        return ()
    digest = content[DEVICES_KEY]
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        _refuse(f"devices is not a {DIGEST_BYTES}-byte string")
    if not n:
        _refuse("the reading names a device set and no entry is a Device by reference")
    stored = device_sets(digest)
    if stored is None:
        raise UnknownDevicesError(
            "reading", f"its Devices are by reference to device set {digest.hex()}, not held",
            digest,
        )  # fmt: skip
    if len(stored) != n:
        _refuse(f"device set {digest.hex()} holds {len(stored)} Devices, the reading names {n}")
    for resource in stored:
        if not isinstance(resource, Mapping) or resource.get("resourceType") != DEVICE:
            _refuse(f"device set {digest.hex()} holds something other than Device resources")
    return stored


def _resolved(value: Any, urls: Sequence[str]) -> Any:
    """A copy of ``value`` with every index ``reference`` made that entry's ``fullUrl``."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for name, item in value.items():
            if name == "reference" and not isinstance(item, str):
                if type(item) is not int or not 0 <= item < len(urls):
                    _refuse("a reference is neither text nor the index of an entry")
                out[name] = urls[item]
            else:
                out[name] = _resolved(item, urls)
        return out
    if isinstance(value, list):
        return [_resolved(item, urls) for item in value]
    return value


def _refuse(reason: str) -> NoReturn:
    raise IntegrityError("reading", reason)


# ---------------------------------------------------------------------------
# The device sets the platform holds (the hub's belief, from receipts)
# ---------------------------------------------------------------------------

MAX_CONFIRMED_SETS: Final = 128
"""Device sets remembered as held at most (a hub has a few devices; each new firmware or hub
software is a new set). The oldest confirmed is forgotten first: its next reading goes in
full once and confirms it again. 128 x 17 bytes fit the outbox's sync-state bound."""

_STATE_VERSION: Final = 1


class ConfirmedDeviceSets:
    """The device sets a platform (``platform_kid``, its signing key's id) is known to hold:
    each confirmed by a valid receipt holding an envelope that carried it in full, forgotten
    all at once when the platform says it does not hold one (``unknown_device``).

    Stored in the outbox (sync state, sealed) with the platform's kid: a state of another
    platform is not taken (:meth:`from_bytes`), and a factory reset erases it with the
    outbox. Not thread-safe: one event loop.
    """

    def __init__(
        self,
        platform_kid: bytes,
        digests: Iterable[bytes] = (),
        *,
        max_sets: int = MAX_CONFIRMED_SETS,
    ) -> None:
        if max_sets < 1:
            raise ValueError("max_sets must be >= 1")
        self.platform_kid = platform_kid
        self._max = max_sets
        self._sets: dict[bytes, None] = {}
        self._known: frozenset[bytes] = frozenset()
        self.confirm(digests)

    def __len__(self) -> int:
        return len(self._sets)

    @property
    def known(self) -> frozenset[bytes]:
        """The digests held now (an immutable snapshot, for building envelopes elsewhere)."""
        return self._known

    def confirm(self, digests: Iterable[bytes]) -> bool:
        """Take ``digests`` as held; whether anything new was learned."""
        changed = False
        for digest in digests:
            if len(digest) != DIGEST_BYTES:
                raise ValueError(f"a device-set digest is {DIGEST_BYTES} bytes")
            if digest in self._sets:
                continue
            self._sets[digest] = None
            changed = True
            while len(self._sets) > self._max:
                del self._sets[next(iter(self._sets))]
        if changed:
            self._known = frozenset(self._sets)
        return changed

    def forget(self) -> bool:
        """Hold nothing (the platform lost what it had); whether anything was held."""
        if not self._sets:
            return False
        self._sets.clear()
        self._known = frozenset()
        return True

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {"v": _STATE_VERSION, "platform": self.platform_kid, "sets": list(self._sets)},
            canonical=True,
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, platform_kid: bytes, *, max_sets: int = MAX_CONFIRMED_SETS
    ) -> ConfirmedDeviceSets:
        """The sets :meth:`to_bytes` wrote, or none when they were another platform's.

        Raises :class:`~agent.errors.IntegrityError` (``what="device sets"``) for anything
        this class did not write."""
        try:
            body = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError) as exc:
            raise IntegrityError("device sets", "not CBOR") from exc
        if not isinstance(body, dict) or body.get("v") != _STATE_VERSION:
            raise IntegrityError("device sets", "not a version 1 state")
        sets, platform = body.get("sets"), body.get("platform")
        if not isinstance(platform, bytes) or not isinstance(sets, list):
            raise IntegrityError("device sets", "platform or sets missing")
        if not all(isinstance(d, bytes) and len(d) == DIGEST_BYTES for d in sets):
            raise IntegrityError("device sets", f"a set is not a {DIGEST_BYTES}-byte digest")
        if platform != platform_kid:
            return cls(platform_kid, max_sets=max_sets)
        return cls(platform_kid, sets[-max_sets:], max_sets=max_sets)


__all__ = [
    "DEVICES_KEY",
    "DIGEST_BYTES",
    "MAX_CONFIRMED_SETS",
    "PLACEHOLDER_KEY",
    "READING_V3",
    "UNKNOWN_DEVICE_REASON",
    "Compacted",
    "ConfirmedDeviceSets",
    "DeviceSets",
    "compact",
    "device_set",
    "device_set_digest",
    "expand",
    "expand_content",
]
