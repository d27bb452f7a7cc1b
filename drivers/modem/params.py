"""Parameters of one AT response line (V.250 §5.7.2; TS 27.007 §4.1), typed and checked.

``+CEREG: 2,1,"1A2B","01A2D001",7`` → prefix ``+CEREG``, five parameters: unquoted ones
(numbers, ``-``) and quoted strings (no escapes: the IRA and GSM character sets never put a
``"`` inside one). An empty parameter (``,,``) is omitted, as 27.007 writes ``[<tac>]``.

The getters take the parameter's index and its spec name, and raise
:class:`~drivers.errors.ModemProtocolError` naming both, the value only when it is short
and not an identifier: an error must never carry an IMSI, ICCID or IMEI, and never the line.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Self, TypeVar

from drivers.errors import ModemProtocolError

#: Values longer than this are not quoted in error reasons.
_MAX_QUOTED_VALUE: Final = 12
#: Integers have at most this many digits (the widest AT integer is a 36-bit NR cell id
#: in decimal, 11 digits; an ARFCN has 7).
_MAX_INT_DIGITS: Final = 12
_INTEGER: Final = re.compile(r"[+-]?\d+", re.ASCII)
_HEX: Final = re.compile(r"[0-9A-Fa-f]+", re.ASCII)
_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)

#: The placeholder Quectel (and others) write for a value they do not have.
UNKNOWN_TEXT: Final = "-"

_E = TypeVar("_E", bound=enum.Enum)


def is_digits(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits (``str.isdigit`` also accepts "²", "٣")."""
    return _DIGITS.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter as written: its text (without quotes) and whether it was quoted."""

    text: str
    quoted: bool

    @property
    def omitted(self) -> bool:
        """``,,``: the parameter is absent (an empty *quoted* string is a value)."""
        return not self.text and not self.quoted


def _tokenize(command: str, body: str) -> tuple[Param, ...]:
    params: list[Param] = []
    position = 0
    index = 0
    size = len(body)
    while True:
        while position < size and body[position] == " ":
            position += 1
        if position < size and body[position] == '"':
            end = body.find('"', position + 1)
            if end < 0:
                raise ModemProtocolError(command, "string", "unterminated", index)
            params.append(Param(body[position + 1 : end], True))
            position = end + 1
            while position < size and body[position] == " ":
                position += 1
            if position < size and body[position] != ",":
                raise ModemProtocolError(command, "string", "text after the closing quote", index)
        else:
            end = body.find(",", position)
            end = size if end < 0 else end
            params.append(Param(body[position:end].strip(" "), False))
            position = end
        if position >= size:
            return tuple(params)
        position += 1  # the comma
        index += 1


class Params:
    """The parameters of one response line, with checked getters.

    Attributes:
        command: the prefix (or, for a bare line, the command) named in errors.
        values: the parameters in order.
        sensitive: every value is an identifier: never quoted in errors.
    """

    __slots__ = ("command", "sensitive", "values")

    def __init__(self, command: str, values: tuple[Param, ...], sensitive: bool = False) -> None:
        self.command = command
        self.values = values
        self.sensitive = sensitive

    @classmethod
    def parse(cls, line: str, prefix: str, *, sensitive: bool = False) -> Self:
        """Split ``<prefix>: <p0>,<p1>,…``.

        Raises:
            ModemProtocolError: the line does not start with ``prefix:``, or a string is
                unterminated or followed by text.
        """
        if not line.startswith(prefix + ":"):
            raise ModemProtocolError(prefix, "prefix", f"line does not start with {prefix}:")
        return cls(prefix, _tokenize(prefix, line[len(prefix) + 1 :]), sensitive)

    def __len__(self) -> int:
        return len(self.values)

    # -- errors ----------------------------------------------------------------------------

    def error(self, index: int | None, field: str, reason: str) -> ModemProtocolError:
        """The error for parameter ``index`` (its spec name ``field``)."""
        return ModemProtocolError(self.command, field, reason, index)

    def _shown(self, value: str, secret: bool) -> str:
        if secret or self.sensitive or len(value) > _MAX_QUOTED_VALUE:
            return ""
        return f" {value!r}"

    def expect_count(self, field: str, minimum: int, maximum: int | None = None) -> None:
        """Refuse fewer than ``minimum`` or more than ``maximum`` parameters.

        ``field`` names what the count is of (e.g. ``"servingcell LTE"``).
        """
        count = len(self.values)
        if count < minimum:
            raise self.error(count, field, f"{count} parameters, at least {minimum} expected")
        if maximum is not None and count > maximum:
            raise self.error(maximum, field, f"{count} parameters, at most {maximum} expected")

    # -- getters ---------------------------------------------------------------------------

    def present(self, index: int) -> bool:
        """Whether parameter ``index`` exists and is not omitted."""
        return index < len(self.values) and not self.values[index].omitted

    def param(self, index: int, field: str) -> Param:
        """Parameter ``index``, which must exist and not be omitted."""
        if not self.present(index):
            raise self.error(index, field, "missing")
        return self.values[index]

    def text(self, index: int, field: str) -> str:
        """Parameter ``index`` as text, quoted or not."""
        return self.param(index, field).text

    def optional_text(self, index: int, field: str) -> str | None:
        """Parameter ``index`` as text; None when absent, omitted or ``-``."""
        if not self.present(index):
            return None
        value = self.values[index]
        if not value.quoted and value.text == UNKNOWN_TEXT:
            return None
        return value.text

    def quoted(self, index: int, field: str) -> str:
        """Parameter ``index``, which must be a quoted string."""
        value = self.param(index, field)
        if not value.quoted:
            raise self.error(index, field, "not a quoted string")
        return value.text

    def integer(
        self,
        index: int,
        field: str,
        minimum: int | None = None,
        maximum: int | None = None,
        *,
        secret: bool = False,
    ) -> int:
        """Parameter ``index`` as a decimal integer in ``[minimum, maximum]``."""
        value = self.param(index, field)
        return self._integer(index, field, value.text, minimum, maximum, secret)

    def optional_integer(
        self,
        index: int,
        field: str,
        minimum: int | None = None,
        maximum: int | None = None,
        *,
        unknown: Collection[int] = (),
    ) -> int | None:
        """Like :meth:`integer`; None when absent, omitted, ``-`` or one of ``unknown``."""
        text = self.optional_text(index, field)
        if text is None:
            return None
        if not _INTEGER.fullmatch(text) or len(text) > _MAX_INT_DIGITS:
            raise self.error(index, field, f"not an integer{self._shown(text, False)}")
        number = int(text)
        if number in unknown:
            return None
        return self._integer(index, field, text, minimum, maximum, False)

    def _integer(
        self,
        index: int,
        field: str,
        text: str,
        minimum: int | None,
        maximum: int | None,
        secret: bool,
    ) -> int:
        if not _INTEGER.fullmatch(text) or len(text) > _MAX_INT_DIGITS:
            raise self.error(index, field, f"not an integer{self._shown(text, secret)}")
        number = int(text)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            low = "" if minimum is None else str(minimum)
            high = "" if maximum is None else str(maximum)
            raise self.error(index, field, f"out of range {low}..{high}{self._shown(text, secret)}")
        return number

    def hexadecimal(self, index: int, field: str, max_digits: int) -> int:
        """Parameter ``index`` as hexadecimal (quoted or not) of at most ``max_digits``."""
        value = self.param(index, field)
        return self._hex(index, field, value.text, max_digits)

    def optional_hexadecimal(self, index: int, field: str, max_digits: int) -> int | None:
        """Like :meth:`hexadecimal`; None when absent, omitted, empty or ``-``."""
        text = self.optional_text(index, field)
        if not text:
            return None
        return self._hex(index, field, text, max_digits)

    def _hex(self, index: int, field: str, text: str, max_digits: int) -> int:
        if not _HEX.fullmatch(text):
            raise self.error(index, field, f"not hexadecimal{self._shown(text, False)}")
        if len(text) > max_digits:
            raise self.error(index, field, f"more than {max_digits} hexadecimal digits")
        return int(text, 16)

    def code(self, index: int, field: str, codes: type[_E], *, minimum: int = 0) -> _E:
        """Parameter ``index`` as a member of the IntEnum ``codes``."""
        number = self.integer(index, field, minimum)
        try:
            return codes(number)
        except ValueError:
            raise self.error(index, field, f"unknown code {number}") from None
