"""The example message of docs/wire-format.md, made by the real pipeline with fixed inputs.

``python -m hil.wire_example`` prints the envelope in hex and decoded. The inputs are fixed
(an example signing key derived from a published scalar, a fixed reception time) and the
signature is deterministic (RFC 6979), so the output never changes unless the wire format
does; tests/test_wire_format_doc.py checks that the document still shows these exact bytes.
The example key is public: it signs nothing but this example.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from collections.abc import Mapping
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from agent.ble.bps_session import RawMeasurement
from agent.ingest import BLOOD_PRESSURE_MEASUREMENT, Signer, prepare
from agent.normalize.phd import Context
from agent.normalize.device import DeviceFacts
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16

#: A fixed P-256 private scalar for the example only (never a real hub's key).
EXAMPLE_KEY_SCALAR: Final = int.from_bytes(b"homehub wire-format example key!", "big")

EXAMPLE_DEVICE: Final = DeviceFacts(
    address="F0:00:00:00:10:01",
    system_id="0110000000FEFF00",
    manufacturer="Example Medical",
    model="BP-100",
    serial="EX-0001",
    firmware="1.0.3",
)
EXAMPLE_CONTEXT: Final = Context(
    hub_id="hub-0001",
    patient_id="patient-0001",
    timezone="Europe/Berlin",
    received=datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC),
)


def example_measurement() -> bytes:
    """128/82 mmHg, MAP 97, pulse 71, taken 2026-11-23 10:15:00 device time."""
    m = BloodPressureMeasurement.create(
        unit=PressureUnit.MMHG,
        systolic=MedFloat16.from_decimal(128),
        diastolic=MedFloat16.from_decimal(82),
        mean_arterial_pressure=MedFloat16.from_decimal(97),
        time_stamp=DateTime(2026, 11, 23, 10, 15, 0),
        pulse_rate=MedFloat16.from_decimal(71),
    )
    return bytes(m)


def example_signer() -> Signer:
    """The example's signing key."""
    return Signer.from_key(ec.derive_private_key(EXAMPLE_KEY_SCALAR, ec.SECP256R1()))


def example_envelope(seq: int = 1) -> bytes:
    """The whole published message for the example reading."""
    raw = RawMeasurement(
        characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
        data=example_measurement(),
        received_monotonic=0.0,
        received_wall=EXAMPLE_CONTEXT.received,
    )
    prepared = prepare(raw, EXAMPLE_DEVICE, EXAMPLE_CONTEXT)
    return prepared.envelope(seq, example_signer())


def _plain(value: Any) -> Any:
    """CBOR items as JSON-able values, marking tags and byte strings."""
    if isinstance(value, cbor2.CBORTag):
        return {f"tag({value.tag})": _plain(value.value)}
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, Decimal):
        return f"decimal({value})"
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def describe(envelope: bytes) -> dict[str, Any]:
    """The envelope decoded layer by layer: COSE_Sign1, protected header, payload."""
    tag = cbor2.loads(envelope)
    protected, unprotected, payload, signature = tag.value
    return {
        "COSE_Sign1 (tag 18)": {
            "protected": _plain(cbor2.loads(protected)),
            "unprotected": _plain(unprotected),
            "payload": _plain(cbor2.loads(payload)),
            "signature (r||s)": signature.hex(),
        }
    }


def main() -> None:
    """Print the example measurement, envelope hex and decoding."""
    envelope = example_envelope()
    print("measurement 0x2A35:", example_measurement().hex())
    print(f"envelope ({len(envelope)} bytes):")
    print("\n".join(textwrap.wrap(envelope.hex(), 96)))
    print(json.dumps(describe(envelope), indent=2))


if __name__ == "__main__":
    main()
