"""Building blocks every PHD IG resource shares: quantities, absent values, time, identifiers.

- Values keep the precision the device sent: an SFLOAT 0xF014 is ``Decimal("2.0")`` and stays
  "2.0" on the wire (CBOR decimal fraction, tag 4) and in FHIR JSON.
- Special IEEE 11073 values never go into ``value[x]``: they become ``dataAbsentReason``
  (PHD IG "FLOATs and NaN": NaN → not-a-number, NRes and reserved → error, ±INF → ±infinity).
- Devices report local time without a zone. As the PHD IG allows ("the PHG can work with the
  assumption that the PHD and the PHG are always in the same time zone") we attach the hub's
  configured zone.
- Which time goes into ``effective[x]`` (device time mapped by the coincident timestamp,
  receipt time plus a flag for an unusable clock) is decided in :mod:`agent.normalize.clock`.
- ``Observation.identifier``: the IG's conditional-create identifier
  ``device-patient-type-timestamp-duration-supplemental`` (PhdBaseObservation notes), the
  timestamp part built by the IG's algorithm from the time the device reported (never the
  corrected ``effective[x]``), when that time identifies the reading; and always the hub's
  identifier, whose last part is the reading's identity (:class:`ReadingIds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from agent import wall_clock
from agent.normalize.bundle import logical_id
from agent.normalize.codes import (
    DATA_ABSENT_SYSTEM,
    HUB_IDENTIFIER_SYSTEM,
    IG_IDENTIFIER_SYSTEM,
    OBSERVATION_CATEGORY_SYSTEM,
    PHD_CATEGORY_CODE,
    PHD_CATEGORY_SYSTEM,
    UCUM_SYSTEM,
    Unit,
)
from drivers.ieee11073 import SpecialValue

#: PHD IG FLOATS.md: how each special value is reported.
DATA_ABSENT_REASON: Final[dict[SpecialValue, str]] = {
    SpecialValue.NAN: "not-a-number",
    SpecialValue.NRES: "error",
    SpecialValue.RESERVED: "error",
    SpecialValue.POSITIVE_INFINITY: "positive-infinity",
    SpecialValue.NEGATIVE_INFINITY: "negative-infinity",
}


@dataclass(frozen=True, slots=True)
class Measured:
    """A numeric value as the device sent it: a decimal, or the special value it sent instead."""

    value: Decimal | None
    special: SpecialValue | None = None


def value_fields(measured: Measured, unit: Unit) -> dict[str, Any]:
    """``valueQuantity`` for a number, ``dataAbsentReason`` for a special value."""
    if measured.special is not None or measured.value is None:
        reason = (
            DATA_ABSENT_REASON.get(measured.special, "error") if measured.special else "unknown"
        )
        return {
            "dataAbsentReason": {
                "coding": [{"system": DATA_ABSENT_SYSTEM, "code": reason}],
            }
        }
    return {
        "valueQuantity": {
            "value": fhir_decimal(measured.value),
            "unit": unit.display,
            "system": UCUM_SYSTEM,
            "code": unit.ucum,
        }
    }


def fhir_decimal(value: Decimal) -> Decimal:
    """The FHIR form of a device value (IG "FLOATs and NaN" table): a negative exponent keeps
    its digits (0xF014 → ``2.0``); a positive one is written out as an integer (0x1002 → ``20``,
    never ``2E+1``, which FHIR's decimal grammar does not allow either)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return value.quantize(Decimal(1))
    return value


def fhir_datetime(moment: datetime) -> str:
    """FHIR dateTime with seconds and offset (``2026-11-23T10:00:00+01:00``)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: attach the zone first")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def localize(device_local: datetime, timezone: str) -> datetime:
    """Attach the hub's zone to a device's naive local time (first occurrence in a DST fold)."""
    return device_local.replace(tzinfo=ZoneInfo(timezone), fold=0)


def utc_now() -> datetime:
    """The hub's wall clock, in UTC (agent/wall_clock.py: corrected by the network's time
    while the system clock is wrong). Tests that need a fixed clock pass times explicitly."""
    return wall_clock.now()


IDENTIFIER_EPOCH: Final = datetime(2000, 1, 1)  # noqa: DTZ001 - the device's wall clock
"""IG "Generating the Timestamp part of the Observation Identifier": a local or UTC time stamp
is encoded as the seconds it represents since 2000-01-01, at the time stamp's resolution."""


def ig_timestamp(device_local: datetime) -> str:
    """The timestamp part of the IG's conditional-create identifier for a reported time.

    BLE Date Time (GATT 0x2A08, inside BPS, GLS and PLXS time stamps) has a resolution of one
    second, so the part is a whole number of seconds since 2000-01-01 (``848735890`` for
    2026-11-23 07:58:10) with no fraction, no TZ/DST offset (BLE sends none) and no duration.
    (The IG's own worked example, "690897360.567" for 2021-11-22 11:56:30.567, is 30 s off its
    rule; the rule is followed.)
    """
    return str(int((device_local.replace(microsecond=0) - IDENTIFIER_EPOCH).total_seconds()))


def observation_identifier(
    device_id: str, patient_id: str, mdc: int, timestamp: str, supplemental: tuple[int, ...] = ()
) -> str:
    """``device-patient-type-timestamp[-supplemental…]`` (PhdBaseObservation identifier)."""
    parts = [device_id, patient_id, str(mdc), timestamp, *(str(c) for c in supplemental)]
    return "-".join(parts)


@dataclass(frozen=True, slots=True)
class ReadingIds:
    """How one reading's Observations are identified (docs/fhir-profile.md "Identifiers").

    Attributes:
        device_id: the IG's device part (System ID, else the Bluetooth address).
        patient_id: the provided logical Patient id (``qc`` for a meter's control test).
        reading: what distinguishes this reading from every other one of the device: the
            record's sequence number (``seq:42``) or a digest of the value the device sent
            (``sha256:…``); the hub identifier's (and the outbox identity's) last part.
        ig_timestamp: the IG identifier's timestamp part (:func:`ig_timestamp`), ``None``
            when the device's time stamp does not identify the reading (none sent, unusable,
            or the device's clock is unset or implausible): then the Observation carries no
            conditional-create identifier, as PhdBaseObservation allows for time-less data.
    """

    device_id: str
    patient_id: str
    reading: str
    ig_timestamp: str | None = None

    def hub_value(self, mdc: int, supplemental: tuple[int, ...] = ()) -> str:
        """The hub identifier of the Observation coded ``mdc`` (unique per reading)."""
        return observation_identifier(
            self.device_id, self.patient_id, mdc, self.reading, supplemental
        )

    def identifiers(self, mdc: int, supplemental: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        """``Observation.identifier``: the IG's conditional-create one (when the device's time
        stamp identifies the reading), then the hub's."""
        out: list[dict[str, Any]] = []
        if self.ig_timestamp is not None:
            value = observation_identifier(
                self.device_id, self.patient_id, mdc, self.ig_timestamp, supplemental
            )
            out.append({"system": IG_IDENTIFIER_SYSTEM, "value": value})
        out.append({"system": HUB_IDENTIFIER_SYSTEM, "value": self.hub_value(mdc, supplemental)})
        return out

    def logical_id(self, mdc: int, supplemental: tuple[int, ...] = ()) -> str:
        """The Observation's logical id, derived from its hub identifier (stable on re-send)."""
        return logical_id(self.hub_value(mdc, supplemental))


def phd_category() -> dict[str, Any]:
    """PhdBaseObservation ``category[PHD-Observation]`` (STU2: code ``phd``, 1..1)."""
    return {"coding": [{"system": PHD_CATEGORY_SYSTEM, "code": PHD_CATEGORY_CODE}]}


def vital_signs_category() -> dict[str, Any]:
    """FHIR's ``vital-signs`` category (required by the R4 vital-signs profiles)."""
    return {
        "coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": "vital-signs"}],
        "text": "Vital Signs",
    }


@dataclass(frozen=True, slots=True)
class Context:
    """Who and when: the same for every resource made from one transfer."""

    hub_id: str
    patient_id: str
    timezone: str
    received: datetime  #: hub wall time (aware) when the measurement arrived
