"""A glucometer's long download cut halfway: the hub resumes from its committed high-water
mark at the next connection, and the platform gets every record once.

The meter holds :data:`COUNT` records (four months of a meter used eight times a day) and
sends them as a real link paces them (:data:`RECORD_INTERVAL_S`: one record per connection
event of the shortest interval). It drops the link itself right after record
:data:`CUT_AFTER` has left it (the emulator's ``drop_link_after_sequence_numbers``: reason
0x08, a radio loss as the hub sees it), once. The hub commits each record with the mark that
covers it, so the next session probes the meter (newest record, the marked record unchanged)
and asks for ">= mark+1" only; the records the first session received but had not yet
committed when the link went are asked for again, and the outbox's deduplication keeps any
record sent twice from reaching the platform twice.

Besides the platform-side checks, the scenario notes that the download really was cut (the
meter had sent :data:`CUT_AFTER` records, the platform held fewer than :data:`COUNT`, the
daemon logged the lost link after handing records on) and that the next session resumed from
the committed mark (a ">=" report from a mark within the first half, no full resync).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GLUCOSE_MEASUREMENT, GlucoseRecord, mg_per_dl
from hil.emulators.glucometer import Glucometer as EmulatedGlucometer
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Glucometer
from hil.scenarios.home import Home

COUNT: Final = 1000
"""Records the meter holds: the hub's limit for one session (``MAX_RECORDS_PER_SESSION``)."""
CUT_AFTER: Final = COUNT // 2
"""The meter drops the link right after the record with this sequence number left it."""
RECORD_INTERVAL_S: Final = 0.0075
"""One record per connection event of the shortest interval: ~7.5 s for the whole memory."""
FIRST_TIME: Final = datetime(2026, 7, 1, 6, 30)  # noqa: DTZ001 - a meter's local clock
RECORD_SPACING: Final = timedelta(hours=3)
DOWNLOAD_WAIT_S: Final = 90.0
"""Bound on a whole download and its upload (~8 s of radio, ~1,000 commits and receipts)."""

REPORT_FROM_SEQUENCE: Final = b"\x01\x03\x01"
"""RACP "report stored records, >= sequence number" (then the uint16 operand)."""
RESUMED: Final = "gls_sync_continue"
FIRST_SYNC: Final = "gls_sync_first"
RESYNC: Final = "gls_sequence_reset"
PROBES: Final = 2
"""Records a resumed session has the meter send only to look at them: the newest, and the
marked one (is it still there, unchanged?)."""


def _record(n: int) -> GlucoseRecord:
    """Record ``n`` (1-based): every three hours, a distinct concentration, 70.0-169.9 mg/dL
    (none urgent: the download is the subject, not the hub's urgent path)."""
    t = FIRST_TIME + (n - 1) * RECORD_SPACING
    tenths = 699 + n
    return GlucoseRecord(
        n,
        DateTime(t.year, t.month, t.day, t.hour, t.minute, t.second),
        mg_per_dl(f"{tenths // 10}.{tenths % 10}"),
    )


RECORDS: Final = tuple(_record(n) for n in range(1, COUNT + 1))


class AgentLog:
    """One daemon life's log events, read on from where the last look stopped: a download of
    a thousand records writes thousands of lines, and reading them all again at every wake-up
    (each arrival at the platform) would cost the run its CPU. Only events whose name starts
    with one of ``prefixes`` are kept (parsed); nothing of them is copied anywhere."""

    def __init__(self, path: Path, prefixes: tuple[str, ...]) -> None:
        self.path = path
        self.prefixes = prefixes
        self.offset = 0
        self.partial = b""
        self.kept: list[dict[str, Any]] = []

    def events(self, name: str) -> list[dict[str, Any]]:
        """The kept events called ``name`` so far, in order."""
        self._read()
        return [e for e in self.kept if e.get("event") == name]

    def _read(self) -> None:
        with contextlib.suppress(OSError), self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
            self.offset += len(chunk)
            *lines, self.partial = (self.partial + chunk).split(b"\n")
            for raw in lines:
                if not any(b'"' + p.encode() in raw for p in self.prefixes):
                    continue  # a cheap first look; the event's name is checked when read
                with contextlib.suppress(ValueError):
                    event = json.loads(raw)
                    name = event.get("event") if isinstance(event, dict) else None
                    if isinstance(name, str) and name.startswith(self.prefixes):
                        self.kept.append(event)


def records_sent(meter: EmulatedGlucometer) -> int:
    """Glucose Measurement notifications the meter sent so far (re-sends included)."""
    return sum(1 for uuid, _ in meter.sent if uuid == GLUCOSE_MEASUREMENT)


def resumed_from(meter: EmulatedGlucometer, after: int = 0) -> int | None:
    """The mark the meter was asked to report after (">= mark+1"), from its RACP requests
    from the ``after``-th on; None when no such request came."""
    for request in meter.requests[after:]:
        if request[:3] == REPORT_FROM_SEQUENCE and len(request) == 5:
            return int.from_bytes(request[3:5], "little") - 1
    return None


def reasons(log: AgentLog) -> list[str]:
    """The reason of each RACP request the daemon logged, in order."""
    return [str(e.get("reason")) for e in log.events("gls_racp_request")]


async def drive(home: Home) -> None:
    """Wait for the download, let the meter cut it, wait for the resumed session and every
    record at the platform; note the cut and the resume."""
    meter: EmulatedGlucometer = home.emulator("glucometer")
    log = AgentLog(home.agent_log(), ("gls_", "ble_session_link_lost"))
    await home.until(lambda: FIRST_SYNC in reasons(log), "the meter's first RACP request")
    async with home.fault(f"the meter drops the link after record {CUT_AFTER} of {COUNT}"):
        await home.until(lambda: not meter.drop_points, "the meter's cut", DOWNLOAD_WAIT_S)
    sent_at_cut = records_sent(meter)
    arrived_at_cut = len(home.arrivals)
    requests_at_cut = len(meter.requests)
    await home.until(lambda: RESUMED in reasons(log), "the resumed download's request")
    await home.until(
        lambda: len(home.arrivals) >= COUNT, "every record at the platform", DOWNLOAD_WAIT_S
    )
    lost = [e for e in log.events("ble_session_link_lost") if int(e.get("measurements", 0)) > 0]
    handed_on = int(lost[0]["measurements"]) if lost else 0
    home.note(
        "download cut halfway",
        sent_at_cut == CUT_AFTER and arrived_at_cut < COUNT and 0 < handed_on <= CUT_AFTER,
        f"the meter had sent {sent_at_cut} of {COUNT} records when it dropped the link, the "
        f"platform held {arrived_at_cut}; the daemon logged the lost link after handing on "
        f"{handed_on}",
    )
    mark = resumed_from(meter, requests_at_cut)
    seen = reasons(log)
    resent = records_sent(meter) - COUNT - PROBES
    home.note(
        "resumed from the committed mark",
        mark is not None
        and 0 < mark <= CUT_AFTER
        and seen.count(FIRST_SYNC) == 1
        and RESYNC not in seen
        and resent == CUT_AFTER - mark,
        f"next session asked for records after {mark} (committed before the cut), requests "
        f"{' '.join(seen)}; records the meter sent again: {resent}, besides the {PROBES} "
        "probed",
    )


SCENARIO: Final = Scenario(
    name="glucose-download-cut-halfway",
    purpose="a meter's 1,000-record download cut halfway resumes from the committed mark",
    devices=(
        Glucometer(
            "glucometer",
            RECORDS,
            options={
                "record_interval_s": RECORD_INTERVAL_S,
                "drop_link_after_sequence_numbers": (CUT_AFTER,),
            },
        ),
    ),
    faults=(
        f"the meter drops the link (reason 0x08) right after record {CUT_AFTER} of its {COUNT} "
        f"left it, during the hub's first RACP download (paced {RECORD_INTERVAL_S * 1000:g} ms "
        "a record)",
    ),
    drive=drive,
    receipt_timeout_s=5.0,
    timeout_s=180.0,
    needs=frozenset(),  # the meter's own cut: a quirk of its emulator (emulated_devices)
)
