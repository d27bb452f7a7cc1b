"""A verified blood-pressure reading as the platform reads it back from its FHIR Bundle.

The values a clinician reads (:class:`hil.scenarios.base.BpValues`), the effective time, and
both identifiers of the panel: the PHD IG's conditional-create one (present when the device
time is trusted) and the hub's own (the reading's id, what the platform deduplicates by).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from hil.receiver import VerifiedReading
from hil.scenarios.base import MDC_BP_PANEL, BpValues

MDC_SYSTOLIC: Final = "150021"
MDC_DIASTOLIC: Final = "150022"
MDC_MEAN: Final = "150023"
MDC_PULSE: Final = "149546"
IG_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
"""The IG's conditional-create identifier's system (docs/fhir-profile.md, "Identifiers")."""
HUB_SYSTEM: Final = "urn:homehub:fhir:reading-id"
"""The hub identifier's system: its value is the reading's id."""


@dataclass(frozen=True, slots=True)
class BpSeen:
    """One verified blood-pressure reading, read back."""

    values: BpValues
    effective: str
    ig_identifier: str | None
    """The IG's identifier, present only when the device time identifies the reading."""
    hub_identifier: str | None


def _value(item: dict[str, Any]) -> Decimal | None:
    quantity = item.get("valueQuantity")
    return None if quantity is None else Decimal(str(quantity["value"]))


def bp_summary(reading: VerifiedReading) -> BpSeen:
    """Read the verified payload's FHIR Bundle back (KeyError/ValueError if it is not a
    blood-pressure reading)."""
    resources = [e["resource"] for e in reading.payload["fhir"]["entry"]]
    observations = {
        r["code"]["coding"][0]["code"]: r for r in resources if r["resourceType"] == "Observation"
    }
    panel = observations[MDC_BP_PANEL]
    components = {c["code"]["coding"][0]["code"]: c for c in panel["component"]}
    systolic = _value(components[MDC_SYSTOLIC])
    diastolic = _value(components[MDC_DIASTOLIC])
    if systolic is None or diastolic is None:
        raise ValueError("panel without systolic or diastolic value")
    pulse = observations.get(MDC_PULSE)
    values = BpValues(
        systolic=systolic,
        diastolic=diastolic,
        mean=_value(components[MDC_MEAN]) if MDC_MEAN in components else None,
        pulse=_value(pulse) if pulse is not None else None,
        unit=components[MDC_SYSTOLIC]["valueQuantity"]["unit"],
    )
    identifiers = {str(i.get("system")): str(i["value"]) for i in panel.get("identifier", [])}
    return BpSeen(
        values,
        str(panel.get("effectiveDateTime", "")),
        identifiers.get(IG_SYSTEM),
        identifiers.get(HUB_SYSTEM),
    )
