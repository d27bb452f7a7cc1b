"""The emulated modem answers as an RM5xxQ-class module does, byte for byte, over a real pty.

Every test opens the emulator's port with pyserial, as the hub will, reads up to the final
result code (or the URC it expects) and compares exact bytes. Nothing sleeps: a reset's time
runs on a fake clock the test advances, and silence is shown by what comes next (a swallowed
command is followed by the next command's answer and nothing else).

Expected bytes come from the formats cited in :mod:`hil.emulators.modem_at` (3GPP TS 27.007
and the Quectel RG50xQ&RM5xxQ manuals), worked out by hand for the default configuration:
PLMN 001/01 "HomeHub Test", LTE band 3 EARFCN 1850 PCI 101 cell 1A2B3C4 TAC 1A2B, NR band 78
ARFCN 633984 PCI 202 cell 1A2B3C4D5, RSRP -90 dBm, RSRQ -10 dB, SINR 15 dB, RSSI -60 dBm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest
import serial

from hil.emulators.modem import (
    EmulatedModem,
    ModemState,
    Network,
    Registration,
    Signal,
    SimCard,
    SimStatus,
    Technology,
    WrongApn,
    preset_state,
)
from hil.emulators.modem_at import (
    cesq_rsrp,
    cesq_rsrq,
    cesq_ss_rsrp,
    cesq_ss_rsrq,
    cesq_ss_sinr,
    csq_rssi,
    qeng_lte_sinr,
)
from tests import phi_canaries

READ_TIMEOUT_S: Final = 3.0
"""Only reached when a test fails: every expected answer is written within milliseconds."""
NOW: Final = datetime(2026, 12, 2, 17, 30, 5, tzinfo=UTC)
REPO: Final = Path(__file__).resolve().parents[1]

LTE_NOCONN: Final = (
    b'+QENG: "servingcell","NOCONN","LTE","FDD",001,01,1A2B3C4,101,1850,3,5,5,1A2B,'
    b"-90,-10,-60,15,0,-32768,37"
)


class FakeClock:
    """The modem's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_line(port: serial.Serial) -> bytes:
    """The next non-empty line, without its CR LF."""
    while True:
        line = port.read_until(b"\r\n")
        assert line.endswith(b"\r\n"), f"no line within {READ_TIMEOUT_S} s: {line!r}"
        if line != b"\r\n":
            return line[:-2]


def read_answer(port: serial.Serial) -> bytes:
    """Everything up to and including the final result code line."""
    data = b""
    while True:
        line = port.read_until(b"\r\n")
        assert line.endswith(b"\r\n"), f"no final result within {READ_TIMEOUT_S} s: {data + line!r}"
        data += line
        if line in (b"OK\r\n", b"ERROR\r\n") or line.startswith(b"+CME ERROR: "):
            return data


def at(port: serial.Serial, command: str) -> bytes:
    port.write(command.encode("latin-1") + b"\r")
    return read_answer(port)


def info(*lines: bytes) -> bytes:
    """An answer with information text (echo off): the lines in one block, then OK."""
    return b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\nOK\r\n"


OK: Final = b"\r\nOK\r\n"


def open_port(modem: EmulatedModem) -> serial.Serial:
    port = serial.Serial(str(modem.path), timeout=READ_TIMEOUT_S)
    assert at(port, "ATE0") == b"ATE0\r\r\nOK\r\n"  # echo is on after boot
    return port


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def modem(tmp_path: Path, clock: FakeClock) -> Iterator[EmulatedModem]:
    with EmulatedModem(tmp_path, ModemState(utc_now=lambda: NOW), clock=clock) as emulated:
        yield emulated


@pytest.fixture
def port(modem: EmulatedModem) -> Iterator[serial.Serial]:
    with open_port(modem) as opened:
        yield opened


class TestIdentityAndBasics:
    def test_echo_is_on_until_ate0(self, modem: EmulatedModem) -> None:
        """A freshly opened port echoes the command line, CR included, before the answer."""
        with serial.Serial(str(modem.path), timeout=READ_TIMEOUT_S) as port:
            assert b"AT\r\r\nOK\r\n" == at(port, "AT")
            assert b"ATE0\r\r\nOK\r\n" == at(port, "ATE0")
            assert OK == at(port, "AT")
            assert b"\r\nOK\r\n" == at(port, "ATE1")
            assert b"AT\r\r\nOK\r\n" == at(port, "AT")

    def test_identity(self, port: serial.Serial) -> None:
        """ATI is three lines in one block; +CGMI/+CGMM/+CGMR/+CGSN one bare line each."""
        assert info(b"Quectel", b"RM500Q-GL", b"Revision: RM500QGLABR11A06M4G") == at(port, "ATI")
        assert info(b"Quectel") == at(port, "AT+CGMI")
        assert info(b"RM500Q-GL") == at(port, "AT+CGMM")
        assert info(b"RM500QGLABR11A06M4G") == at(port, "AT+CGMR")
        assert info(b"860000000000017") == at(port, "AT+CGSN")
        assert info(b"001010000000001") == at(port, "AT+CIMI")
        assert info(b"+QCCID: 8988000000000000016") == at(port, "AT+QCCID")

    def test_unknown_command_follows_cmee(self, port: serial.Serial) -> None:
        """ERROR under CMEE=0, the numeric and the verbose +CME ERROR 4 under 1 and 2."""
        assert info(b"+CMEE: 1") == at(port, "AT+CMEE?")
        assert b"\r\n+CME ERROR: 4\r\n" == at(port, "AT+NOSUCH")
        assert OK == at(port, "AT+CMEE=0")
        assert b"\r\nERROR\r\n" == at(port, "AT+NOSUCH")
        assert OK == at(port, "AT+CMEE=2")
        assert b"\r\n+CME ERROR: operation not supported\r\n" == at(port, "AT+NOSUCH")

    def test_concatenated_commands_answer_in_order_with_one_ok(self, port: serial.Serial) -> None:
        """Extended commands joined by ';' (V.250): one block each, one final result."""
        assert b"\r\n+CSQ: 26,99\r\n\r\n+CFUN: 1\r\n\r\nOK\r\n" == at(port, "AT+CSQ;+CFUN?")

    def test_clock_and_network_time(self, port: serial.Serial) -> None:
        """+CCLK local time with the zone in quarters; +QLTS in its four-digit-year form."""
        assert info(b'+CCLK: "26/12/02,18:30:05+04"') == at(port, "AT+CCLK?")
        assert info(b'+QLTS: "2026/12/02,17:30:05+04,0"') == at(port, "AT+QLTS=1")
        assert info(b'+QLTS: "2026/12/02,18:30:05+04,0"') == at(port, "AT+QLTS=2")

    def test_usbnet_and_qnetdevctl(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """+QCFG="usbnet" is kept; +QNETDEVCTL brings the call up and reports it by URC."""
        assert info(b'+QCFG: "usbnet",0') == at(port, 'AT+QCFG="usbnet"')
        assert OK == at(port, 'AT+QCFG="usbnet",1')
        assert info(b'+QCFG: "usbnet",1') == at(port, 'AT+QCFG="usbnet"')
        assert info(b"+QNETDEVCTL: 0,0,0,0") == at(port, "AT+QNETDEVCTL?")
        assert OK == at(port, "AT+QNETDEVCTL=1,1,1")
        assert b"+QNETDEVSTATUS: 1" == read_line(port)
        assert info(b"+QNETDEVCTL: 1,1,1,1") == at(port, "AT+QNETDEVCTL?")
        modem.state.drop_data_call()
        assert b"+CGEV: NW PDN DEACT 1" == read_line(port)
        assert b"+QNETDEVSTATUS: 0" == read_line(port)
        assert info(b"+QNETDEVCTL: 1,1,1,0") == at(port, "AT+QNETDEVCTL?")


class TestRadio:
    def test_lte(self, port: serial.Serial) -> None:
        """LTE: one servingcell line, SINR in dB, CSQ and CESQ indexes."""
        assert info(LTE_NOCONN) == at(port, 'AT+QENG="servingcell"')
        assert info(b"+CSQ: 26,99") == at(port, "AT+CSQ")
        assert info(b"+CESQ: 99,99,255,255,20,51,255,255,255") == at(port, "AT+CESQ")
        assert info(b'+COPS: 0,0,"HomeHub Test",7') == at(port, "AT+COPS?")
        assert info(b'+QNWINFO: "FDD LTE","00101","LTE BAND 3",1850') == at(port, "AT+QNWINFO")
        assert OK == at(port, "AT+CEREG=2;+C5GREG=2")
        assert info(b'+CEREG: 2,1,"1A2B","1A2B3C4",7') == at(port, "AT+CEREG?")
        assert info(b"+C5GREG: 2,0") == at(port, "AT+C5GREG?")

    def test_nr5g_nsa(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """EN-DC: the state line, then the LTE anchor and the NR leg on lines of their own."""
        modem.state.set_radio(
            Technology.NR5G_NSA, nr_signal=Signal(rsrp_dbm=-85, rsrq_db=-11, sinr_db=20)
        )
        assert info(
            b'+QENG: "servingcell","NOCONN"',
            b'+QENG: "LTE","FDD",001,01,1A2B3C4,101,1850,3,5,5,1A2B,-90,-10,-60,15,0,-32768,37',
            b'+QENG: "NR5G-NSA",001,01,202,-85,20,-11,633984,78,12,1',
        ) == at(port, 'AT+QENG="servingcell"')
        assert info(b'+COPS: 0,0,"HomeHub Test",13') == at(port, "AT+COPS?")
        assert info(b"+CESQ: 99,99,255,255,20,51,65,72,87") == at(port, "AT+CESQ")
        assert info(
            b'+QNWINFO: "FDD LTE","00101","LTE BAND 3",1850',
            b'+QNWINFO: "TDD NR5G","00101","NR5G BAND 78",633984',
        ) == at(port, "AT+QNWINFO")

    def test_nr5g_sa(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """SA: one line with TAC after PCI, NR SINR in dB; CSQ does not apply; 5GS registered."""
        modem.state.set_radio(Technology.NR5G_SA, Signal(rsrp_dbm=-107, rsrq_db=-13, sinr_db=2))
        assert info(
            b'+QENG: "servingcell","NOCONN","NR5G-SA","TDD",001,01,1A2B3C4D5,202,001A2B,'
            b"633984,78,12,-107,-13,2,1,-"
        ) == at(port, 'AT+QENG="servingcell"')
        assert info(b"+CSQ: 99,99") == at(port, "AT+CSQ")
        assert info(b"+CESQ: 99,99,255,255,255,255,61,50,51") == at(port, "AT+CESQ")
        assert info(b'+COPS: 0,0,"HomeHub Test",11') == at(port, "AT+COPS?")
        assert OK == at(port, "AT+C5GREG=2;+CEREG=2")
        assert info(b'+C5GREG: 2,1,"001A2B","1A2B3C4D5",11') == at(port, "AT+C5GREG?")
        assert info(b"+CEREG: 2,0") == at(port, "AT+CEREG?")

    def test_fading_signal(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """A setter moves the measurements; every report follows at once."""
        modem.state.set_signal(rsrp_dbm=-115, rsrq_db=-16, sinr_db=-2, rssi_dbm=-91)
        assert info(b"+CSQ: 11,99") == at(port, "AT+CSQ")
        assert info(
            b'+QENG: "servingcell","NOCONN","LTE","FDD",001,01,1A2B3C4,101,1850,3,5,5,1A2B,'
            b"-115,-16,-91,-2,0,-32768,12"
        ) == at(port, 'AT+QENG="servingcell"')

    @pytest.mark.parametrize(
        ("function", "expected"),
        [
            (csq_rssi, [(-120, 0), (-113, 0), (-111, 1), (-109, 2), (-53, 30), (-51, 31)]),
            (cesq_rsrp, [(-141, 0), (-140, 1), (-44, 97), (-30, 97)]),
            (cesq_rsrq, [(-20, 0), (-19.5, 1), (-3.5, 33), (-3, 34)]),
            (cesq_ss_rsrp, [(-157, 0), (-156, 1), (-31, 126)]),
            (cesq_ss_rsrq, [(-44, 0), (-43, 1), (20, 127)]),
            (cesq_ss_sinr, [(-24, 0), (-23, 1), (40, 127)]),
            (qeng_lte_sinr, [(-25, -20), (-20, -20), (0, 0), (15, 15), (30, 30), (35, 30)]),
        ],
    )  # fmt: skip
    def test_index_mappings(self, function: object, expected: list[tuple[float, int]]) -> None:
        """The 27.007 index tables' edges, and the LTE SINR encoding of +QENG."""
        assert callable(function)
        assert expected == [(value, function(value)) for value, _ in expected]


class TestRegistration:
    def test_urcs_follow_the_network(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """+CEREG URCs (n=2) for searching, roaming and denied; QENG and CSQ agree."""
        assert OK == at(port, "AT+CEREG=2")
        modem.state.set_registration(Registration.SEARCHING)
        assert b"+CEREG: 2" == read_line(port)
        assert info(b'+QENG: "servingcell","SEARCH"') == at(port, 'AT+QENG="servingcell"')
        assert info(b"+CSQ: 99,99") == at(port, "AT+CSQ")
        assert info(b"+COPS: 0") == at(port, "AT+COPS?")
        modem.state.set_registration(Registration.ROAMING)
        assert b'+CEREG: 5,"1A2B","1A2B3C4",7' == read_line(port)
        modem.state.set_registration(Registration.DENIED)
        assert b"+CEREG: 3" == read_line(port)
        assert at(port, 'AT+QENG="servingcell"').startswith(b'\r\n+QENG: "servingcell","LIMSRV"')

    def test_radio_off_and_on(self, port: serial.Serial) -> None:
        """+CFUN=0 deregisters (URC after the OK), +CFUN=1 registers again."""
        assert OK == at(port, "AT+CREG=1")
        assert OK == at(port, "AT+CFUN=0")
        assert b"+CREG: 0" == read_line(port)
        assert info(b"+CFUN: 0") == at(port, "AT+CFUN?")
        assert info(b"+CSQ: 99,99") == at(port, "AT+CSQ")
        assert OK == at(port, "AT+CFUN=1")
        assert b"+CREG: 1" == read_line(port)


class TestSim:
    def test_no_sim(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """Without a SIM: +CME ERROR 10 (numeric, verbose); not registered."""
        modem.state.set_sim(None)
        assert b"\r\n+CME ERROR: 10\r\n" == at(port, "AT+CPIN?")
        assert b"\r\n+CME ERROR: 10\r\n" == at(port, "AT+QCCID")
        assert info(b"+CEREG: 0,0") == at(port, "AT+CEREG?")
        assert OK == at(port, "AT+CMEE=2")
        assert b"\r\n+CME ERROR: SIM not inserted\r\n" == at(port, "AT+CIMI")

    def test_wrong_pins_then_puk(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """Three wrong PINs (each +CME ERROR 16) lock the SIM to its PUK; PUK + new PIN."""
        modem.state.set_sim(SimCard(pin="1234"))
        assert info(b"+CPIN: SIM PIN") == at(port, "AT+CPIN?")
        assert b"\r\n+CME ERROR: 11\r\n" == at(port, "AT+CIMI")
        assert info(b"+QCCID: 8988000000000000016") == at(port, "AT+QCCID")
        for left in (2, 1, 0):
            assert b"\r\n+CME ERROR: 16\r\n" == at(port, 'AT+CPIN="0000"')
            assert left == modem.state.pin_attempts_left
        assert info(b"+CPIN: SIM PUK") == at(port, "AT+CPIN?")
        assert b"\r\n+CME ERROR: 12\r\n" == at(port, 'AT+CPIN="1234"')
        assert OK == at(port, 'AT+CPIN="12345678","4321"')
        assert info(b"+CPIN: READY") == at(port, "AT+CPIN?")
        assert b"\r\n+CME ERROR: 3\r\n" == at(port, 'AT+CPIN="4321"')
        assert SimStatus.READY == modem.state.sim_status

    def test_right_pin_registers(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """Unregistered while PIN-locked; the right PIN (unquoted too) registers it."""
        modem.state.set_sim(SimCard(pin="1234"))
        assert OK == at(port, "AT+CEREG=1")
        assert info(b"+CEREG: 1,0") == at(port, "AT+CEREG?")
        assert OK == at(port, "AT+CPIN=1234")
        assert b"+CEREG: 1" == read_line(port)


class TestDataCall:
    def test_context_activation_and_drop(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """Define the APN, activate, read the address; the network's drop comes as +CGEV."""
        assert OK == at(port, 'AT+CGDCONT=1,"IP","hub.test"')
        assert info(b'+CGDCONT: 1,"IP","hub.test","0.0.0.0",0,0,0,0') == at(port, "AT+CGDCONT?")
        assert info(b"+CGPADDR: 1") == at(port, "AT+CGPADDR=1")
        assert OK == at(port, "AT+CGACT=1,1")
        assert info(b"+CGACT: 1,1") == at(port, "AT+CGACT?")
        assert info(b'+CGPADDR: 1,"10.45.0.2"') == at(port, "AT+CGPADDR=1")
        connected = LTE_NOCONN.replace(b"NOCONN", b"CONNECT").replace(b"0,-32768,37", b"9,230,-")
        assert info(connected) == at(port, 'AT+QENG="servingcell"')
        assert b"\r\n+CME ERROR: 3\r\n" == at(port, 'AT+CGDCONT=1,"IP","other"')
        modem.state.drop_data_call()
        assert b"+CGEV: NW PDN DEACT 1" == read_line(port)
        assert info(b"+CGACT: 1,0") == at(port, "AT+CGACT?")
        assert frozenset() == modem.state.active_contexts

    def test_losing_the_network_drops_the_call(
        self, modem: EmulatedModem, port: serial.Serial
    ) -> None:
        """Registration lost: the call ends with +CGEV; the radio turned off: silently."""
        assert OK == at(port, "AT+CGACT=1,1")
        modem.state.set_registration(Registration.SEARCHING)
        assert b"+CGEV: NW PDN DEACT 1" == read_line(port)
        modem.state.set_registration(Registration.HOME)
        assert OK == at(port, "AT+CGACT=1,1")
        assert OK == at(port, "AT+CFUN=0")
        assert info(b"+CGACT: 1,0") == at(port, "AT+CGACT?")

    def test_wrong_apn_on_lte_denies_registration(self, port: serial.Serial) -> None:
        """LTE attaches with context 1's APN: a wrong one is refused at the next attach."""
        assert OK == at(port, 'AT+CGDCONT=1,"IP","wrong.apn"')
        assert OK == at(port, "AT+CEREG=1")
        assert OK == at(port, "AT+CFUN=0")
        assert b"+CEREG: 0" == read_line(port)
        assert OK == at(port, "AT+CFUN=1")
        assert b"+CEREG: 3" == read_line(port)
        assert b"\r\n+CME ERROR: 30\r\n" == at(port, "AT+CGACT=1,1")
        assert OK == at(port, 'AT+CGDCONT=1,"IP","HUB.TEST";+CFUN=0;+CFUN=1')
        assert b"+CEREG: 0" == read_line(port)
        assert b"+CEREG: 1" == read_line(port)
        assert OK == at(port, "AT+CGACT=1,1")

    def test_wrong_apn_on_sa_refuses_the_session(
        self, modem: EmulatedModem, port: serial.Serial
    ) -> None:
        """NR5G-SA registers whatever the APN; the PDU session is refused (127)."""
        modem.state.set_radio(Technology.NR5G_SA)
        assert OK == at(port, 'AT+CGDCONT=1,"IP","wrong.apn"')
        assert b"\r\n+CME ERROR: 127\r\n" == at(port, "AT+CGACT=1,1")
        assert info(b"+C5GREG: 0,1") == at(port, "AT+C5GREG?")
        modem.state.set_network(Network(wrong_apn=WrongApn.DENY_REGISTRATION))
        assert info(b"+C5GREG: 0,3") == at(port, "AT+C5GREG?")


class TestFaults:
    def test_urc_between_information_and_ok(
        self, modem: EmulatedModem, port: serial.Serial
    ) -> None:
        """An interleaved URC sits after the information text, before the final OK."""
        modem.state.inject_urc("+CEREG: 5", interleave=True)
        assert b"\r\n+CSQ: 26,99\r\n\r\n+CEREG: 5\r\n\r\nOK\r\n" == at(port, "AT+CSQ")
        assert info(b"+CSQ: 26,99") == at(port, "AT+CSQ")
        modem.state.inject_urc("+QIND: SMS DONE")
        assert b"+QIND: SMS DONE" == read_line(port)

    def test_garbage_and_overlong_lines(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """Injected noise and a 5000-character line arrive as sent, ahead of the next answer."""
        modem.state.inject_bytes(b"\x00\xff\xfe junk")
        modem.state.inject_overlong_line(5000)
        data = at(port, "AT")
        assert data == b"\x00\xff\xfe junk\r\n+QIND: " + b"9" * 4993 + b"\r\n\r\nOK\r\n"

    def test_own_input_is_bounded(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """A command line past the bound is discarded and answered ERROR; the next one works."""
        port.write(b"AT+" + b"A" * 3000 + b"\r")
        assert b"\r\nERROR\r\n" == read_answer(port)
        assert OK == at(port, "AT")
        assert 1 == modem.state.counters.overlong_lines

    def test_swallowed_command(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """A swallowed command gets nothing: the next bytes are the next command's answer."""
        modem.state.swallow("AT+COPS?")
        port.write(b"AT+COPS?\r")
        assert OK == at(port, "AT")
        assert ["ATE0", "AT+COPS?", "AT"] == modem.state.commands
        assert 1 == modem.state.counters.swallowed
        assert info(b'+COPS: 0,0,"HomeHub Test",7') == at(port, "AT+COPS?")


class TestResetAndReenumeration:
    def test_cfun_reset_reenumerates_on_the_clock(
        self, modem: EmulatedModem, port: serial.Serial, clock: FakeClock
    ) -> None:
        """OK, the port vanishes (old fd fails), comes back after 20 s, then RDY, +CPIN."""
        assert OK == at(port, "AT+CFUN=1,1")
        assert not modem.path.exists()
        with pytest.raises(serial.SerialException):
            port.read(1)
        clock.advance(19.0)
        modem.tick()
        assert not modem.path.exists()
        clock.advance(1.0)
        modem.tick()
        assert modem.path.is_symlink()
        assert 2 == modem.generation
        assert not modem.state.powered
        with serial.Serial(str(modem.path), timeout=READ_TIMEOUT_S) as reopened:
            clock.advance(2.0)
            modem.tick()
            assert b"RDY" == read_line(reopened)
            assert b"+CPIN: READY" == read_line(reopened)
            assert b"AT\r\r\nOK\r\n" == at(reopened, "AT")  # settings back: echo on
        assert 1 == modem.state.count("at+cfun=1,1")
        assert 1 == modem.state.counters.resets

    def test_complete_reset_and_boot_phases(
        self, modem: EmulatedModem, port: serial.Serial
    ) -> None:
        """complete_reset skips the wait; the module stays silent until finish_boot."""
        modem.state.set_sim(SimCard(pin="1234"))
        assert OK == at(port, "AT+CFUN=1,1")
        modem.complete_reset(ready=False)
        with serial.Serial(str(modem.path), timeout=READ_TIMEOUT_S) as reopened:
            modem.finish_boot()
            assert b"RDY" == read_line(reopened)
            assert b"+CPIN: SIM PIN" == read_line(reopened)
        assert not modem.resetting

    def test_reset_without_reenumeration_is_silent(self, tmp_path: Path, clock: FakeClock) -> None:
        """On a UART-like port the reset keeps the port; the module is silent, then RDY."""
        with (
            EmulatedModem(tmp_path, clock=clock, reenumerate=False, reset_s=5.0) as modem,
            open_port(modem) as port,
        ):
            assert OK == at(port, "AT+CFUN=1,1")
            assert modem.path.is_symlink()
            assert not modem.state.powered
            clock.advance(7.0)
            modem.tick()
            assert b"RDY" == read_line(port)
            assert b"+CPIN: READY" == read_line(port)
            assert 1 == modem.generation

    def test_unplug_and_plug(self, modem: EmulatedModem, port: serial.Serial) -> None:
        """USB drop without a command: path gone, old fd fails; plug brings a new pty."""
        modem.unplug()
        assert not modem.path.exists()
        with pytest.raises(serial.SerialException):
            port.read(1)
        assert not modem.present
        modem.plug(ready=False)
        with serial.Serial(str(modem.path), timeout=READ_TIMEOUT_S) as reopened:
            modem.finish_boot()
            assert b"RDY" == read_line(reopened)
            assert b"+CPIN: READY" == read_line(reopened)
        assert 1 == modem.reenumerations


class TestLifeCycle:
    def test_stop_is_prompt_and_joins(self, tmp_path: Path) -> None:
        """stop() returns at once and leaves no emulator thread and no symlink."""
        modem = EmulatedModem(tmp_path).start()
        started = time.monotonic()
        modem.stop()
        assert time.monotonic() - started < 1.0
        assert not any(t.name.startswith("modem-emulator") for t in threading.enumerate())
        assert not modem.path.exists()

    def test_presets(self) -> None:
        """Each CLI state builds."""
        assert SimStatus.PUK_REQUIRED == preset_state("puk").sim_status
        assert SimStatus.ABSENT == preset_state("no-sim").sim_status
        with pytest.raises(ValueError, match="unknown modem state"):
            preset_state("nope")

    def test_cli_prints_the_port_and_stops_on_ctrl_c(self, tmp_path: Path) -> None:
        """``python -m hil.emulators.modem --state nr5g-sa`` serves SA until SIGINT."""
        process = subprocess.Popen(
            [sys.executable, "-m", "hil.emulators.modem", "--state", "nr5g-sa", "--dir",
             str(tmp_path)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            path = process.stdout.readline().decode().strip()
            assert str(tmp_path / "ttyUSB2") == path
            with serial.Serial(path, timeout=READ_TIMEOUT_S) as port:
                answer = at(port, 'AT+QENG="servingcell"')
                assert b'"NOCONN","NR5G-SA","TDD"' in answer
            process.send_signal(signal.SIGINT)
            assert 0 == process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            assert process.stderr is not None
            with process.stdout, process.stderr:
                name = "test_cli_prints_the_port_and_stops_on_ctrl_c"
                phi_canaries.record_output(f"{name}: stdout", process.stdout.read())
                phi_canaries.record_output(f"{name}: stderr", process.stderr.read())
