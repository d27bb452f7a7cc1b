"""The hub's flash fills up during an outage of the platform: a reading that cannot be stored
is not lost, and once there is room again (and the link) every reading arrives exactly once.

The platform is unreachable first: the daemon's MQTT link goes through a hil/faults
:class:`~hil.faults.proxy.LoopbackProxy` (started in ``setup``), blackholed for the whole
outage (a dead cellular link), so readings pile up in the outbox. Then the flash fills up:
no page of the outbox can be written while the devices keep delivering. The glucometer (RACP,
one record per 50 ms connection event) takes 20 records, which the hub downloads and cannot
commit; the cuff, which keeps its memory and hands all of it over at every connection (as
many real cuffs do), takes three measurements. The product must (agent/daemon.py
``measurement_not_stored``, agent/ingest_batcher.py, agent/outbox.py, agent/ble/gls_session.py):
roll each refused batch back with the meter's RACP high-water mark, so that the next session
asks the meter again from the committed mark, and store the cuff's readings from its next
re-send. Room comes back (the limit is lifted) in the middle of the meter's second download
of those records (:data:`LIFT_AFTER` records in: space freed at any moment, a log rotated,
delivered records deleted), while the link is still down; once every reading is committed
(or the meter had two more sessions), the link returns and the platform must hold every
reading exactly once.

Known product bug (reported with this scenario, agent/ unchanged): the records of that
download refused before the room came back are lost. Each record is handed on with its own
mark, and each batch commits the mark of its last record; a batch refused by the full flash
commits nothing, but the next batch of the same download, stored once there is room, commits
a mark past the refused records, and the meter is never asked for them again
(``gls_sync_nothing_new``). The scenario expects the correct behaviour and fails ("exactly
once": the refused records missing; ``nothing lost or stored twice`` names them) until the
product keeps the mark below a refused record.

The full flash: :class:`hil.faults.disk.FileSizeLimit` (RLIMIT_FSIZE) of :data:`FULL_BYTES`,
one page, set on the *running* daemon (``apply_soft_to``: only the soft limit, so that
``lift`` takes it back without privileges) and lifted again once the failures were seen.
Chosen over :class:`~hil.faults.disk.TmpfsLimit`, which would give the real ENOSPC and a real
total: its tmpfs lives in the daemon's own mount namespace, so the outbox there is invisible
to the runner's sampler and end checks (which read ``state/outbox.db`` on the real disk) and
gone when the daemon stops, and its size cannot change while the daemon runs (no "room
again" without a restart); it also needs root or user namespaces. What the limit changes, and
why it is still the fault we want:

- the error is EFBIG, which SQLite reports as ``SQLITE_IOERR_WRITE`` (a ``StorageError``),
  where ENOSPC is ``SQLITE_FULL`` (``StorageFullError``); the daemon handles both alike
  (every ``StorageError`` leaves its batch ``NOT_STORED``), only the logged error's name
  differs;
- it bounds the write offset of each file rather than the free blocks: at one page, no page
  of the database or the WAL past the first can be written, not even in place, as on a
  log-structured flash filesystem that is out of free blocks (on ext4 an overwrite of a free
  page would still succeed, which only delays the first failure); small files (hub_state.json,
  bonds.json) stay writable;
- it applies to every file the process writes, its log too: the daemon's stdout and stderr
  therefore go through a pipe to a relay (``cat``) that writes the run's log, as on the hub
  they go to journald (another process, with its own disk budget), not to a file the
  daemon writes.

The scenario's own checks: ``storage failures`` (the daemon's ``measurement_not_stored``
lines by device and error, a lower bound as error lines are rate limited: the flash really
refused both devices' readings, and nothing was stored while it was full); ``RACP mark held
while full`` (the meter was asked again from at or below the first record taken while full:
the refused batches did not move its mark); ``nothing lost or stored twice`` (one
``measurement_stored`` per reading by device, no conflict, and what became of the meter's
records refused by the full flash).
"""

from __future__ import annotations

import collections
import shutil
import weakref
from collections.abc import Sequence
from typing import Any, Final

from agent.logs import device_label
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GLUCOSE_MEASUREMENT, GlucoseRecord, mg_per_dl
from hil.faults.disk import FileSizeLimit
from hil.faults.proxy import LoopbackProxy, ProxyMode
from hil.scenarios.base import Scenario
from hil.scenarios.checks import expected_readings
from hil.scenarios.devices import Cuff, Glucometer
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings

FULL_BYTES: Final = 4096
"""The file-size limit while the flash is full: one page (module doc)."""
CUFF_HELD: Final = morning_readings(4, first=0, day=23)
METER_HELD: Final = tuple(
    GlucoseRecord(n, DateTime(2026, 11, 23, 6, n, 30), mg_per_dl(str(90 + n))) for n in range(1, 11)
)
CUFF_OUTAGE: Final = morning_readings(2, first=10, day=23)
"""Measured once the link is down, while there is room: they wait in the outbox."""
METER_OUTAGE: Final = tuple(
    GlucoseRecord(0, DateTime(2026, 11, 23, 12, n, 0), mg_per_dl(str(120 + n))) for n in range(2)
)
CUFF_FULL: Final = morning_readings(3, first=20, day=23)
"""Measured while the flash is full."""
METER_FULL: Final = tuple(
    GlucoseRecord(0, DateTime(2026, 11, 23, 18, n, 0), mg_per_dl(str(150 + n))) for n in range(20)
)
RECORD_INTERVAL_S: Final = 0.05
"""One record per connection event of a typical 50 ms interval: a download of the records
taken while full lasts about a second."""
ASKED_AGAIN: Final = 2
"""Report requests from the committed mark the meter must see while the flash is full: the
first download of the records taken meanwhile, refused, and the next session's."""
LIFT_AFTER: Final = 4
"""Room comes back once the meter's second report of those records is this many records past
its first (of :data:`METER_FULL`'s 20 at 50 ms each: mid-download, whatever the 100 ms tick of
the conditions)."""
RELAY: Final = 'exec > >(exec cat) 2>&1; exec "$@"'
"""bash: stdout and stderr into a pipe to ``cat`` (which writes the log file the runner
opened), then become the daemon (same pid: the runner's signals and the limit reach it)."""

_proxies: weakref.WeakKeyDictionary[Home, LoopbackProxy] = weakref.WeakKeyDictionary()
"""Each running home's proxy (set by :func:`setup`)."""


def log_through_pipe(command: Sequence[str]) -> list[str]:
    """``command`` with its output piped to a relay that writes the log (module doc)."""
    bash = shutil.which("bash")
    if bash is None:
        raise HomeError("bash not found (the log relay of the file-size limit)")
    return [bash, "-c", RELAY, "homehub-log-relay", *command]


async def setup(home: Home) -> None:
    """The proxy in the daemon's MQTT path; the daemon's log through a pipe."""
    proxy = await home.parts.enter_async_context(LoopbackProxy(home.broker.port))
    home.mqtt_port = proxy.port
    home.agent_wrappers.append(log_through_pipe)
    _proxies[home] = proxy


def _label(home: Home, device: str) -> str:
    """How the daemon's log names ``device`` (its address's last two octets)."""
    return device_label(home.ids.address(home.scenario.index(device)))


def _not_stored(home: Home) -> list[dict[str, Any]]:
    return home.agent_events("measurement_not_stored")


def _refused(home: Home, device: str) -> int:
    label = _label(home, device)
    return sum(1 for e in _not_stored(home) if e.get("device") == label)


def _stored(home: Home, device: str | None = None) -> int:
    """``measurement_stored`` lines (of ``device`` only, when given)."""
    events = home.agent_events("measurement_stored")
    if device is None:
        return len(events)
    label = _label(home, device)
    return sum(1 for e in events if e.get("device") == label)


def _report_from(request: bytes) -> int | None:
    """The first record number of a RACP "report records >= n" request, else None."""
    if len(request) == 5 and request[:3] == b"\x01\x03\x01":
        return int.from_bytes(request[3:5], "little")
    return None


async def _committed(home: Home, count: int, what: str) -> None:
    await home.until(lambda: _stored(home) >= count, what)


async def drive(home: Home) -> None:
    """Link down, readings pile up, flash full while both devices deliver, room again in the
    middle of the meter's download, everything committed, link back; the own checks noted."""
    proxy = _proxies[home]
    meter = home.emulator("glucometer")
    held = len(CUFF_HELD) + len(METER_HELD)
    await home.until(lambda: len(home.arrivals) >= held, "every held reading at the platform")
    async with home.fault("platform unreachable (uplink blackholed)"):
        await proxy.aset_mode(ProxyMode.BLACKHOLE)
        for reading in CUFF_OUTAGE:
            await home.measure("cuff", reading)
        for record in METER_OUTAGE:
            await home.measure("glucometer", record)
        before_full = held + len(CUFF_OUTAGE) + len(METER_OUTAGE)
        await _committed(home, before_full, "the outage's first readings in the outbox")
        pending_before_full = await home.fresh_sample()
        agent = home.agent
        if agent is None:
            raise HomeError("no daemon")
        async with home.fault(f"flash full (RLIMIT_FSIZE {FULL_BYTES} bytes, EFBIG)"):
            FileSizeLimit(FULL_BYTES).apply_soft_to(agent.pid)
            requests_at_full = len(meter.requests)
            taken = [await home.measure("glucometer", record) for record in METER_FULL]
            first_full = taken[0].sequence_number
            for reading in CUFF_FULL:
                await home.measure("cuff", reading)
            # The meter's first report of these records cannot commit; the mark stays, so the
            # next session reports them again: room comes back in the middle of that one.
            lift_at = (first_full + LIFT_AFTER) & 0xFFFF
            await home.until(
                lambda: _sends(meter, lift_at) >= 2,
                f"the meter's second report of the records taken while full, {LIFT_AFTER + 1} "
                "records in",
            )
            stored_while_full = _stored(home) - before_full
            asked_while_full = _reports_from(meter.requests[requests_at_full:])
            FileSizeLimit.lift(agent.pid)
            requests_at_lift = len(meter.requests)
        total = len(expected_readings(home))
        cuff_total = len(CUFF_HELD) + len(CUFF_OUTAGE) + len(CUFF_FULL)
        await home.until(
            lambda: _stored(home, "cuff") >= cuff_total, "the cuff's readings committed"
        )
        await home.until(
            lambda: _stored(home) >= total or _probes(meter.requests[requests_at_lift:]) >= 2,
            "every reading committed, or two sessions of the meter since room came back",
        )
        await proxy.aset_mode(ProxyMode.PASS)
    _note_storage(home, pending_before_full, stored_while_full)
    _note_racp(home, asked_while_full, first_full)
    _note_stored_once(home, total, _reports_from(meter.requests[requests_at_lift:]), first_full)


def _sends(meter: Any, sequence_number: int) -> int:
    """How many times the meter notified the record numbered ``sequence_number``."""
    return sum(
        1
        for uuid, value in meter.sent
        if uuid == GLUCOSE_MEASUREMENT and int.from_bytes(value[1:3], "little") == sequence_number
    )


def _reports_from(requests: Sequence[bytes]) -> list[int]:
    """The first record numbers of the "report records >= n" requests among ``requests``."""
    return [n for r in requests if (n := _report_from(r)) is not None]


def _probes(requests: Sequence[bytes]) -> int:
    """ "Report the last record" requests: one at the start of each of the meter's sessions."""
    return sum(1 for r in requests if r[:2] == b"\x01\x06")


def _note_storage(home: Home, pending_before_full: int, stored_while_full: int) -> None:
    events = _not_stored(home)
    by_device = {d: _refused(home, d) for d in ("cuff", "glucometer")}
    errors = collections.Counter(str(e.get("error")) for e in events)
    ok = all(n >= 1 for n in by_device.values()) and stored_while_full == 0
    home.note(
        "storage failures",
        ok,
        f"measurement_not_stored logged {len(events)} times (at least: error lines are rate "
        f"limited; cuff {by_device['cuff']}, glucometer {by_device['glucometer']}; errors "
        f"{dict(sorted(errors.items()))}); {pending_before_full} pending when the flash "
        f"filled, {stored_while_full} stored while it was full",
    )


def _note_racp(home: Home, asked: Sequence[int], first_full: int) -> None:
    highest = max(asked, default=None)
    ok = len(asked) >= ASKED_AGAIN and highest is not None and highest <= first_full
    home.note(
        "RACP mark held while full",
        ok,
        f"{len(asked)} report requests while the flash was full (expected >= {ASKED_AGAIN}), "
        f"from record {min(asked, default='-')} to {highest if highest is not None else '-'} "
        f"at most; first record taken while full: {first_full}",
    )


def _note_stored_once(home: Home, total: int, asked_after: Sequence[int], first_full: int) -> None:
    stored = {d: _stored(home, d) for d in ("cuff", "glucometer")}
    want = {
        "cuff": len(CUFF_HELD) + len(CUFF_OUTAGE) + len(CUFF_FULL),
        "glucometer": len(METER_HELD) + len(METER_OUTAGE) + len(METER_FULL),
    }
    conflicts = len(home.agent_events("measurement_conflict"))
    ok = stored == want and _stored(home) == total and conflicts == 0
    detail = (
        f"measurement_stored {_stored(home)} times for {total} readings (cuff "
        f"{stored['cuff']}/{want['cuff']}, glucometer {stored['glucometer']}/"
        f"{want['glucometer']}), {conflicts} conflicts, "
        f"{len(home.agent_events('measurement_duplicate'))} re-sends recognised"
    )
    lost = want["glucometer"] - stored["glucometer"]
    if lost > 0:
        again = [n for n in asked_after if n <= first_full]
        detail += (
            f"; {lost} of the meter's records refused by the full flash never stored: "
            f"{'asked again' if again else 'never asked again'} after room came back "
            f"(report requests from {asked_after or 'none'}): its high-water mark passed them"
        )
    home.note("nothing lost or stored twice", ok, detail)


SCENARIO: Final = Scenario(
    name="disk-full-during-outage",
    purpose="the flash full during an outage: nothing unstored is lost, all arrive once",
    devices=(
        Cuff("cuff", CUFF_HELD, options={"delete_on_confirm": False}),
        Glucometer("glucometer", METER_HELD, options={"record_interval_s": RECORD_INTERVAL_S}),
    ),
    faults=(
        "the platform unreachable: the hub's MQTT link blackholed by a loopback proxy",
        "two cuff measurements and two glucose records taken during the outage, stored",
        f"then the flash full: RLIMIT_FSIZE of {FULL_BYTES} bytes on the running daemon "
        f"(EFBIG: no outbox page writable) while the meter takes {len(METER_FULL)} records "
        f"and the cuff (keeping its memory) {len(CUFF_FULL)} measurements; lifted once both "
        "were refused and the meter asked again",
        "room again, every reading committed while the link is still down, then the link back",
    ),
    drive=drive,
    setup=setup,
    needs=frozenset({"proxy", "disk_limit"}),
    receipt_timeout_s=5.0,
    timeout_s=110.0,
)
