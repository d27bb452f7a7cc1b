"""Record Access Control Point 0x2A52: hub requests and device responses (GLS, CGMS, PLXS, BPS 1.1).

Frame: ``Op Code (u8) | Operator (u8) | Operand (variable)`` (GLS 1.0 §3.4 / GATT XML
record_access_control_point; spec facts §4.4).

- The hub **writes** requests (:class:`RacpRequest`): Report stored records (0x01),
  Delete stored records (0x02), Abort (0x03), Report number of stored records (0x04).
- The device **indicates** responses (:func:`decode_response`):
  Number of stored records (0x05, :class:`NumberOfStoredRecords`) and Response Code
  (0x06, :class:`ResponseCodeIndication`).

Decisions:

- **Strict responses.** Operator must be Null (0x00); the count operand is exactly a
  uint16 (GLS, CGMS and PLXS define it so; Nordic also accepts 1 and 4 octets, and a
  wrong count would silently cut a transfer short); the Response Code operand is
  exactly 2 octets. A request op code arriving as a "response" is rejected.
- **Raw codes are kept.** ``request_op_code`` and ``response_code`` are the raw
  octets (devices answer "op code not supported" for codes we never sent); the
  :attr:`ResponseCodeIndication.code` property names the ones GLS defines.
- **Filters.** Operators ≤ (0x02) and ≥ (0x03) carry a filter type and one value,
  Within range (0x04) a filter type and two (min, then max, min ≤ max). Filter type
  0x01 is a uint16 (GLS sequence number; CGMS time offset in minutes), 0x02 a 7-octet
  Date Time (GLS user-facing time). :meth:`RacpRequest.check_for` applies the
  per-service rules (PLXS: "all records" only; CGMS: filter 0x01 only).
- Combined Report 0x07/0x08 (newer GSS) is not supported: which service uses it
  could not be confirmed (spec facts §9 item 12).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from drivers.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.wire import Cursor, check_length

CHARACTERISTIC: Final = "0x2A52"


class OpCode(enum.IntEnum):
    """RACP op codes (0x07/0x08 Combined Report are not supported here)."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class Operator(enum.IntEnum):
    """RACP operators."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LESS_THAN_OR_EQUAL_TO = 0x02
    GREATER_THAN_OR_EQUAL_TO = 0x03
    WITHIN_RANGE_OF = 0x04
    FIRST_RECORD = 0x05
    LAST_RECORD = 0x06


class FilterType(enum.IntEnum):
    """Filter type octet preceding the operand of operators 0x02-0x04."""

    #: GLS: Sequence Number; CGMS: Time Offset (minutes). Both uint16.
    SEQUENCE_NUMBER = 0x01
    #: GLS: User Facing Time (Base Time + Time Offset), a 7-octet Date Time.
    USER_FACING_TIME = 0x02


class ResponseCode(enum.IntEnum):
    """RACP Response Code values (GLS 1.0)."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


class RacpService(enum.Enum):
    """Services whose RACP dialect :meth:`RacpRequest.check_for` knows."""

    GLS = "GLS"
    CGMS = "CGMS"
    PLXS = "PLXS"
    BPS = "BPS"


#: Request op codes that take a record-selecting operator.
_SELECTING: Final = frozenset(
    {
        OpCode.REPORT_STORED_RECORDS,
        OpCode.DELETE_STORED_RECORDS,
        OpCode.REPORT_NUMBER_OF_STORED_RECORDS,
    }
)
#: Number of filter values each operator carries (absent: no filter type either).
_OPERAND_COUNT: Final = {
    Operator.LESS_THAN_OR_EQUAL_TO: 1,
    Operator.GREATER_THAN_OR_EQUAL_TO: 1,
    Operator.WITHIN_RANGE_OF: 2,
}

FilterValue = int | DateTime


def _value_key(value: FilterValue) -> tuple[int, ...]:
    """Order filter values: ints numerically, Date Times field by field."""
    if isinstance(value, DateTime):
        return tuple(value.as_dict().values())
    return (value,)


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """One RACP request written by the hub.

    ``filter_type`` and ``operand`` are present exactly for operators 0x02-0x04:
    one value for ≤/≥, two (min, max) for "within range". Build requests with the
    named constructors (:meth:`report_all`, :meth:`report_from`…).
    """

    op_code: OpCode
    operator: Operator
    filter_type: FilterType | None = None
    operand: tuple[FilterValue, ...] = ()

    def __post_init__(self) -> None:
        problem = _request_problem(self.op_code, self.operator, self.filter_type, self.operand)
        if problem is not None:
            raise ValueError(f"RACP request: {problem}")

    # -- named constructors -------------------------------------------------------------

    @classmethod
    def report_all(cls) -> Self:
        """``01 01``: report every stored record."""
        return cls(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS)

    @classmethod
    def report_from(cls, first: int) -> Self:
        """``01 03 01 <u16>``: report records with sequence number (CGMS: offset) ≥ ``first``."""
        return cls(
            OpCode.REPORT_STORED_RECORDS,
            Operator.GREATER_THAN_OR_EQUAL_TO,
            FilterType.SEQUENCE_NUMBER,
            (first,),
        )

    @classmethod
    def report_range(cls, first: int, last: int) -> Self:
        """``01 04 01 <u16> <u16>``: report sequence numbers ``first``…``last`` inclusive."""
        return cls(
            OpCode.REPORT_STORED_RECORDS,
            Operator.WITHIN_RANGE_OF,
            FilterType.SEQUENCE_NUMBER,
            (first, last),
        )

    @classmethod
    def count_all(cls) -> Self:
        """``04 01``: report the number of stored records."""
        return cls(OpCode.REPORT_NUMBER_OF_STORED_RECORDS, Operator.ALL_RECORDS)

    @classmethod
    def count_from(cls, first: int) -> Self:
        """``04 03 01 <u16>``: count records with sequence number ≥ ``first``."""
        return cls(
            OpCode.REPORT_NUMBER_OF_STORED_RECORDS,
            Operator.GREATER_THAN_OR_EQUAL_TO,
            FilterType.SEQUENCE_NUMBER,
            (first,),
        )

    @classmethod
    def delete_all(cls) -> Self:
        """``02 01``: delete every stored record."""
        return cls(OpCode.DELETE_STORED_RECORDS, Operator.ALL_RECORDS)

    @classmethod
    def abort(cls) -> Self:
        """``03 00``: abort the running procedure."""
        return cls(OpCode.ABORT_OPERATION, Operator.NULL)

    # -- wire -----------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a request as written by a hub (``homehub decode 0x2A52 --from-hub``).

        Raises:
            DecodeError: unknown op code/operator/filter type, operand of the wrong size,
                or a range whose minimum exceeds its maximum.
        """
        check_length(CHARACTERISTIC, data[:2], [("Op Code", 1), ("Operator", 1)])
        try:
            op_code = OpCode(data[0])
        except ValueError:
            raise DecodeError(CHARACTERISTIC, f"unknown op code 0x{data[0]:02X}", 0) from None
        if op_code not in _SELECTING and op_code is not OpCode.ABORT_OPERATION:
            raise DecodeError(CHARACTERISTIC, f"op code 0x{data[0]:02X} is not a request", 0)
        try:
            operator = Operator(data[1])
        except ValueError:
            raise DecodeError(CHARACTERISTIC, f"unknown operator 0x{data[1]:02X}", 1) from None
        count = _OPERAND_COUNT.get(operator, 0)
        filter_type = None
        values: list[FilterValue] = []
        if count:
            head = [("Op Code", 1), ("Operator", 1), ("Filter Type", 1)]
            check_length(CHARACTERISTIC, data[:3], head)
            try:
                filter_type = FilterType(data[2])
            except ValueError:
                raise DecodeError(
                    CHARACTERISTIC, f"unknown filter type 0x{data[2]:02X}", 2
                ) from None
            size = 2 if filter_type is FilterType.SEQUENCE_NUMBER else DateTime.SIZE
            names = ["Minimum", "Maximum"] if count == 2 else ["Filter Value"]
            layout = head + [(f"{n} ({filter_type.name.lower()})", size) for n in names]
            check_length(CHARACTERISTIC, data, layout)
            cursor = Cursor(CHARACTERISTIC, data, offset=3)
            for n in names:
                if filter_type is FilterType.SEQUENCE_NUMBER:
                    values.append(cursor.u16(n))
                else:
                    values.append(DateTime.read(cursor, n))
        else:
            check_length(CHARACTERISTIC, data, [("Op Code", 1), ("Operator", 1)])
        problem = _request_problem(op_code, operator, filter_type, tuple(values))
        if problem is not None:
            raise DecodeError(CHARACTERISTIC, problem)
        return cls(op_code, operator, filter_type, tuple(values))

    def __bytes__(self) -> bytes:
        """The request as written to the device."""
        out = bytes((self.op_code, self.operator))
        if self.filter_type is not None:
            out += bytes((self.filter_type,))
        for value in self.operand:
            out += bytes(value) if isinstance(value, DateTime) else value.to_bytes(2, "little")
        return out

    def check_for(self, service: RacpService) -> None:
        """Raise ValueError if ``service``'s RACP does not accept this request.

        PLXS: only "all records" (and Null for Abort), no filters. CGMS: filter 0x01
        (time offset) only. BPS 1.1: filter 0x01 (sequence number) only; its
        user-facing-time filter is unverified (spec facts §3.4). GLS: both filters.
        """
        if service is RacpService.PLXS and self.operator not in (
            Operator.ALL_RECORDS,
            Operator.NULL,
        ):
            raise ValueError("PLXS RACP supports only the 'all records' operator")
        if (
            service in (RacpService.CGMS, RacpService.BPS)
            and self.filter_type is FilterType.USER_FACING_TIME
        ):
            raise ValueError(f"{service.value} RACP has no user-facing-time filter")


def _request_problem(
    op_code: OpCode,
    operator: Operator,
    filter_type: FilterType | None,
    operand: tuple[FilterValue, ...],
) -> str | None:
    """Why this request is malformed, or None (shared by decoding and construction)."""
    if op_code is OpCode.ABORT_OPERATION:
        if operator is not Operator.NULL or filter_type is not None or operand:
            return "Abort takes the Null operator and no operand"
        return None
    if op_code not in _SELECTING:
        return f"op code 0x{op_code:02X} is not a request"
    if operator is Operator.NULL:
        return "a record-selecting op code needs a non-Null operator"
    count = _OPERAND_COUNT.get(operator, 0)
    if count == 0:
        if filter_type is not None or operand:
            return f"operator 0x{operator:02X} takes no operand"
        return None
    if filter_type is None or len(operand) != count:
        return f"operator 0x{operator:02X} takes a filter type and {count} value(s)"
    want_date = filter_type is FilterType.USER_FACING_TIME
    for value in operand:
        if isinstance(value, DateTime) != want_date:
            return "filter value does not match the filter type"
        if isinstance(value, int) and not 0 <= value <= 0xFFFF:
            return "filter value does not fit uint16"
    if count == 2 and _value_key(operand[0]) > _value_key(operand[1]):
        return "range minimum exceeds maximum"
    return None


# -- responses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NumberOfStoredRecords:
    """Number of Stored Records Response ``05 00 <uint16>``."""

    number_of_records: int

    OP_CODE: ClassVar[OpCode] = OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE

    def __post_init__(self) -> None:
        if not 0 <= self.number_of_records <= 0xFFFF:
            raise ValueError("number of records does not fit uint16")

    def __bytes__(self) -> bytes:
        """The 4-octet indication."""
        return bytes((self.OP_CODE, Operator.NULL)) + self.number_of_records.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class ResponseCodeIndication:
    """Response Code ``06 00 <request op code> <response code>``; both octets raw."""

    request_op_code: int
    response_code: int

    OP_CODE: ClassVar[OpCode] = OpCode.RESPONSE_CODE

    def __post_init__(self) -> None:
        if not (0 <= self.request_op_code <= 0xFF and 0 <= self.response_code <= 0xFF):
            raise ValueError("Response Code operand octets do not fit")

    def __bytes__(self) -> bytes:
        """The 4-octet indication."""
        return bytes((self.OP_CODE, Operator.NULL, self.request_op_code, self.response_code))

    @property
    def code(self) -> ResponseCode | None:
        """The response code named, or None for values GLS 1.0 does not define."""
        try:
            return ResponseCode(self.response_code)
        except ValueError:
            return None

    @property
    def succeeded(self) -> bool:
        """True only for Success."""
        return self.response_code == ResponseCode.SUCCESS


RacpResponse = NumberOfStoredRecords | ResponseCodeIndication


def decode_response(data: bytes) -> RacpResponse:
    """Decode an RACP indication from the device.

    Raises:
        DecodeError: not a response op code, operator not Null, or an operand that is
            not exactly 2 octets.
    """
    if len(data) < 2:
        raise DecodeError(CHARACTERISTIC, f"too short for a response ({len(data)} octets)")
    if data[0] not in (OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, OpCode.RESPONSE_CODE):
        raise DecodeError(CHARACTERISTIC, f"op code 0x{data[0]:02X} is not a response", 0)
    if data[1] != Operator.NULL:
        raise DecodeError(CHARACTERISTIC, "response operator must be Null (0x00)", 1)
    if data[0] == OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        layout = [("Op Code", 1), ("Operator", 1), ("Number of Records (uint16)", 2)]
        check_length(CHARACTERISTIC, data, layout)
        return NumberOfStoredRecords(int.from_bytes(data[2:4], "little"))
    layout = [("Op Code", 1), ("Operator", 1), ("Request Op Code", 1), ("Response Code", 1)]
    check_length(CHARACTERISTIC, data, layout)
    return ResponseCodeIndication(data[2], data[3])
