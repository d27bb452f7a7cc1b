"""``homehub doctor``'s judgements (sans-I/O): what a probed fact means and the fix for it.

The probes (agent/tech/doctor_probes.py, agent/tech/doctor_links.py) gather facts (a file's
mode, a certificate's dates, the modem's figures, free bytes, systemd's rating); the rules
here turn each into a :class:`~agent.tech.doctor_report.CheckResult`, so that every finding
and fix can be tested with plain values and reads the same whichever probe saw it.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.ble.current_time import HUB_CLOCK_FLOOR
from agent.network_time import TOLERANCE_S, clock_disagrees
from agent.tech.doctor_report import CheckResult

CERT_RENEW_DAYS: Final = 30
"""A certificate expiring within this many days fails with "rotate": rotation needs the
platform and a CSR round trip, which a month leaves room for."""
UNIT_EXPOSURE_MAX: Final = 1.5
"""``systemd-analyze security`` rating the unit must not exceed (issue 11; ``make
unit-security`` holds the repo's unit to it too)."""
SERVICE_USER: Final = "homehub"
"""The unit's ``User=`` (systemd/homehub.service)."""


# ---------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What ``lstat`` says of a file that exists."""

    mode: int
    uid: int


def key_file_result(
    check: str, path: Path, facts: FileFacts | None, owners: Collection[int]
) -> CheckResult | None:
    """The verdict on a private key file, or ``None`` when it is missing (the caller knows
    whether that is fine). ``owners``: the uids that may own it.

    A key file must be a regular file (not a symlink: the daemon refuses to follow one),
    owned by the service's user (or root), with no group or other permission bits.
    """
    if facts is None:
        return None
    if stat.S_ISLNK(facts.mode):
        return CheckResult.failed(
            check,
            f"{path} is a symlink (the daemon refuses to follow one)",
            f"replace {path} with the key file itself",
        )
    if not stat.S_ISREG(facts.mode):
        return CheckResult.failed(
            check, f"{path} is not a regular file", f"replace {path} with the key file"
        )
    if facts.uid not in owners:
        return CheckResult.failed(
            check,
            f"{path} is owned by uid {facts.uid}, not the service's user",
            f"chown {SERVICE_USER}: {path}",
        )
    loose = stat.S_IMODE(facts.mode) & 0o077
    if loose:
        who = " and ".join(
            w for w, bits in (("group", 0o070), ("others", 0o007)) if stat.S_IMODE(loose) & bits
        )
        return CheckResult.failed(
            check,
            f"{path} has mode {stat.S_IMODE(facts.mode):04o}: open to {who}",
            f"chmod 600 {path}",
        )
    return CheckResult.passed(check, f"{path}: mode {stat.S_IMODE(facts.mode):04o}, owner ok")


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------


def certificate_result(
    check: str,
    path: Path,
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    *,
    fix: str,
    rotated_here: bool = True,
) -> CheckResult:
    """Valid now and, for a certificate the hub rotates itself (``rotated_here``: its client
    certificate), for :data:`CERT_RENEW_DAYS` more days; ``fix``: how this certificate is
    renewed. A CA's or the platform's certificate close to its end is only noted: the
    platform replaces it, the hub cannot."""
    day = not_after.date().isoformat()
    if now < not_before:
        return CheckResult.failed(
            check,
            f"{path} is not valid before {not_before.isoformat()} (is the clock right?)",
            "check the clock (see the clock check), else " + fix,
        )
    if now >= not_after:
        return CheckResult.failed(check, f"{path} expired on {day}", fix)
    left = not_after - now
    if left < dt.timedelta(days=CERT_RENEW_DAYS):
        if rotated_here:
            return CheckResult.failed(
                check, f"{path} expires on {day} (in {left.days} days)", f"{fix} before {day}"
            )
        return CheckResult.passed(
            check, f"{path}: valid until {day} (in {left.days} days: the platform renews it)"
        )
    return CheckResult.passed(check, f"{path}: valid until {day}")


# ---------------------------------------------------------------------------
# Modem
# ---------------------------------------------------------------------------

_SIM_FIXES: Final = {
    "absent": ("no SIM in the module", "switch the hub off and insert the SIM"),
    "error": ("the SIM does not answer (SIM error)", "switch the hub off and reseat the SIM"),
    "puk_required": (
        "the SIM is blocked: its PUK is needed",
        "unblock the SIM with the PUK from the operator, then check [modem] pin_file",
    ),
}

_REGISTRATION_FIXES: Final = {
    "searching": (
        "searching for a network",
        "check the antenna and the coverage where the hub stands",
    ),
    "denied": (
        "the network denied registration",
        "ask the operator: the SIM's subscription is inactive or barred",
    ),
    "not_registered": (
        "not registered and not searching",
        "check the SIM check above; the daemon re-registers the module (AT+COPS=0)",
    ),
}


def modem_results(
    figures: Mapping[str, Any], source: str, *, pin_file: Path | None
) -> tuple[CheckResult, CheckResult]:
    """The "modem and SIM" and "registration" results from the modem's figures (the keys of
    :class:`~agent.modem.status.ModemStatus`); ``source`` says where they were read. The
    identifiers (IMEI, ICCID) are never part of a finding."""
    sim_check, reg_check = "modem and SIM", "registration"
    model = figures.get("model") or "modem"
    sim = figures.get("sim")
    if sim is None:
        sim_result = CheckResult.failed(
            sim_check,
            f"the module does not report its SIM yet ({source})",
            "wait a minute after power-up, then run homehub doctor again",
        )
    elif sim == "ready":
        sim_result = CheckResult.passed(sim_check, f"{model}: SIM ready ({source})")
    elif sim == "pin_required":
        fix = (
            "set [modem] pin_file to a file (mode 0600) holding the SIM's PIN"
            if pin_file is None
            else f"check the PIN in {pin_file}: the module still asks for it"
        )
        sim_result = CheckResult.failed(sim_check, f"the SIM asks for its PIN ({source})", fix)
    else:
        finding, fix = _SIM_FIXES.get(sim, (f"SIM state {sim}", "reseat the SIM"))
        sim_result = CheckResult.failed(sim_check, f"{finding} ({source})", fix)
    if sim != "ready":
        return sim_result, CheckResult.skipped(reg_check, "no usable SIM (see the SIM check)")
    registration = figures.get("registration") or "unknown"
    if registration in ("home", "roaming"):
        operator = figures.get("operator") or "an operator"
        technology = figures.get("technology") or "?"
        where = "home network" if registration == "home" else "roaming"
        return sim_result, CheckResult.passed(
            reg_check, f"registered ({where}, {operator}, {technology}; {source})"
        )
    finding, fix = _REGISTRATION_FIXES.get(
        registration,
        ("registration state unknown", "check the antenna; ask `homehub modem status`"),
    )
    return sim_result, CheckResult.failed(reg_check, f"{finding} ({source})", fix)


# ---------------------------------------------------------------------------
# Clock
# ---------------------------------------------------------------------------

NTP_FIX: Final = "timedatectl set-ntp true"


def clock_result(
    now: dt.datetime,
    *,
    plausible: bool,
    network_time: str | None,
    timedate: Mapping[str, Any] | None,
) -> CheckResult:
    """The clock: ``plausible`` (not before :data:`~agent.ble.current_time.HUB_CLOCK_FLOOR`),
    within :data:`~agent.network_time.TOLERANCE_S` of the network's time the daemon recorded
    (``None``: none), and synchronized by NTP as timedated reports (``None``: it could not be
    asked; nothing more is concluded then)."""
    check = "clock synchronized"
    if not plausible:
        return CheckResult.failed(
            check,
            f"the clock reads {now:%Y-%m-%d}, before {HUB_CLOCK_FLOOR:%Y-%m-%d}: never set",
            f"{NTP_FIX}; until NTP answers, the modem's network time is used",
        )
    if network_time is not None and clock_disagrees(now, network_time):
        return CheckResult.failed(
            check,
            f"the clock is more than {TOLERANCE_S:.0f} s from the network's time"
            " (the daemon stamps readings with the network's time meanwhile)",
            f"{NTP_FIX}; timedatectl timesync-status shows whether an NTP server answers",
        )
    if timedate is None:
        return CheckResult.skipped(
            check, "timedated cannot be asked over D-Bus; the clock is plausible"
        )
    if timedate.get("NTPSynchronized") is True:
        return CheckResult.passed(check, "synchronized (NTP)")
    if timedate.get("NTP") is not True:
        return CheckResult.failed(check, "not synchronized: NTP is off", NTP_FIX)
    return CheckResult.failed(
        check,
        "not synchronized: NTP is on, no server answered yet (the modem's network time is"
        " used meanwhile)",
        "check the network reaches an NTP server: timedatectl timesync-status",
    )


# ---------------------------------------------------------------------------
# Disk space
# ---------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def disk_result(where: Path, free: int, quota: int, outbox_size: int) -> CheckResult:
    """Enough free space for the outbox to grow to its quota."""
    check = "disk space"
    growth = max(0, quota - outbox_size)
    if free < growth:
        return CheckResult.failed(
            check,
            f"{_mib(free)} free on the filesystem of {where}; the outbox may grow by"
            f" {_mib(growth)} to its quota ({_mib(quota)})",
            f"free space on the filesystem of {where}, or lower [outbox] quota_bytes"
            f" below {free + outbox_size}",
        )
    return CheckResult.passed(
        check, f"{_mib(free)} free on the filesystem of {where} (outbox quota {_mib(quota)})"
    )


# ---------------------------------------------------------------------------
# Unit hardening
# ---------------------------------------------------------------------------

_EXPOSURE_RE: Final = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def exposure_of(output: str) -> float | None:
    """The overall exposure in ``systemd-analyze security`` output, or ``None``."""
    found = _EXPOSURE_RE.search(output)
    return float(found.group(1)) if found else None


def unit_result(unit: Path, which: str, exposure: float | None) -> CheckResult:
    """The unit's rating against :data:`UNIT_EXPOSURE_MAX`."""
    check = "unit hardening"
    if exposure is None:
        return CheckResult.failed(
            check,
            f"systemd-analyze gave no rating for {unit} ({which})",
            f"systemd-analyze security --offline=true {unit}: fix what it reports",
        )
    if exposure > UNIT_EXPOSURE_MAX:
        return CheckResult.failed(
            check,
            f"{unit} ({which}) is rated {exposure}, above {UNIT_EXPOSURE_MAX}",
            "reinstall the shipped unit (systemd/homehub.service) and remove drop-ins that"
            " loosen it (systemctl cat homehub)",
        )
    return CheckResult.passed(check, f"{unit} ({which}) is rated {exposure}")


# ---------------------------------------------------------------------------
# The daemon under systemd
# ---------------------------------------------------------------------------

MAX_STATUS_TEXT: Final = 200


def systemd_unit_summary(show: str) -> str | None:
    """``systemctl show --property=ActiveState,SubState,StatusText`` output as one phrase
    (``active/running: "3 devices, 0 pending, online"``), ``None`` when it holds no state
    (the unit is not installed: ``ActiveState=inactive`` with no status is still said)."""
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    state = props.get("ActiveState")
    if not state:
        return None
    sub = props.get("SubState")
    phrase = f"{state}/{sub}" if sub else state
    text = props.get("StatusText", "").strip()[:MAX_STATUS_TEXT]
    return f'{phrase}: "{text}"' if text else phrase
