"""BLE for the hub: which stack runs under bleak, our Bumble backend for bleak, device sessions.

- :mod:`agent.ble.stack`: ``ble.stack`` parsing, :class:`~agent.ble.stack.BleStack` (opens and
  closes the stack) and :func:`~agent.ble.stack.backends_for`.
- :mod:`agent.ble.bumble_host`: the one Bumble host (``bumble.device.Device``) per HCI transport.
- :mod:`agent.ble.bumble_backend`: ``BaseBleakScanner``/``BaseBleakClient`` over that host.
- :mod:`agent.ble.advertising` and :mod:`agent.ble.uuids`: pure helpers (AD structures, UUIDs).
- :mod:`agent.ble.bps_session`: one Blood Pressure Service collection session, through bleak's
  public API only (so the same code runs over BlueZ on a Pi).
"""

from __future__ import annotations
