"""Device clock vs hub clock: reading CTS at connection, the time rules, the coincident timestamp.

Pure rules first (agent.normalize.clock with fixed times), then the emulated clock's encoding,
then the real BLE read over the virtual radio (agent.ble.current_time via the BPS session).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.observation import Observation

from agent.ble.bps_session import collect_blood_pressure
from agent.ble.stack import BleStack
from agent.measurement import RawMeasurement
from agent.normalize.bundle import full_url
from agent.normalize.clock import (
    ClockFacts,
    TimeFlag,
    coincident_observation,
    observation_time,
    parse_clock,
)
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from drivers.gatt_time import CurrentTime
from hil.broker import Broker
from hil.emulators.cuff import BpReading, example_readings
from hil.emulators.encoding import DateTime
from hil.emulators.peripheral import EmulatedClock
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import write_agent_config
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import agent_process, stop
from tests.phi_canaries import DEVICE_ADDRESS

TZ: Final = "Europe/Berlin"
HUB_NOW: Final = datetime(2026, 11, 23, 9, 30, 0, tzinfo=UTC)  # 10:30:00 in Berlin
CTX: Final = Context("hub-0001", "patient-0001", TZ, HUB_NOW + timedelta(seconds=5))
DEVICE_ID: Final = "phd-0102030405060708.F00000001001"
WAIT_S: Final = 5.0


def naive(*fields: int) -> datetime:
    """A device-local wall-clock time."""
    return datetime(*fields)  # type: ignore[arg-type]  # noqa: DTZ001


def clock_reading(device_now: datetime | None) -> ClockFacts:
    """The facts of a CTS read at HUB_NOW showing ``device_now`` (None: unknown date)."""
    data = bytes(10) if device_now is None else bytes(CurrentTime.from_datetime(device_now))
    return ClockFacts.from_current_time(data, HUB_NOW)


class TestClockFacts:
    def test_offset_is_hub_minus_device_in_hub_zone(self) -> None:
        """A device 6 minutes behind (IG example) has offset +6 min, in whole seconds."""
        clock = clock_reading(naive(2026, 11, 23, 10, 24, 0))
        assert clock.offset(TZ) == timedelta(minutes=6)
        assert clock.is_reset is False

    def test_unknown_date_has_no_offset(self) -> None:
        """Year/month/day 0: no offset, a problem, and the clock counts as reset."""
        clock = clock_reading(None)
        assert (clock.offset(TZ), clock.is_reset) == (None, True)
        assert clock.problem == "date unknown (year, month or day is 0)"

    def test_rejects_wrong_length_and_naive_hub_time(self) -> None:
        """Only a 10-octet value parses; the hub time must be aware."""
        assert parse_clock(bytes(9), HUB_NOW) is None
        assert parse_clock(bytes(11), HUB_NOW) is None
        assert parse_clock(None, HUB_NOW) is None
        with pytest.raises(ValueError, match="aware"):
            ClockFacts.from_current_time(bytes(10), naive(2026, 1, 1))

    def test_logical_id_is_stable(self) -> None:
        """The same read gives the same coincident-timestamp id; another read another id."""
        one = clock_reading(naive(2026, 11, 23, 10, 24, 0))
        assert one.logical_id(DEVICE_ID) == clock_reading(naive(2026, 11, 23, 10, 24)).logical_id(
            DEVICE_ID
        )
        assert one.logical_id(DEVICE_ID) != clock_reading(naive(2026, 11, 23, 10, 25)).logical_id(
            DEVICE_ID
        )


class TestObservationTime:
    def test_no_clock_keeps_device_time(self) -> None:
        """Without a clock read the device's own time is used, in the hub's zone, no flag."""
        when = observation_time(naive(2026, 11, 23, 8, 0, 0), None, None, CTX, DEVICE_ID)
        assert when.effective.isoformat() == "2026-11-23T08:00:00+01:00"
        assert (when.flags, when.coincident_id, when.offset_applied) == ((), None, timedelta(0))

    def test_skewed_clock_maps_onto_hub_timeline(self) -> None:
        """A clock 6 min behind moves the reading 6 min later (IG current-timeline rule)."""
        clock = clock_reading(naive(2026, 11, 23, 10, 24, 0))
        when = observation_time(naive(2026, 11, 23, 8, 0, 0), None, clock, CTX, DEVICE_ID)
        assert when.effective.isoformat() == "2026-11-23T08:06:00+01:00"
        assert when.offset_applied == timedelta(minutes=6)
        assert when.device_time == naive(2026, 11, 23, 8, 0, 0)
        assert when.coincident_id == clock.logical_id(DEVICE_ID)
        assert when.flags == ()

    def test_small_difference_is_not_applied(self) -> None:
        """A difference within the tolerance leaves effective[x] as the device said."""
        clock = clock_reading(naive(2026, 11, 23, 10, 29, 30))
        when = observation_time(naive(2026, 11, 23, 8, 0, 0), None, clock, CTX, DEVICE_ID)
        assert when.effective.isoformat() == "2026-11-23T08:00:00+01:00"
        assert when.offset_applied == timedelta(0)

    def test_reset_clock_maps_new_readings_and_flags(self) -> None:
        """A clock restarted at 2000-01-01: readings since the reset land at the hub's time,
        flagged device-clock-unset."""
        clock = clock_reading(naive(2000, 1, 1, 2, 0, 0))  # ran 2 h since the reset
        when = observation_time(naive(2000, 1, 1, 1, 30, 0), None, clock, CTX, DEVICE_ID)
        assert when.effective.isoformat() == "2026-11-23T10:00:00+01:00"
        assert when.flags == (TimeFlag.DEVICE_CLOCK_UNSET,)

    def test_reading_from_before_the_reset_lands_in_the_future(self) -> None:
        """An old reading mapped by a reset clock's offset is in the future: receipt + flags."""
        clock = clock_reading(naive(2000, 1, 1, 2, 0, 0))
        when = observation_time(naive(2026, 11, 20, 8, 0, 0), None, clock, CTX, DEVICE_ID)
        assert when.effective == CTX.received
        assert when.flags == (TimeFlag.DEVICE_TIME_IN_FUTURE, TimeFlag.DEVICE_CLOCK_UNSET)

    def test_year_2000_without_clock_is_implausible(self) -> None:
        """A year-2000 stamp and no clock read: receipt time, flagged implausible, kept."""
        when = observation_time(naive(2000, 1, 1, 0, 5, 0), None, None, CTX, DEVICE_ID)
        assert when.effective == CTX.received
        assert when.flags == (TimeFlag.DEVICE_TIME_IMPLAUSIBLE,)
        assert when.device_time == naive(2000, 1, 1, 0, 5, 0)

    def test_future_stamp_beyond_tolerance(self) -> None:
        """A stamp 6 min after receipt is flagged; 4 min is accepted."""
        late = observation_time(naive(2026, 11, 23, 10, 36, 6), None, None, CTX, DEVICE_ID)
        assert (late.effective, late.flags) == (CTX.received, (TimeFlag.DEVICE_TIME_IN_FUTURE,))
        near = observation_time(naive(2026, 11, 23, 10, 34, 5), None, None, CTX, DEVICE_ID)
        assert (near.effective.isoformat(), near.flags) == ("2026-11-23T10:34:05+01:00", ())

    def test_unknown_clock_keeps_reading_time_and_flags(self) -> None:
        """Device clock date unknown: no correction, the reading's own time, flagged."""
        clock = clock_reading(None)
        when = observation_time(naive(2026, 11, 23, 8, 0, 0), None, clock, CTX, DEVICE_ID)
        assert when.effective.isoformat() == "2026-11-23T08:00:00+01:00"
        assert when.flags == (TimeFlag.DEVICE_CLOCK_UNSET,)

    def test_unusable_stamp(self) -> None:
        """An unusable time stamp: receipt time, device-time-unknown (and clock-unset when the
        clock is too), the coincident timestamp referenced."""
        clock = clock_reading(None)
        when = observation_time(None, "date unknown", clock, CTX, DEVICE_ID)
        assert (when.effective, when.flags, when.coincident_id) == (
            CTX.received,
            (TimeFlag.DEVICE_TIME_UNKNOWN, TimeFlag.DEVICE_CLOCK_UNSET),
            clock.logical_id(DEVICE_ID),
        )
        alone = observation_time(None, "date unknown", None, CTX, DEVICE_ID)
        assert (alone.flags, alone.coincident_id) == ((TimeFlag.DEVICE_TIME_UNKNOWN,), None)

    def test_no_stamp_ignores_the_clock(self) -> None:
        """No time stamp sent: receipt time, no flag, no coincident reference (IG rule)."""
        when = observation_time(None, None, clock_reading(None), CTX, DEVICE_ID)
        assert (when.effective, when.flags, when.coincident_id) == (CTX.received, (), None)

    def test_year_9999_does_not_overflow(self) -> None:
        """A year-9999 stamp with a positive offset is flagged, not an OverflowError."""
        clock = clock_reading(naive(2026, 11, 23, 10, 0, 0))
        when = observation_time(naive(9999, 12, 31, 23, 59, 59), None, clock, CTX, DEVICE_ID)
        assert when.flags == (TimeFlag.DEVICE_TIME_IN_FUTURE,)

    def test_fields_carry_tags_notes_and_reference(self) -> None:
        """Flags become meta.tag codes and notes; the coincident timestamp is referenced."""
        clock = clock_reading(naive(2000, 1, 1, 2, 0, 0))
        when = observation_time(naive(2000, 1, 1, 1, 30, 0), None, clock, CTX, DEVICE_ID)
        parts = when.fields(CTX)
        assert parts["effectiveDateTime"] == "2026-11-23T10:00:00+01:00"
        assert parts["issued"] == "2026-11-23T09:30:05Z"
        assert [t["code"] for t in parts["tag"]] == ["device-clock-unset"]
        assert parts["tag"][0]["system"] == "urn:homehub:fhir:reading-flag"
        assert parts["note"] == [{"text": "Device clock was not set when read by the hub"}]
        assert parts["extension"] == [
            {
                "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference",
                "valueReference": {"reference": f"Observation/{clock.logical_id(DEVICE_ID)}"},
            }
        ]


class TestCoincidentObservation:
    def test_known_clock(self) -> None:
        """effective = hub time, value = device time (hub zone), subject PHD, device PHG."""
        clock = clock_reading(naive(2026, 11, 23, 10, 24, 0))
        coin = coincident_observation(clock, DEVICE_ID, "hub-0001", TZ)
        assert coin == {
            "resourceType": "Observation",
            "id": clock.logical_id(DEVICE_ID),
            "meta": {
                "profile": [
                    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCoincidentTimeStampObservation"
                ]
            },
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": "urn:iso:std:iso:11073:10101",
                        "code": "67975",
                        "display": "MDC_ATTR_TIME_ABS",
                    }
                ],
                "text": "Absolute time",
            },
            "subject": {"reference": f"Device/{DEVICE_ID}"},
            "device": {"reference": "Device/phg-hub-0001"},
            "effectiveDateTime": "2026-11-23T10:30:00+01:00",
            "valueDateTime": "2026-11-23T10:24:00+01:00",
        }
        Observation.model_validate(coin)

    def test_unknown_clock_is_a_time_fault(self) -> None:
        """An unknown device date: no value, dataAbsentReason unknown (the IG's TimeFault)."""
        coin = coincident_observation(clock_reading(None), DEVICE_ID, "hub-0001", TZ)
        assert "valueDateTime" not in coin
        assert coin["dataAbsentReason"] == {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "unknown",
                }
            ]
        }
        Observation.model_validate(coin)


class TestEmulatedClock:
    def test_correct_skewed_reset_unset(self) -> None:
        """The emulated CTS value encodes each clock kind exactly (10 octets)."""

        def fixed() -> datetime:
            return HUB_NOW

        assert EmulatedClock(TZ, now=fixed).current_time_value() == bytes.fromhex(
            "ea070b170a1e0001" + "0000"
        )
        skewed = EmulatedClock(TZ, skew=timedelta(minutes=-6), now=fixed)
        assert skewed.current_time_value()[:7] == bytes.fromhex("ea070b170a1800")
        reset = EmulatedClock(TZ, reset_at=naive(2000, 1, 1), now=fixed)
        assert reset.current_time_value() == bytes.fromhex("d00701010000000600" + "00")
        assert EmulatedClock.unknown().current_time_value() == bytes(10)

    def test_local_time_information(self) -> None:
        """Berlin in November: UTC+1 standard time (4 x 15 min), no DST."""
        clock = EmulatedClock(TZ, now=lambda: HUB_NOW)
        assert clock.local_time_information_value() == bytes((4, 0))
        assert EmulatedClock.unknown().local_time_information_value() == bytes((0x80, 255))


# -- over the virtual radio ---------------------------------------------------------------


async def _session_facts(ble: BleStack) -> DeviceFacts:
    facts: list[DeviceFacts] = []

    async def keep(_raw: RawMeasurement, info: DeviceFacts) -> None:
        facts.append(info)

    async with asyncio.timeout(4 * WAIT_S):
        await collect_blood_pressure(
            ble,
            DEVICE_ADDRESS,
            keep,
            scan_timeout_s=WAIT_S,
            connect_timeout_s=WAIT_S,
            quiet_period_s=0.2,
        )
    assert len(facts) == 1
    return facts[0]


async def test_session_reads_a_skewed_clock(radio: VirtualRadio, ble: BleStack) -> None:
    """The BPS session reads CTS: the offset is the cuff's skew (to the second)."""
    await radio.add_cuff(
        example_readings()[:1], address=DEVICE_ADDRESS, clock=EmulatedClock.skewed(-7, TZ)
    )
    facts = await _session_facts(ble)
    assert facts.clock is not None
    assert facts.clock.hub_time.tzinfo is UTC
    offset = facts.clock.offset(TZ)
    assert offset is not None
    assert abs(offset - timedelta(minutes=7)) <= timedelta(seconds=1)


async def test_session_reads_an_unset_clock(radio: VirtualRadio, ble: BleStack) -> None:
    """An unset clock is read as such: no offset, counted as reset."""
    await radio.add_cuff(
        example_readings()[:1], address=DEVICE_ADDRESS, clock=EmulatedClock.unknown()
    )
    facts = await _session_facts(ble)
    assert facts.clock is not None
    assert (facts.clock.offset(TZ), facts.clock.is_reset) == (None, True)


async def test_session_without_cts(radio: VirtualRadio, ble: BleStack) -> None:
    """A cuff without CTS: the session goes on and the facts carry no clock."""
    await radio.add_cuff(example_readings()[:1], address=DEVICE_ADDRESS)
    facts = await _session_facts(ble)
    assert facts.clock is None


@pytest.mark.timeout(90)
async def test_end_to_end_skewed_cuff_clock(
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """A cuff 20 min behind: the platform gets the corrected time, the coincident timestamp and
    the identifier with the cuff's own time stamp (real agent process, TLS broker, receiver)."""
    clock = EmulatedClock.skewed(-20, TZ)
    device_now = clock.read()
    assert device_now is not None
    taken = (device_now - timedelta(hours=1)).replace(microsecond=0)  # on the cuff's clock
    reading = BpReading(
        121, 79, 93,
        time_stamp=DateTime(taken.year, taken.month, taken.day, taken.hour, taken.minute,
                            taken.second),
        pulse_rate=68,
    )  # fmt: skip
    async with VirtualRadio() as radio:
        await radio.add_cuff([reading], address=phi_canaries.DEVICE_ADDRESS, clock=clock)
        config = write_agent_config(
            tmp_path,
            stack=radio.stack,
            broker_port=broker.port,
            pki=dev_pki,
            hub_id=dev_pki.hub_id,
            patient_id=phi_canaries.PATIENT_ID,
            device_address=phi_canaries.DEVICE_ADDRESS,
            quiet_period_s=1.0,
            cycle_interval_s=0.5,
        )
        async with agent_process(config, request.node.nodeid) as agent:
            async with asyncio.timeout(30):
                got = await receiver.readings.get()
            assert 0 == await stop(agent)

    resources: list[dict[str, Any]] = [e["resource"] for e in got.payload["fhir"]["entry"]]
    by_code = {
        r["code"]["coding"][0]["code"]: r for r in resources if r["resourceType"] == "Observation"
    }
    panel, coin = by_code["150020"], by_code["67975"]
    # The IG identifier keeps the cuff's own time (seconds since 2000-01-01, IG algorithm);
    # the payload id is the hub identifier (the reading's identity).
    since_2000 = int((taken.replace(tzinfo=None) - datetime(2000, 1, 1)).total_seconds())  # noqa: DTZ001
    assert panel["identifier"][0]["value"].endswith(f"-150020-{since_2000}")
    assert got.id == panel["identifier"][1]["value"]
    effective = datetime.fromisoformat(panel["effectiveDateTime"])
    wanted = (taken + timedelta(minutes=20)).replace(tzinfo=ZoneInfo(TZ))
    assert abs(effective - wanted) <= timedelta(seconds=2)
    reference = {
        "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference",
        "valueReference": {"reference": full_url("Observation", coin["id"])},
    }
    assert reference in panel["extension"]
    offset = datetime.fromisoformat(coin["effectiveDateTime"]) - datetime.fromisoformat(
        coin["valueDateTime"]
    )
    assert abs(offset - timedelta(minutes=20)) <= timedelta(seconds=2)
    assert "tag" not in panel["meta"]
