"""Quirks any emulated peripheral can be given, as switches on its Bumble device.

- :func:`slow_setup`: the peripheral answers the central's ATT Exchange MTU Request (Core
  Vol 3 Part F §3.4.2.1, the first request of a connection's set-up in bleak on BlueZ and in
  our Bumble backend) only after ``delay_s``: a device busy with its own start-up when the
  hub connects, as slow devices are. Everything after is at normal speed.

The device-specific quirks are switches on each emulator (the cuff's advertising window and
zero-for-NaN, the glucometer's numbering and RACP faults, the oximeter's streams).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bumble import att
from bumble.device import Device


@dataclass
class SlowSetup:
    """What :func:`slow_setup` did.

    Attributes:
        delay_s: how long each MTU exchange is held back.
        delayed: MTU exchanges answered late so far.
    """

    delay_s: float
    delayed: int = 0
    _pending: set[asyncio.TimerHandle] = field(default_factory=set, repr=False)


def slow_setup(device: Device, delay_s: float) -> SlowSetup:
    """Make ``device`` answer every ATT Exchange MTU Request ``delay_s`` late (see module)."""
    server = device.gatt_server
    answer = server.on_att_exchange_mtu_request
    state = SlowSetup(delay_s)

    def late(bearer: att.Bearer, request: att.ATT_Exchange_MTU_Request) -> None:
        state.delayed += 1

        def send() -> None:
            state._pending.discard(handle)
            answer(bearer, request)

        handle = asyncio.get_running_loop().call_later(delay_s, send)
        state._pending.add(handle)

    patched: Any = server
    patched.on_att_exchange_mtu_request = late
    return state


__all__ = ["SlowSetup", "slow_setup"]
