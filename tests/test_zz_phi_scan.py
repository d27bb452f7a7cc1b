"""Runs last: no planted canary (patient id, serial, full address, key material) in any log."""

from __future__ import annotations

from tests import phi_canaries


def test_no_canary_in_any_log_of_the_suite() -> None:
    """Every captured output and log file of the suite so far is free of planted PHI."""
    assert phi_canaries.reports_seen() > 0
    assert phi_canaries.leaks() == []


def test_the_scan_finds_a_planted_canary(tmp_path: object) -> None:
    """The scanner is not blind: a canary written to a scanned log file is reported."""
    leak = phi_canaries.log_dir() / "selftest.log"
    leak.write_text(f"oops {phi_canaries.DEVICE_SERIAL}\n")
    try:
        assert any(
            "device serial" in line and "selftest.log" in line for line in phi_canaries.leaks()
        )
    finally:
        leak.unlink()
