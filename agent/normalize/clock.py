"""Device clock versus hub clock: the PHD IG coincident timestamp and the time of each reading.

Sans-I/O. :class:`ClockFacts` is what a session learnt at connection: the device's Current Time
0x2A2B (CTS 1.1, ble-spec-facts §2) and the hub's UTC wall clock at the same moment.
:func:`observation_time` decides a reading's ``effective[x]``; :func:`coincident_observation`
builds the IG's PhdCoincidentTimeStampObservation.

Rules (docs/fhir-profile.md "Time"), from the IG page "Coincident Timestamp":

- BLE devices keep *local time, not externally synchronized, on their current timeline*;
  the IG's rule for that case is that the gateway maps the reading onto its own timeline with
  the coincident timestamp as the anchor: ``effective = device time + (hub now − device now)``,
  both read as wall-clock time in the hub's zone (the IG lets the PHG assume PHD and PHG share
  the zone). A difference within :data:`CLOCK_TOLERANCE_S` is not applied (see there).
- No current time read (no CTS, read failed): the device's own time, in the hub's zone.
- The device's current time is unknown (year/month/day 0, invalid fields): no offset can be
  measured; the reading's own time is kept and flagged :attr:`TimeFlag.DEVICE_CLOCK_UNSET`;
  the coincident timestamp carries ``dataAbsentReason`` unknown (IG TimeFault).
- The device's current time is before :data:`PLAUSIBLE_FLOOR` (a reset clock: 2000-01-01
  after a battery change): the mapping still applies (readings taken since the reset land at
  the right hub time), and readings are flagged :attr:`TimeFlag.DEVICE_CLOCK_UNSET`.
- The reading's own time stamp is unusable, or (after mapping) before the floor or more than
  :data:`FUTURE_TOLERANCE_S` after the hub received it: the reading is *kept*, its
  ``effective[x]`` is the hub's receipt time and it carries a flag saying why.
- The identifier always keeps the device-reported time stamp (agent.normalize.phd).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from agent.errors import DecodeError
from agent.normalize import codes
from agent.normalize.phd import Context, fhir_datetime, localize
from drivers.gatt_time import CurrentTime

if TYPE_CHECKING:
    from agent.normalize.device import DeviceFacts

CLOCK_TOLERANCE_S: Final = 60
"""A device-vs-hub difference up to a minute is not applied to ``effective[x]``: time stamps
have one-second resolution, reading the clock over BLE adds latency, and a re-sent reading must
keep the same ``effective[x]`` from one session to the next although the measured difference
jitters by a second. The coincident timestamp still records the exact difference."""

FUTURE_TOLERANCE_S: Final = 300
"""A reading may be at most 5 minutes after the hub received it (after mapping): more is a clock
running ahead, not a measurement from the future (reliability-catalogue B9)."""

PLAUSIBLE_FLOOR: Final = datetime(2015, 1, 1)  # noqa: DTZ001 - compared with wall-clock time
"""Earliest plausible reading time: BPS, GLS and PLXS devices on the market postdate 2015 (PLXS
was adopted in 2015), while a clock reset by a battery change reads 2000-01-01 or 1970."""


class TimeFlag(enum.StrEnum):
    """Why a reading's time needs a second look (codes of :data:`codes.HUB_FLAG_SYSTEM`)."""

    DEVICE_TIME_UNKNOWN = "device-time-unknown"
    """The reading's time stamp has unknown or invalid fields; effective = hub receipt."""
    DEVICE_TIME_IMPLAUSIBLE = "device-time-implausible"
    """The reading's time is before the plausible floor; effective = hub receipt."""
    DEVICE_TIME_IN_FUTURE = "device-time-in-future"
    """The reading's time is after the hub received it; effective = hub receipt."""
    DEVICE_CLOCK_UNSET = "device-clock-unset"
    """The device's current time was unknown or reset when read at connection."""


FLAG_TEXT: Final[dict[TimeFlag, str]] = {
    TimeFlag.DEVICE_TIME_UNKNOWN: "Device time stamp unusable; time is the hub's receipt time",
    TimeFlag.DEVICE_TIME_IMPLAUSIBLE: (
        "Device time stamp implausibly old; time is the hub's receipt time"
    ),
    TimeFlag.DEVICE_TIME_IN_FUTURE: (
        "Device time stamp in the future; time is the hub's receipt time"
    ),
    TimeFlag.DEVICE_CLOCK_UNSET: "Device clock was not set when read by the hub",
}


@dataclass(frozen=True, slots=True)
class ClockFacts:
    """The device's clock read at connection, and the hub's UTC time at that moment.

    Attributes:
        current_time: the raw Current Time 0x2A2B value (10 octets, already length-checked).
        hub_time: the hub's aware UTC wall clock when the read completed.
    """

    current_time: bytes = field(repr=False)
    hub_time: datetime

    @classmethod
    def from_current_time(cls, data: bytes, hub_time: datetime) -> ClockFacts:
        """Check a Current Time value and pair it with the hub's time.

        Raises:
            DecodeError: not a 10-octet Current Time value.
            ValueError: ``hub_time`` is naive.
        """
        CurrentTime.from_bytes(data)
        if hub_time.tzinfo is None:
            raise ValueError("hub_time must be aware (UTC)")
        return cls(bytes(data), hub_time.astimezone(UTC))

    @property
    def decoded(self) -> CurrentTime:
        """The decoded 0x2A2B value."""
        return _decoded(self.current_time)

    @property
    def device_now(self) -> datetime | None:
        """The device's naive local current time (sub-second part dropped), None if unknown."""
        return _device_now(self.current_time)

    @property
    def problem(self) -> str | None:
        """Why the device's current time is unusable (GATT Date Time rules), or None."""
        return self.decoded.problem

    def offset(self, timezone: str) -> timedelta | None:
        """Hub minus device wall-clock time, whole seconds; None when the device time is unknown."""
        return _offset(self, timezone)

    @property
    def is_reset(self) -> bool:
        """The device's current time is unknown or before the plausible floor."""
        device_now = self.device_now
        return device_now is None or device_now < PLAUSIBLE_FLOOR

    def logical_id(self, device_id: str) -> str:
        """Stable id of the coincident-timestamp Observation of this read."""
        return _coincident_id(self, device_id)


# One clock read serves every reading of its session (a glucose download: up to 1,000), and
# each reading asks for it several times: what it yields is worked out once per read. The
# caches are small (a few devices' current reads); their keys are immutable values.


@functools.lru_cache(maxsize=32)
def _decoded(current_time: bytes) -> CurrentTime:
    return CurrentTime.from_bytes(current_time)


@functools.lru_cache(maxsize=32)
def _device_now(current_time: bytes) -> datetime | None:
    now = _decoded(current_time).to_datetime()
    return None if now is None else now.replace(microsecond=0)


@functools.lru_cache(maxsize=32)
def _offset(clock: ClockFacts, timezone: str) -> timedelta | None:
    device_now = clock.device_now
    if device_now is None:
        return None
    hub_local = clock.hub_time.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    return timedelta(seconds=round((hub_local - device_now).total_seconds()))


@functools.lru_cache(maxsize=32)
def _coincident_id(clock: ClockFacts, device_id: str) -> str:
    digest = hashlib.sha256(
        f"{device_id}|{clock.hub_time.isoformat()}|{clock.current_time.hex()}".encode()
    ).hexdigest()
    return "coin-" + digest[:32]


def parse_clock(data: bytes | None, hub_time: datetime) -> ClockFacts | None:
    """:class:`ClockFacts` for a read value, None when absent or not a Current Time value."""
    if data is None:
        return None
    try:
        return ClockFacts.from_current_time(data, hub_time)
    except DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class ObservationTime:
    """When a reading was taken, as the Observation reports it.

    Attributes:
        effective: aware ``effective[x]``.
        device_time: the device-reported naive local time (for the identifier), or None.
        offset_applied: the correction added to the device time (zero when none).
        flags: why the time needs a second look, in :class:`TimeFlag` order.
        coincident_id: id of the coincident-timestamp Observation to reference, or None.
    """

    effective: datetime
    device_time: datetime | None
    offset_applied: timedelta
    flags: tuple[TimeFlag, ...]
    coincident_id: str | None

    def fields(self, ctx: Context) -> dict[str, Any]:
        """``effectiveDateTime``, ``issued`` and, when flagged, ``meta.tag`` and ``note`` parts.

        Returns a dict with keys ``effectiveDateTime``, ``issued``, and optionally ``tag`` (a
        list for ``meta.tag``), ``note`` and ``extension`` (the CoincidentTimeStampReference).
        Use :func:`apply_time` to merge them into an Observation.
        """
        out: dict[str, Any] = {
            "effectiveDateTime": fhir_datetime(self.effective),
            "issued": fhir_datetime(ctx.received),
        }
        if self.coincident_id is not None:
            out["extension"] = [
                {
                    "url": codes.COINCIDENT_TIMESTAMP_EXTENSION,
                    "valueReference": {"reference": f"Observation/{self.coincident_id}"},
                }
            ]
        if self.flags:
            out["tag"] = [
                {"system": codes.HUB_FLAG_SYSTEM, "code": flag.value, "display": FLAG_TEXT[flag]}
                for flag in self.flags
            ]
            out["note"] = [{"text": FLAG_TEXT[flag]} for flag in self.flags]
        return out


def apply_time(observation: dict[str, Any], when: ObservationTime, ctx: Context) -> None:
    """Merge :meth:`ObservationTime.fields` into an Observation built with ``meta``/extension."""
    parts = when.fields(ctx)
    observation["effectiveDateTime"] = parts["effectiveDateTime"]
    observation["issued"] = parts["issued"]
    if "extension" in parts:
        observation.setdefault("extension", []).extend(parts["extension"])
    if "tag" in parts:
        observation.setdefault("meta", {}).setdefault("tag", []).extend(parts["tag"])
    if "note" in parts:
        observation.setdefault("note", []).extend(parts["note"])


def observation_time(
    device_time: datetime | None,
    problem: str | None,
    clock: ClockFacts | None,
    ctx: Context,
    device_id: str,
) -> ObservationTime:
    """Decide a reading's ``effective[x]`` and flags (rules in the module docstring).

    Args:
        device_time: the reading's naive device-local time (after any glucose Time Offset),
            None when it sent none or it is unusable.
        problem: why the reading's time stamp is unusable (``DateTime.problem``), None when
            it is usable or absent.
        clock: the device clock read at connection, None when not read.
        ctx: the transfer's context (hub zone, receipt time).
        device_id: the PhdDevice's logical id (names the coincident-timestamp Observation).
    """
    received = ctx.received
    coincident = clock.logical_id(device_id) if clock is not None else None
    if device_time is None:
        if problem is None:
            # IG: no time stamp in the measurement → no coincident timestamp; reception time.
            return ObservationTime(received, None, timedelta(0), (), None)
        flags = [TimeFlag.DEVICE_TIME_UNKNOWN]
        if clock is not None and clock.is_reset:
            flags.append(TimeFlag.DEVICE_CLOCK_UNSET)
        return ObservationTime(received, None, timedelta(0), tuple(flags), coincident)
    flags_list: list[TimeFlag] = []
    offset = timedelta(0)
    if clock is not None:
        measured = clock.offset(ctx.timezone)
        if measured is not None and abs(measured.total_seconds()) > CLOCK_TOLERANCE_S:
            offset = measured
        if clock.is_reset:
            flags_list.append(TimeFlag.DEVICE_CLOCK_UNSET)
    try:
        corrected = device_time + offset
    except OverflowError:  # a year-9999 stamp moved past datetime's range
        corrected = datetime.max  # noqa: DTZ901 - wall-clock comparison
    if corrected < PLAUSIBLE_FLOOR:
        flags_list.insert(0, TimeFlag.DEVICE_TIME_IMPLAUSIBLE)
        return ObservationTime(received, device_time, offset, tuple(flags_list), coincident)
    latest = received.astimezone(ZoneInfo(ctx.timezone)).replace(tzinfo=None) + timedelta(
        seconds=FUTURE_TOLERANCE_S
    )
    if corrected > latest:
        flags_list.insert(0, TimeFlag.DEVICE_TIME_IN_FUTURE)
        return ObservationTime(received, device_time, offset, tuple(flags_list), coincident)
    effective = localize(corrected, ctx.timezone)
    return ObservationTime(effective, device_time, offset, tuple(flags_list), coincident)


def coincident_observation(
    clock: ClockFacts, device_id: str, hub_id: str, timezone: str
) -> dict[str, Any]:
    """The PhdCoincidentTimeStampObservation for one clock read (IG coin-*.json examples).

    ``effectiveDateTime`` is the hub's time and ``valueDateTime`` the device's current time
    (its wall clock with the hub's zone attached, as the IG assumes a shared zone); when the
    device's time is unknown, ``dataAbsentReason`` unknown (the profile's TimeFault slice).
    ``subject`` is the PhdDevice and ``device`` the PhgDevice, as the profile requires.
    """
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": clock.logical_id(device_id),
        "meta": {"profile": [codes.PHD_PROFILE + "PhdCoincidentTimeStampObservation"]},
        "status": "final",
        "code": codes.MDC_ATTR_TIME_ABS.codeable_concept(),
        "subject": {"reference": f"Device/{device_id}"},
        "device": {"reference": f"Device/phg-{hub_id}"},
        "effectiveDateTime": fhir_datetime(clock.hub_time.astimezone(ZoneInfo(timezone))),
    }
    device_now = clock.device_now
    if device_now is None:
        resource["dataAbsentReason"] = {
            "coding": [{"system": codes.DATA_ABSENT_SYSTEM, "code": "unknown"}]
        }
    else:
        resource["valueDateTime"] = fhir_datetime(localize(device_now, timezone))
    return resource


def coincident_for(device: DeviceFacts, ctx: Context) -> dict[str, Any] | None:
    """The coincident-timestamp Observation of ``device``'s clock read, None when not read.

    Pass it to :func:`agent.normalize.bundle.reading_bundle`, which includes it only when an
    Observation references it.
    """
    if device.clock is None:
        return None
    return coincident_observation(device.clock, device.logical_id, ctx.hub_id, ctx.timezone)
