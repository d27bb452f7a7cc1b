"""The Blood Pressure Service session against the emulated cuff, over the real virtual radio.

The agent side is ``agent.ble.bps_session`` on bleak's public API with our Bumble backend
over HCI/TCP on loopback; the cuff is ``hil.emulators.cuff`` on a Bumble virtual controller.
Expected bytes come from the cuff's own encoder (independent of ``drivers/``). No sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any

import pytest
import structlog
from bumble.core import UUID
from bumble.gatt import Characteristic, Service

from agent.ble.bps_session import (
    MEASUREMENT_SLACK,
    BpsSessionResult,
    RawMeasurement,
    SessionEnd,
    collect_blood_pressure,
)
from agent.ble.stack import BleStack
from agent.ble.uuids import BLOOD_PRESSURE_MEASUREMENT
from agent.errors import BleLinkError, BleLinkLostError, ConfigError, DeviceProtocolError
from agent.normalize.device import DeviceFacts
from hil.emulators.cuff import BpReading, EmulatedCuff, example_readings
from hil.emulators.peripheral import DeviceInformation, advertising_data, fixed_value
from hil.virtual_radio import VirtualRadio
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL, SYSTEM_ID_HEX

WAIT_S = 5.0
QUIET_S = 0.2  # the quiet period that ends a session: short, the virtual link is instant
CUFF_INFO = DeviceInformation(serial_number=DEVICE_SERIAL, system_id=(0x12FFFE34F0, 0xCA7A00))


def assert_confirmed_were_handed_on(cuff: EmulatedCuff, handed_on: list[bytes]) -> None:
    """Every value the cuff saw confirmed was handed on, in order; at most one more was
    handed on whose confirmation was still in flight when the link closed (the cuff keeps
    that one and sends it again: a duplicate, never a loss)."""
    confirmed = cuff.confirmed_values
    assert confirmed == handed_on[: len(confirmed)]
    assert len(handed_on) - len(confirmed) in (0, 1)


class Pipeline:
    """A stand-in for the daemon's ingest: keeps what it is handed, in order."""

    def __init__(self) -> None:
        self.records: list[RawMeasurement] = []
        self.facts: list[DeviceFacts] = []

    async def __call__(self, raw: RawMeasurement, facts: DeviceFacts) -> None:
        self.records.append(raw)
        self.facts.append(facts)

    @property
    def values(self) -> list[bytes]:
        return [r.data for r in self.records]


async def collect(ble: BleStack, pipeline: Pipeline, **kwargs: Any) -> BpsSessionResult:
    """One session with the test timings (overridable)."""
    options: dict[str, Any] = {
        "scan_timeout_s": WAIT_S,
        "connect_timeout_s": WAIT_S,
        "quiet_period_s": QUIET_S,
        **kwargs,
    }
    async with asyncio.timeout(4 * WAIT_S):
        return await collect_blood_pressure(ble, DEVICE_ADDRESS, pipeline, **options)


async def test_collects_exactly_the_cuffs_readings_in_order(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """Every stored reading arrives once, as the cuff's exact bytes, in order, confirmed."""
    cuff = await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS, info=CUFF_INFO)
    expected = cuff.encoded()
    pipeline = Pipeline()

    result = await collect_blood_pressure(
        ble,
        DEVICE_ADDRESS,
        pipeline,
        scan_timeout_s=WAIT_S,
        connect_timeout_s=WAIT_S,
        quiet_period_s=QUIET_S,
    )

    assert expected == pipeline.values
    assert (result.measurements, result.ended_by) == (3, SessionEnd.QUIET)
    assert (3, expected, ()) == (cuff.confirmations, cuff.confirmed_values, cuff.stored)
    assert {BLOOD_PRESSURE_MEASUREMENT} == {r.characteristic_uuid for r in pipeline.records}
    monotonic = [r.received_monotonic for r in pipeline.records]
    assert sorted(monotonic) == monotonic
    assert all(r.received_wall.tzinfo is UTC for r in pipeline.records)


async def test_reads_device_information(radio: VirtualRadio, ble: BleStack) -> None:
    """DIS values come back raw and exact, and decoded into the DeviceFacts handed on."""
    cuff = await radio.add_cuff(example_readings()[:1], address=DEVICE_ADDRESS, info=CUFF_INFO)
    values = cuff.info.values()
    pipeline = Pipeline()

    result = await collect(ble, pipeline)

    info = result.info
    assert (
        values[0x2A29],
        values[0x2A24],
        values[0x2A25],
        values[0x2A26],
        values[0x2A23],
        None,
        None,
        b"\x05\x00",
    ) == (
        info.manufacturer_name,
        info.model_number,
        info.serial_number,
        info.firmware_revision,
        info.system_id,
        info.hardware_revision,
        info.software_revision,
        info.blood_pressure_feature,
    )
    assert (
        DeviceFacts(
            address=DEVICE_ADDRESS,
            system_id=SYSTEM_ID_HEX,
            manufacturer="Homehub Test Devices",
            model="HH-BPM-1",
            serial=DEVICE_SERIAL,
            firmware="1.4.2",
        )
        == result.facts
        == pipeline.facts[0]
    )


async def test_dropped_link_mid_stream(radio: VirtualRadio, ble: BleStack) -> None:
    """A link lost after the first confirmation raises BleLinkLostError with what was handed
    on; the cuff still holds the unconfirmed readings and sends them on the next session."""
    readings = example_readings()
    cuff = await radio.add_cuff(readings, address=DEVICE_ADDRESS, info=CUFF_INFO, drop_link_after=1)
    expected = cuff.encoded()
    pipeline = Pipeline()

    with pytest.raises(BleLinkLostError) as caught:
        await collect(ble, pipeline)

    assert (
        caught.value.phase,
        caught.value.measurements,
        caught.value.device,
    ) == ("collect", 1, "..:12:34")
    assert caught.value.retryable
    assert expected[:1] == pipeline.values
    assert (tuple(readings[1:]), 1) == (cuff.stored, cuff.link_drops)

    cuff.drop_link_after = None
    again = Pipeline()
    result = await collect(ble, again)
    assert expected[1:] == again.values
    assert (
        result.measurements,
        result.ended_by,
        cuff.stored,
    ) == (2, SessionEnd.QUIET, ())


async def test_cuff_that_keeps_readings_sends_them_again(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """A cuff that never deletes resends everything; the session hands on every copy."""
    cuff = await radio.add_cuff(
        example_readings(), address=DEVICE_ADDRESS, info=CUFF_INFO, delete_on_confirm=False
    )
    expected = cuff.encoded()
    first, second = Pipeline(), Pipeline()
    await collect(ble, first)
    await collect(ble, second)
    assert (expected, expected) == (first.values, second.values)
    assert cuff.confirmations == 6


async def test_slow_pipeline_still_gets_everything_in_order(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """Indications are confirmed as they arrive, before the pipeline stores them (as BlueZ
    does): a pipeline that blocks still receives every reading, in order, afterwards."""
    cuff = await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS, info=CUFF_INFO)
    expected = cuff.encoded()
    gate = asyncio.Event()
    pipeline = Pipeline()

    async def slow(raw: RawMeasurement, facts: DeviceFacts) -> None:
        await gate.wait()
        await pipeline(raw, facts)

    session = asyncio.create_task(
        collect_blood_pressure(
            ble,
            DEVICE_ADDRESS,
            slow,
            scan_timeout_s=WAIT_S,
            connect_timeout_s=WAIT_S,
            quiet_period_s=QUIET_S,
        ),
        name="test.session",
    )
    async with asyncio.timeout(WAIT_S):
        await cuff.all_confirmed.wait()
    assert pipeline.values == []
    gate.set()
    async with asyncio.timeout(WAIT_S):
        result = await session
    assert (expected, 3) == (pipeline.values, result.measurements)


async def test_stops_at_max_measurements(radio: VirtualRadio, ble: BleStack) -> None:
    """At max_measurements the session ends; whatever the cuff saw confirmed was handed on,
    and the cuff holds exactly the unconfirmed rest."""
    readings = example_readings()
    cuff = await radio.add_cuff(readings, address=DEVICE_ADDRESS, info=CUFF_INFO)
    pipeline = Pipeline()

    async with asyncio.timeout(4 * WAIT_S):
        result = await collect_blood_pressure(
            ble,
            DEVICE_ADDRESS,
            pipeline,
            scan_timeout_s=WAIT_S,
            connect_timeout_s=WAIT_S,
            quiet_period_s=WAIT_S,
            max_measurements=2,
        )

    assert result.ended_by == SessionEnd.LIMIT
    assert_confirmed_were_handed_on(cuff, pipeline.values)
    assert result.measurements == len(pipeline.values) >= 2
    assert tuple(readings[len(cuff.confirmed_values) :]) == cuff.stored


async def test_more_readings_than_the_limit_are_left_for_the_next_sessions(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """A cuff holding more readings than ``max_measurements``: each session ends at the limit
    (LIMIT) and disconnects, hands on exactly the limit, and the cuff keeps the rest; the next
    sessions get them, in order, until one ends QUIET with the cuff empty. Nothing is lost or
    handed on twice."""
    limit = 3
    readings = [BpReading(110 + i, 70 + i, 85 + i, pulse_rate=60 + i) for i in range(2 * limit + 1)]
    cuff = await radio.add_cuff(readings, address=DEVICE_ADDRESS, info=CUFF_INFO)
    expected = cuff.encoded()
    assert len(set(expected)) == len(readings)
    sessions: list[tuple[SessionEnd, list[bytes]]] = []
    for _ in range(3):
        pipeline = Pipeline()
        result = await collect(ble, pipeline, quiet_period_s=WAIT_S / 4, max_measurements=limit)
        # The session disconnected before returning: the cuff saw the link end.
        async with asyncio.timeout(WAIT_S):
            await cuff.disconnected.wait()
        assert result.measurements == len(pipeline.values)
        sessions.append((result.ended_by, pipeline.values))
        assert tuple(readings[len(cuff.confirmed_values) :]) == cuff.stored

    assert [
        (SessionEnd.LIMIT, expected[:limit]),
        (SessionEnd.LIMIT, expected[limit : 2 * limit]),
        (SessionEnd.QUIET, expected[2 * limit :]),
    ] == sessions
    assert (3, len(readings), expected, ()) == (
        cuff.connections,
        cuff.confirmations,
        cuff.confirmed_values,
        cuff.stored,
    )


async def test_device_not_found(ble: BleStack) -> None:
    """Nothing advertising that address within the scan timeout: BleLinkError 'not found'."""
    with pytest.raises(BleLinkError) as caught:
        await collect(ble, Pipeline(), scan_timeout_s=0.3)
    assert (caught.value.device, caught.value.reason) == ("..:12:34", "..:12:34: not found")
    assert not isinstance(caught.value, BleLinkLostError)


async def test_device_without_feature_characteristic(radio: VirtualRadio, ble: BleStack) -> None:
    """A device advertising 0x1810 without the mandatory 0x2A49 is a DeviceProtocolError."""
    device = await radio.add_peripheral_device(DEVICE_ADDRESS, "odd")
    measurement: Characteristic[bytes] = Characteristic(
        UUID.from_16_bits(0x2A35),
        Characteristic.Properties.INDICATE,
        Characteristic.Permissions(0),
        fixed_value(b"", readable=False),
    )
    device.add_service(Service(UUID.from_16_bits(0x1810), [measurement]))
    await device.power_on()
    await device.start_advertising(
        advertising_data=advertising_data("odd", [0x1810]),
        advertising_interval_min=50,
        advertising_interval_max=50,
    )

    with pytest.raises(DeviceProtocolError) as caught:
        await collect(ble, Pipeline())
    assert (
        caught.value.device,
        caught.value.procedure,
        caught.value.reason,
    ) == ("..:12:34", "discover", "no Blood Pressure Feature 0x2A49 in 0x1810")


async def test_timeouts_must_nest(ble: BleStack) -> None:
    """A session timeout not larger than scan + connect + quiet is refused up front."""
    with pytest.raises(ConfigError) as caught:
        await collect(ble, Pipeline(), scan_timeout_s=5, connect_timeout_s=5, session_timeout_s=10)
    assert caught.value.key == "ble.session_timeout_s"


async def test_session_deadline_ends_an_endless_transfer(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """A device that never stops sending is cut off at the session deadline (DEADLINE);
    everything it saw confirmed was handed on."""
    cuff = await radio.add_cuff(example_readings()[:1], address=DEVICE_ADDRESS, info=CUFF_INFO)
    pipeline = Pipeline()

    async def endless(raw: RawMeasurement, facts: DeviceFacts) -> None:
        await pipeline(raw, facts)
        await cuff.add_reading(example_readings()[0])  # the next one is always ready

    async with asyncio.timeout(4 * WAIT_S):
        result = await collect_blood_pressure(
            ble,
            DEVICE_ADDRESS,
            endless,
            scan_timeout_s=0.5,
            connect_timeout_s=0.5,
            quiet_period_s=0.5,
            session_timeout_s=1.6,
            max_measurements=100_000,
        )
    assert result.ended_by == SessionEnd.DEADLINE
    assert_confirmed_were_handed_on(cuff, pipeline.values)
    assert result.measurements == len(pipeline.values) > 1


async def test_logs_carry_labels_never_identities(radio: VirtualRadio, ble: BleStack) -> None:
    """No log event of a session holds the full address, the serial or the System ID."""
    await radio.add_cuff(example_readings(), address=DEVICE_ADDRESS, info=CUFF_INFO)
    with structlog.testing.capture_logs() as events:
        await collect(ble, Pipeline())
    text = repr(events)
    assert "ble_session_ended" in text
    for secret in (DEVICE_ADDRESS, DEVICE_ADDRESS.replace(":", ""), DEVICE_SERIAL, SYSTEM_ID_HEX):
        assert secret.lower() not in text.lower()
    assert "..:12:34" in text


async def test_stalled_pipeline_bounds_the_buffer_and_ends_the_link_at_the_limit(
    radio: VirtualRadio, ble: BleStack
) -> None:
    """While the hand-on waits (the daemon's queue full), a cuff keeps indicating: the
    session buffers at most ``max_measurements`` plus the slack, ends the link itself at the
    limit (the buffer never grows with what the cuff still holds), and once the pipeline
    moves hands on exactly what the cuff saw confirmed; the cuff keeps the rest."""
    limit = 10
    readings = [BpReading(110 + i, 70 + i % 20, 85 + i % 10, pulse_rate=60 + i) for i in range(30)]
    cuff = await radio.add_cuff(readings, address=DEVICE_ADDRESS, info=CUFF_INFO)
    expected = cuff.encoded()
    handed: list[bytes] = []

    async def stalled(raw: RawMeasurement, _facts: DeviceFacts) -> None:
        await cuff.disconnected.wait()  # stuck until the hub has ended the link
        handed.append(raw.data)

    with structlog.testing.capture_logs() as events:
        async with asyncio.timeout(4 * WAIT_S):
            result = await collect_blood_pressure(
                ble,
                DEVICE_ADDRESS,
                stalled,
                scan_timeout_s=WAIT_S,
                connect_timeout_s=WAIT_S,
                quiet_period_s=QUIET_S,
                max_measurements=limit,
            )

    assert result.ended_by is SessionEnd.LIMIT
    assert expected[:limit] == handed
    assert cuff.confirmed_values == handed
    (ended,) = [e for e in events if e["event"] == "ble_session_ended"]
    assert ended["peak_measurements"] <= limit + MEASUREMENT_SLACK
    assert expected[limit:] == cuff.encoded()
