"""The platform-side checks every scenario ends with, the same for all.

Each returns :class:`Check` (a name, pass or fail, one line saying what was found: counts and
check names, never a reading's value or an identifier, so that the report and the CI log stay
free of what the scan looks for):

- ``exactly once``: every reading a delivering device held or took arrived at the platform,
  none twice after deduplication (one row per reading id in the platform's durable store),
  nothing else arrived (an impostor's or a neighbour's reading is an unexpected one);
- ``values and identifiers``: each arrival's values equal the emulator's; its hub identifier
  is its id, under this hub's device and run's patient; the IG identifier and the effective
  time are the device's own when its clock is trusted; from a clock the hub cannot trust,
  no IG identifier and an effective time on the hub's timeline (minutes from its arrival);
- ``signatures``: the platform rejected exactly the expected number of messages, and every
  arrival's envelope verifies a second time with the hub's own integrator API
  (agent/verify.py), independent of the receiver's pycose;
- ``security events``: the daemon logged exactly the expected ``security`` checks;
- ``unknown devices``: exactly the expected ``ble_unknown_device_seen`` reports;
- ``outbox drained``: nothing pending or refused once the platform holds everything;
- ``daemon exits``: every ``homehub run`` stopped with SIGTERM exited as expected;
- whatever the scenario's ``drive`` noted itself (:meth:`hil.scenarios.home.Home.note`);
- ``logs clean``: no run identity (patient id, serials, full addresses, System IDs) and no
  line of the hub's private key in any log of the run (daemon, broker, platform).
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from agent.errors import HubError
from agent.outbox import peek_counts
from agent.verify import verify_envelope
from hil.platform_store import PlatformStore
from hil.scenarios.base import HUB_ID, Check
from hil.scenarios.devices import Device, seen
from hil.scenarios.home import Arrival, Home

HUB_TIME_TOLERANCE_S: Final = 600.0
"""A reading from a clock the hub cannot trust lands on the hub's timeline: its effective time
is the hub's receipt time, or the device time mapped through the coincident timestamp; either
is within minutes of its arrival at the platform, never in the year 2000."""
KEY_LINE_MIN_CHARS: Final = 16
"""Lines of the hub's PEM key at least this long are canaries (the header lines are not)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """A reading the platform must hold once."""

    device: Device
    index: int
    reading: Any
    values: Hashable

    @property
    def label(self) -> str:
        """Its device's label."""
        return self.device.label


def expected_readings(home: Home) -> list[Expected]:
    """Every reading of a delivering device: held at the start or taken during the run.

    A continuous oximeter's samples (devices.ContinuousOximeter) count only where the hub's
    thinning rule keeps them: the scenario takes those with ``Home.measure`` and notifies the
    rest on the emulator, never expected (one of those arriving is an unexpected reading)."""
    out = []
    for index, device in enumerate(home.scenario.devices):
        if not device.delivers:
            continue
        for reading in (*device.readings, *home.measured.get(device.label, [])):
            out.append(Expected(device, index, reading, device.values(reading)))
    return out


def match(home: Home) -> tuple[dict[int, list[Arrival]], list[Arrival]]:
    """Arrivals per expected reading (by position in :func:`expected_readings`), and the
    arrivals that match none."""
    wanted = expected_readings(home)
    by_values: dict[Hashable, list[int]] = collections.defaultdict(list)
    for n, e in enumerate(wanted):
        by_values[e.values].append(n)
    matched: dict[int, list[Arrival]] = {n: [] for n in range(len(wanted))}
    unexpected: list[Arrival] = []
    for arrival in home.arrivals:
        view = seen(arrival.reading)
        slots = None if view is None else by_values.get(view.values)
        if not slots:
            unexpected.append(arrival)
            continue
        # Equal values from one device: fill the emptiest slot first.
        matched[min(slots, key=lambda n: len(matched[n]))].append(arrival)
    return matched, unexpected


def platform_rows(home: Home) -> int:
    """Readings the platform's durable store holds for the hub (one per id)."""
    store = PlatformStore.in_state_dir(home.run_dir / "platform")
    try:
        return len(store.seqs(HUB_ID))
    finally:
        store.close()


def check_exactly_once(home: Home) -> Check:
    """Every expected reading once, nothing else (see the module doc)."""
    wanted = expected_readings(home)
    matched, unexpected = match(home)
    missing = sum(1 for got in matched.values() if not got)
    twice = sum(1 for got in matched.values() if len(got) > 1)
    ids = [a.reading.id for a in home.arrivals]
    rows = platform_rows(home)
    problems = []
    if missing:
        problems.append(f"{missing} missing")
    if twice:
        problems.append(f"{twice} delivered more than once")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected")
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} ids repeated")
    if rows != len(wanted):
        problems.append(f"platform store holds {rows}")
    summary = f"{len(wanted)} expected, {len(home.arrivals)} arrived, {rows} stored"
    return Check("exactly once", not problems, "; ".join([summary, *problems]))


def _near(effective: str, wall: float) -> bool:
    """Whether ``effective`` is within :data:`HUB_TIME_TOLERANCE_S` of ``wall`` (Unix time)."""
    try:
        when = datetime.fromisoformat(effective).timestamp()
    except ValueError:
        return False
    return abs(when - wall) <= HUB_TIME_TOLERANCE_S


def check_values_and_identifiers(home: Home) -> Check:
    """Values, identifiers and times exact (see the module doc)."""
    wanted = expected_readings(home)
    matched, _ = match(home)
    problems: collections.Counter[str] = collections.Counter()
    for n, arrivals in matched.items():
        e = wanted[n]
        prefix = f"{home.ids.eui64(e.index)}-{home.ids.patient_id}-"
        for arrival in arrivals:
            reading = arrival.reading
            view = seen(reading)
            assert view is not None  # matched by its values
            if reading.hub_id != HUB_ID:
                problems["hub id"] += 1
            coded = f"{prefix}{view.code}-"
            if view.hub_identifier != reading.id or not reading.id.startswith(coded):
                problems["hub identifier"] += 1
            if e.device.trusted_time:
                # <device>-<patient>-<MDC code>-<device seconds>[-<supplemental>]
                ig = view.ig_identifier or ""
                seconds = ig.removeprefix(coded).split("-")[0]
                if not ig.startswith(coded) or seconds != str(e.device.ig_seconds(e.reading)):
                    problems["IG identifier"] += 1
                if view.effective != e.device.effective(e.reading):
                    problems["effective time"] += 1
            else:
                if view.ig_identifier is not None:
                    problems["IG identifier from an untrusted clock"] += 1
                if not _near(view.effective, arrival.wall):
                    problems["effective time (not the hub's)"] += 1
    checked = sum(len(a) for a in matched.values())
    detail = f"{checked} readings compared"
    if problems:
        detail += ": wrong " + ", ".join(f"{k} ({v})" for k, v in sorted(problems.items()))
    return Check("values and identifiers", not problems, detail)


def check_signatures(home: Home) -> Check:
    """The platform's rejections as expected; every arrival verifies again (agent/verify.py)."""
    rejected = sum(s.rejected_total for s in home.platform_stats())
    cert = home.pki.hub_cert.read_bytes()
    ca = home.pki.ca_cert.read_bytes()
    failed = 0
    for arrival in home.arrivals:
        try:
            verify_envelope(arrival.reading.envelope, cert, ca_pem=ca)
        except HubError:
            failed += 1
    want = home.scenario.expect.platform_rejections
    ok = rejected == want and failed == 0
    detail = (
        f"{len(home.arrivals)} verified twice (pycose, agent/verify.py), {failed} failed; "
        f"platform rejected {rejected} (expected {want})"
    )
    return Check("signatures", ok, detail)


def check_security_events(home: Home) -> Check:
    """Exactly the expected ``security`` events, by check."""
    seen = collections.Counter(str(e.get("check")) for e in home.agent_events("security"))
    want = collections.Counter(home.scenario.expect.security_checks)
    detail = f"logged {dict(sorted(seen.items())) or 'none'}, expected {dict(want) or 'none'}"
    return Check("security events", seen == want, detail)


def check_unknown_devices(home: Home) -> Check:
    """Exactly the expected number of unknown-device reports (each unknown device once per
    daemon life)."""
    seen = len(home.agent_events("ble_unknown_device_seen"))
    want = home.scenario.expect.unknown_devices
    return Check("unknown devices", seen == want, f"reported {seen}, expected {want}")


def check_outbox_drained(home: Home) -> Check:
    """Nothing pending or refused at the end."""
    try:
        counts = peek_counts(home.outbox_path)
    except HubError as exc:
        return Check("outbox drained", False, f"outbox unreadable: {type(exc).__name__}")
    ok = counts.pending == 0 and counts.refused == 0 and counts.damaged == 0
    detail = f"pending {counts.pending}, refused {counts.refused}, damaged {counts.damaged}"
    return Check("outbox drained", ok, detail)


def check_daemon_exits(home: Home) -> Check:
    """Every life stopped with SIGTERM exited with an expected code."""
    allowed = home.scenario.expect.agent_exit_codes
    termed = [code for how, code in home.agent_exits if how == "term"]
    killed = sum(1 for how, _ in home.agent_exits if how == "kill")
    alone = [code for how, code in home.agent_exits if how == "exited"]
    ok = bool(termed) and all(code in allowed for code in termed) and not alone
    detail = f"SIGTERM exits {termed}, SIGKILLed {killed} times"
    if alone:
        detail += f", exited by itself with {alone}"
    return Check("daemon exits", ok, detail)


def canaries(home: Home) -> dict[str, str]:
    """The run's identities and key lines that must not appear in a log: name -> text."""
    ids = home.ids
    found = {"patient id": ids.patient_id}
    for index, device in enumerate(home.scenario.devices):
        address = ids.address(index)
        eui64 = ids.eui64(index)
        found[f"{device.label} serial"] = ids.serial(index)
        found[f"{device.label} address"] = address
        found[f"{device.label} address (hex)"] = address.replace(":", "")
        found[f"{device.label} system id"] = eui64
        found[f"{device.label} system id (dashes)"] = "-".join(
            eui64[i : i + 2] for i in range(0, 16, 2)
        )
    key_lines = home.pki.hub_key.read_text().splitlines()
    for n, line in enumerate(key_lines):
        if len(line) >= KEY_LINE_MIN_CHARS and not line.startswith("-----"):
            found[f"hub key line {n}"] = line
    return found


def scan_logs(paths: list[Path], planted: dict[str, str]) -> list[str]:
    """``"<canary> in <file>"`` for every canary found (case-insensitive)."""
    lowered = {name: text.lower() for name, text in planted.items()}
    found: list[str] = []
    for path in paths:
        text = path.read_text(errors="replace").lower()
        found.extend(f"{name} in {path.name}" for name, t in lowered.items() if t in text)
    return found


def check_logs_clean(home: Home) -> Check:
    """No canary in any log of the run."""
    paths = home.log_paths()
    leaks = scan_logs(paths, canaries(home))
    names = ", ".join(p.name for p in paths)
    detail = f"scanned {names}: " + ("clean" if not leaks else "; ".join(leaks))
    return Check("logs clean", not leaks, detail)


def all_checks(home: Home) -> list[Check]:
    """Every platform-side check, in the report's order."""
    return [
        check_exactly_once(home),
        check_values_and_identifiers(home),
        check_signatures(home),
        check_security_events(home),
        check_unknown_devices(home),
        check_outbox_drained(home),
        check_daemon_exits(home),
        check_logs_clean(home),
        *home.notes,
    ]
