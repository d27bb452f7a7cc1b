"""From raw characteristic bytes to the record the outbox stores: decode, normalize, sign.

Each kind is decoded once, here, by its preparer (the drivers' ``from_bytes``); the
normalizers take the decoded, typed values. Each preparer also sets the reading's identity
(docs/fhir-profile.md "Identifiers").

Pure and synchronous (no BLE, no SQLite, no network): :func:`prepare` turns one measurement
into a :class:`Prepared` whose :meth:`Prepared.envelope` builds the signed bytes once the
outbox has allocated the sequence number, inside the storing transaction.

Work a device's readings share is done once (this runs on the storage thread, and a glucose
download brings up to 1,000 readings in a few seconds): the Bundle entries that are the same
for every reading of a device and clock read (PhdDevice, PhgDevice, coincident timestamp)
are built and CBOR-encoded once (:func:`_fixed`); a reading's Bundle is encoded by
:func:`prepare` around those parts, and its payload by :meth:`Prepared.envelope` around the
Bundle's encoding, byte for byte what :meth:`agent.payload.Payload.encode` gives.

Invalid bytes raise :class:`DecodeError`; the caller logs the reason and drops the value:
an undecodable reading is never stored as if it were valid.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.ble.uuids import (
    BLOOD_PRESSURE_MEASUREMENT,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
)
from agent.errors import DecodeError
from agent.measurement import RawMeasurement
from agent.normalize import codes
from agent.normalize.blood_pressure import BloodPressureReading, blood_pressure_observations
from agent.normalize.bundle import FixedEntry, bundle_with_fixed, fixed_entries, refers_to
from agent.normalize.clock import coincident_observation
from agent.normalize.codes import HUB_IDENTIFIER_SYSTEM
from agent.normalize.device import DeviceFacts, phd_device, phg_device
from agent.normalize.glucose import GlucoseRecord, glucose_observations
from agent.normalize.phd import Context, Measured, fhir_datetime
from agent.normalize.pulse_oximetry import plx_observations
from agent.payload import CONTENT_TYPE, PAYLOAD_VERSION, Payload
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.glucose import GlucoseMeasurement, GlucoseMeasurementContext
from drivers.ieee11073 import MedFloat16
from drivers.pulse_oximetry import PlxContinuousMeasurement, PlxSpotCheckMeasurement

KIND_OBSERVATION: Final = "observation"
SOFTWARE_VERSION: Final = "0.1.0"


@dataclass(frozen=True, slots=True)
class Signer:
    """The hub's ES256 signing operation, its public key and its COSE key id.

    ``sign`` may run inside a PKCS#11 token (:mod:`agent.keys`): then ``key`` is ``None``,
    the private key is not in this process. Only an in-memory key (:meth:`from_key`) signs
    deterministically (RFC 6979).
    """

    sign: cose.Es256Sign = field(repr=False)
    kid: bytes
    public_key: ec.EllipticCurvePublicKey = field(repr=False)
    key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePrivateKey) -> Signer:
        """An in-memory key; kid from its public half."""
        public = key.public_key()
        return cls(functools.partial(cose.es256_sign, key), cose.key_id(public), public, key)

    @classmethod
    def from_provider(cls, provider: SigningProvider) -> Signer:
        """A key provider's signing key (:class:`agent.keys.KeyProvider`)."""
        public = provider.public_key()
        return cls(provider.sign, cose.key_id(public), public)


class HubSigner(Protocol):
    """What signing a payload needs: :class:`Signer`, or a :class:`SwitchableSigner`."""

    @property
    def sign(self) -> cose.Es256Sign:
        """ES256 over a message: the 64-byte ``r || s``."""
        ...

    @property
    def kid(self) -> bytes:
        """The signing key's COSE key id."""
        ...

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The signing key's public half."""
        ...


class SwitchableSigner:
    """The running hub's signer, whose key a certificate rotation can replace.

    When the hub's TLS client key is also its signing key (one key file for both), a rotation
    confirmed by a connection with the new certificate (agent/platform_link.py) gives the new
    key to :meth:`replace`, so what is signed from then on is signed with it, without a
    restart. Every signing runs on the storage thread, and :meth:`replace` must be called
    there too: a signature and its kid then always come from the same key (a ``sign`` read
    before and a ``kid`` read after a switch would make an envelope no certificate verifies).
    """

    __slots__ = ("_current",)

    def __init__(self, signer: Signer) -> None:
        self._current = signer

    @property
    def current(self) -> Signer:
        return self._current

    @property
    def sign(self) -> cose.Es256Sign:
        return self._current.sign

    @property
    def kid(self) -> bytes:
        return self._current.kid

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._current.public_key

    def replace(self, signer: Signer) -> None:
        """Sign with ``signer`` from now on (call on the storage thread)."""
        self._current = signer


class SigningProvider(Protocol):
    """The part of :class:`agent.keys.KeyProvider` a :class:`Signer` needs."""

    def sign(self, message: bytes) -> bytes:
        """ES256 over ``message``: the 64-byte ``r || s``."""
        ...

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The signing key's public half."""
        ...


def content_digest(raw: RawMeasurement) -> bytes:
    """SHA-256 over exactly what the device sent for this reading: the characteristic, its
    value and each related value (by characteristic, in sorted order), length-prefixed.

    Two readings with the same identity but different digests are a *conflict*."""
    h = hashlib.sha256()
    for uuid, value in [(raw.characteristic_uuid, raw.data), *sorted(raw.related.items())]:
        for part in (uuid.lower().encode(), value):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded, normalized measurement waiting for its sequence number.

    ``identity`` is the outbox's dedup key: what distinguishes this reading from every other
    one of the same device and patient (the record's sequence number where the service has
    one, the content where it has not). ``content_digest`` is what the device sent
    (:func:`content_digest`). The outbox stores a reading whose identity is new; drops a true
    re-send (same identity, same digest) as a duplicate; and stores a reading with a known
    identity but another digest as a *conflict*, reported and sent with ``conflict_of``.
    """

    kind: str
    identifier: str  #: the primary Observation's hub identifier (the payload's ``id``)
    bundle: dict[str, Any]
    hub_id: str
    stored_at: datetime
    identity: str = ""
    """The dedup key (see above); defaults to ``identifier``."""
    content_digest: bytes = field(default=b"", repr=False)
    fhir_cbor: bytes = field(default=b"", repr=False, compare=False)
    """``bundle`` in canonical CBOR, as the payload carries it (b"": encoded by
    :meth:`envelope`). Made by :func:`prepare` from the parts it encoded once per device."""

    @property
    def dedup_key(self) -> str:
        """The outbox's dedup key: ``identity``, or the identifier when none was given."""
        return self.identity or self.identifier

    def envelope(self, seq: int, signer: HubSigner, conflict_of: int | None = None) -> bytes:
        """The signed COSE_Sign1 message for sequence number ``seq`` (``conflict_of``: the seq
        of the first record with the same identity, when this one conflicts with it)."""
        payload = Payload(
            hub=self.hub_id,
            seq=seq,
            kind=self.kind,
            id=self.identifier,
            hub_time=fhir_datetime(self.stored_at),
            fhir=self.bundle,
            conflict_of=conflict_of,
        )
        encoded = payload_bytes(payload, self.fhir_cbor) if self.fhir_cbor else payload.encode()
        return cose.sign1_with(encoded, signer.sign, signer.kid, CONTENT_TYPE)


class _Encoded:
    """Canonical CBOR already encoded: written as it is where it stands (:func:`_write`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _write(encoder: cbor2.CBOREncoder, value: object) -> None:
    """cbor2's ``default`` hook: an :class:`_Encoded` part goes in as it is; any other type
    cbor2 cannot encode is refused as it would be without the hook."""
    if type(value) is not _Encoded:
        raise cbor2.CBOREncodeTypeError(f"cannot serialize type {type(value).__name__}")
    encoder.write(value.data)


def _canonical(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True, default=_write)


def payload_bytes(payload: Payload, fhir_cbor: bytes) -> bytes:
    """``payload.encode()``, byte for byte, with its Bundle already encoded as ``fhir_cbor``
    (canonical CBOR of ``payload.fhir``): the map of :meth:`agent.payload.Payload.encode`
    with that value written as it is. Canonical CBOR orders a map by its keys' encodings
    only, so a value encoded beforehand gives the same bytes (tests/test_ingest_encoding.py
    holds the two encodings equal for every kind and for a conflict)."""
    fields: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "hub": payload.hub,
        "seq": payload.seq,
        "kind": payload.kind,
        "id": payload.id,
        "hub_time": payload.hub_time,
        "fhir": _Encoded(fhir_cbor),
    }
    if payload.conflict_of is not None:
        fields["conflict_of"] = payload.conflict_of
    return _canonical(fields)


IDENTITY_DIGEST_HEX: Final = 32
"""Hex digits of SHA-256 in a content identity: 128 bits, so two different values of one
device never share an identity in practice, while the identifier stays short."""


def value_identity(data: bytes) -> str:
    """The identity part of a reading identified by its content: ``sha256:`` + 32 hex digits
    of SHA-256 over the characteristic value exactly as the device sent it (its time stamp,
    user id, flags and status bits included). A byte-identical re-send gives the same one."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:IDENTITY_DIGEST_HEX]


def sequence_identity(sequence_number: int) -> str:
    """The identity part of a record the service numbers (GLS 0x2A18 Sequence Number)."""
    return f"seq:{sequence_number}"


def received_identity(data: bytes, received: datetime) -> str:
    """The identity part of a live sample that is never re-sent (PLX continuous 0x2A5F):
    its content and the hub's receipt time, to the microsecond (identical samples a minute
    apart are different readings)."""
    stamp = received.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{value_identity(data)}@{stamp}"


def _measured(value: MedFloat16) -> Measured:
    if value.special is not None:
        return Measured(None, value.special)
    return Measured(value.to_decimal())


def blood_pressure_reading(measurement: BloodPressureMeasurement) -> BloodPressureReading:
    """The normalizer's view of a decoded 0x2A35 value."""
    stamp = measurement.time_stamp
    return BloodPressureReading(
        unit="kPa" if measurement.unit is PressureUnit.KPA else "mmHg",
        systolic=_measured(measurement.systolic),
        diastolic=_measured(measurement.diastolic),
        mean_arterial_pressure=_measured(measurement.mean_arterial_pressure),
        device_time=stamp.to_datetime() if stamp is not None else None,
        pulse_rate=(
            _measured(measurement.pulse_rate) if measurement.pulse_rate is not None else None
        ),
        user_id=measurement.user_id,
        time_problem=stamp.problem if stamp is not None else None,
        measurement_status=(
            measurement.measurement_status.raw
            if measurement.measurement_status is not None
            else None
        ),
    )


def glucose_record(measurement: bytes, context: bytes | None) -> GlucoseRecord:
    """Decode a 0x2A18 value and the 0x2A34 value the session joined to it.

    Raises:
        DecodeError: the measurement is malformed (a malformed context, or one with another
            sequence number, only drops the context: the reading is kept, with a note).
    """
    decoded = GlucoseMeasurement.from_bytes(measurement)
    if context is None:
        return GlucoseRecord(decoded)
    try:
        joined = GlucoseMeasurementContext.from_bytes(context)
    except DecodeError:
        return GlucoseRecord(decoded, None, True)
    if joined.sequence_number != decoded.sequence_number:
        return GlucoseRecord(decoded, None, True)
    return GlucoseRecord(decoded, joined)


def _hub_identifier(observation: dict[str, Any]) -> str:
    values = [
        str(i["value"]) for i in observation["identifier"] if i["system"] == HUB_IDENTIFIER_SYSTEM
    ]
    return values[0]


@dataclass(frozen=True, slots=True)
class _Fixed:
    """A device's fixed Bundle entries (:class:`FixedEntry`) and each one's canonical CBOR."""

    entries: tuple[FixedEntry, ...]
    encoded: tuple[_Encoded, ...]


@functools.lru_cache(maxsize=32)
def _fixed(
    device: DeviceFacts,
    specialization: codes.Code,
    hub_id: str,
    timezone: str,
    coincident: bool,
) -> _Fixed:
    """The entries every reading of ``device`` shares: its PhdDevice, the hub's PhgDevice and,
    when ``coincident``, its clock read's coincident timestamp; built, rewritten and encoded
    once per device and clock read (a glucose download's 1,000 readings share them), not once
    per reading. Keyed by immutable values; a few devices' worth."""
    resources = [phd_device(device, specialization), phg_device(hub_id, SOFTWARE_VERSION)]
    if coincident:
        assert device.clock is not None
        resources.append(coincident_observation(device.clock, device.logical_id, hub_id, timezone))
    entries = fixed_entries(resources)
    return _Fixed(entries, tuple(_Encoded(_canonical(e.entry)) for e in entries))


def _prepared(
    observations: list[dict[str, Any]],
    specialization: codes.Code,
    device: DeviceFacts,
    ctx: Context,
    kind: str,
    raw: RawMeasurement,
) -> Prepared:
    """One reading's record: its Observations, both Devices and the coincident timestamp in a
    Bundle (:func:`agent.normalize.bundle.reading_bundle`'s; the coincident timestamp only
    when an Observation references it); identified by its first (primary) Observation's hub
    identifier, which is also its identity (the outbox's dedup key and the payload's ``id``).
    """
    clock = device.clock
    coincident = clock is not None and refers_to(
        observations, f"Observation/{clock.logical_id(device.logical_id)}"
    )
    fixed = _fixed(device, specialization, ctx.hub_id, ctx.timezone, coincident)
    bundle = bundle_with_fixed(observations, fixed.entries, fhir_datetime(ctx.received))
    # The same Bundle with the fixed entries as their encodings: only the reading's own
    # resources are encoded per reading.
    entries = bundle["entry"]
    own = len(entries) - len(fixed.entries)
    fhir_cbor = _canonical({**bundle, "entry": [*entries[:own], *fixed.encoded]})
    identity = _hub_identifier(observations[0])
    return Prepared(
        kind=kind,
        identifier=identity,
        bundle=bundle,
        hub_id=ctx.hub_id,
        stored_at=ctx.received,
        identity=identity,
        content_digest=content_digest(raw),
        fhir_cbor=fhir_cbor,
    )


def prepare_blood_pressure(raw: RawMeasurement, device: DeviceFacts, ctx: Context) -> Prepared:
    """A Blood Pressure Measurement 0x2A35: the BP panel, pulse rate, and both Devices.

    BPS numbers nothing, so the reading is identified by its content (:func:`value_identity`):
    a cuff with an unset or stuck clock still gives each different reading its own identity,
    and a stored reading it sends again is recognised.
    """
    measurement = BloodPressureMeasurement.from_bytes(raw.data)
    observations = blood_pressure_observations(
        blood_pressure_reading(measurement), device, ctx, value_identity(raw.data)
    )
    return _prepared(
        observations, codes.MDC_DEV_SPEC_PROFILE_BPM, device, ctx, KIND_OBSERVATION, raw
    )


def prepare_pulse_oximetry(raw: RawMeasurement, device: DeviceFacts, ctx: Context) -> Prepared:
    """A PLX Spot-check 0x2A5E or Continuous 0x2A5F value: SpO2, pulse rate, PAI, device
    status (agent.normalize.pulse_oximetry), and both Devices.

    A spot-check (stored ones are re-sent every session) is identified by its content; a
    continuous sample (live, never re-sent) by its content and receipt time.

    Raises:
        DecodeError: not a valid value of that characteristic, or another characteristic.
    """
    uuid = raw.characteristic_uuid.lower()
    measurement: PlxSpotCheckMeasurement | PlxContinuousMeasurement
    if uuid == PLX_SPOT_CHECK_MEASUREMENT:
        measurement = PlxSpotCheckMeasurement.from_bytes(raw.data)
        identity = value_identity(raw.data)
    elif uuid == PLX_CONTINUOUS_MEASUREMENT:
        measurement = PlxContinuousMeasurement.from_bytes(raw.data)
        identity = received_identity(raw.data, ctx.received)
    else:
        raise DecodeError(raw.characteristic_uuid, "not a PLX measurement characteristic")
    observations = plx_observations(measurement, device, ctx, identity)
    return _prepared(
        observations, codes.MDC_DEV_SPEC_PROFILE_PULS_OXIM, device, ctx, KIND_OBSERVATION, raw
    )


def prepare_glucose(raw: RawMeasurement, device: DeviceFacts, ctx: Context) -> Prepared:
    """A Glucose Measurement 0x2A18 with the context 0x2A34 the session joined to it
    (agent.normalize.glucose): glucose, status bits, context; a control-solution test as a
    device quality-control record, never as patient glucose.

    Identified by its Sequence Number (:func:`sequence_identity`), with the device, patient
    (``qc`` for a control test) and code: records of a meter with an unset clock keep their
    own identities; the same number with other content (a meter reset) is a conflict.
    """
    record = glucose_record(raw.data, raw.related.get(GLUCOSE_MEASUREMENT_CONTEXT))
    identity = sequence_identity(record.measurement.sequence_number)
    observations = glucose_observations(record, device, ctx, identity)
    return _prepared(
        observations, codes.MDC_DEV_SPEC_PROFILE_GLUCOSE, device, ctx, record.kind, raw
    )


Preparer = Callable[[RawMeasurement, DeviceFacts, Context], Prepared]

#: How each measurement characteristic (bleak-style 128-bit UUID) becomes a record.
PREPARERS: Final[dict[str, Preparer]] = {
    BLOOD_PRESSURE_MEASUREMENT: prepare_blood_pressure,
    PLX_SPOT_CHECK_MEASUREMENT: prepare_pulse_oximetry,
    PLX_CONTINUOUS_MEASUREMENT: prepare_pulse_oximetry,
    GLUCOSE_MEASUREMENT: prepare_glucose,
}


def prepare(raw: RawMeasurement, device: DeviceFacts, ctx: Context) -> Prepared:
    """Decode and normalize one measurement (with its related values).

    Raises:
        DecodeError: the bytes are not a valid value of that characteristic, or the
            characteristic is not one the hub collects.
    """
    preparer = PREPARERS.get(raw.characteristic_uuid.lower())
    if preparer is None:
        raise DecodeError(raw.characteristic_uuid, "not a characteristic the hub collects")
    return preparer(raw, device, ctx)
