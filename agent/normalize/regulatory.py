"""IEEE 11073-20601 Regulatory Certification Data List (DIS 0x2A2A) and its PhdDevice elements.

DIS 1.1 carries the list opaque, in the MDER encoding of IEEE 11073-20601 (ble-spec-facts §7,
[MEM]); the Continua Design Guidelines define its Continua entries::

    RegCertDataList ::= SEQUENCE OF RegCertData       -- count uint16, length uint16, entries
    RegCertData ::= SEQUENCE {
        auth-body-and-struc-type  { auth-body uint8, auth-body-struc-type uint8 },
        auth-body-data            ANY  -- length uint16, octets
    }
    auth-body 2 = Continua: struc-type 1 version {major uint8, minor uint8},
                            2 certified device list SEQUENCE OF uint16 (count, length, values),
                            3 regulation status BITS-16 (ASN.1 bit 0, the MSB: unregulated)

Decoding is strict (every length must match exactly; trailing octets are an error, as
everywhere in the hub); entries of other authorities are skipped. The PhdDevice then carries,
as the IG's example device shows: ``version`` MDC_REG_CERT_DATA_CONTINUA_VERSION ("6.0"),
one ``property`` MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST per certified interface, and
``property`` ASN1ToHL7 ``532354.0`` negated-regulation-status (true = *not* regulated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from agent.errors import DecodeError
from agent.normalize import codes

CHARACTERISTIC: Final = "0x2A2A"
AUTH_BODY_CONTINUA: Final = 2
STRUC_VERSION: Final = 1
STRUC_CERT_DEVICE_LIST: Final = 2
STRUC_REGULATION_STATUS: Final = 3
UNREGULATED_BIT: Final = 0x8000  #: ASN.1 BITS-16 bit 0 is the most significant bit

MDC_REG_CERT_DATA_CONTINUA_VERSION: Final = codes.Code(
    532352, "MDC_REG_CERT_DATA_CONTINUA_VERSION", "Continua version"
)
MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST: Final = codes.Code(
    532353, "MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST", "Continua certified device list"
)
CONTINUA_INTERFACE_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaPHDInterfaceIDs"


@dataclass(frozen=True, slots=True)
class RegulatoryData:
    """The Continua entries of a Regulatory Certification Data List (None: not present)."""

    version: tuple[int, int] | None = None
    certified_interfaces: tuple[int, ...] = ()
    unregulated: bool | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> RegulatoryData:
        """Decode the MDER list.

        Raises:
            DecodeError: a length does not match, or octets are missing or left over.
        """
        reader = _Reader(data)
        count, length = reader.u16("count"), reader.u16("length")
        if length != reader.remaining:
            raise DecodeError(CHARACTERISTIC, "list length does not match the value", 2)
        version: tuple[int, int] | None = None
        interfaces: tuple[int, ...] = ()
        unregulated: bool | None = None
        for _ in range(count):
            auth_body, struc_type = reader.u8("auth-body"), reader.u8("auth-body-struc-type")
            body = _Reader(reader.take(reader.u16("auth-body-data length"), "auth-body-data"))
            if auth_body != AUTH_BODY_CONTINUA:
                continue
            if struc_type == STRUC_VERSION:
                version = (body.u8("major"), body.u8("minor"))
            elif struc_type == STRUC_CERT_DEVICE_LIST:
                n, size = body.u16("count"), body.u16("length")
                if size != 2 * n:
                    raise DecodeError(CHARACTERISTIC, "certified device list length mismatch")
                interfaces = tuple(body.u16("certified device class") for _ in range(n))
            elif struc_type == STRUC_REGULATION_STATUS:
                unregulated = bool(body.u16("regulation-status") & UNREGULATED_BIT)
            else:
                continue
            body.end()
        reader.end()
        return cls(version, interfaces, unregulated)

    def device_versions(self) -> list[dict[str, Any]]:
        """``Device.version`` entries (the Continua version)."""
        if self.version is None:
            return []
        major, minor = self.version
        return [
            {
                "type": MDC_REG_CERT_DATA_CONTINUA_VERSION.codeable_concept(),
                "value": f"{major}.{minor}",
            }
        ]

    def device_properties(self) -> list[dict[str, Any]]:
        """``Device.property`` entries: certified interfaces, negated regulation status."""
        out: list[dict[str, Any]] = [
            {
                "type": MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST.codeable_concept(),
                "valueCode": [{"coding": [{"system": CONTINUA_INTERFACE_SYSTEM, "code": str(i)}]}],
            }
            for i in self.certified_interfaces
        ]
        if self.unregulated is not None:
            out.append(
                {
                    "type": {
                        "coding": [
                            {
                                "system": codes.ASN1_TO_HL7_SYSTEM,
                                "code": "532354.0",
                                "display": "negated-regulation-status",
                            }
                        ]
                    },
                    "valueCode": [
                        {
                            "coding": [
                                {
                                    "system": codes.YES_NO_SYSTEM,
                                    "code": "Y" if self.unregulated else "N",
                                }
                            ]
                        }
                    ],
                }
            )
        return out


class _Reader:
    """Big-endian MDER reader over one value, strict about its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, field: str) -> bytes:
        if self.remaining < size:
            raise DecodeError(CHARACTERISTIC, f"{field} needs {size} octets", self.offset)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def end(self) -> None:
        if self.remaining:
            raise DecodeError(CHARACTERISTIC, "trailing octets", self.offset)
