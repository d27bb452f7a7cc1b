"""A power cut in the middle of a glucometer's download: what the hub committed survives, its
outbox is intact, and the next boot resumes the download from the committed mark.

The meter holds :data:`COUNT` records and sends them as a real link paces them
(:data:`RECORD_INTERVAL_S`). The hub loses power at a moment within the download: the
daemon is SIGKILLed by hil/faults' :class:`~hil.faults.process.Killer` (seeded) at the k-th
``measurement_stored`` line of its log, k drawn from :data:`STORED_KTH`, and the adapter's
links end with it (:meth:`hil.scenarios.home.Home.power_cut`). While the hub is down the
outbox is checked as the power cut left it (``PRAGMA integrity_check``, read-only, as
``homehub status`` reads it) and the meter takes :data:`DOWN_RECORDS` more readings; then the
hub boots again (:meth:`~hil.scenarios.home.Home.start_agent`).

Unlike sigkill-during-sync-and-upload (four kills, a small download, a cuff), this is one cut
in a large download: the records received but not committed at the cut are asked for again,
the mark never covers a record that is not stored. Besides the platform-side checks, the
scenario notes that the cut fell within the download (the first life's sync under way; the
meter still sending, as the hub keeps pace with it here), that the outbox passed its
integrity check, and that the next boot resumed from a mark at least as far as what the
first life logged as stored and short of the meter's newest (no full resync).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from agent.outbox import peek_counts
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer as EmulatedGlucometer
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.faults.process import Killer
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Glucometer
from hil.scenarios.glucose_cut_halfway import (
    FIRST_SYNC,
    PROBES,
    RESUMED,
    RESYNC,
    AgentLog,
    reasons,
    records_sent,
    resumed_from,
)
from hil.scenarios.home import Home, HomeError
from hil.scenarios.sigkill import kth

COUNT: Final = 300
RECORD_INTERVAL_S: Final = 0.0075
"""One record per connection event of the shortest interval: ~2.3 s for the whole memory."""
SEED: Final = 7
STORED_KTH: Final = (30, 240)
"""The k-th ``measurement_stored`` of the first life the cut lands on (uniform, seeded): the
hub commits as fast as this meter sends, so the meter is still sending then."""
SYNC_COMPLETE: Final = "gls_sync_complete"
SHOT_WAIT_S: Final = 30.0
"""A cold start takes ~3 s, the download ~2.3 s."""
DOWNLOAD_WAIT_S: Final = 60.0
"""Bound on the resumed download and the upload of every record."""
INTEGRITY_TIMEOUT_S: Final = 5.0
"""SQLite's busy timeout for the read-only check (nobody writes: the daemon is down)."""
FIRST_TIME: Final = datetime(2026, 10, 1, 7, 15)  # noqa: DTZ001 - a meter's local clock


def _record(n: int) -> GlucoseRecord:
    """Record ``n`` (1-based): every three hours, distinct concentrations, 90.0-119.9 mg/dL."""
    t = FIRST_TIME + (n - 1) * timedelta(hours=3)
    tenths = 899 + n
    return GlucoseRecord(
        n,
        DateTime(t.year, t.month, t.day, t.hour, t.minute, t.second),
        mg_per_dl(f"{tenths // 10}.{tenths % 10}"),
    )


RECORDS: Final = tuple(_record(n) for n in range(1, COUNT + 1))
DOWN_RECORDS: Final = tuple(
    GlucoseRecord(0, DateTime(2026, 12, 1, 7 + n, 40, 0), mg_per_dl(str(140 + n))) for n in range(2)
)
"""Readings the meter takes while the hub is down (numbered by the meter)."""


def integrity(path: Path) -> tuple[list[str], int]:
    """``PRAGMA integrity_check``'s lines and the pending count of the outbox at ``path``,
    read-only (no key needed; its WAL is read as the crash left it)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(INTEGRITY_TIMEOUT_S * 1000)}")
        lines = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return lines, peek_counts(path).pending


async def drive(home: Home) -> None:
    """Cut the power at the drawn moment of the download, check the outbox, measure, boot."""
    meter: EmulatedGlucometer = home.emulator("glucometer")
    agent = home.agent
    if agent is None:
        raise HomeError("no daemon to cut")
    killer = Killer(seed=SEED)
    k = round(killer.draw(STORED_KTH))
    first_life = home.lives
    # From the start of the life's log: a record stored before arming counts.
    armed = killer.on_log(
        agent.pid,
        home.agent_log(),
        kth("measurement_stored", k),
        name=f"measurement_stored #{k}",
        offset=0,
    )
    async with home.fault("power cut mid download"):
        try:
            async with asyncio.timeout(SHOT_WAIT_S):
                await armed.await_shot()
        except TimeoutError:
            await asyncio.to_thread(armed.cancel)
            raise HomeError(f"no moment for the cut within {SHOT_WAIT_S:g} s") from None
        sent_at_cut = records_sent(meter)
        await home.power_cut()
    first = AgentLog(home.agent_log(first_life), ("gls_", "measurement_stored"))
    stored_first = len(first.events("measurement_stored"))
    # Within the download as the hub sees it: its first sync under way, not complete (the
    # meter is then still sending too, unless the hub lags it: its count is only reported).
    home.note(
        "cut within the download",
        FIRST_SYNC in reasons(first)
        and not first.events(SYNC_COMPLETE)
        and 0 < stored_first < COUNT,
        f"power cut at measurement_stored #{k} (seed {SEED}): the first life logged "
        f"{stored_first} of {COUNT} stored, its sync not complete; the meter had sent "
        f"{sent_at_cut}",
    )
    try:
        lines, pending = await asyncio.to_thread(integrity, home.outbox_path)
    except (sqlite3.Error, OSError) as exc:
        lines, pending = [f"{type(exc).__name__}"], -1
    home.note(
        "outbox intact after the cut",
        lines == ["ok"],
        f"PRAGMA integrity_check (read-only, the daemon down): {'; '.join(lines)[:200]}; "
        f"{pending} records pending",
    )
    for record in DOWN_RECORDS:
        await home.measure("glucometer", record)
    requests_before = len(meter.requests)
    await home.start_agent()
    second = AgentLog(home.agent_log(), ("gls_",))
    await home.until(lambda: RESUMED in reasons(second), "the resumed download's request")
    total = COUNT + len(DOWN_RECORDS)
    await home.until(
        lambda: len(home.arrivals) >= total, "every record at the platform", DOWNLOAD_WAIT_S
    )
    mark = resumed_from(meter, requests_before)
    seen = reasons(second)
    again = records_sent(meter) - total - PROBES
    home.note(
        "resumed from the committed mark",
        mark is not None
        and stored_first <= mark < COUNT
        and seen.count(FIRST_SYNC) == 0
        and RESYNC not in seen,
        f"after boot the hub asked for records after {mark} ({stored_first} logged stored "
        f"before the cut), requests {' '.join(seen)}; records the meter sent again: {again}, "
        f"besides the {PROBES} probed",
    )


SCENARIO: Final = Scenario(
    name="power-cut-during-glucose-download",
    purpose="a power cut mid download keeps the outbox intact; the next boot resumes it",
    devices=(Glucometer("glucometer", RECORDS, options={"record_interval_s": RECORD_INTERVAL_S}),),
    faults=(
        f"power cut (seed {SEED}) during the meter's first RACP download of {COUNT} records "
        f"(paced {RECORD_INTERVAL_S * 1000:g} ms a record): homehub run SIGKILLed at the k-th "
        f"measurement_stored (k in {STORED_KTH}), the adapter's links reset",
        f"{len(DOWN_RECORDS)} glucose readings taken while the hub is down",
    ),
    drive=drive,
    receipt_timeout_s=5.0,
    timeout_s=150.0,
    needs=frozenset({"power"}),
)
