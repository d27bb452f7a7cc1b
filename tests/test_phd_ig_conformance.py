"""Every Bundle the hub makes conforms to the HL7 PHD IG STU2 (2.0.0) profiles it claims.

fhir.resources checks base FHIR R4B; this test checks what the IG adds, for each resource by
the profiles in its ``meta.profile``: fixed codes and systems, slices and cardinalities, and
Bundle-level reference resolution by FHIR's rules. The rules are data (:data:`RULES` and the
constants beside it), taken from the IG's sources at tag 2.0.0 (HL7/phd ``input/fsh``:
StructureDefinition.PhdBaseObservation, PhdNumericObservation, PhdCompoundNumericObservation,
PhdBitsEnumerationObservation, PhdCodedEnumerationObservation,
PhdCoincidentTimeStampObservation, PhdDevice, PhgDevice; ValueSets MDCClockTypes,
DeviceTypes11073MDC; CodeSystem PhdObservationCategories) and the R4 vital-signs profiles the
hub also claims. Inputs: every golden Bundle, and Bundles the pipeline makes for each device kind
from the emulators' independent encoders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from fhir.resources.R4B.bundle import Bundle

from agent.ble.uuids import (
    BLOOD_PRESSURE_MEASUREMENT,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
)
from agent.ingest import prepare
from agent.measurement import RawMeasurement
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseContext, Unit, mg_per_dl, mmol_per_l
from hil.emulators.glucometer import GlucoseRecord as MeterRecord
from hil.emulators.oximeter import (
    ContinuousSample,
    DeviceSensorStatus,
    MeasurementStatus,
    SpotCheck,
)
from tests.test_fhir_golden_bp import loads

IG: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
MDC: Final = "urn:iso:std:iso:11073:10101"
UCUM: Final = "http://unitsofmeasure.org"
LOINC: Final = "http://loinc.org"

# -- the IG's fixed values (HL7/phd 2.0.0 input/fsh) -----------------------------------------

PHD_CATEGORY: Final = ("http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories", "phd")
"""PhdBaseObservation category[PHD-Observation] 1..1 (code ``phd``; ``phd-observation`` was
STU1.1)."""
GATEWAY_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
COINCIDENT_EXTENSION: Final = IG + "CoincidentTimeStampReference"
CONDITIONAL_CREATE_SYSTEM: Final = IG + "PhdBaseObservation"
"""identifier[conditionalCreate].system (fixed), type 0..0, value 1..; slice 0..1."""
MSMT_STATUS_SYSTEM: Final = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
"""interpretation.coding[MsmtStatusInterpretation] 1..1 in every interpretation."""
HTEST: Final = ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST")
SUPPLEMENTAL_TYPES: Final = "68193"
ASN1_TO_HL7: Final = "http://terminology.hl7.org/CodeSystem/ASN1ToHL7"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_STATUSES: Final = frozenset({"final", "preliminary"})
"""PhdBaseObservation.status: "Either 'final' or 'preliminary'"."""
CLOCK_TYPES: Final = frozenset({"67975", "68226", "67983", "68072"})  # ValueSet MDCClockTypes
DEVICE_TYPES: Final = frozenset(
    {"528385", "528384", "528388", "528390", "528391", "528392", "528397", "528399", "528401",
     "528402", "528403", "528404", "528405", "528406", "528408", "528409", "528412", "528413",
     "528425", "528426", "528455", "528456", "528457", "528484", "528501", "528502", "528503",
     "528504", "528505", "528506", "528507", "528508", "528509", "528510", "528511", "528512",
     "528513", "528514", "528524", "528525", "528532", "528533", "528534", "528535", "528536"}
)  # fmt: skip
"""ValueSet DeviceTypes11073MDC (specialization.systemType, required binding)."""
VERSION_TYPES: Final = frozenset({"531974", "531975", "531976", "531977", "532352", "532353"})
"""MDC device version types the hub uses (HW, SW, FW, protocol, Continua version)."""
DEVICE_ID_TYPES: Final = "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers"
EUI64_SYSTEM: Final = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
BTMAC_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"
IDENTIFIER_SLICES: Final = {
    "SYSID": (EUI64_SYSTEM, re.compile(r"^[0-9A-F]{2}(-[0-9A-F]{2}){7}$")),
    "BTMAC": (BTMAC_SYSTEM, re.compile(r"^[0-9A-F]{2}(-[0-9A-F]{2}){5}$")),
}
"""PhdDevice/PhgDevice identifier slices: type code → (fixed system, value form: capitals,
dash-separated octets, ProfileConsumers "Device identifier")."""
PHD_TYPE: Final = "65573"  # PhdDevice type.coding[PhdCode] = MDC#65573
PHG_TYPE: Final = "531981"  # PhgDevice type.coding[MDCType] code = #531981 (exactly)

# -- per-profile rules ------------------------------------------------------------------------

Check = Callable[[dict[str, Any], "Resolver"], list[str]]


@dataclass(frozen=True)
class Rule:
    """What a profile requires of a resource: its type, a parent profile's rules, checks."""

    resource_type: str
    parent: str | None
    checks: tuple[Check, ...]


class Resolver:
    """References inside one Bundle, resolved by FHIR's rules (R4 Bundle §"Resolving
    references in Bundles"): an absolute reference equals an entry's fullUrl; a relative one
    is resolved against its entry's fullUrl base (none for ``urn:uuid:``): then it names a
    resource on the receiving server."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}

    def target(self, reference: str) -> dict[str, Any] | None:
        """The entry resource ``reference`` names, None when it names none in the Bundle."""
        return self.by_url.get(reference)

    def profiled(self, reference: str, profile: str) -> bool:
        """Whether ``reference`` resolves to an entry that claims ``profile`` (or a child)."""
        target = self.target(reference)
        return target is not None and any(
            profile in lineage(p) for p in target.get("meta", {}).get("profile", [])
        )


def lineage(profile: str) -> list[str]:
    """``profile`` and its ancestors among :data:`RULES`."""
    out = []
    current: str | None = profile
    while current is not None:
        out.append(current)
        rule = RULES.get(current)
        current = rule.parent if rule is not None else None
    return out


def _codings(concept: dict[str, Any] | None, system: str) -> list[dict[str, Any]]:
    return [c for c in (concept or {}).get("coding", []) if c.get("system") == system]


def _ext(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension", []) if e.get("url") == url]


def _value_keys(node: dict[str, Any]) -> list[str]:
    return [k for k in node if k.startswith("value")]


def _quantity_problems(node: dict[str, Any], where: str) -> list[str]:
    """value[x] only Quantity with value, UCUM system and code; or a dataAbsentReason."""
    keys = _value_keys(node)
    if not keys:
        return [] if "dataAbsentReason" in node else [f"{where}: no value and no dataAbsentReason"]
    if keys != ["valueQuantity"] or "dataAbsentReason" in node:
        return [f"{where}: value[x] must be only a Quantity (got {keys})"]
    q = node["valueQuantity"]
    problems = []
    if "value" not in q:
        problems.append(f"{where}: valueQuantity.value missing")
    if q.get("system") != UCUM or not q.get("code"):
        problems.append(f"{where}: valueQuantity must be UCUM with a code")
    return problems


def _interpretation_problems(node: dict[str, Any], where: str) -> list[str]:
    return [
        f"{where}.interpretation[{i}]: needs exactly one {MSMT_STATUS_SYSTEM} coding"
        for i, concept in enumerate(node.get("interpretation", []))
        if len(_codings(concept, MSMT_STATUS_SYSTEM)) != 1
    ]


def _is_supplemental(component: dict[str, Any]) -> bool:
    return any(c.get("code") == SUPPLEMENTAL_TYPES for c in _codings(component["code"], MDC))


# PhdBaseObservation -------------------------------------------------------------------------


def base_category(r: dict[str, Any], _: Resolver) -> list[str]:
    slices = [
        c for concept in r.get("category", []) for c in concept.get("coding", [])
        if c.get("system") == PHD_CATEGORY[0]
    ]  # fmt: skip
    if [c.get("code") for c in slices] != [PHD_CATEGORY[1]]:
        return [f"category[PHD-Observation] must be exactly one {PHD_CATEGORY}: {slices}"]
    return []


def base_gateway(r: dict[str, Any], resolve: Resolver) -> list[str]:
    found = _ext(r, GATEWAY_EXTENSION)
    if len(found) != 1:
        return [f"extension[GatewayDevice] 1..1, got {len(found)}"]
    ref = found[0]["valueReference"]["reference"]
    return [] if resolve.profiled(ref, IG + "PhgDevice") else [f"gateway {ref} is no PhgDevice"]


def base_coincident(r: dict[str, Any], resolve: Resolver) -> list[str]:
    found = _ext(r, COINCIDENT_EXTENSION)
    if len(found) > 1:
        return ["extension[CoincidentTimeStamp] 0..1"]
    return [
        f"coincident {e['valueReference']['reference']} is no PhdCoincidentTimeStampObservation"
        for e in found
        if not resolve.profiled(
            e["valueReference"]["reference"], IG + "PhdCoincidentTimeStampObservation"
        )
    ]


def base_identifier(r: dict[str, Any], _: Resolver) -> list[str]:
    slices = [i for i in r.get("identifier", []) if i.get("system") == CONDITIONAL_CREATE_SYSTEM]
    problems = [] if len(slices) <= 1 else ["identifier[conditionalCreate] 0..1"]
    for ident in slices:
        if "type" in ident:
            problems.append("identifier[conditionalCreate].type must be absent (0..0)")
        if not ident.get("value"):
            problems.append("identifier[conditionalCreate].value 1..1")
    return problems


def base_status_code_subject(r: dict[str, Any], resolve: Resolver) -> list[str]:
    problems = []
    if r.get("status") not in OBSERVATION_STATUSES:
        problems.append(f"status {r.get('status')!r} not final/preliminary")
    if not _codings(r.get("code"), MDC):
        problems.append("code has no MDC coding (mdc-1)")
    subject = r.get("subject", {}).get("reference", "")
    if not (subject.startswith("Patient/") or resolve.profiled(subject, IG + "PhdDevice")):
        problems.append(f"subject {subject!r} is neither a Patient nor a PhdDevice")
    if "effectiveDateTime" not in r and "effectivePeriod" not in r:
        problems.append("effective[x] 1..1 (dateTime or Period)")
    device = r.get("device", {}).get("reference", "")
    if not resolve.profiled(device, IG + "PhdDevice"):
        problems.append(f"device {device!r} is no PhdDevice")
    return problems


def base_interpretation_security(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = _interpretation_problems(r, "Observation")
    for security in r.get("meta", {}).get("security", []):
        if security.get("system") == HTEST[0] and security.get("code") != HTEST[1]:
            problems.append(f"meta.security[PhdHtest] must be {HTEST}")
    return problems


def base_supplemental(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = []
    for component in r.get("component", []):
        if not _is_supplemental(component):
            continue
        if "dataAbsentReason" in component or not _codings(
            component.get("valueCodeableConcept"), MDC
        ):
            problems.append("supplementalTypesComponent: valueCodeableConcept MDC, no DAR")
    return problems


def base_derived_from(r: dict[str, Any], resolve: Resolver) -> list[str]:
    return [
        f"derivedFrom {d['reference']} is no PhdBaseObservation"
        for d in r.get("derivedFrom", [])
        if not resolve.profiled(d["reference"], IG + "PhdBaseObservation")
    ]


# Observation kinds --------------------------------------------------------------------------


def numeric_value(r: dict[str, Any], _: Resolver) -> list[str]:
    return _quantity_problems(r, "Observation")


def compound_components(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = [f"value[x] ..0, got {k}" for k in _value_keys(r)]
    for i, component in enumerate(c for c in r.get("component", []) if not _is_supplemental(c)):
        if len(_codings(component["code"], MDC)) != 1:
            problems.append(f"component[compound][{i}].code needs one MDC coding")
        problems += _quantity_problems(component, f"component[{i}]")
        problems += _interpretation_problems(component, f"component[{i}]")
    return problems


def bits_components(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = [f"value[x] ..0, got {k}" for k in _value_keys(r)]
    bits = [c for c in r.get("component", []) if not _is_supplemental(c)]
    if not bits:
        problems.append("no bitsComponent")
    for i, component in enumerate(bits):
        if not _codings(component["code"], ASN1_TO_HL7):
            problems.append(f"component[bitsComponent][{i}].code not ASN1ToHL7 ({ASN1_TO_HL7})")
        if _value_keys(component) != ["valueBoolean"]:
            problems.append(f"component[bitsComponent][{i}]: value[x] only boolean")
    return problems


def coded_value(r: dict[str, Any], _: Resolver) -> list[str]:
    keys = _value_keys(r)
    return [] if keys == ["valueCodeableConcept"] else [f"value[x] only CodeableConcept: {keys}"]


def coincident(r: dict[str, Any], resolve: Resolver) -> list[str]:
    problems = []
    if r.get("status") != "final":
        problems.append("status = final (exactly)")
    mdc = [c["code"] for c in _codings(r.get("code"), MDC)]
    if len(mdc) != 1 or mdc[0] not in CLOCK_TYPES:
        problems.append(f"code.coding[MDCType] 1..1 from MDCClockTypes: {mdc}")
    if not resolve.profiled(r.get("subject", {}).get("reference", ""), IG + "PhdDevice"):
        problems.append("subject must be the PhdDevice")
    if not resolve.profiled(r.get("device", {}).get("reference", ""), IG + "PhgDevice"):
        problems.append("device must be the PhgDevice")
    keys = _value_keys(r)
    if keys not in (["valueDateTime"], ["valueQuantity"]) and not (
        not keys and _codings(r.get("dataAbsentReason"), DATA_ABSENT_REASON)
    ):
        problems.append(f"value[x] dateTime or Quantity, or TimeFault DAR: {keys}")
    problems += [f"{k} 0..0" for k in ("derivedFrom", "hasMember", "specimen", "focus") if k in r]
    return problems


# Devices ------------------------------------------------------------------------------------


def device_identifiers(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = [] if r.get("identifier") else ["identifier 1..*"]
    for type_code, (system, form) in IDENTIFIER_SLICES.items():
        slices = [
            i for i in r.get("identifier", [])
            if any(c.get("code") == type_code for c in _codings(i.get("type"), DEVICE_ID_TYPES))
        ]  # fmt: skip
        if len(slices) > 1:
            problems.append(f"identifier[{type_code}] 0..1")
        for ident in slices:
            if ident.get("system") != system:
                problems.append(f"identifier[{type_code}].system must be {system}")
            if not form.match(ident.get("value", "")):
                problems.append(f"identifier[{type_code}].value {ident.get('value')!r} malformed")
    return problems


def device_versions_parent(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = ["parent 0..0"] if "parent" in r else []
    versions = r.get("version", [])
    if not versions:
        problems.append("version[MDCType] 1..*")
    for version in versions:
        codes = [c["code"] for c in _codings(version.get("type"), MDC)]
        if not codes or not set(codes) <= VERSION_TYPES or "component" in version:
            problems.append(f"version type {codes} not an MDC device version type")
    return problems


def phd_device(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = [f"{k} 1..1" for k in ("manufacturer", "modelNumber") if not r.get(k)]
    if [c["code"] for c in _codings(r.get("type"), MDC)].count(PHD_TYPE) != 1:
        problems.append(f"type.coding[PhdCode] = MDC#{PHD_TYPE} 1..1")
    specializations = r.get("specialization", [])
    if not specializations:
        problems.append("specialization[MDCType] 1..*")
    for s in specializations:
        codes = [c["code"] for c in _codings(s["systemType"], MDC)]
        if not codes or not set(codes) <= DEVICE_TYPES or not s.get("version"):
            problems.append(f"specialization {codes}: from DeviceTypes11073MDC, version 1..1")
    return problems


def phg_device(r: dict[str, Any], _: Resolver) -> list[str]:
    problems = []
    if [c["code"] for c in _codings(r.get("type"), MDC)] != [PHG_TYPE]:
        problems.append(f"type.coding[MDCType] 1..1, code = #{PHG_TYPE} (exactly)")
    if not any(
        _codings(i.get("type"), DEVICE_ID_TYPES) and i.get("system") == EUI64_SYSTEM
        for i in r.get("identifier", [])
    ):
        problems.append("a PHG reports its EUI-64 system identifier (PhgDevice purpose)")
    specializations = r.get("specialization", [])
    if not specializations:
        problems.append("specialization[MDCType] 1..*")
    for s in specializations:
        codes = [c["code"] for c in _codings(s["systemType"], MDC)]
        if not codes or not set(codes) <= DEVICE_TYPES:
            problems.append(f"specialization {codes} not from DeviceTypes11073MDC")
    return problems


# R4 vital-signs profiles the hub also claims ---------------------------------------------------


def vital_signs(loinc: str, units: dict[str, str]) -> Check:
    """A vital-signs profile: category vital-signs, the LOINC code, fixed UCUM units (for the
    panel, per component LOINC)."""

    def check(r: dict[str, Any], _: Resolver) -> list[str]:
        problems = []
        categories = [
            c.get("code") for concept in r.get("category", []) for c in concept.get("coding", [])
        ]
        if "vital-signs" not in categories:
            problems.append("vital-signs category required")
        if loinc not in [c["code"] for c in _codings(r.get("code"), LOINC)]:
            problems.append(f"code must include LOINC {loinc}")
        nodes = [r, *r.get("component", [])]
        for node in nodes:
            for code in [c["code"] for c in _codings(node.get("code"), LOINC)]:
                unit = units.get(code)
                if (
                    unit is not None
                    and "valueQuantity" in node
                    and node["valueQuantity"].get("code") != unit
                ):
                    problems.append(f"LOINC {code} must be in {unit}")
        return problems

    return check


RULES: Final[dict[str, Rule]] = {
    IG + "PhdBaseObservation": Rule("Observation", None, (
        base_category, base_gateway, base_coincident, base_identifier, base_status_code_subject,
        base_interpretation_security, base_supplemental, base_derived_from,
    )),
    IG + "PhdNumericObservation": Rule("Observation", IG + "PhdBaseObservation", (numeric_value,)),
    IG + "PhdCompoundNumericObservation": Rule(
        "Observation", IG + "PhdBaseObservation", (compound_components,)
    ),
    IG + "PhdBitsEnumerationObservation": Rule(
        "Observation", IG + "PhdBaseObservation", (bits_components,)
    ),
    IG + "PhdCodedEnumerationObservation": Rule(
        "Observation", IG + "PhdBaseObservation", (coded_value,)
    ),
    IG + "PhdCoincidentTimeStampObservation": Rule("Observation", None, (coincident,)),
    IG + "PhdDevice": Rule("Device", None,
                           (device_identifiers, device_versions_parent, phd_device)),
    IG + "PhgDevice": Rule("Device", None,
                           (device_identifiers, device_versions_parent, phg_device)),
    "http://hl7.org/fhir/StructureDefinition/bp": Rule("Observation", None, (
        vital_signs("85354-9", {"8480-6": "mm[Hg]", "8462-4": "mm[Hg]"}),
    )),
    "http://hl7.org/fhir/StructureDefinition/heartrate": Rule("Observation", None, (
        vital_signs("8867-4", {"8867-4": "/min"}),
    )),
    "http://hl7.org/fhir/StructureDefinition/oxygensat": Rule("Observation", None, (
        vital_signs("2708-6", {"2708-6": "%"}),
    )),
}  # fmt: skip


def problems_of(bundle: dict[str, Any]) -> list[str]:
    """Every way ``bundle`` departs from the profiles its resources claim, and from FHIR's
    rules for fullUrl and references inside a Bundle."""
    out = []
    urls = [e.get("fullUrl") for e in bundle["entry"]]
    if None in urls or len(set(urls)) != len(urls):
        out.append(f"every entry needs a distinct fullUrl: {urls}")
        return out
    resolve = Resolver(bundle)
    for index, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        claimed = resource.get("meta", {}).get("profile", [])
        if not claimed:
            out.append(f"entry[{index}] claims no profile")
        for profile in claimed:
            if profile not in RULES:
                out.append(f"entry[{index}] claims {profile}, which this test does not know")
                continue
            for name in lineage(profile):
                rule = RULES[name]
                if resource["resourceType"] != rule.resource_type:
                    out.append(f"entry[{index}] is no {rule.resource_type} ({name})")
                for check in rule.checks:
                    out += [f"entry[{index}] {name.rsplit('/', 1)[1]}: {p}"
                            for p in check(resource, resolve)]  # fmt: skip
        for ref in _references(resource):
            if ":" in ref.split("/", 1)[0]:
                if resolve.target(ref) is None:
                    out.append(f"entry[{index}] reference {ref} names no entry")
            elif not ref.startswith("Patient/"):
                out.append(f"entry[{index}] relative reference {ref} cannot resolve")
    return out


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


# -- the Bundles ------------------------------------------------------------------------------

GOLDEN: Final = sorted((Path(__file__).parent / "golden").glob("*.json"))
RECEIVED: Final = datetime(2026, 11, 23, 9, 30, 5, 250000, tzinfo=UTC)
CTX: Final = Context("hub-0001", "patient-0001", "Europe/Berlin", RECEIVED)
DEVICE: Final = DeviceFacts(
    address="F0:00:00:00:30:01",
    system_id="00A0B10012FFFE40",
    manufacturer="Homehub Test Devices",
    model="HH-ANY-1",
    serial="SN-ANY-0001",
    firmware="3.0.0",
    software="3.0.1",
    hardware="B",
    clock=ClockFacts.from_current_time(
        bytes(DateTime(2026, 11, 23, 10, 25, 0)) + bytes((1, 0, 0)),
        datetime(2026, 11, 23, 9, 30, 0, tzinfo=UTC),
    ),
)
NO_SYSID: Final = replace(DEVICE, system_id=None, clock=None)


def _glucose(record: MeterRecord) -> RawMeasurement:
    context = record.context_value()
    related = {GLUCOSE_MEASUREMENT_CONTEXT: context} if context is not None else {}
    return RawMeasurement(GLUCOSE_MEASUREMENT, record.measurement_value(), 0.0, RECEIVED,
                          related=related)  # fmt: skip


PIPELINE: Final[dict[str, tuple[RawMeasurement, DeviceFacts]]] = {
    "bp-status-clock": (RawMeasurement(BLOOD_PRESSURE_MEASUREMENT, bytes(BpReading(
        150, 95, 110, time_stamp=DateTime(2026, 11, 23, 10, 0, 0), pulse_rate=88,
        measurement_status=0x0021)), 0.0, RECEIVED), DEVICE),
    "bp-kpa-no-sysid": (RawMeasurement(BLOOD_PRESSURE_MEASUREMENT, bytes(BpReading(
        Decimal("16.5"), Decimal("10.2"), Decimal("12.3"), unit=PressureUnit.KPA)),
        0.0, RECEIVED), NO_SYSID),
    "bp-unset-implausible": (RawMeasurement(BLOOD_PRESSURE_MEASUREMENT, bytes(BpReading(
        330, 250, 280, time_stamp=DateTime(0, 0, 0, 0, 0, 0), pulse_rate=10)),
        0.0, RECEIVED), DEVICE),
    "spo2-spot-check-status": (RawMeasurement(PLX_SPOT_CHECK_MEASUREMENT, bytes(SpotCheck(
        99, 70, timestamp=DateTime(2026, 11, 23, 10, 1, 0), pulse_amplitude_index=Decimal("2.5"),
        measurement_status=int(MeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED
                               | MeasurementStatus.DATA_FOR_TESTING),
        device_sensor_status=int(DeviceSensorStatus.LOW_PERFUSION_DETECTED))),
        0.0, RECEIVED), DEVICE),
    "spo2-continuous-fast-slow": (RawMeasurement(PLX_CONTINUOUS_MEASUREMENT, bytes(
        ContinuousSample(96, 72, fast=(Decimal("95.5"), 73), slow=(Decimal("97.0"), 70),
                         device_sensor_status=int(DeviceSensorStatus.SENSOR_DISPLACED))),
        0.0, RECEIVED), DEVICE),
    "glucose-context-status": (_glucose(MeterRecord(
        31, DateTime(2026, 11, 23, 9, 0, 0), mmol_per_l("6.10"), unit=Unit.MOL_PER_L,
        sample_type=1, sample_location=1, sensor_status=0x0003,
        context=GlucoseContext(meal=2, tester=1, health=5, exercise_duration_s=600,
                               exercise_intensity_pct=30, hba1c_pct=Decimal("7.1")))), DEVICE),
    "glucose-control-solution": (_glucose(MeterRecord(
        32, DateTime(2026, 11, 23, 9, 5, 0), mg_per_dl("110"), sample_type=10,
        sample_location=4)), DEVICE),
}  # fmt: skip
"""One Bundle per device kind and variant, made by the real pipeline (agent.ingest.prepare)."""


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_bundle_conforms_to_phd_ig_stu2(path: Path) -> None:
    """Every golden Bundle meets the IG STU2 profiles its resources claim."""
    bundle = loads(path.read_text())
    Bundle.model_validate(bundle)
    assert [] == problems_of(bundle)


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_pipeline_bundle_conforms_to_phd_ig_stu2(name: str) -> None:
    """The pipeline's Bundle for each device kind meets the profiles its resources claim."""
    raw, device = PIPELINE[name]
    bundle = prepare(raw, device, CTX).bundle
    Bundle.model_validate(bundle)
    assert [] == problems_of(bundle)


def test_the_rules_catch_what_the_reviewer_found() -> None:
    """Each STU1.1 / non-conformant form the review named is reported by the rules."""
    raw, device = PIPELINE["bp-status-clock"]
    good = prepare(raw, device, CTX).bundle
    assert problems_of(good) == []

    def mutated(change: Callable[[dict[str, Any]], None]) -> list[str]:
        bundle = loads(__import__("json").dumps(good, default=str))
        change(bundle)
        return problems_of(bundle)

    def resources(bundle: dict[str, Any], profile: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in bundle["entry"]
                if IG + profile in e["resource"].get("meta", {}).get("profile", [])]  # fmt: skip

    def stu1_category(b: dict[str, Any]) -> None:
        resources(b, "PhdNumericObservation")[0]["category"][-1]["coding"][0]["code"] = (
            "phd-observation"
        )

    def phg_without_type(b: dict[str, Any]) -> None:
        del resources(b, "PhgDevice")[0]["type"]

    def phg_without_eui64(b: dict[str, Any]) -> None:
        phg = resources(b, "PhgDevice")[0]
        phg["identifier"] = [i for i in phg["identifier"] if i.get("system") != EUI64_SYSTEM]

    def phg_without_specialization(b: dict[str, Any]) -> None:
        del resources(b, "PhgDevice")[0]["specialization"]

    def kpa_in_bp_profile(b: dict[str, Any]) -> None:
        for component in resources(b, "PhdCompoundNumericObservation")[0]["component"]:
            component["valueQuantity"]["code"] = "kPa"

    def no_full_url(b: dict[str, Any]) -> None:
        del b["entry"][1]["fullUrl"]

    def relative_device_reference(b: dict[str, Any]) -> None:
        b["entry"][0]["resource"]["device"]["reference"] = "Device/phd-00A0B10012FFFE40"

    def coded_bits(b: dict[str, Any]) -> None:
        component = resources(b, "PhdBitsEnumerationObservation")[0]["component"][0]
        del component["valueBoolean"]
        component["valueCodeableConcept"] = {"coding": [{"code": "Y"}]}

    def identifier_with_type(b: dict[str, Any]) -> None:
        resources(b, "PhdNumericObservation")[0]["identifier"][0]["type"] = {"text": "x"}

    for change, expected in (
        (stu1_category, "category[PHD-Observation]"),
        (phg_without_type, "#531981"),
        (phg_without_eui64, "EUI-64"),
        (phg_without_specialization, "specialization[MDCType]"),
        (kpa_in_bp_profile, "must be in mm[Hg]"),
        (no_full_url, "fullUrl"),
        (relative_device_reference, "cannot resolve"),
        (coded_bits, "value[x] only boolean"),
        (identifier_with_type, "type must be absent"),
    ):
        found = mutated(change)
        assert any(expected in p for p in found), (change.__name__, found)
