"""A reading's identity (the outbox's dedup key) follows what distinguishes readings, not the
device clock: unset and stuck clocks, byte-identical re-sends, GLS sequence numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from agent.ble.uuids import (
    BLOOD_PRESSURE_MEASUREMENT,
    GLUCOSE_MEASUREMENT,
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
)
from agent.ingest import Prepared, prepare
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.emulators.oximeter import ContinuousSample, SpotCheck

T0: Final = datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC)
DEVICE: Final = DeviceFacts(address="F0:00:00:00:40:01", system_id="00A0B10012FFFE50")
OTHER_DEVICE: Final = DeviceFacts(address="F0:00:00:00:40:02", system_id="00A0B10012FFFE51")
UNSET: Final = DateTime(0, 0, 0, 0, 0, 0)
STUCK: Final = DateTime(2026, 1, 1, 12, 0, 0)


def _prepare(
    uuid: str, data: bytes, at: datetime = T0, device: DeviceFacts = DEVICE, patient: str = "p-1"
) -> Prepared:
    return prepare(
        RawMeasurement(uuid, data, 0.0, at), device, Context("hub-1", patient, "UTC", at)
    )


def test_cuff_with_unset_clock_keeps_four_different_readings() -> None:
    """Four different readings, all stamped with an all-zero Date Time: four identities."""
    readings = [BpReading(120 + i, 80, 93, time_stamp=UNSET) for i in range(4)]
    prepared = [_prepare(BLOOD_PRESSURE_MEASUREMENT, bytes(r), T0 + timedelta(minutes=i))
                for i, r in enumerate(readings)]  # fmt: skip
    assert len({p.dedup_key for p in prepared}) == 4
    assert all(p.identity == p.identifier == p.dedup_key for p in prepared)


def test_cuff_with_stuck_clock_keeps_different_readings_and_recognises_a_resend() -> None:
    """A stuck clock: different values differ; the same bytes sent again are the same."""
    first = _prepare(BLOOD_PRESSURE_MEASUREMENT, bytes(BpReading(121, 79, 93, time_stamp=STUCK)))
    other = _prepare(BLOOD_PRESSURE_MEASUREMENT, bytes(BpReading(135, 85, 99, time_stamp=STUCK)))
    resent = _prepare(
        BLOOD_PRESSURE_MEASUREMENT,
        bytes(BpReading(121, 79, 93, time_stamp=STUCK)),
        T0 + timedelta(days=1),
    )
    assert first.dedup_key != other.dedup_key
    assert (first.dedup_key, first.content_digest) == (resent.dedup_key, resent.content_digest)
    # The IG identifier is the same for both (same device time), so the hub identifier, not it,
    # keys the payload: the platform deduplicating by (hub, id) keeps both readings.
    ig = [p.bundle["entry"][0]["resource"]["identifier"][0]["value"] for p in (first, other)]
    assert ig[0] == ig[1]


def test_identities_do_not_collide_across_devices_or_patients() -> None:
    """The same bytes from another device, or for another patient, are another reading."""
    data = bytes(BpReading(121, 79, 93, time_stamp=UNSET))
    keys = {
        _prepare(BLOOD_PRESSURE_MEASUREMENT, data).dedup_key,
        _prepare(BLOOD_PRESSURE_MEASUREMENT, data, device=OTHER_DEVICE).dedup_key,
        _prepare(BLOOD_PRESSURE_MEASUREMENT, data, patient="p-2").dedup_key,
    }
    assert len(keys) == 3


def test_time_less_reading_resent_is_recognised() -> None:
    """No receipt-time fallback: a time-less spot-check re-sent later has the same identity."""
    data = bytes(SpotCheck(97, 60))
    assert (
        _prepare(PLX_SPOT_CHECK_MEASUREMENT, data).dedup_key
        == _prepare(PLX_SPOT_CHECK_MEASUREMENT, data, T0 + timedelta(hours=3)).dedup_key
    )


def test_continuous_samples_alike_a_minute_apart_are_two_readings() -> None:
    """Live continuous samples are never re-sent: identical bytes later are a new reading."""
    data = bytes(ContinuousSample(97, 60))
    first = _prepare(PLX_CONTINUOUS_MEASUREMENT, data)
    later = _prepare(PLX_CONTINUOUS_MEASUREMENT, data, T0 + timedelta(minutes=1))
    assert first.dedup_key != later.dedup_key


def test_glucose_with_unset_clock_keyed_by_sequence_number() -> None:
    """Records with different sequence numbers and the same unset clock stay apart; the same
    number with other content (a reset meter) keeps the identity, with another digest."""
    records = [GlucoseRecord(n, UNSET, mg_per_dl("100")) for n in (5, 6, 7)]
    prepared = [_prepare(GLUCOSE_MEASUREMENT, r.measurement_value()) for r in records]
    assert [p.identity.rsplit("-", 1)[1] for p in prepared] == ["seq:5", "seq:6", "seq:7"]
    reset = _prepare(
        GLUCOSE_MEASUREMENT, GlucoseRecord(5, UNSET, mg_per_dl("140")).measurement_value()
    )
    assert reset.identity == prepared[0].identity
    assert reset.content_digest != prepared[0].content_digest
    again = _prepare(GLUCOSE_MEASUREMENT, records[0].measurement_value(), T0 + timedelta(days=2))
    assert (again.identity, again.content_digest) == (
        prepared[0].identity,
        prepared[0].content_digest,
    )
