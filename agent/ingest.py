"""From raw characteristic bytes to the record the outbox stores: decode, normalize, sign.

Pure and synchronous (no BLE, no SQLite, no network): :func:`prepare` turns one measurement
into a :class:`Prepared` whose :meth:`Prepared.envelope` builds the signed bytes once the
outbox has allocated the sequence number, inside the storing transaction.

Invalid bytes raise :class:`DecodeError`; the caller logs the reason and drops the value:
an undecodable reading is never stored as if it were valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.ble.bps_session import RawMeasurement
from agent.normalize import codes
from agent.normalize.blood_pressure import BloodPressureReading, blood_pressure_observations
from agent.normalize.bundle import collection
from agent.normalize.device import DeviceFacts, phd_device, phg_device
from agent.normalize.phd import Context, Measured, fhir_datetime
from agent.payload import CONTENT_TYPE, Payload
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.errors import DecodeError
from drivers.ieee11073 import MedFloat16

BLOOD_PRESSURE_MEASUREMENT: Final = "00002a35-0000-1000-8000-00805f9b34fb"
KIND_OBSERVATION: Final = "observation"
SOFTWARE_VERSION: Final = "0.1.0"


@dataclass(frozen=True, slots=True)
class Signer:
    """The hub's signing key and its COSE key id."""

    key: ec.EllipticCurvePrivateKey
    kid: bytes

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePrivateKey) -> Signer:
        """Derive the kid from the key's public half."""
        return cls(key, cose.key_id(key.public_key()))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded, normalized measurement waiting for its sequence number."""

    kind: str
    identifier: str  #: the primary Observation's conditional-create identifier (dedup key)
    bundle: dict[str, Any]
    hub_id: str
    stored_at: datetime

    def envelope(self, seq: int, signer: Signer) -> bytes:
        """The signed COSE_Sign1 message for sequence number ``seq``."""
        payload = Payload(
            hub=self.hub_id,
            seq=seq,
            kind=self.kind,
            id=self.identifier,
            hub_time=fhir_datetime(self.stored_at),
            fhir=self.bundle,
        ).encode()
        return cose.sign1(payload, signer.key, signer.kid, CONTENT_TYPE)


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
    )


def prepare_blood_pressure(raw: RawMeasurement, device: DeviceFacts, ctx: Context) -> Prepared:
    """A Blood Pressure Measurement 0x2A35: the BP panel, pulse rate, and both Devices."""
    measurement = BloodPressureMeasurement.from_bytes(raw.data)
    observations = blood_pressure_observations(blood_pressure_reading(measurement), device, ctx)
    resources = [
        *observations,
        phd_device(device, codes.MDC_DEV_SPEC_PROFILE_BPM),
        phg_device(ctx.hub_id, SOFTWARE_VERSION),
    ]
    return Prepared(
        kind=KIND_OBSERVATION,
        identifier=observations[0]["identifier"][0]["value"],
        bundle=collection(resources, fhir_datetime(ctx.received)),
        hub_id=ctx.hub_id,
        stored_at=ctx.received,
    )


Preparer = Callable[[RawMeasurement, DeviceFacts, Context], Prepared]

#: How each measurement characteristic (bleak-style 128-bit UUID) becomes a record.
PREPARERS: Final[dict[str, Preparer]] = {
    BLOOD_PRESSURE_MEASUREMENT: prepare_blood_pressure,
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
