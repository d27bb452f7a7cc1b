"""The virtual home: what the demo and the end-to-end tests share.

A patient's home, in software: the cuff's stored readings, the agent's configuration for a
run (virtual radio, dev PKI, broker port), and the platform's view of a verified reading
reduced to the values a clinician reads, so that it can be compared exactly with what the
emulator held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime
from hil.pki import DevPki
from hil.receiver import VerifiedReading

HUB_ID: Final = "hub-demo-0001"
PATIENT_ID: Final = "patient-demo-0001"
TIMEZONE: Final = "Europe/Berlin"
CUFF_ADDRESS: Final = "F0:00:00:00:10:01"
CUFF_LABEL: Final = "cuff"

#: What the demo cuff holds: three morning readings, as a patient takes them.
DEMO_READINGS: Final = (
    BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71),
    BpReading(135, 85, 102, time_stamp=DateTime(2026, 11, 21, 7, 52, 33), pulse_rate=68),
    BpReading(119, 76, 90, time_stamp=DateTime(2026, 11, 22, 8, 3, 5), pulse_rate=64),
)

MDC_PANEL: Final = "150020"
MDC_SYSTOLIC: Final = "150021"
MDC_DIASTOLIC: Final = "150022"
MDC_MEAN: Final = "150023"
MDC_PULSE: Final = "149546"


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
) -> Path:
    """Write the agent's TOML for this run; state and keys in separate directories. The hub
    talks to the reference platform (``[platform] cert_file``: receipts, commands, status)."""
    state = run_dir / "state"
    keys = run_dir / "keys"
    for directory in (state, keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
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

[[devices]]
kind = "blood_pressure"
address = "{device_address}"
label = "{CUFF_LABEL}"

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
