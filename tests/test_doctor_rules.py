"""``homehub doctor``'s judgements (agent/tech/doctor_rules.py) on plain values: the findings
and fixes the probes cannot easily be made to produce on this machine (a clock never set, a
clock far from the network's, a blocked SIM, a key owned by a stranger), and the exit code's
cap. The probes' side of each is in tests/test_doctor.py."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Final

import pytest

from agent.tech.doctor_report import CheckResult, Outcome, exit_code, to_json
from agent.tech.doctor_rules import (
    FileFacts,
    certificate_result,
    clock_result,
    disk_result,
    exposure_of,
    key_file_result,
    modem_results,
    systemd_unit_summary,
    unit_result,
)

NOW: Final = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
KEY: Final = Path("/etc/homehub/keys/data.key")
MIB: Final = 1024 * 1024


def test_clock_never_set() -> None:
    """A Pi that booted without a network: fake-hwclock's 1970 (or last year)."""
    result = clock_result(
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        plausible=False,
        network_time=None,
        timedate={"NTP": True, "NTPSynchronized": True},
    )
    assert result == CheckResult.failed(
        "clock synchronized",
        "the clock reads 1970-01-01, before 2026-01-01: never set",
        "timedatectl set-ntp true; until NTP answers, the modem's network time is used",
    )


def test_clock_far_from_the_network_time() -> None:
    result = clock_result(
        NOW,
        plausible=True,
        network_time=(NOW + dt.timedelta(minutes=20)).isoformat(),
        timedate={"NTP": True, "NTPSynchronized": True},
    )
    assert result.outcome is Outcome.FAIL
    assert result.finding == (
        "the clock is more than 900 s from the network's time (the daemon stamps readings"
        " with the network's time meanwhile)"
    )
    near = clock_result(
        NOW,
        plausible=True,
        network_time=(NOW + dt.timedelta(minutes=10)).isoformat(),
        timedate={"NTP": True, "NTPSynchronized": True},
    )
    assert near == CheckResult.passed("clock synchronized", "synchronized (NTP)")


def test_clock_ntp_on_but_unsynchronized_and_timedated_absent() -> None:
    waiting = clock_result(
        NOW, plausible=True, network_time=None, timedate={"NTP": True, "NTPSynchronized": False}
    )
    assert waiting.fix == "check the network reaches an NTP server: timedatectl timesync-status"
    absent = clock_result(NOW, plausible=True, network_time=None, timedate=None)
    assert absent.outcome is Outcome.SKIP


@pytest.mark.parametrize(
    ("facts", "finding", "fix"),
    [
        (
            FileFacts(stat.S_IFREG | 0o600, 4242),
            f"{KEY} is owned by uid 4242, not the service's user",
            f"chown homehub: {KEY}",
        ),
        (
            FileFacts(stat.S_IFREG | 0o604, 0),
            f"{KEY} has mode 0604: open to others",
            f"chmod 600 {KEY}",
        ),
        (
            FileFacts(stat.S_IFLNK | 0o777, 0),
            f"{KEY} is a symlink (the daemon refuses to follow one)",
            f"replace {KEY} with the key file itself",
        ),
        (
            FileFacts(stat.S_IFDIR | 0o700, 0),
            f"{KEY} is not a regular file",
            f"replace {KEY} with the key file",
        ),
    ],
)
def test_key_file_faults(facts: FileFacts, finding: str, fix: str) -> None:
    assert key_file_result("key file: data key", KEY, facts, {0}) == CheckResult.failed(
        "key file: data key", finding, fix
    )


def test_key_file_private_and_missing() -> None:
    ok = key_file_result("key file: data key", KEY, FileFacts(stat.S_IFREG | 0o400, 0), {0})
    assert ok is not None
    assert ok.outcome is Outcome.PASS
    assert key_file_result("key file: data key", KEY, None, {0}) is None


def test_certificate_not_yet_valid_and_ca_ending_soon() -> None:
    path = Path("/etc/homehub/tls/hub.pem")
    early = certificate_result(
        "certificate: TLS client", path, NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=400),
        NOW, fix="rotate",
    )  # fmt: skip
    assert early.outcome is Outcome.FAIL
    assert early.fix == "check the clock (see the clock check), else rotate"
    ca = certificate_result(
        "certificate: broker CA", path, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=5),
        NOW, fix="install", rotated_here=False,
    )  # fmt: skip
    assert ca == CheckResult.passed(
        "certificate: broker CA",
        f"{path}: valid until 2026-12-07 (in 5 days: the platform renews it)",
    )


@pytest.mark.parametrize(
    ("sim", "finding", "fix"),
    [
        (
            "puk_required",
            "the SIM is blocked: its PUK is needed (read on /dev/ttyUSB2)",
            "unblock the SIM with the PUK from the operator, then check [modem] pin_file",
        ),
        (
            "error",
            "the SIM does not answer (SIM error) (read on /dev/ttyUSB2)",
            "switch the hub off and reseat the SIM",
        ),
        (
            None,
            "the module does not report its SIM yet (read on /dev/ttyUSB2)",
            "wait a minute after power-up, then run homehub doctor again",
        ),
    ],
)
def test_sim_faults(sim: str | None, finding: str, fix: str) -> None:
    sim_result, registration = modem_results(
        {"sim": sim, "registration": "not_registered", "imei": "860000000000017"},
        "read on /dev/ttyUSB2",
        pin_file=None,
    )
    assert sim_result == CheckResult.failed("modem and SIM", finding, fix)
    assert registration.outcome is Outcome.SKIP


def test_pin_required_with_a_pin_file_and_roaming() -> None:
    sim_result, _ = modem_results(
        {"sim": "pin_required"}, "from ModemManager", pin_file=Path("/etc/homehub/keys/sim-pin")
    )
    assert (
        sim_result.fix == "check the PIN in /etc/homehub/keys/sim-pin: the module still asks for it"
    )
    sim_result, registration = modem_results(
        {"sim": "ready", "registration": "roaming", "operator": "Visited", "technology": "NR5G-SA",
         "imei": "860000000000017", "iccid": "8988000000000000016"},
        "from ModemManager",
        pin_file=None,
    )  # fmt: skip
    assert registration.finding == "registered (roaming, Visited, NR5G-SA; from ModemManager)"
    assert "860000000000017" not in sim_result.finding + registration.finding


def test_disk() -> None:
    where = Path("/var/lib/homehub")
    assert disk_result(where, 300 * MIB, 256 * MIB, 0).outcome is Outcome.PASS
    # An outbox already at 200 MiB only grows by 56 MiB more.
    assert disk_result(where, 60 * MIB, 256 * MIB, 200 * MIB).outcome is Outcome.PASS
    assert disk_result(where, 50 * MIB, 256 * MIB, 200 * MIB).outcome is Outcome.FAIL


def test_unit_rating() -> None:
    output = "✓ UMask=   ...\n\n→ Overall exposure level for homehub.service: 2.1 OK 🙂\n"
    assert exposure_of(output) == 2.1
    assert exposure_of("garbage") is None
    unit = Path("/lib/systemd/system/homehub.service")
    assert unit_result(unit, "installed", 1.5).outcome is Outcome.PASS
    assert unit_result(unit, "installed", 2.1).finding == (
        f"{unit} (installed) is rated 2.1, above 1.5"
    )
    assert unit_result(unit, "installed", None).outcome is Outcome.FAIL


def test_exit_code_is_capped_and_json_is_a_list() -> None:
    many = [CheckResult.failed(f"c{i}", "x", "y") for i in range(150)]
    assert exit_code(many) == 100
    assert exit_code([CheckResult.skipped("a", "b"), CheckResult.passed("c", "d")]) == 0
    assert to_json(many[:1]) == '[{"check": "c0", "result": "fail", "finding": "x", "fix": "y"}]'


def test_systemd_unit_summary() -> None:
    """A daemon waiting for its storage holds no lock; systemd's STATUS= says why."""
    show = (
        "ActiveState=activating\nSubState=start\nStatusText=waiting for storage: disk I/O error\n"
    )
    assert systemd_unit_summary(show) == 'activating/start: "waiting for storage: disk I/O error"'
    assert systemd_unit_summary("ActiveState=inactive\nSubState=dead\nStatusText=\n") == (
        "inactive/dead"
    )
    assert systemd_unit_summary("") is None
