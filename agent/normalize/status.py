"""Status words by name: BLE status bits → the PHD IG's ASN1ToHL7 bit codes; implausible values.

ble-spec-facts §8.4: the IG's bit codes (``<MDC>.<n>``, CodeSystem ASN1ToHL7) number bits as
ASN.1 BITS do (bit 0 = most significant) and follow the IEEE 11073 *names*, while BLE numbers
bit 0 as the least significant. So each table below maps a BLE pattern to an IG code **by
name**, never by index arithmetic:

- :data:`BP_MEASUREMENT_STATUS` (BPS 0x2A35 Measurement Status → 8410608): bits 0, 1, 2 and 5
  by name; the 2-bit pulse-rate range field (bits 3-4) value 1 → ``.3`` pulse-over-range-limit,
  value 2 → ``.4`` pulse-under-range-limit (value 3 is RFU: nothing).
- :data:`GLUCOSE_SENSOR_STATUS` (GLS 0x2A18 Sensor Status Annunciation → 8417752): BLE bits
  0-10 match ``.0``-``.10`` by name. BLE bit 11 "time fault" has no IG code (``.11`` is
  sensor-temp-out-of-range, a different thing): see :data:`GLUCOSE_TIME_FAULT`.
- :data:`PLX_DEVICE_SENSOR_STATUS` (PLXS Device and Sensor Status → 150604): the names run in
  reverse: BLE bit 15 "sensor disconnected" is ``.0``, BLE bit 0 "extended display update" is
  ``.15``.

Only set bits are reported (all these bits are *events* in ASN1ToHL7), as the IG's
bpm-status.json example does: one component per bit, ``valueBoolean`` true (STU2
PhdBitsEnumerationObservation: ``component[bitsComponent].value[x] only boolean``; STU1.1
used v2-0136 ``Y``).
RFU bits are ignored here (the raw word stays in the decoded value).

Implausible values (:class:`PlausibleRange`, :func:`implausible`) are kept and flagged with an
``interpretation`` coded ``value-implausible`` in the hub's flag system: a wrong value is the
clinician's call, a dropped one is a lost reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from agent.normalize import codes


@dataclass(frozen=True, slots=True)
class StatusBit:
    """One IG bit code and the BLE pattern that means it: ``word & mask == value``."""

    mask: int
    value: int
    bit: int  #: the IG (ASN.1) bit number: the code is ``<mdc>.<bit>``
    name: str  #: the ASN1ToHL7 display, e.g. ``"body-movement"``
    text: str  #: what it means, for ``valueCodeableConcept.text``


@dataclass(frozen=True, slots=True)
class StatusTable:
    """A BLE status word's mapping onto one MDC bits attribute."""

    code: codes.Code
    bits: tuple[StatusBit, ...]

    def set_bits(self, word: int) -> tuple[StatusBit, ...]:
        """The IG bits ``word`` sets, in IG bit order."""
        return tuple(
            sorted((b for b in self.bits if word & b.mask == b.value), key=lambda b: b.bit)
        )


def _bit(ble_bit: int, ig_bit: int, name: str, text: str) -> StatusBit:
    return StatusBit(1 << ble_bit, 1 << ble_bit, ig_bit, name, text)


BP_PULSE_RANGE_MASK: Final = 0x0018
"""BPS Measurement Status bits 3-4: pulse-rate range (0 in range, 1 above, 2 below, 3 RFU)."""

BP_MEASUREMENT_STATUS: Final = StatusTable(
    codes.MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS,
    (
        _bit(0, 0, "body-movement", "Too much body movement"),
        _bit(1, 1, "cuff-too-loose", "The cuff was too loose"),
        _bit(2, 2, "irregular-pulse", "An irregular pulse was detected"),
        StatusBit(
            BP_PULSE_RANGE_MASK, 0x0008, 3, "pulse-over-range-limit",
            "The pulse was too high for sensor to work",
        ),
        StatusBit(
            BP_PULSE_RANGE_MASK, 0x0010, 4, "pulse-under-range-limit",
            "The pulse was too low for sensor to work",
        ),
        _bit(5, 5, "improper-body-position",
             "The cuff was incorrectly placed with respect to the heart"),
    ),
)  # fmt: skip

GLUCOSE_TIME_FAULT: Final = 1 << 11
"""GLS Sensor Status Annunciation bit 11 "time fault": no ASN1ToHL7 code; the glucose
normalizer treats the reading's time as unusable (flag ``device-time-unknown``)."""

GLUCOSE_SENSOR_STATUS: Final = StatusTable(
    codes.MDC_GLU_METER_DEV_STATUS,
    (
        _bit(0, 0, "device-battery-low", "The device battery is low"),
        _bit(1, 1, "sensor-malfunction", "The sensor has malfunctioned"),
        _bit(2, 2, "sensor-sample-size-insufficient", "The sensor's sample size is insufficient"),
        _bit(3, 3, "sensor-strip-insertion", "The test strip was inserted incorrectly"),
        _bit(4, 4, "sensor-strip-type-incorrect",
             "The test strip type is incompatible with the sensor"),
        _bit(5, 5, "sensor-result-too-high", "The value reported by the sensor is too high"),
        _bit(6, 6, "sensor-result-too-low", "The value reported by the sensor is too low"),
        _bit(7, 7, "sensor-temp-too-high", "The temperature is too high"),
        _bit(8, 8, "sensor-temp-too-low", "The temperature is too low"),
        _bit(9, 9, "sensor-read-interrupt", "The read process was interrupted"),
        _bit(10, 10, "device-gen-fault", "General Device Fault"),
    ),
)  # fmt: skip

PLX_DEVICE_SENSOR_STATUS: Final = StatusTable(
    codes.MDC_PULS_OXIM_DEV_STATUS,
    (
        _bit(0, 15, "device-extended-update",
             "An extended display update is in progress on device"),
        _bit(1, 14, "device-equipment-malfunction", "A device malfunction has occurred"),
        _bit(2, 13, "signal-processing-irregularity",
             "The signal has been discovered, but is experiencing processing irregularity"),
        _bit(3, 12, "signal-inadequate", "The signal has been discovered, but it is inadequate"),
        _bit(4, 11, "signal-poor", "The signal has been discovered, but it is poor"),
        _bit(5, 10, "signal-low-perfusion", "The signal is experiencing low perfusion"),
        _bit(6, 9, "signal-erratic", "A signal has been discovered, but it is erratic"),
        _bit(7, 8, "signal-non-pulsatile", "A non pulsatile signal has been detected"),
        _bit(8, 7, "signal-pulse-questionable", "A questionable pulse has been detected"),
        _bit(9, 6, "signal-searching", "The sensor is searching for a signal"),
        _bit(10, 5, "sensor-interference", "The sensor is experiencing interference"),
        _bit(11, 4, "sensor-off", "The sensor is not connected to the user"),
        _bit(12, 3, "sensor-unsupported", "The sensor connected to the device is unsupported"),
        _bit(13, 2, "sensor-displaced", "The sensor is not correctly placed on the user"),
        _bit(14, 1, "sensor-malfunction", "The sensor has malfunctioned"),
        _bit(15, 0, "sensor-disconnected", "The device is not connected with the sensor"),
    ),
)  # fmt: skip


def status_components(table: StatusTable, word: int) -> list[dict[str, Any]]:
    """One PhdBitsEnumerationObservation component per set bit (IG bpm-status.json)."""
    mdc = table.code.mdc
    return [
        {
            "code": {
                "coding": [
                    {
                        "system": codes.ASN1_TO_HL7_SYSTEM,
                        "code": f"{mdc}.{bit.bit}",
                        "display": bit.name,
                    }
                ],
                "text": bit.text,
            },
            "valueBoolean": True,
        }
        for bit in table.set_bits(word)
    ]


def bits_observation(
    table: StatusTable, word: int, base: Mapping[str, Any], derived_from: str
) -> dict[str, Any] | None:
    """A PhdBitsEnumerationObservation for ``word``, or None when no mapped bit is set.

    Args:
        table: which status word.
        word: the raw BLE status word.
        base: the fields every Observation of the reading shares (``_common`` of the
            normalizer: extension, identifier, category, subject, device, times); its
            ``meta.profile`` and ``code`` are replaced.
        derived_from: the logical id of the measurement Observation it describes.
    """
    components = status_components(table, word)
    if not components:
        return None
    meta = dict(base.get("meta", {}))
    meta["profile"] = [codes.PHD_PROFILE + "PhdBitsEnumerationObservation"]
    return {
        **base,
        "meta": meta,
        "code": table.code.codeable_concept(),
        "derivedFrom": [{"reference": f"Observation/{derived_from}"}],  # resolved by the Bundle
        "component": components,
    }


# -- implausible values -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlausibleRange:
    """The physiologically possible range of a value, inclusive, in one unit."""

    low: Decimal
    high: Decimal
    ucum: str

    def contains(self, value: Decimal) -> bool:
        """Whether ``value`` (in :attr:`ucum`) lies in the range."""
        return self.low <= value <= self.high


IMPLAUSIBLE_TEXT: Final = "Physiologically implausible value; kept as sent"


def implausible_interpretation(text: str = IMPLAUSIBLE_TEXT) -> list[dict[str, Any]]:
    """The ``interpretation`` marking a value implausible.

    PhdBaseObservation (and the compound components) require every ``interpretation`` to
    carry exactly one PoCD measurement-status coding (slice MsmtStatusInterpretation 1..1):
    ``questionable``, the closest; the hub's own code says why.
    """
    return [
        {
            "coding": [
                {"system": codes.POCD_MEASUREMENT_STATUS_SYSTEM, "code": "questionable"},
                {
                    "system": codes.HUB_FLAG_SYSTEM,
                    "code": "value-implausible",
                    "display": "Physiologically implausible value",
                },
            ],
            "text": text,
        }
    ]


def implausible(value: Decimal | None, plausible: PlausibleRange) -> bool:
    """True when a (non-special) value lies outside ``plausible``."""
    return value is not None and not plausible.contains(value)
