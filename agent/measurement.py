"""What a BLE session hands the pipeline: one raw characteristic value and its hook.

A pure value module (no bleak, no Bumble, no I/O), so the decoders' callers (ingest, the
normalizers, the crash child) can use it without importing a Bluetooth stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agent.normalize.device import DeviceFacts

__all__ = ["OnMeasurement", "RawMeasurement"]

OnMeasurement = Callable[["RawMeasurement", DeviceFacts], Awaitable[None]]
"""The pipeline's hook: store one raw measurement (from the device described)."""


@dataclass(frozen=True, slots=True)
class RawMeasurement:
    """One characteristic value as received, undecoded (e.g. BPS §3.1 Blood Pressure Measurement).

    Attributes:
        characteristic_uuid: bleak-style 128-bit UUID of the characteristic it came from.
        data: the value's bytes exactly as indicated (never in the repr: it is PHI).
        received_monotonic: ``time.monotonic()`` at arrival, for ordering and intervals.
        received_wall: the hub's UTC wall clock at arrival.
        related: see below.
        sync_state: see below.
    """

    characteristic_uuid: str
    data: bytes = field(repr=False)
    received_monotonic: float
    received_wall: datetime
    related: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Values that belong to this one, by characteristic UUID (e.g. a glucose measurement's
    context 0x2A34, joined by sequence number in the session)."""
    sync_state: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Per-device sync state (e.g. a glucometer's RACP high-water mark) that must commit in
    the same outbox transaction as this measurement, by key."""
