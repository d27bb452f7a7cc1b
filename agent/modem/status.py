"""The modem's figures, as ``homehub modem status`` prints them (and, later, ``homehub status``
and the uplink's status message).

:class:`ModemStatus` is a frozen value with exactly the keys of the technician's view (issue
10), in this order, absent values ``null``, numbers as JSON numbers::

    manufacturer, model, revision, imei, sim, iccid, registration, technology, operator,
    mcc, mnc, cell_id, tac, band, rsrp_dbm, rsrq_db, sinr_db, rssi_dbm, apn, ip_address,
    network_time, last_recovery

- ``sim``: ready, pin_required, puk_required, absent, error; ``registration``: home,
  roaming, searching, denied, not_registered, unknown; ``technology``: GSM, WCDMA, LTE,
  NR5G-NSA, NR5G-SA, none.
- ``mcc`` and ``mnc`` are strings: they are codes, and an MNC keeps its leading zero
  ("01" and "001" are different networks). ``cell_id`` and ``tac`` are numbers (the text
  table also shows them in hexadecimal, as the modem and the network print them).
- Which cell the signal figures describe: the serving cell in LTE and NR5G-SA; in NR5G-NSA
  (EN-DC) ``band``, ``rsrp_dbm``, ``rsrq_db`` and ``sinr_db`` are the NR leg's (the one that
  carries the data), ``cell_id``, ``tac`` and ``rssi_dbm`` the LTE anchor's (the NR leg
  reports none of them).
- ``network_time``: the network's time (NITZ, +QLTS) in UTC, ISO 8601; ``last_recovery``:
  ``{"step": …, "time": …}`` (a :class:`~agent.modem.link.Step` and an ISO 8601 UTC time) or
  null.

``imei`` and ``iccid`` are identifiers: shown to the technician who asked, never logged;
they stay out of ``repr``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = ["KEYS", "LastRecovery", "ModemStatus"]


@dataclass(frozen=True, slots=True)
class LastRecovery:
    """The last recovery rung taken: its name and when (ISO 8601, UTC)."""

    step: str
    time: str


@dataclass(frozen=True, slots=True)
class ModemStatus:
    """The technician's figures (module docstring); every field None when not known."""

    manufacturer: str | None = None
    model: str | None = None
    revision: str | None = None
    imei: str | None = field(default=None, repr=False)
    sim: str | None = None
    iccid: str | None = field(default=None, repr=False)
    registration: str | None = None
    technology: str | None = None
    operator: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    band: int | None = None
    rsrp_dbm: int | float | None = None
    rsrq_db: int | float | None = None
    sinr_db: int | float | None = None
    rssi_dbm: int | float | None = None
    apn: str | None = None
    ip_address: str | None = None
    network_time: str | None = None
    last_recovery: LastRecovery | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as a dict, in :data:`KEYS` order (``last_recovery`` a nested dict)."""
        out: dict[str, Any] = {}
        for name in KEYS:
            value = getattr(self, name)
            if isinstance(value, LastRecovery):
                value = {"step": value.step, "time": value.time}
            out[name] = value
        return out

    def to_json(self) -> str:
        """One line of JSON with exactly :data:`KEYS`."""
        return json.dumps(self.to_dict())

    def text_table(self) -> str:
        """Two columns, one figure a line, ``-`` for unknown."""
        rows: list[tuple[str, str]] = []
        for name in KEYS:
            value = getattr(self, name)
            if value is None:
                text = "-"
            elif isinstance(value, LastRecovery):
                text = f"{value.step} at {value.time}"
            elif name in ("cell_id", "tac"):
                text = f"{value} (0x{value:X})"
            else:
                text = str(value)
            rows.append((name, text))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {text}" for name, text in rows)


KEYS: Final = tuple(f.name for f in fields(ModemStatus))
"""The JSON keys, in order (issue 10, "The technician's view")."""
