"""The virtual home: what the demo and the end-to-end tests share.

A patient's home, in software: what the cuff, the glucometer and the pulse oximeter hold, the
agent's configuration for a run (virtual radio, dev PKI, broker port), and the platform's
view of a verified reading reduced to the values a clinician reads (:func:`summarize`,
:func:`summarize_glucose`, :func:`summarize_spot_check`), so that it can be compared exactly
with what each emulator held (:func:`expected`, :func:`expected_glucose`,
:func:`expected_spot_check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseContext, GlucoseRecord, Unit, mg_per_dl, mmol_per_l
from hil.emulators.oximeter import SpotCheck
from hil.pki import DevPki
from hil.receiver import VerifiedReading

HUB_ID: Final = "hub-demo-0001"
PATIENT_ID: Final = "patient-demo-0001"
TIMEZONE: Final = "Europe/Berlin"
CUFF_ADDRESS: Final = "F0:00:00:00:10:01"
CUFF_LABEL: Final = "cuff"
GLUCOMETER_ADDRESS: Final = "F0:00:00:00:20:01"
GLUCOMETER_LABEL: Final = "glucometer"
OXIMETER_ADDRESS: Final = "F0:00:00:00:30:01"
OXIMETER_LABEL: Final = "oximeter"

#: What the demo cuff holds: three morning readings, as a patient takes them.
DEMO_READINGS: Final = (
    BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71),
    BpReading(135, 85, 102, time_stamp=DateTime(2026, 11, 21, 7, 52, 33), pulse_rate=68),
    BpReading(119, 76, 90, time_stamp=DateTime(2026, 11, 22, 8, 3, 5), pulse_rate=64),
)

#: What the demo glucometer holds: a day of a patient's tests, one with its context (before
#: a meal, 45 g of carbohydrate), one read in mmol/L from an alternate site.
DEMO_GLUCOSE_RECORDS: Final = (
    GlucoseRecord(1, DateTime(2026, 11, 22, 7, 30, 0), mg_per_dl("112"), time_offset_min=0,
                  context=GlucoseContext(carbohydrate_id=1, carbohydrate_kg=Decimal("0.045"),
                                         meal=1)),
    GlucoseRecord(2, DateTime(2026, 11, 22, 12, 15, 0), mmol_per_l("7.9"), unit=Unit.MOL_PER_L,
                  sample_type=2, sample_location=2),
    GlucoseRecord(3, DateTime(2026, 11, 22, 19, 45, 0), mg_per_dl("98.5")),
)  # fmt: skip

#: What the demo pulse oximeter holds: spot-checks of a few days (one with the perfusion index).
DEMO_SPOT_CHECKS: Final = (
    SpotCheck(97, 64, timestamp=DateTime(2026, 11, 20, 7, 50, 0),
              pulse_amplitude_index=Decimal("4.2")),
    SpotCheck(Decimal("95.5"), 71, timestamp=DateTime(2026, 11, 21, 8, 1, 30)),
    SpotCheck(96, 68, timestamp=DateTime(2026, 11, 22, 8, 10, 45)),
)  # fmt: skip

MDC_PANEL: Final = "150020"
MDC_SYSTOLIC: Final = "150021"
MDC_DIASTOLIC: Final = "150022"
MDC_MEAN: Final = "150023"
MDC_PULSE: Final = "149546"
MDC_GLUCOSE: Final = {1: "160184", 2: "160188"}
"""The glucose code by the meter's sample type: 1 capillary whole blood, 2 capillary plasma."""
MDC_MEAL: Final = "8417864"
MDC_CARBOHYDRATE: Final = "8417768"
MEALS: Final = {1: ("8417868", "before a meal"), 2: ("8417872", "after a meal")}
"""The meal context's code and a clinician's words, by the meter's Meal value."""
MDC_SPO2: Final = "150456"
MDC_SPO2_PULSE: Final = "149530"
MDC_PAI: Final = "150448"


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """One device of the virtual home as the agent's allow-list names it."""

    kind: str
    address: str
    label: str


DEMO_DEVICES: Final = (
    DemoDevice("blood_pressure", CUFF_ADDRESS, CUFF_LABEL),
    DemoDevice("glucose", GLUCOMETER_ADDRESS, GLUCOMETER_LABEL),
    DemoDevice("pulse_oximeter", OXIMETER_ADDRESS, OXIMETER_LABEL),
)
"""The demo's three devices; each kind pairs as its default says (the glucometer bonds Just
Works on first contact, the cuff and the oximeter do not pair)."""


def write_agent_config(
    run_dir: Path,
    *,
    stack: str,
    broker_port: int,
    pki: DevPki,
    hub_id: str = HUB_ID,
    patient_id: str = PATIENT_ID,
    device_address: str = CUFF_ADDRESS,
    quiet_period_s: float = 2.0,
    cycle_interval_s: float = 1.0,
    devices: Sequence[DemoDevice] = (),
) -> Path:
    """Write the agent's TOML for this run; state and keys in separate directories. The hub
    talks to the reference platform (``[platform] cert_file``: receipts, commands, status).
    ``devices``: the allow-list; empty: the one cuff at ``device_address``."""
    state = run_dir / "state"
    keys = run_dir / "keys"
    for directory in (state, keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    allowed = devices or (DemoDevice("blood_pressure", device_address, CUFF_LABEL),)
    device_tables = "\n".join(
        f'[[devices]]\nkind = "{d.kind}"\naddress = "{d.address}"\nlabel = "{d.label}"\n'
        for d in allowed
    )
    text = f"""\
[hub]
id = "{hub_id}"
timezone = "{TIMEZONE}"
state_dir = "{state}"

[patient]
id = "{patient_id}"

[ble]
stack = "{stack}"
scan_timeout_s = 10.0
connect_timeout_s = 10.0
quiet_period_s = {quiet_period_s}
session_timeout_s = 60.0
cycle_interval_s = {cycle_interval_s}

{device_tables}
[outbox]
path = "{state / "outbox.db"}"
key_file = "{keys / "data.key"}"

[signing]
key_file = "{pki.hub_key}"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
ca_file = "{pki.ca_cert}"
cert_file = "{pki.hub_cert}"
key_file = "{pki.hub_key}"
keepalive_s = 30
backoff_max_s = 5.0
first_connect_jitter_s = 0.0     # one hub in a lab: no fleet to spread
ack = "receipt"                  # deleted only on the platform's signed receipt

[platform]
cert_file = "{pki.platform_cert}"
"""
    path = run_dir / "homehub.toml"
    path.write_text(text)
    return path


@dataclass(frozen=True, slots=True)
class BpSummary:
    """A blood-pressure reading as a clinician reads it: values, unit, device time."""

    systolic: Decimal
    diastolic: Decimal
    mean: Decimal | None
    pulse: Decimal | None
    unit: str
    effective: str

    def line(self) -> str:
        """One human line."""
        mean = f" (MAP {self.mean})" if self.mean is not None else ""
        pulse = f", pulse {self.pulse}/min" if self.pulse is not None else ""
        return f"{self.systolic}/{self.diastolic} {self.unit}{mean}{pulse} at {self.effective}"


def _value(component_or_obs: dict[str, Any]) -> Decimal | None:
    quantity = component_or_obs.get("valueQuantity")
    return None if quantity is None else Decimal(quantity["value"])


def summarize(reading: VerifiedReading) -> BpSummary:
    """Read the verified payload's FHIR Bundle back into values."""
    resources = [e["resource"] for e in reading.payload["fhir"]["entry"]]
    observations = {
        r["code"]["coding"][0]["code"]: r for r in resources if r["resourceType"] == "Observation"
    }
    panel = observations[MDC_PANEL]
    components = {c["code"]["coding"][0]["code"]: c for c in panel["component"]}
    systolic = _value(components[MDC_SYSTOLIC])
    diastolic = _value(components[MDC_DIASTOLIC])
    if systolic is None or diastolic is None:
        raise ValueError("panel without systolic or diastolic value")
    pulse = observations.get(MDC_PULSE)
    return BpSummary(
        systolic=systolic,
        diastolic=diastolic,
        mean=_value(components[MDC_MEAN]),
        pulse=_value(pulse) if pulse is not None else None,
        unit=components[MDC_SYSTOLIC]["valueQuantity"]["unit"],
        effective=panel["effectiveDateTime"],
    )


def expected(reading: BpReading, timezone: str = TIMEZONE) -> BpSummary:
    """What the platform must see for an emulated reading (device time in the hub's zone)."""
    if reading.time_stamp is None:
        raise ValueError("expected() needs a time-stamped reading")
    t = reading.time_stamp
    local = datetime(
        t.year, t.month, t.day, t.hours, t.minutes, t.seconds, tzinfo=ZoneInfo(timezone)
    )
    return BpSummary(
        systolic=Decimal(reading.systolic),
        diastolic=Decimal(reading.diastolic),
        mean=None
        if reading.mean_arterial_pressure is None
        else Decimal(reading.mean_arterial_pressure),
        pulse=None if reading.pulse_rate is None else Decimal(reading.pulse_rate),
        unit="kPa" if reading.unit is PressureUnit.KPA else "mmHg",
        effective=local.isoformat(timespec="seconds"),
    )


def _local(t: DateTime, timezone: str, offset_min: int = 0) -> str:
    """A device's wall-clock time (plus a GLS time offset) in the hub's zone, as FHIR has it."""
    # The sum as naive wall time (UTC only as a zone without DST), then placed in the zone.
    wall = datetime(t.year, t.month, t.day, t.hours, t.minutes, t.seconds, tzinfo=UTC)
    wall += timedelta(minutes=offset_min)
    return wall.replace(tzinfo=ZoneInfo(timezone)).isoformat(timespec="seconds")


def _observations(reading: VerifiedReading) -> dict[str, dict[str, Any]]:
    """The reading's Observations by their first code."""
    resources = [e["resource"] for e in reading.payload["fhir"]["entry"]]
    return {
        r["code"]["coding"][0]["code"]: r for r in resources if r["resourceType"] == "Observation"
    }


def _decimal(value: object) -> Decimal:
    """A FHIR quantity's value as the exact Decimal it states (a float by its shortest text,
    so that 7.9 reads as 7.9, not as the binary fraction nearest to it)."""
    return Decimal(str(value))


@dataclass(frozen=True, slots=True)
class GlucoseSummary:
    """A glucose record as a clinician reads it: value in the meter's unit, sample, and the
    context's meal and carbohydrate (grams) when the meter recorded them."""

    value: Decimal
    unit: str
    code: str
    meal: str | None
    carbohydrate_g: Decimal | None
    effective: str

    def line(self) -> str:
        """One human line."""
        sample = "capillary plasma" if self.code == MDC_GLUCOSE[2] else "capillary blood"
        meal = f", {self.meal}" if self.meal is not None else ""
        carbs = f", {self.carbohydrate_g} g carbs" if self.carbohydrate_g is not None else ""
        return f"glucose {self.value} {self.unit} ({sample}{meal}{carbs}) at {self.effective}"


def summarize_glucose(reading: VerifiedReading) -> GlucoseSummary:
    """Read a verified glucose record's FHIR Bundle back into values."""
    observations = _observations(reading)
    code = next(c for c in MDC_GLUCOSE.values() if c in observations)
    primary = observations[code]
    quantity = primary["valueQuantity"]
    meal = None
    if MDC_MEAL in observations:
        coded = observations[MDC_MEAL]["valueCodeableConcept"]["coding"][0]["code"]
        meal = next(words for c, words in MEALS.values() if c == coded)
    carbohydrate = observations.get(MDC_CARBOHYDRATE)
    return GlucoseSummary(
        value=_decimal(quantity["value"]),
        unit=quantity["code"],
        code=code,
        meal=meal,
        carbohydrate_g=None
        if carbohydrate is None
        else _decimal(carbohydrate["valueQuantity"]["value"]),
        effective=primary["effectiveDateTime"],
    )


def expected_glucose(record: GlucoseRecord, timezone: str = TIMEZONE) -> GlucoseSummary:
    """What the platform must see for a meter record (from the meter's own fields)."""
    if record.concentration is None:
        raise ValueError("expected_glucose() needs a record with a concentration")
    if record.unit is Unit.MOL_PER_L:
        value, unit = record.concentration.scaleb(3), "mmol/L"
    else:
        value, unit = record.concentration.scaleb(5), "mg/dL"
    context = record.context
    meal = None if context is None or context.meal is None else MEALS[context.meal][1]
    carbohydrate_kg = None if context is None else context.carbohydrate_kg
    return GlucoseSummary(
        value=Decimal(str(value)),
        unit=unit,
        code=MDC_GLUCOSE[record.sample_type],
        meal=meal,
        carbohydrate_g=None if carbohydrate_kg is None else carbohydrate_kg.scaleb(3),
        effective=_local(record.base_time, timezone, record.time_offset_min or 0),
    )


@dataclass(frozen=True, slots=True)
class SpotCheckSummary:
    """A pulse-oximeter spot-check as a clinician reads it: SpO2 %, pulse, perfusion index."""

    spo2: Decimal
    pulse: Decimal
    pai: Decimal | None
    effective: str

    def line(self) -> str:
        """One human line."""
        pai = f", PAI {self.pai} %" if self.pai is not None else ""
        return f"SpO2 {self.spo2} %, pulse {self.pulse}/min{pai} at {self.effective}"


def summarize_spot_check(reading: VerifiedReading) -> SpotCheckSummary:
    """Read a verified spot-check's FHIR Bundle back into values."""
    observations = _observations(reading)
    spo2 = observations[MDC_SPO2]
    pai = observations.get(MDC_PAI)
    return SpotCheckSummary(
        spo2=_decimal(spo2["valueQuantity"]["value"]),
        pulse=_decimal(observations[MDC_SPO2_PULSE]["valueQuantity"]["value"]),
        pai=None if pai is None else _decimal(pai["valueQuantity"]["value"]),
        effective=spo2["effectiveDateTime"],
    )


def expected_spot_check(check: SpotCheck, timezone: str = TIMEZONE) -> SpotCheckSummary:
    """What the platform must see for an emulated spot-check (device time in the hub's zone)."""
    if check.timestamp is None or isinstance(check.spo2, bytes):
        raise ValueError("expected_spot_check() needs a time-stamped numeric spot-check")
    if isinstance(check.pulse_rate, bytes) or isinstance(check.pulse_amplitude_index, bytes):
        raise ValueError("expected_spot_check() needs numeric values")
    pai = check.pulse_amplitude_index
    return SpotCheckSummary(
        spo2=Decimal(check.spo2),
        pulse=Decimal(check.pulse_rate),
        pai=None if pai is None else Decimal(pai),
        effective=_local(check.timestamp, timezone),
    )


Summary = BpSummary | GlucoseSummary | SpotCheckSummary


def summarize_any(reading: VerifiedReading) -> Summary:
    """A verified reading of any of the home's device kinds, by its primary code."""
    codes = _observations(reading).keys()
    if MDC_PANEL in codes:
        return summarize(reading)
    if MDC_SPO2 in codes:
        return summarize_spot_check(reading)
    if any(c in codes for c in MDC_GLUCOSE.values()):
        return summarize_glucose(reading)
    raise ValueError("a reading of none of the home's device kinds")
