"""Emulated devices: BLE medical devices (Bumble peripherals that behave as the SIG
specifications say) and a cellular modem.

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

And the hub's other radio:

- :mod:`hil.emulators.modem_at` and :mod:`hil.emulators.modem`: a 5G module (Quectel RM5xxQ
  class) speaking AT on a pseudo-terminal, scriptable into every state the link manager
  handles (SIM, registration, technologies and signal, data call, resets, re-enumeration,
  interleaved URCs, garbage), written from 3GPP TS 27.007 and Quectel's manuals,
  independent of ``drivers/modem``.
"""

from __future__ import annotations
