"""``homehub modem status`` and ``homehub modem at`` against the emulated modem, over a real pty.

The figures printed are exactly those the emulator was set to: its identity, SIM, network,
cell and signal (hil/emulators/modem_at.py), worked out by hand below. One test runs the
installed ``homehub`` entry point in a subprocess; the others call :func:`agent.cli.main`
in-process. Identifiers (IMEI, ICCID) are printed, which is the command's purpose, and the
tests consume that output so that it never reaches a captured log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
import serial

from agent.cli import main
from agent.modem.status import KEYS
from hil.emulators.modem import (
    EmulatedModem,
    ModemState,
    Network,
    Registration,
    Signal,
    SimCard,
    Technology,
)

NOW: Final = datetime(2026, 12, 2, 18, 30, 5, tzinfo=UTC)
HOMEHUB: Final = Path(sys.executable).with_name("homehub")

#: The emulator's defaults (ModuleIdentity, SimCard, Network, Cell, Signal), LTE at home,
#: as figures: cell 0x1A2B3C4, TAC 0x1A2B, band 3, -90 dBm / -10 dB / 15 dB / -60 dBm.
LTE_FIGURES: Final[dict[str, Any]] = {
    "manufacturer": "Quectel",
    "model": "RM500Q-GL",
    "revision": "RM500QGLABR11A06M4G",
    "imei": "860000000000017",
    "sim": "ready",
    "iccid": "8988000000000000016",
    "registration": "home",
    "technology": "LTE",
    "operator": "HomeHub Test",
    "mcc": "001",
    "mnc": "01",
    "cell_id": 0x1A2B3C4,
    "tac": 0x1A2B,
    "band": 3,
    "rsrp_dbm": -90,
    "rsrq_db": -10,
    "sinr_db": 15,
    "rssi_dbm": -60,
    "apn": None,
    "ip_address": None,
    "network_time": "2026-12-02T18:30:05+00:00",
    "last_recovery": None,
}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[EmulatedModem]:
    with EmulatedModem(tmp_path, ModemState(utc_now=lambda: NOW)) as emulated:
        yield emulated


def status_json(modem: EmulatedModem, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert 0 == main(["modem", "status", "--port", str(modem.path), "--json", "--timeout-s", "2"])
    out = capsys.readouterr().out
    assert 1 == out.count("\n")
    assert out.endswith("\n")
    figures = json.loads(out)
    assert isinstance(figures, dict)
    return figures


class TestStatus:
    def test_lte_figures_exactly(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """LTE at home: every key, in order, numbers as numbers, unknowns null."""
        figures = status_json(modem, capsys)
        assert list(KEYS) == list(figures)
        assert LTE_FIGURES == figures

    def test_nr5g_sa_roaming_figures(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """NR5G-SA, roaming on another PLMN: the NR cell's identity and signal, no RSSI."""
        modem.state.set_network(
            Network(operator="Visited Net", mcc="262", mnc="001", apn=None, utc_offset_quarters=8)
        )
        modem.state.set_radio(
            Technology.NR5G_SA, Signal(rsrp_dbm=-101, rsrq_db=-12, sinr_db=7, rssi_dbm=-70)
        )
        modem.state.set_registration(Registration.ROAMING)
        figures = status_json(modem, capsys)
        assert {
            **LTE_FIGURES,
            "registration": "roaming",
            "technology": "NR5G-SA",
            "operator": "Visited Net",
            "mcc": "262",
            "mnc": "001",
            "cell_id": 0x1A2B3C4D5,
            "tac": 0x1A2B,
            "band": 78,
            "rsrp_dbm": -101,
            "rsrq_db": -12,
            "sinr_db": 7,
            "rssi_dbm": None,
        } == figures

    def test_nr5g_nsa_figures(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """EN-DC: the NR leg's band and signal, the LTE anchor's cell, TAC and RSSI."""
        modem.state.set_radio(
            Technology.NR5G_NSA,
            Signal(rsrp_dbm=-95, rsrq_db=-11, sinr_db=12, rssi_dbm=-66),
            Signal(rsrp_dbm=-88, rsrq_db=-9, sinr_db=21),
        )
        figures = status_json(modem, capsys)
        assert {
            **LTE_FIGURES,
            "technology": "NR5G-NSA",
            "band": 78,
            "rsrp_dbm": -88,
            "rsrq_db": -9,
            "sinr_db": 21,
            "rssi_dbm": -66,
        } == figures

    def test_pin_locked_sim(self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]) -> None:
        """A PIN-locked SIM: ICCID still read, not registered (the module camps on the cell in
        limited service: its cell and signal still show); no PIN entered."""
        modem.state.set_sim(SimCard(pin="1234"))
        figures = status_json(modem, capsys)
        assert {
            **LTE_FIGURES,
            "sim": "pin_required",
            "registration": "not_registered",
            "operator": None,
        } == figures
        assert 0 == modem.state.count('AT+CPIN="1234"')
        assert not any(line.startswith("AT+CPIN=") for line in modem.state.commands)

    def test_status_changes_nothing(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The status command only asks: no APN, no data call, no radio or reset command."""
        status_json(modem, capsys)
        writes = [c for c in modem.state.commands if "=" in c and not c.endswith("?")]
        assert ["AT+CMEE=1", 'AT+QENG="servingcell"', "AT+CGPADDR=1", "AT+QLTS=1"] == writes

    def test_text_table(self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --json: one figure a line, '-' for unknown, cell and TAC also in hex."""
        assert 0 == main(["modem", "status", "--port", str(modem.path)])
        lines = capsys.readouterr().out.splitlines()
        assert len(KEYS) == len(lines)
        assert "cell_id        27440068 (0x1A2B3C4)" == lines[11]
        assert "apn            -" == lines[18]
        assert "last_recovery  -" == lines[21]

    def test_the_daemons_configuration(
        self, modem: EmulatedModem, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--config: the [modem] port of the daemon's configuration; a hub configured
        without a modem is told so (exit 2), naming the file."""
        example = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"
        text = example.read_text()
        with_modem = tmp_path / "with-modem.toml"
        with_modem.write_text(
            text.replace('backend = "none"', f'backend = "at"\nport = "{modem.path}"', 1)
        )
        assert 0 == main(["modem", "status", "--config", str(with_modem), "--json"])
        assert LTE_FIGURES == json.loads(capsys.readouterr().out)
        without = tmp_path / "no-modem.toml"
        without.write_text(text)
        assert 2 == main(["modem", "status", "--config", str(without)])
        assert (
            f'homehub: --config: {without}: no modem configured ([modem] backend = "none":'
            " the hub uses Ethernet or Wi-Fi); give --port to ask a module anyway\n"
        ) == capsys.readouterr().err

    def test_installed_entry_point(self, modem: EmulatedModem) -> None:
        """The installed ``homehub`` console script prints the same figures."""
        result = subprocess.run(
            [str(HOMEHUB), "modem", "status", "--port", str(modem.path), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (0, "") == (result.returncode, result.stderr)
        assert LTE_FIGURES == json.loads(result.stdout)


class TestRawCommand:
    def test_warns_and_prints_the_answer(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A warning on stderr; the information lines and the final result on stdout."""
        assert 0 == main(["modem", "at", "AT+CSQ", "--port", str(modem.path)])
        captured = capsys.readouterr()
        assert "+CSQ: 26,99\nOK\n" == captured.out
        assert captured.err.startswith("homehub: warning: the command goes to the modem as typed")

    def test_error_answer_exits_1(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An error answer is printed and the exit code is 1."""
        modem.state.set_sim(None)
        assert 1 == main(["modem", "at", "AT+CPIN?", "--port", str(modem.path)])
        assert "+CME ERROR: 10\n" == capsys.readouterr().out


class TestBadArguments:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["modem", "status"], "one of the arguments --port --config is required"),
            (
                ["modem", "status", "--port", "/dev/null", "--config", "x.toml"],
                "argument --config: not allowed with argument --port",
            ),
            (
                ["modem", "status", "--port", "/dev/null", "--baud", "1234"],
                "argument --baud: '1234' is not a serial rate",
            ),
            (
                ["modem", "status", "--port", "/dev/null", "--timeout-s", "0"],
                "argument --timeout-s: '0' is not in (0, 600] seconds",
            ),
            (["modem", "at", "--port", "/dev/null"], "the following arguments are required"),
            (["modem", "reboot", "--port", "/dev/null"], "invalid choice: 'reboot'"),
        ],
    )
    def test_argparse_errors(
        self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Missing or malformed arguments: exit 2 and a line naming the argument."""
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert 2 == exited.value.code
        assert message in capsys.readouterr().err

    def test_missing_port(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A port path that does not exist: exit 2, naming --port and the path."""
        missing = tmp_path / "ttyUSB9"
        assert 2 == main(["modem", "status", "--port", str(missing)])
        assert (
            f"homehub: --port: {missing}: no such port (is the module plugged in?)\n"
            == capsys.readouterr().err
        )

    def test_not_a_serial_port(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A regular file is not a port: exit 2."""
        assert 2 == main(["modem", "status", "--port", str(tmp_path)])
        assert "not a serial port" in capsys.readouterr().err

    def test_malformed_at_command(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A raw command that is not one AT command line: exit 2, nothing sent."""
        sent = modem.state.counters.commands
        assert 2 == main(["modem", "at", "ATI;+CSQ", "--port", str(modem.path)])
        assert "more than one command on the line" in capsys.readouterr().err
        assert 2 == main(["modem", "at", "reboot", "--port", str(modem.path)])
        assert 'does not start with "AT"' in capsys.readouterr().err
        assert sent == modem.state.counters.commands


class TestPortTrouble:
    def test_port_held_by_another_program(
        self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Another program holds the port (ModemManager, the daemon): exit 1, saying so."""
        holder = serial.Serial(str(modem.path), exclusive=True)
        try:
            assert 1 == main(["modem", "status", "--port", str(modem.path)])
        finally:
            holder.close()
        err = capsys.readouterr().err
        assert err.startswith("homehub: ModemTransportError: modem: ")
        assert "locked by another program (ModemManager?" in err

    def test_module_silent(self, modem: EmulatedModem, capsys: pytest.CaptureFixture[str]) -> None:
        """A module that does not answer: exit 1 after the timeout, naming the command."""
        modem.state.swallow("AT")
        assert 1 == main(["modem", "status", "--port", str(modem.path), "--timeout-s", "0.3"])
        assert "AT: no final result code within 0.3 s" in capsys.readouterr().err
