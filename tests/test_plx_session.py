"""The Pulse Oximeter Service session against the emulated oximeter, over the virtual radio.

Agent side: ``agent.ble.plx_session`` on bleak with our Bumble backend; device side:
``hil.emulators.oximeter``. Expected bytes come from the emulator's own encoders. No sleeps:
the emulator's continuous output rate is its own clock, the tests await events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.ble.bps_session import SessionEnd
from agent.ble.plx_session import (
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
    PlxSessionResult,
    collect_pulse_oximetry,
)
from agent.ble.sessions import SESSIONS
from agent.ble.stack import BleStack
from agent.config import DEVICE_KINDS
from agent.errors import BleLinkError, ConfigError
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from hil.emulators.encoding import DateTime
from hil.emulators.oximeter import (
    EmulatedOximeter,
    Features,
    MeasurementStatus,
    SpotCheck,
    SupportedFeatures,
    example_continuous,
    example_spot_checks,
)
from hil.emulators.peripheral import DeviceInformation, EmulatedClock
from hil.virtual_radio import VirtualRadio
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL

WAIT_S = 5.0
QUIET_S = 0.3  # longer than the emulator's continuous interval below, so a stream is not quiet
STREAM_INTERVAL_S = 0.02
INFO = DeviceInformation(
    model_number="HH-PLX-1", serial_number=DEVICE_SERIAL, system_id=(0x12FFFE34F0, 0xCA7A00)
)


async def oximeter(radio: VirtualRadio, **options: Any) -> EmulatedOximeter:
    """Start an emulated oximeter at the canary address."""
    device = await radio.add_peripheral_device(DEVICE_ADDRESS, "oximeter")
    emulated = EmulatedOximeter(
        device, info=INFO, continuous_interval_s=STREAM_INTERVAL_S, **options
    )
    await emulated.start()
    return emulated


class Pipeline:
    """A stand-in for the daemon's ingest: keeps what it is handed, in order."""

    def __init__(self) -> None:
        self.records: list[RawMeasurement] = []
        self.facts: list[DeviceFacts] = []

    async def __call__(self, raw: RawMeasurement, facts: DeviceFacts) -> None:
        self.records.append(raw)
        self.facts.append(facts)

    def values(self, uuid: str) -> list[bytes]:
        return [r.data for r in self.records if r.characteristic_uuid == uuid]


async def collect(ble: BleStack, pipeline: Pipeline, **kwargs: Any) -> PlxSessionResult:
    """One session with the test timings (overridable)."""
    options: dict[str, Any] = {
        "scan_timeout_s": WAIT_S,
        "connect_timeout_s": WAIT_S,
        "quiet_period_s": QUIET_S,
        **kwargs,
    }
    async with asyncio.timeout(4 * WAIT_S):
        return await collect_pulse_oximetry(ble, DEVICE_ADDRESS, pipeline, **options)


def test_kind_is_registered() -> None:
    """``pulse_oximeter`` is a configurable kind with a session."""
    assert "pulse_oximeter" in DEVICE_KINDS
    assert "pulse_oximeter" in SESSIONS


async def test_spot_checks_arrive_exact_in_order_and_confirmed(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """Every held spot-check arrives once, as the device's exact bytes, in order."""
    device = await oximeter(radio, spot_checks=example_spot_checks())
    expected = device.encoded()
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    assert expected == pipeline.values(PLX_SPOT_CHECK_MEASUREMENT)
    assert (result.measurements, result.ended_by) == (2, SessionEnd.QUIET)
    assert expected == device.confirmed_values
    assert () == device.stored
    assert result.plx_features == bytes.fromhex("5b008048208000")


async def test_device_information_is_read(radio: VirtualRadio, ble: BleStack) -> None:
    """DIS is decoded into the DeviceFacts handed on with each value."""
    await oximeter(radio, spot_checks=example_spot_checks()[:1])
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    facts = result.facts
    assert (facts.model, facts.serial, facts.system_id) == (
        "HH-PLX-1",
        DEVICE_SERIAL,
        "CA7A0012FFFE34F0",
    )
    assert facts.address == DEVICE_ADDRESS
    assert pipeline.facts == [facts]


async def test_continuous_is_thinned_to_one_value_per_interval(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """With a 10 s interval, only the first of four 20 ms notifications is handed on."""
    device = await oximeter(radio, continuous=example_continuous())
    pipeline = Pipeline()

    result = await collect(ble, pipeline, continuous_interval_s=10.0)

    assert device.continuous_done.is_set()
    assert [device.notified_values[0]] == pipeline.values(PLX_CONTINUOUS_MEASUREMENT)
    assert (result.measurements, result.continuous_skipped) == (1, 3)
    assert result.ended_by is SessionEnd.QUIET


async def test_continuous_interval_zero_hands_on_every_notification(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """``continuous_interval_s=0`` keeps every notification, in order."""
    device = await oximeter(radio, continuous=example_continuous())
    pipeline = Pipeline()

    result = await collect(ble, pipeline, continuous_interval_s=0.0)

    assert device.encoded_continuous() == pipeline.values(PLX_CONTINUOUS_MEASUREMENT)
    assert (result.measurements, result.continuous_skipped) == (4, 0)


async def test_spot_checks_and_continuous_together(radio: VirtualRadio, ble: BleStack) -> None:
    """Spot-checks are never thinned while the continuous stream is."""
    spots = [*example_spot_checks(), SpotCheck(99, 58)]
    device = await oximeter(radio, spot_checks=spots, continuous=example_continuous())
    pipeline = Pipeline()

    result = await collect(ble, pipeline, continuous_interval_s=10.0)

    assert [bytes(s) for s in spots] == pipeline.values(PLX_SPOT_CHECK_MEASUREMENT)
    assert device.notified_values[:1] == pipeline.values(PLX_CONTINUOUS_MEASUREMENT)
    assert result.measurements == 4


async def test_endless_stream_ends_at_the_session_deadline(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """A worn oximeter streams forever: the session ends at its deadline, handing on what came."""
    device = await oximeter(radio, continuous=example_continuous(), continuous_repeat=True)
    pipeline = Pipeline()

    result = await collect(
        ble,
        pipeline,
        scan_timeout_s=1.0,
        connect_timeout_s=1.0,
        quiet_period_s=0.5,
        session_timeout_s=3.0,
        continuous_interval_s=0.5,
    )

    assert result.ended_by is SessionEnd.DEADLINE
    forwarded = pipeline.values(PLX_CONTINUOUS_MEASUREMENT)
    assert 1 <= len(forwarded) <= 6  # at most one per 0.5 s of a < 3 s session
    assert result.continuous_skipped > 0
    assert all(value in device.notified_values for value in forwarded)


async def test_device_not_found(ble: BleStack) -> None:
    """No oximeter advertising: BleLinkError "not found"."""
    with pytest.raises(BleLinkError, match="not found"):
        await collect(ble, Pipeline(), scan_timeout_s=0.5)


async def test_negative_interval_is_a_config_error(ble: BleStack) -> None:
    """A negative continuous interval is refused before any radio work."""
    with pytest.raises(ConfigError):
        await collect(ble, Pipeline(), continuous_interval_s=-1.0)


STORAGE = Features(
    SupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE | SupportedFeatures.SPOT_CHECK_TIMESTAMP
)
FROM_STORAGE = int(MeasurementStatus.DATA_FROM_MEASUREMENT_STORAGE)
STORED = [
    SpotCheck(96, 61, timestamp=DateTime(2025, 3, 1, 8, 0, 0), measurement_status=FROM_STORAGE),
    SpotCheck(94, 66, timestamp=DateTime(2025, 3, 2, 8, 0, 0), measurement_status=FROM_STORAGE),
    SpotCheck(97, 59, timestamp=DateTime(2025, 3, 3, 8, 0, 0), measurement_status=FROM_STORAGE),
]


async def test_stored_spot_checks_are_reported_through_racp(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """Storage in the features: ``01 01`` is written; stored and live spot-checks arrive."""
    live = example_spot_checks()[:1]
    device = await oximeter(radio, spot_checks=live, stored_records=STORED, features=STORAGE)
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    assert device.racp_requests == [bytes.fromhex("0101")]
    assert device.racp_responses == [bytes.fromhex("06000101")]
    assert result.racp == "success"
    got = pipeline.values(PLX_SPOT_CHECK_MEASUREMENT)
    assert sorted(got) == sorted([bytes(s) for s in (*live, *STORED)])
    assert [v for v in got if v in {bytes(s) for s in STORED}] == [bytes(s) for s in STORED]
    assert len(device.stored_records) == 3  # the hub never deletes records on the device


async def test_storage_without_records_reports_none_found(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """An empty store answers ``06 00 01 06``; the session ends normally."""
    device = await oximeter(radio, spot_checks=example_spot_checks(), features=STORAGE)
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    assert result.racp == "no_records_found"
    assert device.encoded() == []
    assert len(pipeline.records) == 2


async def test_no_racp_without_storage(radio: VirtualRadio, ble: BleStack) -> None:
    """Without the storage feature no RACP request is written."""
    await oximeter(radio, spot_checks=example_spot_checks())
    result = await collect(ble, Pipeline())
    assert result.racp is None


async def test_device_clock_is_read_when_the_oximeter_has_cts(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """With CTS 0x1805 the facts handed on carry the device clock read at connection."""
    await oximeter(radio, spot_checks=example_spot_checks()[:1], clock=EmulatedClock.skewed(10))
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    clock = result.facts.clock
    assert clock is not None
    offset = clock.offset("Europe/Berlin")
    assert offset is not None
    assert abs(offset.total_seconds() + 600) <= 2  # the device runs 10 min ahead
    assert pipeline.facts[0].clock == clock
