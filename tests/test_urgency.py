"""Alert limits (agent/urgency.py) on readings made by the real pipeline from device bytes.

Each reading is encoded by the emulators' independent encoders, decoded and normalized by
:func:`agent.ingest.prepare`, and judged on the FHIR Bundle the hub stores: the limits and
their edges, in each unit the devices send (mmHg and kPa; mg/dL and mmol/L).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest
from structlog.testing import capture_logs

from agent.ble.uuids import (
    BLOOD_PRESSURE_MEASUREMENT,
    GLUCOSE_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
)
from agent.daemon import Arrival, Hub, open_outbox
from agent.ingest import prepare
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from agent.urgency import is_urgent
from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, Unit, mg_per_dl, mmol_per_l
from hil.emulators.oximeter import SpotCheck
from tests.example_config import example_config

RECEIVED: Final = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
STAMP: Final = DateTime(2026, 11, 30, 9, 0, 0)
DEVICE: Final = DeviceFacts(
    address="F0:00:00:00:A1:01",
    system_id="0110000000FEFFA1",
    manufacturer="Urgency Test Medical",
    model="U-1",
    serial="U-0001",
    firmware="1.0",
)
CONTEXT: Final = Context("hub-0001", "patient-urgency", "UTC", RECEIVED)


def _judge(uuid: str, data: bytes) -> bool:
    prepared = prepare(RawMeasurement(uuid, data, 0.0, RECEIVED), DEVICE, CONTEXT)
    return is_urgent(prepared.bundle)


def _bp(systolic: str, diastolic: str, pulse: int, unit: PressureUnit = PressureUnit.MMHG) -> bool:
    reading = BpReading(
        Decimal(systolic), Decimal(diastolic), Decimal(diastolic) + 10, unit=unit,
        time_stamp=STAMP, pulse_rate=Decimal(pulse),
    )  # fmt: skip
    return _judge(BLOOD_PRESSURE_MEASUREMENT, bytes(reading))


@pytest.mark.parametrize(
    ("systolic", "diastolic", "pulse", "urgent"),
    [
        ("120", "80", 70, False),
        ("179", "119", 70, False),
        ("180", "100", 70, True),  # systolic at the crisis limit
        ("150", "120", 70, True),  # diastolic at the crisis limit
        ("89", "60", 70, True),  # hypotension
        ("90", "60", 70, False),
        ("120", "80", 39, True),  # bradycardia
        ("120", "80", 40, False),
        ("120", "80", 130, True),  # tachycardia
        ("120", "80", 129, False),
    ],
)
def test_blood_pressure_mmhg(systolic: str, diastolic: str, pulse: int, urgent: bool) -> None:
    assert urgent == _bp(systolic, diastolic, pulse)


def test_blood_pressure_kpa_is_converted() -> None:
    """24.0 kPa is 180.0 mmHg; 23.9 kPa 179.3."""
    assert _bp("24.0", "10.6", 70, PressureUnit.KPA)
    assert not _bp("23.9", "10.6", 70, PressureUnit.KPA)


@pytest.mark.parametrize(
    ("concentration", "unit", "urgent"),
    [
        (mg_per_dl("69"), Unit.KG_PER_L, True),
        (mg_per_dl("70"), Unit.KG_PER_L, False),
        (mg_per_dl("299"), Unit.KG_PER_L, False),
        (mg_per_dl("300"), Unit.KG_PER_L, True),
        (mmol_per_l("3.8"), Unit.MOL_PER_L, True),
        (mmol_per_l("4.0"), Unit.MOL_PER_L, False),
        (mmol_per_l("16.7"), Unit.MOL_PER_L, True),
        (mmol_per_l("16.5"), Unit.MOL_PER_L, False),
    ],
)
def test_glucose_in_either_unit(concentration: Decimal, unit: Unit, urgent: bool) -> None:
    record = GlucoseRecord(7, STAMP, concentration, unit=unit, sample_type=1, sample_location=1)
    assert urgent == _judge(GLUCOSE_MEASUREMENT, record.measurement_value())


@pytest.mark.parametrize(
    ("spo2", "pulse", "urgent"),
    [("95", 70, False), ("90", 70, False), ("89", 70, True), ("97", 131, True)],
)
def test_spot_check_oximetry(spo2: str, pulse: int, urgent: bool) -> None:
    spot = SpotCheck(Decimal(spo2), pulse, timestamp=STAMP)
    assert urgent == _judge(PLX_SPOT_CHECK_MEASUREMENT, bytes(spot))


def test_what_is_not_an_observation_value_is_not_judged() -> None:
    assert not is_urgent({})
    assert not is_urgent({"entry": "nonsense"})
    odd_unit = {
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "code": {
                        "coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "150456"}]
                    },
                    "valueQuantity": {"value": Decimal(50), "code": "1"},
                }
            }
        ]
    }
    assert not is_urgent(odd_unit)  # SpO2 as a fraction: a unit the limits do not name


def test_the_daemon_marks_what_it_stored_past_a_limit(tmp_path: Path) -> None:
    """The hub's own store path: a crisis reading is marked urgent by its seq (logged without
    its values); a normal one is not, and neither is a re-sent copy of the crisis one."""

    def arrival(systolic: int, minute: int) -> Arrival:
        reading = BpReading(
            systolic, 80, 95, time_stamp=DateTime(2026, 11, 30, 9, minute, 0), pulse_rate=70
        )
        raw = RawMeasurement(BLOOD_PRESSURE_MEASUREMENT, bytes(reading), 0.0, RECEIVED)
        return Arrival(DEVICE, "..:A1:01", "cuff", raw)

    cfg = example_config(tmp_path)
    outbox, signer = open_outbox(cfg)
    with outbox:
        hub = Hub(cfg)
        first = [arrival(120, 1), arrival(195, 2)]
        fates = hub._store_batch(outbox, signer, first)
        with capture_logs() as events:
            hub._report(first, fates)
        again = [arrival(195, 2), arrival(130, 3)]
        hub._report(again, hub._store_batch(outbox, signer, again))
    seqs = [getattr(f, "seq", None) for f in fates]
    marked = [e for e in events if e["event"] == "measurements_urgent"]
    assert [{"count": 1, "first_seq": seqs[1]}] == [
        {k: e[k] for k in ("count", "first_seq")} for e in marked
    ]
    assert [] == hub._urgent_stored
    assert (3, 1) == (hub.stored, hub.duplicates)
