"""Pieces every emulated peripheral shares: advertising data and the Device Information Service.

- Advertising data is a sequence of AD structures ``length, type, data`` (Core Spec Vol 3
  Part C §11; types from the Core Specification Supplement Part A): Flags (§1.3), Complete
  Local Name (§1.2), Complete List of 16-bit Service UUIDs (§1.1). A legacy advertising PDU
  carries at most 31 octets (Vol 6 Part B §2.3.1.1).
- The Device Information Service 0x180A (DIS 1.1) with its read-only characteristics, the
  strings as UTF-8 without terminator and the System ID from :func:`encoding.system_id`.
- The Current Time Service 0x1805 (CTS 1.1, ble-spec-facts §2) on an :class:`EmulatedClock`
  that is right, skewed by some minutes, reset (restarted from 2000-01-01 after a battery
  change) or unset (date fields 0): :func:`current_time_service`, for any emulator. Its
  Current Time is read-only by default (Write Not Permitted 0x03, as on many devices);
  ``writable=True`` adds the optional Write: a write sets the clock, or is refused with
  ``write_error`` (e.g. 0x80 "Data field ignored").
- The Battery Service 0x180F (BAS 1.0) with its Battery Level 0x2A19 (Read; one octet,
  0-100 %), read from a callable so a test can change the level while the device runs:
  :func:`battery_service`.
- :func:`read_only_characteristic`, :func:`unreadable_characteristic` (Notify/Indicate only)
  and :func:`control_point_characteristic` (Write + Indicate): the characteristic shapes the
  emulated services use.
- :func:`fixed_value`: a characteristic value that enforces its ATT permissions. Bumble's
  GATT server checks only the encryption/authentication permission bits, not "readable" or
  "writable"; a real device answers Read Not Permitted (0x02) / Write Not Permitted (0x03)
  (Core Spec Vol 3 Part F §3.2.5, §3.4.1.1), and so do the emulators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from bumble.att import (
    ATT_INVALID_ATTRIBUTE_LENGTH_ERROR,
    ATT_READ_NOT_PERMITTED_ERROR,
    ATT_WRITE_NOT_PERMITTED_ERROR,
    ATT_Error,
)
from bumble.core import UUID
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service

from hil.emulators.encoding import DateTime, system_id

AD_FLAGS: Final = 0x01
AD_COMPLETE_16_BIT_UUIDS: Final = 0x03
AD_COMPLETE_LOCAL_NAME: Final = 0x09

FLAG_LE_GENERAL_DISCOVERABLE: Final = 0x02
FLAG_BR_EDR_NOT_SUPPORTED: Final = 0x04

LEGACY_ADVERTISING_DATA_MAX: Final = 31

DEVICE_INFORMATION_SERVICE: Final = 0x180A
SYSTEM_ID: Final = 0x2A23
MODEL_NUMBER_STRING: Final = 0x2A24
SERIAL_NUMBER_STRING: Final = 0x2A25
FIRMWARE_REVISION_STRING: Final = 0x2A26
HARDWARE_REVISION_STRING: Final = 0x2A27
SOFTWARE_REVISION_STRING: Final = 0x2A28
MANUFACTURER_NAME_STRING: Final = 0x2A29
REGULATORY_CERTIFICATION_DATA_LIST: Final = 0x2A2A

BATTERY_SERVICE: Final = 0x180F
BATTERY_LEVEL: Final = 0x2A19


def fixed_value(value: bytes, *, readable: bool = True) -> CharacteristicValue[bytes]:
    """A constant value that refuses writes, and reads too unless ``readable``."""

    def read(_connection: Connection) -> bytes:
        if not readable:
            raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)
        return value

    def write(_connection: Connection, _value: bytes) -> None:
        raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)

    return CharacteristicValue(read=read, write=write)


def read_only_characteristic(
    uuid: int, value: bytes, name: str | None = None
) -> Characteristic[bytes]:
    """A Read-only characteristic with a constant value (a Feature, a DIS string)."""
    return Characteristic(
        UUID.from_16_bits(uuid, name),
        Characteristic.Properties.READ,
        Characteristic.READABLE,
        fixed_value(value),
    )


def unreadable_characteristic(
    uuid: int, name: str, properties: Characteristic.Properties
) -> Characteristic[bytes]:
    """A characteristic whose value only travels by Notify or Indicate (``properties``):
    reads answer Read Not Permitted, writes Write Not Permitted."""
    return Characteristic(
        UUID.from_16_bits(uuid, name),
        properties,
        Characteristic.Permissions(0),
        fixed_value(b"", readable=False),
    )


def control_point_characteristic(
    uuid: int, name: str, on_write: Callable[[Connection, bytes], None]
) -> Characteristic[bytes]:
    """A control point (Write + Indicate, e.g. RACP 0x2A52): writes go to ``on_write``
    (which may raise :class:`~bumble.att.ATT_Error`), reads answer Read Not Permitted."""

    def read(_connection: Connection) -> bytes:
        raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)

    return Characteristic(
        UUID.from_16_bits(uuid, name),
        Characteristic.Properties.WRITE | Characteristic.Properties.INDICATE,
        Characteristic.WRITEABLE,
        CharacteristicValue(read=read, write=on_write),
    )


def advertising_data(local_name: str, service_uuids: Sequence[int]) -> bytes:
    """Flags (LE General Discoverable, BR/EDR not supported), complete local name, and the
    complete list of 16-bit service UUIDs.

    Raises:
        ValueError: longer than a legacy advertising PDU can carry.
    """
    structures = [
        (AD_FLAGS, bytes([FLAG_LE_GENERAL_DISCOVERABLE | FLAG_BR_EDR_NOT_SUPPORTED])),
        (AD_COMPLETE_LOCAL_NAME, local_name.encode("utf-8")),
        (AD_COMPLETE_16_BIT_UUIDS, b"".join(u.to_bytes(2, "little") for u in service_uuids)),
    ]
    data = b"".join(bytes([len(value) + 1, ad_type]) + value for ad_type, value in structures)
    if len(data) > LEGACY_ADVERTISING_DATA_MAX:
        raise ValueError(f"advertising data is {len(data)} octets, at most 31 fit")
    return data


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What a device's DIS 0x180A exposes (``None``: characteristic absent).

    Serial number and System ID identify the device (and so the patient): not in the repr.
    """

    manufacturer_name: str | None = "Homehub Test Devices"
    model_number: str | None = "HH-BPM-1"
    serial_number: str | None = field(default="SN-0000-0001", repr=False)
    hardware_revision: str | None = None
    firmware_revision: str | None = "1.4.2"
    software_revision: str | None = None
    #: (Manufacturer Identifier uint40, OUI uint24), or None for no System ID.
    system_id: tuple[int, int] | None = field(default=(0x12FFFE3456, 0x00A0B1), repr=False)
    #: DIS 0x2A2A value (MDER-encoded, opaque to DIS), or None for none.
    regulatory_certification: bytes | None = None

    def values(self) -> dict[int, bytes]:
        """The characteristic values by 16-bit UUID, exactly as a read returns them."""
        strings = {
            MANUFACTURER_NAME_STRING: self.manufacturer_name,
            MODEL_NUMBER_STRING: self.model_number,
            SERIAL_NUMBER_STRING: self.serial_number,
            HARDWARE_REVISION_STRING: self.hardware_revision,
            FIRMWARE_REVISION_STRING: self.firmware_revision,
            SOFTWARE_REVISION_STRING: self.software_revision,
        }
        result = {uuid: text.encode("utf-8") for uuid, text in strings.items() if text is not None}
        if self.system_id is not None:
            result[SYSTEM_ID] = system_id(*self.system_id)
        if self.regulatory_certification is not None:
            result[REGULATORY_CERTIFICATION_DATA_LIST] = self.regulatory_certification
        return result


def device_information_service(info: DeviceInformation) -> Service:
    """DIS 0x180A: one Read-only characteristic per value (DIS 1.1 §3)."""
    characteristics: list[Characteristic[bytes]] = [
        read_only_characteristic(uuid, value) for uuid, value in sorted(info.values().items())
    ]
    return Service(UUID.from_16_bits(DEVICE_INFORMATION_SERVICE), characteristics)


# -- Current Time Service -------------------------------------------------------------------

CURRENT_TIME_SERVICE: Final = 0x1805
CURRENT_TIME: Final = 0x2A2B
LOCAL_TIME_INFORMATION: Final = 0x2A0F

CLOCK_RESET_VALUE: Final = datetime(2000, 1, 1)  # noqa: DTZ001 - a device's wall clock
"""Where many devices' clocks restart after a battery change."""

CURRENT_TIME_SIZE: Final = 10
DATA_FIELD_IGNORED: Final = 0x80
"""CTS 1.1 application error: a Current Time write the server does not apply [MEM, spec facts
§2]; the emulator answers it for a value naming no real date and time."""


def _host_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class EmulatedClock:
    """A device's wall clock (local time, no zone), derived from the host's UTC clock.

    Args:
        timezone: the zone the device's owner set it to (the hub's zone when right).
        skew: how far the device's clock runs ahead (negative: behind).
        reset_at: the clock restarted from this wall-clock value when the emulator was made
            (a battery change) and has run since.
        unset: the clock reports its date as unknown (year, month, day 0).
        now: the host's UTC clock (tests inject a fixed one).
        writable: Current Time 0x2A2B has the optional Write property (CTS 1.1: Write O),
            and a write sets the clock (:meth:`write_current_time`). False: read-only, a
            write answers Write Not Permitted (0x03).
        write_error: with ``writable``, every write is refused with this ATT error (e.g.
            :data:`DATA_FIELD_IGNORED`) and the clock left as it was.

    Attributes:
        writes: every value written to Current Time, in order, applied or refused.
    """

    timezone: str = "Europe/Berlin"
    skew: timedelta = timedelta(0)
    reset_at: datetime | None = None
    unset: bool = False
    now: Callable[[], datetime] = _host_utc
    writable: bool = False
    write_error: int | None = None
    writes: list[bytes] = field(init=False, default_factory=list)
    _started: datetime = field(init=False)
    _set_to: datetime | None = field(init=False, default=None)
    _set_at: datetime = field(init=False)
    _adjust_reason: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._started = self._set_at = self.now()

    @classmethod
    def correct(cls, timezone: str = "Europe/Berlin") -> EmulatedClock:
        """A clock set right."""
        return cls(timezone)

    @classmethod
    def skewed(cls, minutes: float, timezone: str = "Europe/Berlin") -> EmulatedClock:
        """A clock ``minutes`` ahead (negative: behind)."""
        return cls(timezone, skew=timedelta(minutes=minutes))

    @classmethod
    def after_battery_change(cls, timezone: str = "Europe/Berlin") -> EmulatedClock:
        """A clock restarted from 2000-01-01 00:00:00 and running since."""
        return cls(timezone, reset_at=CLOCK_RESET_VALUE)

    @classmethod
    def unknown(cls) -> EmulatedClock:
        """A clock that reports an unknown date (Date Time fields 0)."""
        return cls(unset=True)

    def read(self) -> datetime | None:
        """The device's current wall-clock time, None when unset."""
        if self._set_to is not None:  # set by a write: runs on from the value written
            return self._set_to + (self.now() - self._set_at)
        if self.unset:
            return None
        if self.reset_at is not None:
            return self.reset_at + (self.now() - self._started)
        local = self.now().astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)
        return local + self.skew

    def current_time_value(self) -> bytes:
        """Current Time 0x2A2B (GATT XML current_time): Date Time (7), Day of Week (1 = Monday,
        0 unknown), Fractions256, Adjust Reason (0 until a write set the clock, then the
        written one); 10 octets."""
        now = self.read()
        if now is None:
            return bytes(DateTime(0, 0, 0)) + bytes((0, 0, 0))
        date_time = DateTime(now.year, now.month, now.day, now.hour, now.minute, now.second)
        fraction = now.microsecond * 256 // 1_000_000
        return bytes(date_time) + bytes((now.isoweekday(), fraction, self._adjust_reason))

    def write_current_time(self, value: bytes) -> None:
        """A Write Request to Current Time 0x2A2B: set the clock to the value's Date Time and
        Fractions256 (Day of Week is derived, not trusted), and keep its Adjust Reason.

        Raises:
            ATT_Error: Write Not Permitted (0x03) unless ``writable``; ``write_error`` when
                set; Invalid Attribute Value Length (0x0D) for anything but 10 octets; Data
                Field Ignored (0x80) for a date or time of day that does not exist.
        """
        self.writes.append(bytes(value))
        if not self.writable:
            raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)
        if self.write_error is not None:
            raise ATT_Error(self.write_error)
        if len(value) != CURRENT_TIME_SIZE:
            raise ATT_Error(ATT_INVALID_ATTRIBUTE_LENGTH_ERROR)
        year = int.from_bytes(value[0:2], "little")
        month, day, hours, minutes, seconds, _weekday, fractions256, reason = value[2:10]
        try:
            set_to = datetime(  # noqa: DTZ001 - a device's wall clock
                year, month, day, hours, minutes, seconds, fractions256 * 1_000_000 // 256
            )
        except ValueError:
            raise ATT_Error(DATA_FIELD_IGNORED) from None
        self._set_to, self._set_at, self._adjust_reason = set_to, self.now(), reason

    def local_time_information_value(self) -> bytes:
        """Local Time Information 0x2A0F: Time Zone (sint8, 15-min steps, standard time) and
        DST Offset (0, 2 = +0.5 h, 4 = +1 h, 8 = +2 h; 255 unknown)."""
        if self.unset and self._set_to is None:
            return bytes((0x80, 255))  # -128: time zone unknown
        moment = self.now().astimezone(ZoneInfo(self.timezone))
        dst = moment.dst() or timedelta(0)
        standard = (moment.utcoffset() or timedelta(0)) - dst
        zone = int(standard.total_seconds() // 900)
        dst_code = {0: 0, 1800: 2, 3600: 4, 7200: 8}.get(int(dst.total_seconds()), 255)
        return zone.to_bytes(1, "little", signed=True) + bytes((dst_code,))


def _clock_value(
    read: Callable[[], bytes], write: Callable[[bytes], None] | None = None
) -> CharacteristicValue[bytes]:
    def on_read(_connection: Connection) -> bytes:
        return read()

    def on_write(_connection: Connection, value: bytes) -> None:
        if write is None:
            raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)
        write(value)

    return CharacteristicValue(read=on_read, write=on_write)


def current_time_service(clock: EmulatedClock) -> Service:
    """CTS 0x1805: Current Time 0x2A2B (Read, Notify, and the optional Write when
    ``clock.writable``; many devices lack it) and Local Time Information 0x2A0F (Read)."""
    properties = Characteristic.Properties.READ | Characteristic.Properties.NOTIFY
    permissions = Characteristic.READABLE
    if clock.writable:
        properties |= Characteristic.Properties.WRITE
        permissions |= Characteristic.WRITEABLE
    return Service(
        UUID.from_16_bits(CURRENT_TIME_SERVICE),
        [
            Characteristic(
                UUID.from_16_bits(CURRENT_TIME),
                properties,
                permissions,
                _clock_value(clock.current_time_value, clock.write_current_time),
            ),
            Characteristic(
                UUID.from_16_bits(LOCAL_TIME_INFORMATION),
                Characteristic.Properties.READ,
                Characteristic.READABLE,
                _clock_value(clock.local_time_information_value),
            ),
        ],
    )


def battery_service(level: Callable[[], int]) -> Service:
    """BAS 0x180F: Battery Level 0x2A19, Read, one octet: ``level()`` in % at each read
    (written as given, so a test may serve a value above 100 % that a device should not)."""
    return Service(
        UUID.from_16_bits(BATTERY_SERVICE),
        [
            Characteristic(
                UUID.from_16_bits(BATTERY_LEVEL),
                Characteristic.Properties.READ,
                Characteristic.READABLE,
                _clock_value(lambda: bytes((level() & 0xFF,))),
            )
        ],
    )
