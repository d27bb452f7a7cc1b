"""The devices a scenario's home can hold, one class per kind, and what the platform must see
of each reading they hold.

A :class:`Device` says where it is (allow-listed, next door, impersonating another), its
emulator's quirks (``options``: the emulator's keyword arguments) and, per kind, how to
power its emulator on (hil/emulators/), how it takes a new measurement, and what the platform
must end up with for each reading: its values (:meth:`Device.values`, compared with
:func:`seen`'s reading of the verified payload), its effective time and the IG identifier's
time part when the device clock is trusted.

- :class:`Cuff`: blood pressure (BPS 0x1810), hil/emulators/cuff.py.
- :class:`Glucometer`: glucose (GLS 0x1808 with RACP sync), hil/emulators/glucometer.py.
- :class:`Oximeter`: pulse oximeter spot-checks (PLXS 0x1822), hil/emulators/oximeter.py.
- :class:`ContinuousOximeter`: a worn oximeter streaming PLX Continuous Measurements (0x2A5F),
  paced by the scenario; only the samples the hub's thinning rule keeps are expected.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final, Protocol
from zoneinfo import ZoneInfo

from bumble.device import Device as BumbleDevice

from hil.emulators.cuff import BpReading, EmulatedCuff, PressureUnit
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GLUCOSE_MEASUREMENT, GlucoseRecord, Unit
from hil.emulators.glucometer import Glucometer as EmulatedGlucometer
from hil.emulators.oximeter import ContinuousSample, EmulatedOximeter, SpotCheck
from hil.emulators.peripheral import DeviceInformation
from hil.receiver import VerifiedReading

TIMEZONE: Final = "Europe/Berlin"
IG_EPOCH: Final = datetime(2000, 1, 1)  # noqa: DTZ001 - the IG counts device-local seconds
"""The PHD IG's conditional-create identifier counts seconds of device time since this."""

MDC_BP_PANEL: Final = "150020"
MDC_SYSTOLIC: Final = "150021"
MDC_DIASTOLIC: Final = "150022"
MDC_MEAN: Final = "150023"
MDC_BP_PULSE: Final = "149546"
MDC_SPO2: Final = "150456"
MDC_PLX_PULSE: Final = "149530"
GLUCOSE_CODES: Final = {1: "160184", 2: "160188"}
"""MDC code by GLS sample type: capillary whole blood, capillary plasma."""

IG_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
"""The IG's conditional-create identifier's system (docs/fhir-profile.md, "Identifiers")."""
HUB_SYSTEM: Final = "urn:homehub:fhir:reading-id"
"""The hub identifier's system: its value is the reading's id."""


class Radio(Protocol):
    """What a device's emulator is powered on with: the virtual radio
    (hil/virtual_radio.py ``VirtualRadio``) or a real rig's (hil/rig.py ``RigRadio``)."""

    async def add_cuff(
        self, readings: Sequence[BpReading], *, address: str, **options: Any
    ) -> EmulatedCuff:
        """Start an emulated cuff at ``address`` (options: see ``EmulatedCuff``)."""
        ...

    async def add_peripheral_device(self, address: str, name: str) -> BumbleDevice:
        """A Bumble device on a controller of its own, not powered on."""
        ...


@dataclass(frozen=True, slots=True)
class Seen:
    """A verified reading as the platform reads it back (no value ever leaves a check)."""

    values: Hashable
    """Kind-tagged values, comparable with :meth:`Device.values`."""
    code: str
    """The primary Observation's MDC code (the identifiers' code part)."""
    effective: str
    ig_identifier: str | None
    """Present only when the device time identifies the reading."""
    hub_identifier: str | None


def _quantity(resource: Mapping[str, Any]) -> Decimal | None:
    quantity = resource.get("valueQuantity")
    return None if quantity is None else Decimal(str(quantity["value"]))


def _observations(reading: VerifiedReading) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in reading.payload["fhir"]["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]


def _code(resource: Mapping[str, Any]) -> str:
    return str(resource["code"]["coding"][0]["code"])


def seen(reading: VerifiedReading) -> Seen | None:
    """The platform's reading of a verified payload; None for one no kind here reads."""
    try:
        observations = _observations(reading)
        primary = observations[0]
        code = _code(primary)
        by_code = {_code(o): o for o in observations}
        values: Hashable
        if code == MDC_BP_PANEL:
            components = {_code(c): c for c in primary["component"]}
            pulse = by_code.get(MDC_BP_PULSE)
            values = (
                "blood_pressure",
                _quantity(components[MDC_SYSTOLIC]),
                _quantity(components[MDC_DIASTOLIC]),
                _quantity(components[MDC_MEAN]) if MDC_MEAN in components else None,
                None if pulse is None else _quantity(pulse),
                components[MDC_SYSTOLIC]["valueQuantity"]["unit"],
            )
        elif code in GLUCOSE_CODES.values():
            values = ("glucose", code, _quantity(primary), primary["valueQuantity"]["code"])
        elif code == MDC_SPO2:
            pulse = by_code.get(MDC_PLX_PULSE)
            values = ("spo2", _quantity(primary), None if pulse is None else _quantity(pulse))
        else:
            return None
        identifiers = {str(i.get("system")): str(i["value"]) for i in primary["identifier"]}
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError):
        return None
    return Seen(
        values,
        code,
        str(primary.get("effectiveDateTime", "")),
        identifiers.get(IG_SYSTEM),
        identifiers.get(HUB_SYSTEM),
    )


def _local(t: DateTime, offset_min: int = 0) -> datetime | None:
    """A device Date Time (+ minutes) as a naive local time; None when unusable."""
    if t.year == 0 or t.month == 0 or t.day == 0:
        return None
    naive = datetime(t.year, t.month, t.day, t.hours, t.minutes, t.seconds, tzinfo=UTC)
    return (naive + timedelta(minutes=offset_min)).replace(tzinfo=None)


def _effective(local: datetime | None) -> str | None:
    if local is None:
        return None
    return local.replace(tzinfo=ZoneInfo(TIMEZONE)).isoformat(timespec="seconds")


def _ig_seconds(local: datetime | None) -> int | None:
    return None if local is None else int((local - IG_EPOCH).total_seconds())


@dataclass(frozen=True, slots=True)
class Device:
    """A device in the home (see the module doc).

    Attributes:
        label: its label in the hub's allow-list (also the scenario's handle on it).
        readings: what it holds when the run starts (oldest first).
        allow_listed: False for a device next door: it advertises, the hub must leave it.
        impostor_of: the label of an allow-listed device whose address this one takes, with
            its own Device Information: the hub must refuse it and store nothing.
        options: the emulator's keyword arguments (its quirks).
        trusted_time: whether the platform must see the device's own times (False for a
            clock the hub cannot trust: the effective time is then on the hub's timeline).
        starts: powered on when the run starts; False: the scenario's ``drive`` brings it.
    """

    kind: ClassVar[str] = ""
    label: str
    readings: tuple[Any, ...] = ()
    allow_listed: bool = True
    impostor_of: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    trusted_time: bool = True
    starts: bool = True

    @property
    def delivers(self) -> bool:
        """Whether the platform must receive what it holds."""
        return self.allow_listed and self.impostor_of is None

    async def power_on(self, radio: Radio, address: str, info: DeviceInformation) -> Any:
        """Create, start and return its emulator on ``radio`` at ``address``."""
        raise NotImplementedError

    async def take(self, emulator: Any, reading: Any) -> Any:
        """A new measurement on the running emulator; the reading as the device holds it."""
        raise NotImplementedError

    def values(self, reading: Any) -> Hashable:
        """What the platform must read of ``reading`` (:attr:`Seen.values`)."""
        raise NotImplementedError

    def device_time(self, reading: Any) -> datetime | None:
        """The reading's device-local time as the IG and ``effective[x]`` use it."""
        raise NotImplementedError

    def sends(self, emulator: Any) -> int:
        """Readings the emulator handed over so far (re-sends included)."""
        raise NotImplementedError

    def effective(self, reading: Any) -> str | None:
        """The effective time the platform must see when the clock is trusted."""
        return _effective(self.device_time(reading))

    def ig_seconds(self, reading: Any) -> int | None:
        """The IG identifier's time part (seconds since 2000-01-01, device local)."""
        return _ig_seconds(self.device_time(reading))


@dataclass(frozen=True, slots=True)
class Cuff(Device):
    """A blood-pressure cuff (:class:`hil.emulators.cuff.EmulatedCuff`), holding
    :class:`~hil.emulators.cuff.BpReading` s."""

    kind: ClassVar[str] = "blood_pressure"

    async def power_on(self, radio: Radio, address: str, info: DeviceInformation) -> Any:
        """The radio's own cuff (stopped by the radio at the end)."""
        options = {"info": info, **self.options}
        return await radio.add_cuff(self.readings, address=address, **options)

    async def take(self, emulator: Any, reading: Any) -> Any:
        """A new measurement, indicated at once if subscribed."""
        await emulator.add_reading(reading)
        return reading

    def values(self, reading: Any) -> Hashable:
        """Pressures, MAP, pulse and unit."""
        r: BpReading = reading
        mean = r.mean_arterial_pressure
        return (
            "blood_pressure",
            Decimal(r.systolic),
            Decimal(r.diastolic),
            None if mean is None else Decimal(mean),
            None if r.pulse_rate is None else Decimal(r.pulse_rate),
            "kPa" if r.unit is PressureUnit.KPA else "mmHg",
        )

    def device_time(self, reading: Any) -> datetime | None:
        """Its time stamp."""
        r: BpReading = reading
        return None if r.time_stamp is None else _local(r.time_stamp)

    def sends(self, emulator: Any) -> int:
        """Confirmed indications."""
        return int(emulator.confirmations)


@dataclass(frozen=True, slots=True)
class Glucometer(Device):
    """A glucometer (:class:`hil.emulators.glucometer.Glucometer`), holding
    :class:`~hil.emulators.glucometer.GlucoseRecord` s (patient samples: sample types 1-2),
    synced by the hub over RACP."""

    kind: ClassVar[str] = "glucose"

    async def power_on(self, radio: Radio, address: str, info: DeviceInformation) -> Any:
        """A meter on its own controller of the radio."""
        device = await radio.add_peripheral_device(address, "glucometer")
        meter = EmulatedGlucometer(device, self.readings, **{"info": info, **self.options})
        await meter.start()
        return meter

    async def take(self, emulator: Any, reading: Any) -> Any:
        """A new record, numbered by the meter."""
        return emulator.add_record(reading)

    def values(self, reading: Any) -> Hashable:
        """MDC code by sample type, the concentration in the unit the hub reports."""
        r: GlucoseRecord = reading
        if r.concentration is None:
            raise ValueError("a record without a concentration is not a reading")
        if r.unit is Unit.MOL_PER_L:
            value, unit = r.concentration.scaleb(3), "mmol/L"
        else:
            value, unit = r.concentration.scaleb(5), "mg/dL"
        return ("glucose", GLUCOSE_CODES[r.sample_type], value, unit)

    def device_time(self, reading: Any) -> datetime | None:
        """Base Time + Time Offset (the user-facing time)."""
        r: GlucoseRecord = reading
        return _local(r.base_time, r.time_offset_min or 0)

    def sends(self, emulator: Any) -> int:
        """Glucose Measurement notifications."""
        return sum(1 for uuid, _ in emulator.sent if uuid == GLUCOSE_MEASUREMENT)


@dataclass(frozen=True, slots=True)
class Oximeter(Device):
    """A pulse oximeter (:class:`hil.emulators.oximeter.EmulatedOximeter`), holding
    :class:`~hil.emulators.oximeter.SpotCheck` s."""

    kind: ClassVar[str] = "pulse_oximeter"

    async def power_on(self, radio: Radio, address: str, info: DeviceInformation) -> Any:
        """An oximeter on its own controller of the radio."""
        device = await radio.add_peripheral_device(address, "oximeter")
        oximeter = EmulatedOximeter(device, self.readings, **{"info": info, **self.options})
        await oximeter.start()
        return oximeter

    async def take(self, emulator: Any, reading: Any) -> Any:
        """A new spot-check, indicated at once if subscribed."""
        await emulator.add_spot_check(reading)
        return reading

    def values(self, reading: Any) -> Hashable:
        """SpO2 and pulse rate."""
        r: SpotCheck = reading
        return ("spo2", Decimal(r.spo2), Decimal(r.pulse_rate))  # type: ignore[arg-type]

    def device_time(self, reading: Any) -> datetime | None:
        """Its time stamp."""
        r: SpotCheck = reading
        return None if r.timestamp is None else _local(r.timestamp)

    def sends(self, emulator: Any) -> int:
        """Confirmed spot-check indications."""
        return len(emulator.confirmed_values)


@dataclass(frozen=True, slots=True)
class ContinuousOximeter(Oximeter):
    """A worn pulse oximeter streaming PLX Continuous Measurements 0x2A5F
    (:class:`~hil.emulators.oximeter.ContinuousSample`), beside any spot-checks it holds in
    ``readings``. Its emulator advertises while worn, whatever it holds
    (``advertise_when_empty``: a scenario may set the attribute False to take it off).

    The scenario paces the stream (:meth:`EmulatedOximeter.notify_continuous`), because what
    the platform must hold depends on *when* the hub took each sample in: a continuous sample
    carries no time stamp, and the hub hands on at most one per ``continuous_interval_s`` of
    its own monotonic clock, the first of each interval (agent/ble/plx_session.py). How the
    checks count continuous samples (hil/scenarios/checks.py): a sample the hub's rule keeps
    is taken with :meth:`Home.measure <hil.scenarios.home.Home.measure>` (``take`` notifies
    it), so :func:`~hil.scenarios.checks.expected_readings` expects it exactly once; the
    others are notified on the emulator directly and never expected, so one of them at the
    platform is an *unexpected* reading and fails "exactly once". The platform's copy is
    matched by its values (:func:`~hil.scenarios.checks.match`): give every sample of a run
    its own SpO2/pulse pair, in SpO2PR-Normal only (:func:`seen` reads the Normal pair).

    ``trusted_time`` is False by default: without a time stamp the hub stamps a sample with
    its receipt time and gives it no IG identifier, which is what the checks expect of a
    clock they cannot trust; spot-checks it holds are judged the same way (give it none, or
    untimed ones). :meth:`sends` counts notifications and confirmed spot-checks.
    """

    trusted_time: bool = False

    async def power_on(self, radio: Radio, address: str, info: DeviceInformation) -> Any:
        """An oximeter on its own controller of the radio, advertising while worn."""
        device = await radio.add_peripheral_device(address, "oximeter")
        options = {"info": info, "advertise_when_empty": True, **self.options}
        oximeter = EmulatedOximeter(device, self.readings, **options)
        await oximeter.start()
        return oximeter

    async def take(self, emulator: Any, reading: Any) -> Any:
        """A continuous sample: notified now (the hub must be listening); a spot-check: as
        :class:`Oximeter`."""
        if isinstance(reading, ContinuousSample):
            if not await emulator.notify_continuous(reading):
                raise RuntimeError("no central listens to the continuous measurements")
            return reading
        return await Oximeter.take(self, emulator, reading)

    def values(self, reading: Any) -> Hashable:
        """SpO2 and pulse rate (SpO2PR-Normal for a continuous sample)."""
        if isinstance(reading, ContinuousSample):
            return ("spo2", Decimal(reading.spo2), Decimal(reading.pulse_rate))  # type: ignore[arg-type]
        return Oximeter.values(self, reading)

    def device_time(self, reading: Any) -> datetime | None:
        """None for a continuous sample (no time stamp: the hub's receipt time)."""
        if isinstance(reading, ContinuousSample):
            return None
        return Oximeter.device_time(self, reading)

    def sends(self, emulator: Any) -> int:
        """Continuous notifications plus confirmed spot-check indications."""
        return len(emulator.notified_values) + len(emulator.confirmed_values)


def device_information(serial: str, system_id: tuple[int, int]) -> DeviceInformation:
    """A device's DIS with the run's serial and System ID."""
    return DeviceInformation(serial_number=serial, system_id=system_id)
