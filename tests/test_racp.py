"""Tests of drivers.racp: Record Access Control Point requests and responses."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from agent.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.racp import (
    FilterType,
    NumberOfStoredRecords,
    OpCode,
    Operator,
    RacpRequest,
    RacpService,
    ResponseCode,
    ResponseCodeIndication,
    decode_response,
)

EARLY = DateTime(2024, 1, 1, 0, 0, 0)
LATE = DateTime(2024, 1, 2, 0, 0, 0)


class TestRequests:
    """Requests the hub writes."""

    @pytest.mark.parametrize(
        ("request_", "wire"),
        [
            (RacpRequest.report_all(), "0101"),
            (RacpRequest.report_from(10), "0103010a00"),
            (RacpRequest.report_range(10, 20), "0104010a001400"),
            (RacpRequest.count_all(), "0401"),
            (RacpRequest.count_from(0x0102), "0403010201"),
            (RacpRequest.delete_all(), "0201"),
            (RacpRequest.abort(), "0300"),
            (RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.FIRST_RECORD), "0105"),
            (RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD), "0106"),
            (
                RacpRequest(
                    OpCode.REPORT_STORED_RECORDS,
                    Operator.WITHIN_RANGE_OF,
                    FilterType.USER_FACING_TIME,
                    (EARLY, LATE),
                ),
                "010402e80701010000 00e80701020000 00".replace(" ", ""),
            ),
        ],
    )
    def test_encode_and_decode(self, request_: RacpRequest, wire: str) -> None:
        """Each request encodes to the spec's frame and decodes back from it."""
        assert bytes(request_).hex() == wire
        assert RacpRequest.from_bytes(bytes.fromhex(wire)) == request_

    @pytest.mark.parametrize(
        ("wire", "reason"),
        [
            ("", "Op Code missing"),
            ("01", "Operator missing"),
            ("0901", "unknown op code 0x09"),
            ("0600", "op code 0x06 is not a request"),
            ("0107", "unknown operator 0x07"),
            ("0100", "needs a non-Null operator"),
            ("0301", "Abort takes the Null operator"),
            ("030000", "1 trailing octet"),
            ("010100", "1 trailing octet"),
            ("0103", "Filter Type missing"),
            ("010303", "unknown filter type 0x03"),
            ("0103010a", "Filter Value (sequence_number) incomplete"),
            ("0103010a0000", "1 trailing octet"),
            ("0104011400", "Maximum (sequence_number) missing"),
            ("01040114000a00", "range minimum exceeds maximum"),
        ],
    )
    def test_rejected(self, wire: str, reason: str) -> None:
        """Malformed requests raise DecodeError naming 0x2A52 and the problem."""
        with pytest.raises(DecodeError, match=re.escape(reason)) as info:
            RacpRequest.from_bytes(bytes.fromhex(wire))
        assert info.value.characteristic == "0x2A52"

    def test_constructor_validates(self) -> None:
        """A request built with a wrong operand is refused with ValueError."""
        with pytest.raises(ValueError, match="takes a filter type and 2"):
            RacpRequest(
                OpCode.REPORT_STORED_RECORDS,
                Operator.WITHIN_RANGE_OF,
                FilterType.SEQUENCE_NUMBER,
                (1,),
            )
        with pytest.raises(ValueError, match="does not fit uint16"):
            RacpRequest.report_from(0x10000)
        with pytest.raises(ValueError, match="does not match the filter type"):
            RacpRequest(
                OpCode.REPORT_STORED_RECORDS,
                Operator.GREATER_THAN_OR_EQUAL_TO,
                FilterType.SEQUENCE_NUMBER,
                (EARLY,),
            )

    def test_service_rules(self) -> None:
        """PLXS allows only 'all records'; CGMS and BPS have no user-facing-time filter."""
        RacpRequest.report_all().check_for(RacpService.PLXS)
        RacpRequest.abort().check_for(RacpService.PLXS)
        with pytest.raises(ValueError, match="PLXS"):
            RacpRequest.report_from(3).check_for(RacpService.PLXS)
        uft = RacpRequest(
            OpCode.REPORT_STORED_RECORDS,
            Operator.GREATER_THAN_OR_EQUAL_TO,
            FilterType.USER_FACING_TIME,
            (EARLY,),
        )
        uft.check_for(RacpService.GLS)
        for service in (RacpService.CGMS, RacpService.BPS):
            with pytest.raises(ValueError, match="user-facing-time"):
                uft.check_for(service)


class TestResponses:
    """Indications from the device."""

    def test_count(self) -> None:
        """``05 00 02 01`` is 258 records and round-trips."""
        response = decode_response(bytes.fromhex("05000201"))
        assert response == NumberOfStoredRecords(258)
        assert bytes(response) == bytes.fromhex("05000201")

    @pytest.mark.parametrize(
        ("wire", "request_op", "code"),
        [
            ("06000101", 1, ResponseCode.SUCCESS),
            ("06000106", 1, ResponseCode.NO_RECORDS_FOUND),
            ("06000301", 3, ResponseCode.SUCCESS),
            ("06000c02", 12, ResponseCode.OP_CODE_NOT_SUPPORTED),
            ("0600010a", 1, None),
        ],
    )
    def test_response_code(self, wire: str, request_op: int, code: ResponseCode | None) -> None:
        """Response Code keeps raw octets and names the known codes."""
        response = decode_response(bytes.fromhex(wire))
        assert isinstance(response, ResponseCodeIndication)
        assert (response.request_op_code, response.code) == (request_op, code)
        assert response.succeeded is (code is ResponseCode.SUCCESS)
        assert bytes(response).hex() == wire

    @pytest.mark.parametrize(
        ("wire", "reason"),
        [
            ("", "too short for a response"),
            ("06", "too short for a response"),
            ("0101", "op code 0x01 is not a response"),
            ("0800", "op code 0x08 is not a response"),
            ("060101", "operator must be Null"),
            ("050001", "Number of Records (uint16) incomplete"),
            ("050004030201", "2 trailing octet"),
            ("060001", "Response Code missing"),
            ("0600010100", "1 trailing octet"),
        ],
    )
    def test_rejected(self, wire: str, reason: str) -> None:
        """Malformed responses raise DecodeError naming 0x2A52 (count must be uint16)."""
        with pytest.raises(DecodeError, match=re.escape(reason)) as info:
            decode_response(bytes.fromhex(wire))
        assert info.value.characteristic == "0x2A52"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RacpRequest(OpCode.RESPONSE_CODE, Operator.NULL), "not a request"),
        (
            lambda: RacpRequest(
                OpCode.REPORT_STORED_RECORDS,
                Operator.ALL_RECORDS,
                FilterType.SEQUENCE_NUMBER,
                (1,),
            ),
            "takes no operand",
        ),
        (lambda: NumberOfStoredRecords(0x10000), "uint16"),
        (lambda: ResponseCodeIndication(1, 256), "do not fit"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Malformed requests and responses cannot be built."""
    with pytest.raises(ValueError, match=message):
        build()
