"""Shared by the pairing tests: a glucometer that pairs as told, on the virtual radio, and
``homehub`` run on a pseudo-terminal, answered as a technician would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bleak import BleakScanner
from bleak.backends.device import BLEDevice

from agent.ble.stack import BleStack
from hil.emulators.glucometer import Glucometer, example_records
from hil.emulators.pairing import EmulatedPairing, configure
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.conftest import METER_INFO
from tests.phi_canaries import DEVICE_ADDRESS

WAIT_S: Final = 10.0
PAIR_WAIT_S: Final = 30.0
"""The subprocess starts Python, bleak and Bumble (a second or two), scans, pairs."""
SCAN_S: Final = "1.5"
"""The meter advertises every 100 ms: 1.5 s sees it many times."""


async def start_meter(
    radio: VirtualRadio,
    pairing: EmulatedPairing | None = None,
    *,
    address: str = DEVICE_ADDRESS,
    require_encryption: bool = False,
) -> Glucometer:
    """A glucometer at ``address`` pairing as ``pairing`` says (Just Works by default)."""
    device = await radio.add_peripheral_device(address, "glucometer")
    meter = Glucometer(
        device, example_records(), info=METER_INFO, require_encryption=require_encryption
    )
    configure(meter, pairing or EmulatedPairing.just_works())
    await meter.start()
    return meter


def hci_client_watch(radio: VirtualRadio) -> asyncio.Event:
    """An event set when the radio's HCI server sees its current host go (a stopped agent or
    ``homehub pair``), so the next step starts with the hub's controller free."""
    return radio.host_gone()


async def find(ble: BleStack, address: str = DEVICE_ADDRESS) -> BLEDevice:
    """Scan until ``address`` advertises."""
    async with BleakScanner(backend=ble.scanner_backend) as scanner:
        async with asyncio.timeout(WAIT_S):
            async for device, _adv in scanner.advertisement_data():
                if device.address == address:
                    return device
    raise AssertionError("unreachable")


@dataclass
class Terminal:
    """A ``homehub`` subprocess on a pseudo-terminal: what it wrote, and typing into it."""

    process: asyncio.subprocess.Process
    master: int
    output: bytearray = field(default_factory=bytearray)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_readable(self) -> None:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every holder of the child's side has closed it
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed.set()
        self.output += chunk
        self.changed.set()

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")

    async def expect(self, text: str) -> None:
        """Wait until ``text`` has been written to the terminal."""
        async with asyncio.timeout(PAIR_WAIT_S):
            while text not in self.text:
                if self.closed.is_set():
                    raise AssertionError(f"exited before {text!r}:\n{self.text}")
                self.changed.clear()
                await self.changed.wait()

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self.master, line.encode() + b"\n")

    async def exit_code(self) -> int:
        """The exit code, once everything the child wrote has been read."""
        async with asyncio.timeout(PAIR_WAIT_S):
            code = await self.process.wait()
            await self.closed.wait()
        return code


@contextlib.asynccontextmanager
async def homehub(*args: str) -> AsyncIterator[Terminal]:
    """Run ``python -m agent ARGS`` with stdin, stdout and stderr on a new pseudo-terminal."""
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    terminal = Terminal(process, master)
    asyncio.get_running_loop().add_reader(master, terminal.on_readable)
    try:
        yield terminal
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(master)
        os.close(master)
        phi_canaries.record_output(f"homehub {args[0]}: pty transcript", bytes(terminal.output))


async def pair_by_terminal(
    radio: VirtualRadio, cfg_path: Path, meter_pairing: EmulatedPairing, *answer: str
) -> tuple[int, str]:
    """``homehub pair`` picking row 1; then each of ``answer`` typed in turn at its
    question (``"<passkey>"`` types the passkey the meter displays)."""
    async with homehub("pair", "--config", str(cfg_path), "--scan-s", SCAN_S) as terminal:
        await terminal.expect("Pair which device? [1-1] ")
        assert DEVICE_ADDRESS not in terminal.text
        assert "..:12:34" in terminal.text
        terminal.type("1")
        gone: asyncio.Event | None = None
        for typed in answer:
            if typed == "<passkey>":
                await terminal.expect("Type the 6-digit passkey")
                async with asyncio.timeout(WAIT_S):
                    shown = await meter_pairing.displayed.get()
                typed = f"{shown:06d}"
            else:
                await terminal.expect("[y/N] ")
            gone = gone or hci_client_watch(radio)
            terminal.type(typed)
        code = await terminal.exit_code()
        if gone is not None:
            async with asyncio.timeout(WAIT_S):
                await gone.wait()
        return code, terminal.text
