"""Tests of drivers.ieee11073: IEEE 11073-20601 SFLOAT and FLOAT."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers.ieee11073 import MedFloat16, MedFloat32, SpecialValue

SFLOAT_SPECIALS = {
    0x07FF: SpecialValue.NAN,
    0x0800: SpecialValue.NRES,
    0x07FE: SpecialValue.POSITIVE_INFINITY,
    0x0802: SpecialValue.NEGATIVE_INFINITY,
    0x0801: SpecialValue.RESERVED,
}
FLOAT_SPECIALS = {
    0x007FFFFF: SpecialValue.NAN,
    0x00800000: SpecialValue.NRES,
    0x007FFFFE: SpecialValue.POSITIVE_INFINITY,
    0x00800002: SpecialValue.NEGATIVE_INFINITY,
    0x00800001: SpecialValue.RESERVED,
}


class TestSFloatDecode:
    """Decoding 16-bit SFLOAT."""

    @pytest.mark.parametrize(
        ("raw", "mantissa", "exponent", "text"),
        [
            (0xF065, 101, -1, "10.1"),
            (0x0B2E, -1234, 0, "-1234"),
            (0x7201, 513, 7, "5.13E+9"),
            (0xF201, 513, -1, "51.3"),
            (0x0002, 2, 0, "2"),
            (0xF014, 20, -1, "2.0"),
            (0xE0C8, 200, -2, "2.00"),
            (0x8078, 120, -8, "0.00000120"),
            (0x700A, 10, 7, "1.0E+8"),
            (0x0000, 0, 0, "0"),
            (0xFFFF, -1, -1, "-0.1"),
        ],
    )
    def test_worked_examples(self, raw: int, mantissa: int, exponent: int, text: str) -> None:
        """Spec examples decode with two's-complement exponent, no bias, precision kept."""
        value = MedFloat16.from_bytes(raw.to_bytes(2, "little"))
        assert (mantissa, exponent, None) == (value.mantissa, value.exponent, value.special)
        assert Decimal(text) == value.to_decimal()
        assert text == value.fhir_decimal
        assert str(value.to_decimal()) == text

    def test_precision_is_kept(self) -> None:
        """0xF014 is Decimal("2.0"), distinct from 0x0002's "2", yet equal in value."""
        two_point_zero = MedFloat16.from_raw(0xF014).to_decimal()
        two = MedFloat16.from_raw(0x0002).to_decimal()
        assert (str(two_point_zero), str(two)) == ("2.0", "2")
        assert two == two_point_zero
        assert MedFloat16.from_raw(0xF014).value == 2.0

    @pytest.mark.parametrize(("raw", "special"), sorted(SFLOAT_SPECIALS.items()))
    def test_special_codes(self, raw: int, special: SpecialValue) -> None:
        """The five exact codes decode as specials with no FHIR decimal."""
        value = MedFloat16.from_raw(raw)
        assert special is value.special
        assert not value.is_number
        assert value.fhir_decimal is None

    def test_special_floats(self) -> None:
        """NaN, NRes and RFU give float NaN; the infinities give ±inf."""
        assert math.isnan(MedFloat16.from_raw(0x07FF).value)
        assert math.isnan(MedFloat16.from_raw(0x0800).value)
        assert math.isnan(MedFloat16.from_raw(0x0801).value)
        assert math.inf == MedFloat16.from_raw(0x07FE).value
        assert -math.inf == MedFloat16.from_raw(0x0802).value
        assert MedFloat16.from_raw(0x07FE).to_decimal() == Decimal("Infinity")

    @pytest.mark.parametrize(
        ("raw", "text"),
        [(0xF7FF, "204.7"), (0x17FE, "2.046E+4"), (0x1800, "-2.048E+4"), (0xF801, "-204.7")],
    )
    def test_reserved_mantissa_with_nonzero_exponent_is_a_number(self, raw: int, text: str) -> None:
        """Decision §9.1: a special mantissa with a non-zero exponent is an ordinary number."""
        value = MedFloat16.from_raw(raw)
        assert value.special is None
        assert Decimal(text) == value.to_decimal()

    def test_every_pattern_round_trips(self) -> None:
        """All 65536 bit patterns decode, and re-encode to the same two octets."""
        specials = 0
        for raw in range(0x10000):
            data = raw.to_bytes(2, "little")
            value = MedFloat16.from_bytes(data)
            assert data == bytes(value)
            specials += value.special is not None
        assert specials == 5

    @pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03"])
    def test_wrong_length_is_rejected(self, data: bytes) -> None:
        """from_bytes wants exactly 2 octets and names SFLOAT in the error."""
        with pytest.raises(DecodeError) as info:
            MedFloat16.from_bytes(data)
        assert info.value.characteristic == "SFLOAT"
        assert f"needs 2 octets, got {len(data)}" == info.value.reason


class TestSFloatEncode:
    """Encoding 16-bit SFLOAT."""

    @pytest.mark.parametrize(
        ("text", "raw"),
        [
            ("2.0", 0xF014),
            ("2", 0x0002),
            ("2.00", 0xE0C8),
            ("-1234", 0x0B2E),
            ("10.1", 0xF065),
            ("20000", 0x17D0),
            ("0.000093", 0xA05D),
            ("0.0", 0xF000),
            ("0E-20", 0x8000),
            ("2045", 0x07FD),
            ("-2045", 0x0803),
            ("2045E1", 0x17FD),
            ("1E+8", 0x700A),
        ],
    )
    def test_from_decimal(self, text: str, raw: int) -> None:
        """from_decimal keeps the precision given, folding zeros only when needed."""
        assert raw == MedFloat16.from_decimal(Decimal(text)).raw

    @pytest.mark.parametrize(
        "text", ["2046", "-2046", "2047", "1E-9", "12345", "1E+11", "2046E1", "x"]
    )
    def test_not_representable(self, text: str) -> None:
        """Values needing rounding or a special mantissa are refused with ValueError."""
        with pytest.raises(ValueError, match="SFLOAT"):
            MedFloat16.from_decimal(text)

    @pytest.mark.parametrize(
        ("text", "special"),
        [
            ("NaN", SpecialValue.NAN),
            ("Infinity", SpecialValue.POSITIVE_INFINITY),
            ("-Infinity", SpecialValue.NEGATIVE_INFINITY),
        ],
    )
    def test_decimal_specials(self, text: str, special: SpecialValue) -> None:
        """Decimal NaN and infinities encode as the matching special codes."""
        assert MedFloat16.from_special(special) == MedFloat16.from_decimal(Decimal(text))

    @pytest.mark.parametrize(("raw", "special"), sorted(SFLOAT_SPECIALS.items()))
    def test_from_special(self, raw: int, special: SpecialValue) -> None:
        """from_special builds the exact code."""
        assert raw == MedFloat16.from_special(special).raw

    def test_inconsistent_fields_are_refused(self) -> None:
        """A special flag without its code, or a code without its flag, is a ValueError."""
        with pytest.raises(ValueError, match="disagree"):
            MedFloat16(2047, 0)
        with pytest.raises(ValueError, match="disagree"):
            MedFloat16(1, 0, SpecialValue.NAN)
        with pytest.raises(ValueError, match="mantissa"):
            MedFloat16(2048, 0)
        with pytest.raises(ValueError, match="exponent"):
            MedFloat16(1, 8)

    @given(
        st.integers(-2045, 2045).filter(lambda m: m % 10 != 0),
        st.integers(-8, 7),
    )
    def test_decimal_round_trip(self, mantissa: int, exponent: int) -> None:
        """A number without trailing zeros encodes back to the same mantissa and exponent."""
        value = MedFloat16(mantissa, exponent)
        assert value == MedFloat16.from_decimal(value.to_decimal())

    def test_repr_hides_the_number(self) -> None:
        """The repr never shows the value (reprs reach logs)."""
        assert repr(MedFloat16.from_raw(0xF065)) == "MedFloat16(<number>)"
        assert repr(MedFloat16.from_raw(0x07FF)) == "MedFloat16(special=NAN)"


class TestFloat32:
    """The 32-bit FLOAT."""

    @pytest.mark.parametrize(
        ("data", "mantissa", "exponent", "text"),
        [
            ("87d612fe", 1234567, -2, "12345.67"),
            ("01000000", 1, 0, "1"),
            ("010203ff", 197121, -1, "19712.1"),
            ("7201007f", 370, 127, "3.70E+129"),
            ("140000ff", 20, -1, "2.0"),
        ],
    )
    def test_examples(self, data: str, mantissa: int, exponent: int, text: str) -> None:
        """FLOAT examples decode with an 8-bit two's-complement exponent, no bias."""
        value = MedFloat32.from_bytes(bytes.fromhex(data))
        assert (mantissa, exponent) == (value.mantissa, value.exponent)
        assert text == value.fhir_decimal

    @pytest.mark.parametrize(("raw", "special"), sorted(FLOAT_SPECIALS.items()))
    def test_special_codes(self, raw: int, special: SpecialValue) -> None:
        """The five exact FLOAT codes are specials and round-trip."""
        value = MedFloat32.from_raw(raw)
        assert special is value.special
        assert raw == MedFloat32.from_special(special).raw

    @given(st.binary(min_size=4, max_size=4))
    def test_round_trip(self, data: bytes) -> None:
        """Every 4-octet value decodes and re-encodes to itself."""
        assert data == bytes(MedFloat32.from_bytes(data))

    def test_from_decimal(self) -> None:
        """FLOAT encodes 12345.67 as 1234567e-2 and refuses 8388606 (the +INF mantissa)."""
        assert bytes.fromhex("87d612fe") == bytes(MedFloat32.from_decimal("12345.67"))
        with pytest.raises(ValueError, match="FLOAT"):
            MedFloat32.from_decimal(8_388_606)

    def test_wrong_length_is_rejected(self) -> None:
        """from_bytes wants exactly 4 octets and names FLOAT in the error."""
        with pytest.raises(DecodeError) as info:
            MedFloat32.from_bytes(b"\x00\x00")
        assert (info.value.characteristic, info.value.reason) == ("FLOAT", "needs 4 octets, got 2")
