"""Codes the HL7 FHIR Personal Health Device IG uses: MDC (ISO/IEEE 11073-10101), LOINC, UCUM.

MDC codes are the 32-bit decimal form, partition × 65536 + term code (PHD IG "MDC Nomenclature
codes"). LOINC codes are added where the observation is a FHIR vital sign, as the IG requires.
Sources: HL7 PHD IG examples and ../shared/reference/ble-spec-facts.md §8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM: Final = "http://loinc.org"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
PHD_CATEGORY_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
PHD_CATEGORY_CODE: Final = "phd"
"""IG STU2 (2.0.0) PhdBaseObservation slice PHD-Observation: code ``phd`` (STU1.1 used
``phd-observation``)."""
DATA_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DEVICE_ID_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers"
EUI64_SYSTEM: Final = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
BT_MAC_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"

PHD_PROFILE: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
GATEWAY_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
COINCIDENT_TIMESTAMP_EXTENSION: Final = PHD_PROFILE + "CoincidentTimeStampReference"
ASN1_TO_HL7_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/ASN1ToHL7"
"""STU2 moved ASN1ToHL7 to HL7 Terminology (IG changes.md "Code System Migration")."""
POCD_MEASUREMENT_STATUS_SYSTEM: Final = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
"""PhdBaseObservation ``interpretation.coding[MsmtStatusInterpretation]`` (1..1 per
interpretation)."""
IG_IDENTIFIER_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
"""PhdBaseObservation ``identifier[conditionalCreate].system`` (fixed, STU2)."""
HUB_IDENTIFIER_SYSTEM: Final = "urn:homehub:fhir:reading-id"
"""The hub's own Observation identifier (the reading's identity): docs/fhir-profile.md."""
YES_NO_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0136"
HUB_FLAG_SYSTEM: Final = "urn:homehub:fhir:reading-flag"
"""The hub's own flags on a reading (time quality, implausible values): docs/fhir-profile.md.
The IG defines no code for them; a URN keeps them apart from any standard code system."""


@dataclass(frozen=True, slots=True)
class Code:
    """One MDC term, with the LOINC code the IG pairs with it (vital signs only)."""

    mdc: int
    ref_id: str
    text: str
    loinc: str | None = None

    def codeable_concept(self) -> dict[str, Any]:
        """FHIR CodeableConcept: the MDC coding first, then LOINC when there is one."""
        coding: list[dict[str, Any]] = [
            {"system": MDC_SYSTEM, "code": str(self.mdc), "display": self.ref_id}
        ]
        if self.loinc:
            coding.append({"system": LOINC_SYSTEM, "code": self.loinc})
        return {"coding": coding, "text": self.text}


# fmt: off
# ruff: noqa: E501  (aligned table: one code a line reads better than wrapped calls)
MDC_PRESS_BLD_NONINV:      Final = Code(150020, "MDC_PRESS_BLD_NONINV", "Blood pressure", "85354-9")
MDC_PRESS_BLD_NONINV_SYS:  Final = Code(150021, "MDC_PRESS_BLD_NONINV_SYS", "Systolic blood pressure", "8480-6")
MDC_PRESS_BLD_NONINV_DIA:  Final = Code(150022, "MDC_PRESS_BLD_NONINV_DIA", "Diastolic blood pressure", "8462-4")
MDC_PRESS_BLD_NONINV_MEAN: Final = Code(150023, "MDC_PRESS_BLD_NONINV_MEAN", "Mean blood pressure")
MDC_PULS_RATE_NON_INV:     Final = Code(149546, "MDC_PULS_RATE_NON_INV", "Pulse rate", "8867-4")
MDC_MOC_VMS_MDS_SIMP:      Final = Code(65573, "MDC_MOC_VMS_MDS_SIMP", "Simple PHD")
MDC_MOC_VMS_MDS_AHD:       Final = Code(531981, "MDC_MOC_VMS_MDS_AHD", "Personal health gateway")
MDC_DEV_SPEC_PROFILE_PULS_OXIM: Final = Code(528388, "MDC_DEV_SPEC_PROFILE_PULS_OXIM", "Pulse Oximeter")
MDC_DEV_SPEC_PROFILE_GLUCOSE: Final = Code(528401, "MDC_DEV_SPEC_PROFILE_GLUCOSE", "Glucose meter")
MDC_DEV_SPEC_PROFILE_BPM:  Final = Code(528391, "MDC_DEV_SPEC_PROFILE_BPM", "Blood Pressure Monitor")
MDC_ID_PROD_SPEC_FW:       Final = Code(531976, "MDC_ID_PROD_SPEC_FW", "Firmware revision")
MDC_ID_PROD_SPEC_SW:       Final = Code(531975, "MDC_ID_PROD_SPEC_SW", "Software revision")
MDC_ID_PROD_SPEC_HW:       Final = Code(531974, "MDC_ID_PROD_SPEC_HW", "Hardware revision")
MDC_ATTR_TIME_ABS:         Final = Code(67975, "MDC_ATTR_TIME_ABS", "Absolute time")
MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS: Final = Code(8410608, "MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS", "Blood pressure measurement status")
MDC_GLU_METER_DEV_STATUS:  Final = Code(8417752, "MDC_GLU_METER_DEV_STATUS", "Glucose meter device status")
MDC_PULS_OXIM_DEV_STATUS:  Final = Code(150604, "MDC_PULS_OXIM_DEV_STATUS", "Pulse oximeter device and sensor status")
# fmt: on


@dataclass(frozen=True, slots=True)
class Unit:
    """A UCUM unit with its display form."""

    ucum: str
    display: str


# fmt: off
UNIT_MMHG:      Final = Unit("mm[Hg]", "mmHg")
UNIT_KPA:       Final = Unit("kPa", "kPa")
UNIT_PER_MIN:   Final = Unit("/min", "{beat}/min")
# fmt: on
