"""The emulated glucometer's encoders and its sans-I/O RACP server, byte for byte.

Expected bytes are written out from GLS 1.0 / the GATT XML (ble-spec-facts §4); the hub's
decoders (``drivers.glucose``) then read the emulator's values back as a cross-check.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from drivers.glucose import GlucoseMeasurement, GlucoseMeasurementContext
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import (
    GlucoseContext,
    GlucoseRecord,
    Unit,
    example_records,
    mg_per_dl,
    mmol_per_l,
)
from hil.emulators.racp_server import RacpAttError, RacpServer, Report, Respond

T0 = DateTime(2025, 3, 14, 7, 30, 0)
T0_BYTES = "e907030e071e00"


def record(seq: int, minute: int = 0, **kwargs: object) -> GlucoseRecord:
    """A plain 100 mg/dL capillary record at 08:``minute``."""
    return GlucoseRecord(seq, DateTime(2025, 3, 14, 8, minute, 0), mg_per_dl("100"), **kwargs)  # type: ignore[arg-type]


def test_measurement_mg_per_dl_spec_example() -> None:
    """100 mg/dL is 100e-5 kg/L, SFLOAT 0xB064; type 1 / location 1 is octet 0x11."""
    value = GlucoseRecord(7, T0, mg_per_dl("100")).measurement_value()
    assert value.hex() == "02" + "0700" + T0_BYTES + "64b0" + "11"


def test_measurement_mmol_all_fields() -> None:
    """5.5 mmol/L is 55e-4 mol/L (0xC037); offset -60 is 0xFFC4; flags 0x1F with context."""
    rec = GlucoseRecord(
        0x0102,
        T0,
        mmol_per_l("5.5"),
        unit=Unit.MOL_PER_L,
        sample_type=2,
        sample_location=2,
        time_offset_min=-60,
        sensor_status=0x0801,
        context=GlucoseContext(meal=2),
    )
    assert (
        rec.measurement_value().hex() == "1f" + "0201" + T0_BYTES + "c4ff" + "37c0" + "22" + "0108"
    )
    assert rec.context_value() == bytes.fromhex("02020102")


def test_context_every_field() -> None:
    """Context fields in XML order: carbs (id, kg), meal, tester|health<<4, exercise,
    medication (flag 0x20 for litres), HbA1c."""
    ctx = GlucoseContext(
        carbohydrate_id=1,
        carbohydrate_kg=Decimal("0.045"),
        meal=1,
        tester=1,
        health=5,
        exercise_duration_s=1800,
        exercise_intensity_pct=40,
        medication_id=1,
        medication=Decimal("0.000004"),
        medication_litres=True,
        hba1c_pct=Decimal("6.8"),
    )
    # 0.045 = 45e-3 -> 0xD02D; 4e-6 -> 0xA004; 6.8 = 68e-1 -> 0xF044
    assert ctx.value(5).hex() == "7f0500" + "012dd0" + "01" + "51" + "080728" + "0104a0" + "44f0"


def test_examples_decode_with_the_hub_decoders() -> None:
    """Every example record and context is a valid GLS value to the hub's decoders."""
    for rec in example_records():
        decoded = GlucoseMeasurement.from_bytes(rec.measurement_value())
        assert decoded.sequence_number == rec.sequence_number
        assert decoded.context_follows == (rec.context is not None)
        context = rec.context_value()
        if context is not None:
            assert GlucoseMeasurementContext.from_bytes(context).sequence_number == (
                rec.sequence_number
            )
    first = GlucoseMeasurement.from_bytes(example_records()[0].measurement_value())
    assert first.concentration_mg_per_dl() == Decimal("112")


class Store:
    """Records for the server, with deletion."""

    def __init__(self, records: list[GlucoseRecord]) -> None:
        self.records = records

    def delete(self, seq: int) -> None:
        self.records = [r for r in self.records if r.sequence_number != seq]

    def server(self) -> RacpServer:
        return RacpServer(lambda: self.records, self.delete)


def handle(server: RacpServer, hex_request: str, **kwargs: bool) -> Report | Respond:
    """One write with both CCCDs configured unless told otherwise."""
    options = {"racp_indications": True, "measurement_notifications": True, **kwargs}
    return server.handle(bytes.fromhex(hex_request), **options)


def seqs(action: Report | Respond) -> list[int]:
    """Sequence numbers a report sends."""
    assert isinstance(action, Report)
    return [r.sequence_number for r in action.records]


@pytest.fixture
def store() -> Store:
    """Five records numbered 10..14, one a minute from 08:00."""
    return Store([record(10 + i, i) for i in range(5)])


@pytest.mark.parametrize(
    ("request_hex", "expected"),
    [
        ("0101", [10, 11, 12, 13, 14]),
        ("0103010c00", [12, 13, 14]),
        ("0102010b00", [10, 11]),
        ("0104010b000d00", [11, 12, 13]),
        ("0105", [10]),
        ("0106", [14]),
        ("010402" + "e907030e080100" + "e907030e080300", [11, 12, 13]),
    ],
)
def test_report_selects(store: Store, request_hex: str, expected: list[int]) -> None:
    """Each operator and filter selects exactly the records GLS says, then 06 00 01 01."""
    action = handle(store.server(), request_hex)
    assert seqs(action) == expected
    assert isinstance(action, Report)
    assert action.final == bytes.fromhex("06000101")


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("0103012000", "06000106"),  # no records found
        ("0401", "05000500"),  # count all: 5
        ("0403010d00", "05000200"),  # count >= 13
        ("0000", "06000002"),  # op code not supported
        ("0501", "06000502"),  # a response op code written: not supported
        ("0100", "06000103"),  # Null operator for a report: invalid operator
        ("0107", "06000103"),  # operator 7: invalid
        ("0300", "06000301"),  # abort with nothing running: success
        ("0301", "06000303"),  # abort takes Null
        ("010309", "06000109"),  # filter type 9: operand not supported
        ("0103010c", "06000105"),  # short operand: invalid operand
        ("0104010d000b00", "06000105"),  # min > max: invalid operand
        ("010100", "06000105"),  # 'all' with an operand
    ],
)
def test_responses(store: Store, request_hex: str, response_hex: str) -> None:
    """Counts and error response codes are exact."""
    action = handle(store.server(), request_hex)
    assert isinstance(action, Respond)
    assert action.value.hex() == response_hex


def test_delete(store: Store) -> None:
    """Delete <= 11 removes two records once the action runs; deleting nothing finds none."""
    server = store.server()
    action = handle(server, "0202010b00")
    assert isinstance(action, Respond)
    assert action.value.hex() == "06000201"
    assert action.then is not None
    action.then()
    assert [r.sequence_number for r in store.records] == [12, 13, 14]
    assert handle(server, "0202010b00") == Respond(bytes.fromhex("06000206"))


def test_busy_and_abort(store: Store) -> None:
    """While a report runs, any request but Abort gets ATT 0x80; Abort is answered 06 00 03 01
    and flags the report to stop; after finished() requests are served again."""
    server = store.server()
    handle(server, "0101")
    with pytest.raises(RacpAttError) as caught:
        handle(server, "0401")
    assert caught.value.code == 0x80
    abort = handle(server, "0300")
    assert abort == Respond(bytes.fromhex("06000301"))
    assert server.abort_requested
    server.finished()
    assert handle(server, "0401") == Respond(bytes.fromhex("05000500"))


def test_cccd_checks(store: Store) -> None:
    """0x81 when RACP indications are off (any request) or, for a report, when measurement
    notifications are off; a count needs only the RACP CCCD."""
    server = store.server()
    for request, options in (
        ("0101", {"racp_indications": False}),
        ("0401", {"racp_indications": False}),
        ("0101", {"measurement_notifications": False}),
    ):
        with pytest.raises(RacpAttError) as caught:
            handle(server, request, **options)
        assert caught.value.code == 0x81
    assert handle(server, "0401", measurement_notifications=False) == Respond(
        bytes.fromhex("05000500")
    )


def test_user_facing_time_applies_the_offset() -> None:
    """The time filter compares Base Time + signed Time Offset."""
    shifted = record(1, 30, time_offset_min=-30)  # 08:30 - 30 min = 08:00
    server = Store([shifted, record(2, 10)]).server()
    assert seqs(handle(server, "010202" + "e907030e080000")) == [1]
