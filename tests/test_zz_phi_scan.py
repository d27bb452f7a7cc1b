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


def test_recorded_child_output_is_scanned() -> None:
    """A child process's output handed to record_output is scanned like a test's own."""
    text = f"child said {phi_canaries.PATIENT_ID}\n"
    assert ["patient id"] == phi_canaries.scan_text(text)
    before = len(phi_canaries._captured)
    phi_canaries.record_output("selftest [child stderr]", text.encode())
    try:
        assert any("selftest [child stderr]" in line for line in phi_canaries.leaks())
    finally:
        del phi_canaries._captured[before:]
    assert not any("selftest" in line for line in phi_canaries.leaks())


def test_output_path_is_under_the_scanned_directory() -> None:
    first = phi_canaries.output_path("tests/x.py::test a [mosquitto]")
    assert phi_canaries.log_dir() == first.parent
    assert "tests_x.py_test_a_mosquitto_.log" == first.name
    first.write_text("")
    try:
        assert first != phi_canaries.output_path("tests/x.py::test a [mosquitto]")
    finally:
        first.unlink()
