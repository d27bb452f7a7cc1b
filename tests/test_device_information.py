"""Tests of drivers.device_information: DIS strings, System ID, PnP ID."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers.device_information import DisString, DisStringCharacteristic, PnpId, SystemId

MODEL = DisStringCharacteristic.MODEL_NUMBER


class TestDisString:
    """The six UTF-8 strings."""

    @pytest.mark.parametrize(
        ("data", "value", "padding"),
        [
            (b"BC 57", "BC 57", b""),
            (b"BC 57\x00\x00\x00", "BC 57", b"\x00\x00\x00"),
            (b"BC 57  \x00 ", "BC 57", b"  \x00 "),
            ("Bläßmann".encode(), "Bläßmann", b""),
            (b"", "", b""),
            (b"\x00\x00", "", b"\x00\x00"),
        ],
    )
    def test_decode(self, data: bytes, value: str, padding: bytes) -> None:
        """Trailing NUL/space is split into padding; the rest is the text; round trip exact."""
        decoded = DisString.from_bytes(MODEL, data)
        assert (value, padding) == (decoded.value, decoded.padding)
        assert data == bytes(decoded)

    @pytest.mark.parametrize(
        ("data", "reason", "offset"),
        [
            (b"AB\xffC", "not valid UTF-8", 2),
            (b"AB\x00garbage", "control character inside the string", None),
            (b"A\tB", "control character inside the string", None),
            (b"A" * 513, "longer than 512 octets", None),
        ],
    )
    def test_rejected(self, data: bytes, reason: str, offset: int | None) -> None:
        """Bad UTF-8, control characters and over-long values raise DecodeError."""
        with pytest.raises(DecodeError) as info:
            DisString.from_bytes(DisStringCharacteristic.SERIAL_NUMBER, data)
        assert ("0x2A25", reason, offset) == (
            info.value.characteristic,
            info.value.reason,
            info.value.offset,
        )

    def test_repr_hides_text(self) -> None:
        """A serial number never appears in the repr."""
        value = DisString.from_bytes(DisStringCharacteristic.SERIAL_NUMBER, b"SN-998877")
        assert "998877" not in repr(value)

    @given(st.binary(max_size=40))
    def test_random(self, data: bytes) -> None:
        """Random bytes decode and round-trip, or raise DecodeError."""
        try:
            decoded = DisString.from_bytes(MODEL, data)
        except DecodeError:
            return
        assert data == bytes(decoded)


class TestSystemId:
    """System ID 0x2A23 and its EUI-64 convention."""

    def test_hl7_example(self) -> None:
        """Wire 74E8FFFEFF051C00 is EUI-64 00-1C-05-FF-FE-FF-E8-74 (byte-reversed)."""
        value = SystemId.from_bytes(bytes.fromhex("74e8fffeff051c00"))
        assert value.manufacturer_identifier == 0xFFFEFFE874
        assert value.organizationally_unique_identifier == 0x001C05
        assert value.eui64 == "00-1C-05-FF-FE-FF-E8-74"
        assert value.wire_order_hex == "74E8FFFEFF051C00"
        assert value == SystemId.from_eui64("00-1C-05-FF-FE-FF-E8-74")
        assert bytes.fromhex("74e8fffeff051c00") == bytes(value)

    @pytest.mark.parametrize("length", [0, 7, 9])
    def test_wrong_length(self, length: int) -> None:
        """Anything but 8 octets is rejected naming 0x2A23."""
        with pytest.raises(DecodeError) as info:
            SystemId.from_bytes(bytes(length))
        assert info.value.characteristic == "0x2A23"

    def test_repr_hides_identifier(self) -> None:
        """The identifier never appears in the repr."""
        assert repr(SystemId.from_bytes(bytes.fromhex("74e8fffeff051c00"))) == "SystemId()"


class TestPnpId:
    """PnP ID 0x2A50."""

    def test_decode(self) -> None:
        """Source, vendor, product, version decode little-endian and round-trip."""
        data = bytes.fromhex("015900341201 00".replace(" ", ""))
        value = PnpId.from_bytes(data)
        assert (
            value.vendor_id_source,
            value.vendor_id,
            value.product_id,
            value.product_version,
        ) == (1, 0x0059, 0x1234, 0x0001)
        assert data == bytes(value)

    def test_short(self) -> None:
        """A 6-octet PnP ID names the incomplete Product Version."""
        with pytest.raises(DecodeError, match="Product Version incomplete"):
            PnpId.from_bytes(bytes(6))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DisString(MODEL, "A", b"x"), "padding"),
        (lambda: DisString(MODEL, "A\x01"), "control character"),
        (lambda: DisString(MODEL, "A "), "belongs in padding"),
        (lambda: DisString(MODEL, "A" * 513), "longer than an ATT value"),
        (lambda: SystemId(1 << 40, 0), "40 bits"),
        (lambda: SystemId(0, 1 << 24), "24 bits"),
        (lambda: SystemId.from_eui64("00-1C-05"), "16 hex digits"),
        (lambda: PnpId(256, 0, 0, 0), "uint8"),
        (lambda: PnpId(1, 0x10000, 0, 0), "uint16"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Values that could not be sent as built are refused with ValueError."""
    with pytest.raises(ValueError, match=message):
        build()
