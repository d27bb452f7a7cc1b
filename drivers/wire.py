"""Length checking and little-endian field reading shared by the characteristic decoders.

Every decoder works the same way (a pattern, not a framework):

1. read the flags octet;
2. list the fields the flags announce, with their sizes (:data:`Layout`);
3. :func:`check_length` rejects a value that is shorter than the layout (naming the
   first field that is missing) or longer (counting the octets no flag explains);
4. read the fields with a :class:`Cursor`, which can then no longer run short.

All multi-octet fields of the Bluetooth SIG characteristics are little-endian
(GATT XML "fields are in the order of LSO to MSO").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

from drivers.errors import DecodeError
from drivers.ieee11073 import MedFloat16

#: The longest attribute value ATT can carry (Core Spec Vol 3 Part F §3.2.9), hence
#: the longest value any decoder is ever handed.
MAX_ATTRIBUTE_VALUE_LEN: Final = 512

#: Fields in wire order, each as (spec name used in error messages, size in octets).
Layout = Sequence[tuple[str, int]]

_FlagT = TypeVar("_FlagT", bound=enum.IntFlag)


def _flags_text(flags: int | None) -> str:
    return "" if flags is None else f"flags 0x{flags:02X} "


def check_length(
    characteristic: str, data: bytes, layout: Layout, *, flags: int | None = None
) -> None:
    """Reject ``data`` unless it holds exactly the fields of ``layout``.

    Args:
        characteristic: named in the error, e.g. ``"0x2A35"``.
        data: the whole characteristic value.
        layout: every field in wire order, flags octet included.
        flags: the flags octet, quoted in the error so a technician can see why
            the fields were expected.

    Raises:
        DecodeError: ``data`` is shorter (the reason names the first missing
            field) or longer (the reason counts the unexplained octets) than the layout.
    """
    total = sum(size for _, size in layout)
    if len(data) < total:
        end = 0
        for name, size in layout:
            end += size
            if end > len(data):
                state = "missing" if end - size >= len(data) else "incomplete"
                raise DecodeError(
                    characteristic,
                    f"{name} {state}: {_flags_text(flags)}require {total} octets, got {len(data)}",
                    offset=end - size,
                )
    if len(data) > total:
        extra = len(data) - total
        raise DecodeError(
            characteristic,
            f"{extra} trailing octet(s) not explained by "
            f"{_flags_text(flags) or 'the layout '}(expected {total} octets)",
            offset=total,
        )


def flags_octet(characteristic: str, data: bytes) -> int:
    """The leading flags octet of ``data``.

    Raises:
        DecodeError: ``data`` is empty (even the flags are missing).
    """
    if not data:
        check_length(characteristic, data, [("Flags", 1)])  # raises
    return data[0]


class Cursor:
    """Reads little-endian fields one after the other from a characteristic value.

    Running short raises :class:`DecodeError` naming the field, so a decoder that
    skipped :func:`check_length` still fails with a reason, never with IndexError.
    """

    __slots__ = ("_data", "_pos", "characteristic")

    def __init__(self, characteristic: str, data: bytes, offset: int = 0) -> None:
        self.characteristic = characteristic
        self._data = data
        self._pos = offset

    @property
    def offset(self) -> int:
        """Index of the next octet to read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Octets not read yet."""
        return len(self._data) - self._pos

    def take(self, size: int, field: str) -> bytes:
        """Return the next ``size`` octets as the field ``field``."""
        if self.remaining < size:
            raise DecodeError(
                self.characteristic,
                f"{field} missing: needs {size} octets, {self.remaining} left",
                offset=self._pos,
            )
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def uint(self, size: int, field: str) -> int:
        """An unsigned little-endian integer of ``size`` octets."""
        return int.from_bytes(self.take(size, field), "little")

    def sint(self, size: int, field: str) -> int:
        """A two's-complement little-endian integer of ``size`` octets."""
        return int.from_bytes(self.take(size, field), "little", signed=True)

    def u8(self, field: str) -> int:
        """A uint8."""
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        """A uint16."""
        return self.uint(2, field)

    def sfloat(self, field: str) -> MedFloat16:
        """An IEEE 11073 SFLOAT."""
        return MedFloat16.from_bytes(self.take(2, field))

    def finish(self) -> None:
        """Raise unless every octet was read (no unexplained trailing octets)."""
        if self.remaining:
            raise DecodeError(
                self.characteristic,
                f"{self.remaining} trailing octet(s) not explained by the value's fields",
                offset=self._pos,
            )


def optional_sfloat(value: MedFloat16 | None) -> bytes:
    """Encode an optional SFLOAT field: its two octets, or nothing when absent."""
    return b"" if value is None else bytes(value)


def optional_fields(flags: int, fields: Iterable[tuple[int, str, int]]) -> list[tuple[str, int]]:
    """The layout entries of the optional fields ``flags`` announces, in wire order.

    ``fields`` lists (presence flag, spec name, size in octets) in wire order; a flag
    may be listed more than once when it announces several fields.
    """
    return [(name, size) for flag, name, size in fields if flags & flag]


def check_presence(flags: int, pairs: Iterable[tuple[enum.IntFlag, object]]) -> None:
    """Raise ValueError unless ``flags`` fits one octet and each presence flag matches its field.

    ``pairs`` holds (presence flag, field value or None) for every optional field.
    """
    if not 0 <= flags <= 0xFF:
        raise ValueError("flags do not fit one octet")
    for flag, value in pairs:
        if bool(flags & flag) != (value is not None):
            raise ValueError(f"flag {flag.name} disagrees with the field's presence")


def presence_flags(flags: _FlagT, pairs: Iterable[tuple[int, object]]) -> _FlagT:
    """``flags`` with the presence flag of every field in ``pairs`` that is not None."""
    for flag, value in pairs:
        if value is not None:
            flags |= flag
    return flags
