"""The demo's pure parts: its live view of each hop (hil/demo_view.py), the virtual home's
glucose and spot-check summaries read back from the hub's own golden FHIR Bundles, and the
demo's exactly-once check. ``make demo`` runs the whole chain; these take milliseconds."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from hil.demo import WANTED, Progress, check_verified
from hil.demo_view import HUB, Hop, HopEvent, HubLog, Timeline, seq_text
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseContext, GlucoseRecord, Unit, mmol_per_l
from hil.emulators.oximeter import example_spot_checks
from hil.platform_verify import VerifiedReading
from hil.virtual_home import (
    DEMO_GLUCOSE_RECORDS,
    DEMO_SPOT_CHECKS,
    GlucoseSummary,
    expected_glucose,
    expected_spot_check,
    summarize_any,
)

GOLDEN: Final = Path(__file__).parent / "golden"
DEVICES: Final = {"..:10:01": "cuff", "..:20:01": "glucometer"}


def _line(event: str, **fields: Any) -> str:
    """A log line as ``homehub run`` writes it (JSON, the device address already cut)."""
    record = {**fields, "event": event, "level": "info", "logger": "agent.daemon"}
    return json.dumps({**record, "timestamp": "2026-12-02T22:15:18.757224Z"})


def _golden_reading(name: str, seq: int = 1) -> VerifiedReading:
    bundle = json.loads((GOLDEN / f"{name}.json").read_text())
    return VerifiedReading("hub-demo-0001", seq, "id", "observation", b"k", {"fhir": bundle}, b"")


def test_seq_text_ranges() -> None:
    """Runs read as ranges, in order, each seq once."""
    assert seq_text([3, 1, 2, 5, 7, 8, 2]) == "1-3, 5, 7-8"
    assert seq_text([4]) == "4"
    assert seq_text([]) == ""


def test_timeline_merges_one_device_and_hop_only() -> None:
    """Consecutive stored lines of one device are one line; a verified line never merges; a
    line is handed back once the next differs, the last one on flush."""
    timeline = Timeline()
    assert timeline.add(HopEvent(0.5, "cuff", Hop.STORED, (1,))) == []
    assert timeline.add(HopEvent(0.6, "cuff", Hop.STORED, (2,))) == []
    (stored,) = timeline.add(HopEvent(0.7, "glucometer", Hop.STORED, (4,)))
    assert stored.split()[:5] == ["0.50s", "cuff", "stored", "seq", "1-2"]
    (glucose,) = timeline.add(HopEvent(0.8, "cuff", Hop.VERIFIED, (1,), text="seq 1 ok"))
    assert "glucometer  stored     seq 4 " in glucose
    (first,) = timeline.add(HopEvent(0.9, "cuff", Hop.VERIFIED, (2,), text="seq 2 ok"))
    assert first.endswith("verified   seq 1 ok")
    (last,) = timeline.flush()
    assert last.endswith("seq 2 ok")
    assert timeline.flush() == []


def test_hub_log_lines_become_hops() -> None:
    """The daemon's own events: received (per measurement, or counted at a GLS session's
    end), paired, stored with seq, deleted per device; other lines and non-JSON are none."""
    log = HubLog(DEVICES, racp={"glucometer"})
    assert log.feed(_line("ble_measurement_received", device="..:10:01", index=1), 0.1) == [
        HopEvent(0.1, "cuff", Hop.RECEIVED)
    ]
    (paired,) = log.feed(
        _line("ble_paired", device="..:20:01", secure_connections=True, method="just_works"),
        0.2,
    )
    assert (paired.device, paired.hop) == ("glucometer", Hop.PAIRED)
    assert "just works, Secure Connections" in paired.text
    (received,) = log.feed(_line("ble_session_ended", device="..:20:01", measurements=2), 0.3)
    assert (received.device, received.hop, received.count) == ("glucometer", Hop.RECEIVED, 2)
    assert log.feed(_line("ble_session_ended", device="..:20:01", measurements=0), 0.3) == []
    assert log.feed(_line("ble_session_ended", device="..:10:01", measurements=1), 0.3) == []
    for seq, device in ((1, "..:10:01"), (2, "..:20:01"), (3, "..:20:01")):
        (stored,) = log.feed(_line("measurement_stored", device=device, seq=seq), 0.4)
        assert stored.seqs == (seq,)
    assert log.stored == 3
    deleted = log.feed(_line("measurements_delivered", count=3, first_seq=1, last_seq=3), 0.5)
    assert [(e.device, e.seqs, e.count) for e in deleted] == [
        ("cuff", (1,), 1),
        ("glucometer", (2, 3), 2),
    ]
    gappy = log.feed(_line("measurements_delivered", count=2, first_seq=5, last_seq=9), 0.6)
    assert [(e.device, e.seqs, e.count) for e in gappy] == [(HUB, (), 2)]
    assert log.deleted == 5
    assert log.feed(_line("mqtt_connected", hub="hub-demo-0001"), 0.7) == []
    assert log.feed("Traceback (most recent call last):", 0.8) == []
    assert log.feed("[1, 2]", 0.8) == []


def test_glucose_summary_of_the_hubs_bundle_equals_the_meters_record() -> None:
    """The golden mmol/L Bundle (the hub's FHIR for this record) reads back as expected."""
    record = GlucoseRecord(18, DateTime(2026, 11, 23, 9, 15, 30), mmol_per_l("5.50"),
                           unit=Unit.MOL_PER_L, sample_type=2, sample_location=2,
                           time_offset_min=0)  # fmt: skip
    summary = summarize_any(_golden_reading("glucose-mmol"))
    assert summary == expected_glucose(record)
    assert summary.line() == "glucose 5.5 mmol/L (capillary plasma) at 2026-11-23T09:15:30+01:00"


def test_glucose_meal_context_and_spot_check_summaries() -> None:
    """The meal context reads back in a clinician's words; a spot-check's SpO2, pulse, PAI."""
    meal = summarize_any(_golden_reading("glucose-mgdl-context"))
    assert isinstance(meal, GlucoseSummary)
    assert (meal.value, meal.unit, meal.meal) == (Decimal("98.5"), "mg/dL", "before a meal")
    assert meal.carbohydrate_g == Decimal(45)
    context = GlucoseContext(carbohydrate_id=1, carbohydrate_kg=Decimal("0.045"), meal=1)
    record = GlucoseRecord(1, DateTime(2026, 11, 23, 7, 15, 0), meal.value.scaleb(-5),
                           context=context)  # fmt: skip
    assert expected_glucose(record) == meal
    spot = summarize_any(_golden_reading("spo2-spot-check"))
    assert spot == expected_spot_check(example_spot_checks()[0])
    assert spot.line() == "SpO2 97 %, pulse 64/min, PAI 4.2 % at 2025-03-14T07:59:30+01:00"


def test_demo_devices_hold_what_the_demo_wants() -> None:
    """A glucometer with a context among its records, three spot-checks, nine readings."""
    assert any(r.context is not None for r in DEMO_GLUCOSE_RECORDS)
    assert len(DEMO_SPOT_CHECKS) == 3
    assert sum(len(w) for w in WANTED.values()) == 9


def test_check_counts_each_reading_once() -> None:
    """A reading the device held passes once; its copy (or any other value) is a mismatch."""
    progress = Progress(0.0, HubLog(DEVICES))
    first = WANTED["glucometer"][0]
    check_verified(4, first, progress, 1.0)
    assert not progress.mismatch
    assert first not in progress.remaining["glucometer"]
    check_verified(7, first, progress, 1.1)
    assert "seq 7 of the glucometer" in (progress.mismatch or "")
    assert [row.matches for row in progress.rows] == [True, False]
    assert progress.done
