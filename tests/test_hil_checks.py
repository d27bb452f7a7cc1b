"""The HIL checks' own parts that a passing run never exercises: the log scan finds a planted
identity however it is written, each run's identities are its own; and ``python -m hil``'s
command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.__main__ import main
from hil.scenarios import SCENARIOS
from hil.scenarios.base import RunIdentities
from hil.scenarios.checks import scan_logs


def test_scan_finds_identities_in_any_case_and_names_the_file(tmp_path: Path) -> None:
    ids = RunIdentities.fresh()
    clean = tmp_path / "agent-1.log"
    clean.write_text('{"event": "ble_connected", "device": "..:10:A0"}\n')
    leaky = tmp_path / "mosquitto.log"
    leaky.write_text(f"client {ids.address(0).lower()} connected\n")
    planted = {"patient id": ids.patient_id, "cuff address": ids.address(0)}
    assert ["cuff address in mosquitto.log"] == scan_logs([clean, leaky], planted)
    assert [] == scan_logs([clean], planted)


def test_each_run_has_its_own_identities() -> None:
    first, second = RunIdentities.fresh(), RunIdentities.fresh()
    assert first.patient_id != second.patient_id
    assert first.address(0) != first.address(1)
    assert len({first.eui64(i) for i in range(3)}) == 3
    assert all(len(first.eui64(i)) == 16 for i in range(3))


def test_command_line_lists_and_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["list"])
    listed = capsys.readouterr().out.splitlines()
    assert [s.name for s in SCENARIOS] == [line.split()[0] for line in listed]
    assert 2 == main(["run", "no-such-scenario"])
    assert "no scenario 'no-such-scenario'" in capsys.readouterr().err
