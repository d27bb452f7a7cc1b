"""IEEE 11073-20601 numbers: SFLOAT (16 bit) and FLOAT (32 bit).

The Bluetooth SIG health services carry every measured value as one of these two
decimal floating-point formats (GSS names them ``medfloat16`` and ``medfloat32``):

- SFLOAT: exponent = bits 12-15, mantissa = bits 0-11.
- FLOAT:  exponent = bits 24-31, mantissa = bits 0-23.

Both fields are signed two's complement and the value is ``mantissa × 10**exponent``.
There is **no exponent bias** (IEEE 11073-20601 Annex F.8/F.9; a well-known Python
library subtracts 8 or 128, which is wrong: ``0x8078`` is 120e-8, not 120).

The exponent carries precision: ``0x0002`` is "2", ``0xF014`` is "2.0", ``0xE0C8``
is "2.00". :meth:`MedFloat16.to_decimal` keeps it, because the HL7 PHD IG requires
FHIR ``valueQuantity.value`` to keep the precision the device sent.

Special values
--------------
Five whole codes, all with exponent 0, are not numbers (mantissa shown for SFLOAT;
FLOAT uses the same pattern at 24 bits):

====================  ==========  ===========  ==============================
:class:`SpecialValue`  SFLOAT      FLOAT        mantissa
====================  ==========  ===========  ==============================
NAN                   ``0x07FF``  ``0x007FFFFF``  +(2**(n-1) - 1)
NRES                  ``0x0800``  ``0x00800000``  -(2**(n-1))
POSITIVE_INFINITY     ``0x07FE``  ``0x007FFFFE``  +(2**(n-1) - 2)
NEGATIVE_INFINITY     ``0x0802``  ``0x00800002``  -(2**(n-1) - 2)
RESERVED              ``0x0801``  ``0x00800001``  -(2**(n-1) - 1)
====================  ==========  ===========  ==============================

**Decision (spec facts §9 item 1): a special is recognised only by its exact code,
exponent 0.** A reserved mantissa with a non-zero exponent (``0xF7FF``, ``0x17FE``…)
decodes as the ordinary number it spells (``2047e-1``, ``2046e1``). Reasons:

- IEEE 11073-20601 defines each special as *exponent 0 and* that mantissa;
  Nordic's ``getFloatValue`` and the HL7 PHD IG test only the exact codes.
- Every bit pattern then has exactly one meaning, so decoding is total and
  ``bytes(MedFloat16.from_bytes(b)) == b`` for every ``b``.

Encoders never emit those mantissas in any exponent (:meth:`MedFloat16.from_decimal`
keeps ordinary mantissas within ±2045 / ±8388605), so a lenient reader elsewhere
cannot mistake our numbers for specials.
"""

from __future__ import annotations

import decimal
import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Self

from drivers.errors import DecodeError


class SpecialValue(enum.Enum):
    """The five reserved codes of IEEE 11073-20601; the value is the code used in JSON."""

    NAN = "NaN"
    NRES = "NRes"
    POSITIVE_INFINITY = "+INF"
    NEGATIVE_INFINITY = "-INF"
    RESERVED = "RFU"


def _special_mantissas(mantissa_bits: int) -> dict[int, SpecialValue]:
    """Map each special's mantissa (exponent 0) to the special, for a mantissa width."""
    top = 1 << (mantissa_bits - 1)
    return {
        top - 1: SpecialValue.NAN,
        -top: SpecialValue.NRES,
        top - 2: SpecialValue.POSITIVE_INFINITY,
        -(top - 2): SpecialValue.NEGATIVE_INFINITY,
        -(top - 1): SpecialValue.RESERVED,
    }


_SPECIAL_AS_DECIMAL: dict[SpecialValue, Decimal] = {
    SpecialValue.NAN: Decimal("NaN"),
    SpecialValue.NRES: Decimal("NaN"),
    SpecialValue.RESERVED: Decimal("NaN"),
    SpecialValue.POSITIVE_INFINITY: Decimal("Infinity"),
    SpecialValue.NEGATIVE_INFINITY: Decimal("-Infinity"),
}


def _signed(raw: int, bits: int) -> int:
    """Read ``raw`` (``bits`` wide) as two's complement."""
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


@dataclass(frozen=True, slots=True, repr=False)
class MedFloat:
    """Shared body of :class:`MedFloat16` and :class:`MedFloat32`; use those.

    Fields: ``mantissa`` and ``exponent`` as signed integers (for a special, the
    fields of its code), ``special`` set exactly when the code is one of the five.
    The repr never shows the number, since these hold patients' readings.
    """

    mantissa: int
    exponent: int
    special: SpecialValue | None = None

    # Set by each concrete class.
    NAME: ClassVar[str] = ""
    SIZE: ClassVar[int] = 0
    MANTISSA_BITS: ClassVar[int] = 0
    EXPONENT_BITS: ClassVar[int] = 0
    #: Largest ordinary mantissa magnitude an encoder may use (specials excluded).
    MAX_ORDINARY_MANTISSA: ClassVar[int] = 0
    _SPECIALS: ClassVar[dict[int, SpecialValue]] = {}

    def __post_init__(self) -> None:
        top_m = 1 << (self.MANTISSA_BITS - 1)
        top_e = 1 << (self.EXPONENT_BITS - 1)
        if not -top_m <= self.mantissa < top_m:
            raise ValueError(f"{self.NAME} mantissa does not fit {self.MANTISSA_BITS} bits")
        if not -top_e <= self.exponent < top_e:
            raise ValueError(f"{self.NAME} exponent does not fit {self.EXPONENT_BITS} bits")
        code_special = self._SPECIALS.get(self.mantissa) if self.exponent == 0 else None
        if code_special is not self.special:
            # Either a special whose fields do not spell its code, or an ordinary
            # number whose fields spell a special: both would not round-trip.
            raise ValueError(f"{self.NAME} mantissa/exponent disagree with 'special'")

    def __repr__(self) -> str:
        """Name the type and any special code, never the number: reprs reach logs."""
        if self.special is not None:
            return f"{type(self).__name__}(special={self.special.name})"
        return f"{type(self).__name__}(<number>)"

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_raw(cls, raw: int) -> Self:
        """Decode the unsigned integer read little-endian from the wire."""
        if not 0 <= raw < 1 << (8 * cls.SIZE):
            raise ValueError(f"{cls.NAME} raw value does not fit {8 * cls.SIZE} bits")
        mantissa = _signed(raw & ((1 << cls.MANTISSA_BITS) - 1), cls.MANTISSA_BITS)
        exponent = _signed(raw >> cls.MANTISSA_BITS, cls.EXPONENT_BITS)
        special = cls._SPECIALS.get(mantissa) if exponent == 0 else None
        return cls(mantissa, exponent, special)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly ``SIZE`` little-endian octets; every bit pattern is valid.

        Raises:
            DecodeError: ``data`` is not exactly ``SIZE`` octets long.
        """
        if len(data) != cls.SIZE:
            raise DecodeError(cls.NAME, f"needs {cls.SIZE} octets, got {len(data)}")
        return cls.from_raw(int.from_bytes(data, "little"))

    @classmethod
    def from_special(cls, special: SpecialValue) -> Self:
        """Build the exact code of ``special``."""
        mantissa = next(m for m, s in cls._SPECIALS.items() if s is special)
        return cls(mantissa, 0, special)

    @classmethod
    def from_decimal(cls, value: Decimal | int | str) -> Self:
        """Encode ``value`` exactly, keeping its precision (``"2.0"`` -> 20e-1).

        Trailing zeros are folded into the exponent only when the mantissa would
        not fit otherwise (``"20000"`` -> 2000e1 for SFLOAT). ``NaN`` and
        ``±Infinity`` map to the specials NAN and ±INFINITY.

        Raises:
            ValueError: ``value`` is not a number, or cannot be represented without
                rounding (too many significant digits, exponent out of range).
        """
        try:
            number = Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(f"{cls.NAME}: not a decimal number") from None
        if number.is_nan():
            return cls.from_special(SpecialValue.NAN)
        if number.is_infinite():
            return cls.from_special(
                SpecialValue.NEGATIVE_INFINITY if number < 0 else SpecialValue.POSITIVE_INFINITY
            )
        sign, digits, exp = number.as_tuple()
        assert isinstance(exp, int)  # finite numbers have an int exponent
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        exponent = exp
        e_max = (1 << (cls.EXPONENT_BITS - 1)) - 1
        e_min = -(1 << (cls.EXPONENT_BITS - 1))
        m_max = cls.MAX_ORDINARY_MANTISSA
        if mantissa == 0:
            # Zero fits any exponent; keep the sender's as far as the field allows.
            return cls(0, min(max(exponent, e_min), e_max), None)
        while (abs(mantissa) > m_max or exponent < e_min) and mantissa % 10 == 0:
            mantissa //= 10
            exponent += 1
        while exponent > e_max and abs(mantissa * 10) <= m_max:
            mantissa *= 10
            exponent -= 1
        if abs(mantissa) > m_max or not e_min <= exponent <= e_max:
            raise ValueError(f"{cls.NAME}: value not representable without rounding")
        return cls(mantissa, exponent, None)

    # -- encoding -------------------------------------------------------------------

    @property
    def raw(self) -> int:
        """The unsigned integer sent little-endian on the wire."""
        m = self.mantissa & ((1 << self.MANTISSA_BITS) - 1)
        e = self.exponent & ((1 << self.EXPONENT_BITS) - 1)
        return (e << self.MANTISSA_BITS) | m

    def __bytes__(self) -> bytes:
        """The ``SIZE`` octets as sent on the wire."""
        return self.raw.to_bytes(self.SIZE, "little")

    # -- reading ----------------------------------------------------------------------

    @property
    def is_number(self) -> bool:
        """True unless this is one of the five special codes."""
        return self.special is None

    def to_decimal(self) -> Decimal:
        """The exact value with the sender's precision (0xF014 -> ``Decimal("2.0")``).

        NaN, NRes and RFU give ``Decimal("NaN")``; the infinities ``Decimal("±Infinity")``.
        Check :attr:`special` first when the difference matters (FHIR maps NaN to
        ``not-a-number`` but NRes/RFU to ``error``).
        """
        if self.special is not None:
            return _SPECIAL_AS_DECIMAL[self.special]
        return Decimal(f"{self.mantissa}E{self.exponent}")

    @property
    def value(self) -> float:
        """The value as a float (NaN for NaN/NRes/RFU, ±inf for the infinities)."""
        return float(self.to_decimal())

    @property
    def fhir_decimal(self) -> str | None:
        """The value as a FHIR decimal string keeping precision ("2.0"), None for specials.

        Positive exponents use E notation (``513e7`` -> ``"5.13E+9"``), which FHIR
        decimals allow and which does not claim digits the device never sent.
        """
        return None if self.special is not None else str(self.to_decimal())


@dataclass(frozen=True, slots=True, repr=False)
class MedFloat16(MedFloat):
    """IEEE 11073-20601 SFLOAT: 4-bit exponent, 12-bit mantissa (GSS ``medfloat16``)."""

    NAME: ClassVar[str] = "SFLOAT"
    SIZE: ClassVar[int] = 2
    MANTISSA_BITS: ClassVar[int] = 12
    EXPONENT_BITS: ClassVar[int] = 4
    # 2**11 - 3: +2046/+2047 and -2046..-2048 are the special mantissas.
    MAX_ORDINARY_MANTISSA: ClassVar[int] = 2045
    _SPECIALS: ClassVar[dict[int, SpecialValue]] = _special_mantissas(12)


@dataclass(frozen=True, slots=True, repr=False)
class MedFloat32(MedFloat):
    """IEEE 11073-20601 FLOAT: 8-bit exponent, 24-bit mantissa (GSS ``medfloat32``)."""

    NAME: ClassVar[str] = "FLOAT"
    SIZE: ClassVar[int] = 4
    MANTISSA_BITS: ClassVar[int] = 24
    EXPONENT_BITS: ClassVar[int] = 8
    # 2**23 - 3, for the same reason as SFLOAT.
    MAX_ORDINARY_MANTISSA: ClassVar[int] = 8_388_605
    _SPECIALS: ClassVar[dict[int, SpecialValue]] = _special_mantissas(24)


#: Short aliases matching the names the Bluetooth specifications use.
SFloat = MedFloat16
Float = MedFloat32
