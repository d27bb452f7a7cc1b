"""The server side of the Record Access Control Point 0x2A52, sans I/O (for emulated meters).

Written from GLS 1.0 §3.4 / the GATT XML ``record_access_control_point`` (ble-spec-facts
§4.4), independently of ``drivers/racp.py`` (the hub's client side): an emulator sharing
the hub's code could not catch the hub's mistakes.

A request is ``Op Code (u8) | Operator (u8) | Operand``; :meth:`RacpServer.handle` turns
the written bytes into what the device must do, or raises :class:`RacpAttError` for the
ATT Error Response GLS prescribes instead of a Write Response:

- 0x80 *Procedure Already In Progress*: any request but Abort while a procedure runs;
- 0x81 *Client Characteristic Configuration Descriptor Improperly Configured*: RACP
  indications not enabled, or (for "report stored records") Glucose Measurement
  notifications not enabled (TI ``glucoseservice``; ble-spec-facts §4.4-4.5).

The answers (GLS 1.0 §3.4.1-3.4.2):

- Report stored records (0x01): the matching records, then the Response Code indication
  ``06 00 01 01`` (success) or ``06 00 01 06`` (no records found).
- Delete stored records (0x02): ``06 00 02 01`` / ``06 00 02 06``.
- Abort (0x03, Null operator): ``06 00 03 01``; the running report stops before its next
  record.
- Report number of stored records (0x04): ``05 00 <uint16 count>``.
- Errors: ``06 00 <op> <code>`` with 0x02 op code not supported, 0x03 invalid operator,
  0x04 operator not supported, 0x05 invalid operand, 0x09 operand not supported (an
  unknown filter type).

Operators: 0x01 all, 0x02 ≤, 0x03 ≥, 0x04 within range (min, max inclusive), 0x05 first
(oldest), 0x06 last (newest). Filter types for 0x02-0x04: 0x01 sequence number (uint16),
0x02 user-facing time (7-octet Date Time).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

ATT_PROCEDURE_ALREADY_IN_PROGRESS: Final = 0x80
"""GLS 1.0 §3.4 application error (newer services use the common 0xFE)."""
ATT_CCCD_IMPROPERLY_CONFIGURED: Final = 0x81
"""GLS 1.0 §3.4 application error (newer services use the common 0xFD)."""

DATE_TIME_SIZE: Final = 7


class Op(enum.IntEnum):
    """RACP op codes (GLS 1.0 §3.4)."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class Operator(enum.IntEnum):
    """RACP operators."""

    NULL = 0x00
    ALL = 0x01
    LESS_OR_EQUAL = 0x02
    GREATER_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST = 0x05
    LAST = 0x06


class Code(enum.IntEnum):
    """RACP Response Code values (GLS 1.0 §3.4.2)."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


FILTER_SEQUENCE_NUMBER: Final = 0x01
FILTER_USER_FACING_TIME: Final = 0x02


class Record(Protocol):
    """What the server needs of a stored record."""

    @property
    def sequence_number(self) -> int: ...

    def user_facing_time_key(self) -> tuple[int, ...]:
        """(year, month, day, hours, minutes, seconds) of Base Time + Time Offset."""
        ...


class RacpAttError(Exception):
    """Answer the write with this ATT error code instead of a Write Response."""

    def __init__(self, code: int) -> None:
        super().__init__(f"ATT error 0x{code:02X}")
        self.code = code


def response_code(op: int, code: Code) -> bytes:
    """``06 00 <request op code> <response code>``."""
    return bytes((Op.RESPONSE_CODE, Operator.NULL, op, code))


def number_of_records(count: int) -> bytes:
    """``05 00 <uint16 count>``."""
    return bytes((Op.NUMBER_OF_STORED_RECORDS_RESPONSE, Operator.NULL)) + count.to_bytes(
        2, "little"
    )


@dataclass(frozen=True, slots=True)
class Report:
    """Send these records (in order), then indicate ``final`` unless aborted."""

    records: tuple[Record, ...]
    final: bytes


@dataclass(frozen=True, slots=True)
class Respond:
    """Indicate ``value`` (and run ``then`` first, e.g. a deletion)."""

    value: bytes
    then: Callable[[], None] | None = None


Action = Report | Respond


class _Invalid(Exception):
    def __init__(self, code: Code) -> None:
        self.code = code


def _date_key(data: bytes) -> tuple[int, ...]:
    year = int.from_bytes(data[0:2], "little")
    return (year, *data[2:7])


class RacpServer:
    """One RACP's state: whether a procedure runs, and whether it was asked to abort.

    The I/O layer calls :meth:`handle` for every write, performs the returned action, and
    calls :meth:`finished` when it ends (records sent and the final value indicated, or
    the link went).
    """

    def __init__(self, records: Callable[[], Sequence[Record]], delete: Callable[[int], None]):
        """``records()``: the stored records oldest first; ``delete(seq)`` forgets one."""
        self._records = records
        self._delete = delete
        self.busy = False
        self.abort_requested = False

    def finished(self) -> None:
        """The running procedure ended (or the link went)."""
        self.busy = False
        self.abort_requested = False

    def handle(
        self, data: bytes, *, racp_indications: bool, measurement_notifications: bool
    ) -> Action:
        """What the device does for the written ``data``.

        Raises:
            RacpAttError: 0x80 while busy (except Abort), 0x81 for an unconfigured CCCD.
        """
        if not racp_indications:
            raise RacpAttError(ATT_CCCD_IMPROPERLY_CONFIGURED)
        op = data[0] if data else 0
        if self.busy:
            if op == Op.ABORT_OPERATION and data[1:] == bytes((Operator.NULL,)):
                self.abort_requested = True
                return Respond(response_code(Op.ABORT_OPERATION, Code.SUCCESS))
            raise RacpAttError(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        if op == Op.REPORT_STORED_RECORDS and not measurement_notifications:
            raise RacpAttError(ATT_CCCD_IMPROPERLY_CONFIGURED)
        try:
            return self._act(data)
        except _Invalid as exc:
            return Respond(response_code(op, exc.code))

    def _act(self, data: bytes) -> Action:
        if len(data) < 2:
            raise _Invalid(Code.INVALID_OPERAND if data else Code.OP_CODE_NOT_SUPPORTED)
        op, operator, operand = data[0], data[1], data[2:]
        if op == Op.ABORT_OPERATION:
            if operator != Operator.NULL:
                raise _Invalid(Code.INVALID_OPERATOR)
            if operand:
                raise _Invalid(Code.INVALID_OPERAND)
            return Respond(response_code(op, Code.SUCCESS))
        if op not in (
            Op.REPORT_STORED_RECORDS,
            Op.DELETE_STORED_RECORDS,
            Op.REPORT_NUMBER_OF_STORED_RECORDS,
        ):
            raise _Invalid(Code.OP_CODE_NOT_SUPPORTED)
        selected = self._select(operator, operand)
        if op == Op.REPORT_NUMBER_OF_STORED_RECORDS:
            return Respond(number_of_records(len(selected)))
        if op == Op.DELETE_STORED_RECORDS:
            if not selected:
                return Respond(response_code(op, Code.NO_RECORDS_FOUND))
            doomed = [r.sequence_number for r in selected]

            def delete() -> None:
                for seq in doomed:
                    self._delete(seq)

            return Respond(response_code(op, Code.SUCCESS), then=delete)
        if not selected:
            return Respond(response_code(op, Code.NO_RECORDS_FOUND))
        self.busy = True
        self.abort_requested = False
        return Report(tuple(selected), response_code(op, Code.SUCCESS))

    def _select(self, operator: int, operand: bytes) -> list[Record]:
        records = list(self._records())
        if operator == Operator.NULL or operator > Operator.LAST:
            raise _Invalid(Code.INVALID_OPERATOR)
        if operator in (Operator.ALL, Operator.FIRST, Operator.LAST):
            if operand:
                raise _Invalid(Code.INVALID_OPERAND)
            if operator == Operator.ALL:
                return records
            if not records:
                return []
            return [records[0] if operator == Operator.FIRST else records[-1]]
        if not operand:
            raise _Invalid(Code.INVALID_OPERAND)
        filter_type, values = operand[0], operand[1:]
        if filter_type == FILTER_SEQUENCE_NUMBER:
            size = 2
        elif filter_type == FILTER_USER_FACING_TIME:
            size = DATE_TIME_SIZE
        else:
            raise _Invalid(Code.OPERAND_NOT_SUPPORTED)
        count = 2 if operator == Operator.WITHIN_RANGE else 1
        if len(values) != size * count:
            raise _Invalid(Code.INVALID_OPERAND)
        parts = [values[i * size : (i + 1) * size] for i in range(count)]

        def key(record: Record) -> tuple[int, ...]:
            if filter_type == FILTER_SEQUENCE_NUMBER:
                return (record.sequence_number,)
            return record.user_facing_time_key()

        def bound(part: bytes) -> tuple[int, ...]:
            if filter_type == FILTER_SEQUENCE_NUMBER:
                return (int.from_bytes(part, "little"),)
            return _date_key(part)

        bounds = [bound(p) for p in parts]
        if operator == Operator.LESS_OR_EQUAL:
            return [r for r in records if key(r) <= bounds[0]]
        if operator == Operator.GREATER_OR_EQUAL:
            return [r for r in records if key(r) >= bounds[0]]
        low, high = bounds
        if low > high:
            raise _Invalid(Code.INVALID_OPERAND)
        return [r for r in records if low <= key(r) <= high]
