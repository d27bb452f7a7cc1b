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
- ``Observation.identifier`` is the IG's conditional-create identifier:
  ``device-patient-type-timestamp-duration-supplemental`` (PhdBaseObservation notes), with
  the timestamp as the device reported it, not the corrected ``effective[x]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from agent.normalize.codes import DATA_ABSENT_SYSTEM, UCUM_SYSTEM, Unit
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
            "value": measured.value,
            "unit": unit.display,
            "system": UCUM_SYSTEM,
            "code": unit.ucum,
        }
    }


def fhir_datetime(moment: datetime) -> str:
    """FHIR dateTime with seconds and offset (``2026-11-23T10:00:00+01:00``)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: attach the zone first")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def localize(device_local: datetime, timezone: str) -> datetime:
    """Attach the hub's zone to a device's naive local time (first occurrence in a DST fold)."""
    return device_local.replace(tzinfo=ZoneInfo(timezone), fold=0)


def utc_now() -> datetime:
    """The hub's wall clock, in UTC. (Tests that need a fixed clock pass times explicitly.)"""
    return datetime.now(UTC)


def identifier_timestamp(device_local: datetime | None, received: datetime) -> str:
    """The timestamp part of the conditional-create identifier.

    The device's own reported time (``YYYYMMDDhhmmss``, as in the IG's example identifier) when
    it sent one; otherwise the hub's reception time in UTC, to the microsecond, prefixed ``R``:
    two time-less readings received in the same second must not share an identifier (the
    second would be dropped as a duplicate). Such a reading cannot be recognised when the
    device sends it again, which only time-less devices do.
    """
    if device_local is not None:
        return device_local.strftime("%Y%m%d%H%M%S")
    return "R" + received.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f")


def reported_timestamp(
    year: int, month: int, day: int, hours: int, minutes: int, seconds: int
) -> str:
    """The identifier timestamp from a Date Time's raw fields, usable or not.

    ``YYYYMMDDhhmmss`` exactly as sent (``00000000…`` for an unset clock), so a reading whose
    time stamp is unusable still gets the same identifier when the device sends it again.
    """
    return f"{year:04d}{month:02d}{day:02d}{hours:02d}{minutes:02d}{seconds:02d}"


def observation_identifier(
    device_id: str, patient_id: str, mdc: int, timestamp: str, supplemental: tuple[int, ...] = ()
) -> str:
    """``device-patient-type-timestamp[-supplemental…]`` (PhdBaseObservation identifier)."""
    parts = [device_id, patient_id, str(mdc), timestamp, *(str(c) for c in supplemental)]
    return "-".join(parts)


@dataclass(frozen=True, slots=True)
class Context:
    """Who and when: the same for every resource made from one transfer."""

    hub_id: str
    patient_id: str
    timezone: str
    received: datetime  #: hub wall time (aware) when the measurement arrived
