"""Tests of drivers.wire: length checking and the field cursor."""

from __future__ import annotations

import pytest

from agent.errors import DecodeError
from drivers.wire import Cursor, check_length

LAYOUT = [("Flags", 1), ("Value", 2), ("Stamp", 7)]


class TestCheckLength:
    """check_length names the first missing field or counts the extra octets."""

    @pytest.mark.parametrize(
        ("length", "reason", "offset"),
        [
            (0, "Flags missing: flags 0x01 require 10 octets, got 0", 0),
            (2, "Value incomplete: flags 0x01 require 10 octets, got 2", 1),
            (3, "Stamp missing: flags 0x01 require 10 octets, got 3", 3),
            (9, "Stamp incomplete: flags 0x01 require 10 octets, got 9", 3),
            (12, "2 trailing octet(s) not explained by flags 0x01 (expected 10 octets)", 10),
        ],
    )
    def test_reasons(self, length: int, reason: str, offset: int) -> None:
        """The reason and offset say exactly what is missing or extra."""
        with pytest.raises(DecodeError) as info:
            check_length("0x2A35", bytes(length), LAYOUT, flags=1)
        assert (info.value.characteristic, info.value.reason, info.value.offset) == (
            "0x2A35",
            reason,
            offset,
        )

    def test_exact_length_passes(self) -> None:
        """A value of exactly the layout's size passes."""
        check_length("0x2A35", bytes(10), LAYOUT, flags=1)

    def test_without_flags(self) -> None:
        """Without flags the reason speaks of the layout."""
        with pytest.raises(
            DecodeError, match="1 trailing octet\\(s\\) not explained by the layout"
        ):
            check_length("0x2A19", b"\x01\x02", [("Battery Level", 1)])


class TestCursor:
    """Cursor reads little-endian fields and fails with a reason, never IndexError."""

    def test_reads(self) -> None:
        """Integers are little-endian; offset and remaining track progress."""
        cursor = Cursor("X", bytes.fromhex("0102fffe030405"))
        assert cursor.u16("a") == 0x0201
        assert cursor.sint(2, "b") == -257
        assert (cursor.offset, cursor.remaining) == (4, 3)
        assert cursor.uint(3, "c") == 0x050403
        cursor.finish()

    def test_short_read(self) -> None:
        """Reading past the end names the field and where it started."""
        cursor = Cursor("X", b"\x01")
        with pytest.raises(DecodeError) as info:
            cursor.u16("Pulse Rate")
        assert (info.value.reason, info.value.offset) == (
            "Pulse Rate missing: needs 2 octets, 1 left",
            0,
        )

    def test_unread_octets(self) -> None:
        """finish() rejects octets left unread."""
        cursor = Cursor("X", b"\x01\x02")
        cursor.u8("a")
        with pytest.raises(DecodeError, match="1 trailing octet"):
            cursor.finish()
