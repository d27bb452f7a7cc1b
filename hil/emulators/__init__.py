"""Emulated BLE medical devices: Bumble peripherals that behave as the SIG specifications say.

- :mod:`hil.emulators.encoding`: the emulators' own encoders for wire types (IEEE 11073 SFLOAT,
  Date Time), written from the specifications and independent of ``drivers/`` (the hub's
  decoders), so a test comparing the two checks one against the other.
- :mod:`hil.emulators.peripheral`: shared pieces: advertising data, the Device Information
  and Current Time Services, the characteristic shapes the services use.
- :mod:`hil.emulators.gatt_peripheral`: the shared life cycle as base classes (advertising,
  connection bookkeeping, link-drop fault injection, confirmed indications, held readings).
- :mod:`hil.emulators.cuff`: a blood-pressure cuff (Blood Pressure Service 0x1810).
- :mod:`hil.emulators.glucometer`: a glucometer (Glucose Service 0x1808, with RACP).
- :mod:`hil.emulators.oximeter`: a pulse oximeter (Pulse Oximeter Service 0x1822, with RACP
  for stored spot-checks).
"""

from __future__ import annotations
