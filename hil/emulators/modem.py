"""An emulated 5G modem (Quectel RM500Q/RM520N class) on a pseudo-terminal, for tests and rigs.

The AT dialect, the state and every scripted fault live in :mod:`hil.emulators.modem_at`
(:class:`ModemState`, no I/O); this module serves it on a pseudo-terminal the way the hub
meets a real module: a serial port at a stable path. ::

    with EmulatedModem(tmp_path) as modem:          # modem.path == tmp_path / "ttyUSB2"
        port = serial.Serial(str(modem.path), timeout=2)
        port.write(b"AT+CSQ\\r")       # echo, then b"\\r\\n+CSQ: 26,99\\r\\n\\r\\nOK\\r\\n"
        modem.state.set_signal(rsrp_dbm=-118)       # fading
        modem.state.set_registration(Registration.SEARCHING)

Theory of operation::

    test thread                           emulator thread "modem-emulator[ttyUSB2]"
    ───────────                           ─────────────────────────────────────────
    modem.state.set_…()  ──(lock)──▶  ModemState ◀──(lock)── poll(master, wake pipe)
      queues URCs, notify() ──wake──▶                          read → feed() → answer
    modem.unplug()/plug()/tick()                               write queued output
      swap the pty (lock)   ──wake──▶                          close retired ptys

- The port: ``os.openpty()``, the slave in raw mode (``tty.setraw``), and a symlink
  ``<directory>/<name>`` to the slave's ``/dev/pts/N``: a client opens the symlink with
  ``serial.Serial(path)``. The emulator keeps its own slave descriptor open so the master
  never sees a hang-up between clients.
- USB re-enumeration (:meth:`EmulatedModem.unplug`, and every ``AT+CFUN=…,1``): the symlink
  is removed at once, the old pty is closed once the client has read what was written to it
  (the OK of ``AT+CFUN=1,1``; :data:`RETIRE_SETTLE_S` after the last write at the earliest,
  :data:`RETIRE_TIMEOUT_S` at the latest), after which the
  client's reads and writes fail as on a vanished ttyUSB. :meth:`EmulatedModem.plug` makes
  a new pty (another ``/dev/pts/N``) behind the same path: clients must reopen it.
- A reset (``AT+CFUN=1,1``) answers OK, then the port is absent for ``reset_s`` (20 s by
  default; or present and silent with ``reenumerate=False``), then present but still booting
  (silent) for ``ready_delay_s``, then ``RDY`` and ``+CPIN: <code>`` arrive and the module
  answers again. Those times run on the injectable ``clock`` — the mock edge: tests pass a
  fake monotonic clock, advance it and call :meth:`EmulatedModem.tick`, or skip the wait with
  :meth:`EmulatedModem.complete_reset`; nothing needs sleeping.
- Bounds: the state's input line (:data:`MAX_COMMAND_LINE_BYTES`) and unsolicited-output
  queue, and here the bytes waiting for a client that does not read
  (:data:`MAX_OUTBOX_BYTES`, the rest dropped and counted).

``python -m hil.emulators.modem --state nr5g-sa`` runs one until Ctrl-C and prints its path,
for trying the hub's modem commands by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from hil.emulators.modem_at import (
    MAX_COMMAND_LINE_BYTES,
    Cell,
    CmeError,
    Counters,
    ModemState,
    ModuleIdentity,
    Network,
    PdpContext,
    Registration,
    Signal,
    SimCard,
    SimStatus,
    Technology,
    WrongApn,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT_NAME: Final = "ttyUSB2"
"""The RM5xxQ's AT port is the third of its USB serial interfaces on Linux (option driver)."""
DEFAULT_RESET_S: Final = 20.0
"""AT+CFUN=1,1 to the ports enumerating again: a reboot of an RM5xxQ takes some tens of
seconds; 20 s is this emulator's default, not a measured figure."""
DEFAULT_READY_DELAY_S: Final = 2.0
"""From the ports enumerating to RDY: the AT firmware comes up after the USB interfaces
(assumed, so that a client that reopens promptly sees RDY)."""
MAX_OUTBOX_BYTES: Final = 256 * 1024
TIMER_POLL_S: Final = 0.05
"""How often the emulator's thread looks at the clock while a reset is pending."""
RETIRE_SETTLE_S: Final = 0.2
"""An unplugged pty is closed once its client has read everything (TIOCINQ 0) this long after
the last write to it: the kernel hands bytes written to a pty master to the slave's line
discipline from a work queue, so for a moment after a write nothing looks unread yet."""
RETIRE_TIMEOUT_S: Final = 2.0
"""... or after this long (host time) if the client never reads."""
READ_CHUNK: Final = 4096


@dataclass(slots=True)
class _Port:
    """One pty generation: master and slave descriptors and the bytes waiting for the client."""

    master: int
    slave: int
    tty_name: str
    outbox: bytearray = field(default_factory=bytearray)
    retire_by: float | None = None
    last_write: float = 0.0  #: host monotonic time

    def unread(self) -> int:
        """Bytes the client has not read yet (TIOCINQ on our own slave descriptor)."""
        try:
            raw = fcntl.ioctl(self.slave, termios.TIOCINQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class EmulatedModem:
    """A :class:`ModemState` served on a pseudo-terminal at ``directory / name``.

    Args:
        directory: where the port's symlink is made (a test's ``tmp_path``).
        state: the modem (default: an LTE module, SIM ready, registered at home).
        name: the symlink's name.
        clock: monotonic seconds for the reset timing; inject a fake one in tests.
        reset_s: AT+CFUN=1,1 to the port being back.
        ready_delay_s: the port being back to RDY.
        reenumerate: a reset takes the port away (USB); False: it stays, silent (a UART).

    Attributes:
        state: the modem; script it through its setters and fault injectors.
        path: the port's stable path (a symlink while the port is present).
        generation: ptys made so far (1 after start; +1 per re-enumeration).
        reenumerations: times the port was taken away.
        dropped_bytes: output lost because a client did not read (:data:`MAX_OUTBOX_BYTES`).
    """

    def __init__(
        self,
        directory: Path | str,
        state: ModemState | None = None,
        *,
        name: str = DEFAULT_PORT_NAME,
        clock: Callable[[], float] = time.monotonic,
        reset_s: float = DEFAULT_RESET_S,
        ready_delay_s: float = DEFAULT_READY_DELAY_S,
        reenumerate: bool = True,
    ) -> None:
        self.state = state or ModemState()
        self.path = Path(directory) / name
        self.generation = 0
        self.reenumerations = 0
        self.dropped_bytes = 0
        self._clock = clock
        self._reset_s = reset_s
        self._ready_delay_s = ready_delay_s
        self._reenumerate = reenumerate
        self._lock = self.state.lock
        self._port: _Port | None = None
        self._retiring: list[_Port] = []
        self._back_at: float | None = None
        self._ready_at: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Make the port and start the emulator's thread, the module already up (its first
        ``RDY`` went before any host listened; the ones after a reset or :meth:`plug` come)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the emulated modem is already running")
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._stopping = False
            self.state.notify = self._wake
            self._plug_locked()
            self.state.boot()
            self.state.take_output()  # already up when a host first opens the port: no RDY
            self._thread = threading.Thread(
                target=self._run, name=f"modem-emulator[{self.path.name}]", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (promptly: it waits on a wake pipe), close the ports, remove the
        symlink."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._wake()
        if thread is not None:
            thread.join(timeout=5.0)
        with self._lock:
            self.state.notify = lambda: None
            self._remove_link()
            for port in [*self._retiring, *([self._port] if self._port else [])]:
                port.close()
            self._retiring.clear()
            self._port = None
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._wake_r, self._wake_w = -1, -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- port faults and the reset's phases ----------------------------------------------

    @property
    def present(self) -> bool:
        """The port exists (its symlink too)."""
        with self._lock:
            return self._port is not None

    @property
    def tty_name(self) -> str | None:
        """The current pty slave (``/dev/pts/N``), None while unplugged."""
        with self._lock:
            return self._port.tty_name if self._port else None

    @property
    def resetting(self) -> bool:
        """A reset's port-back or RDY is still to come."""
        with self._lock:
            return self._back_at is not None or self._ready_at is not None

    def unplug(self) -> None:
        """The module drops off USB: the symlink goes now, the pty once drained; the module
        stops. Nothing brings it back but :meth:`plug` (no timer)."""
        with self._lock:
            self._back_at = self._ready_at = None
            self.state.power_off()
            self._unplug_locked()

    def plug(self, *, ready: bool = True) -> None:
        """The module enumerates: a new pty behind :attr:`path`; with ``ready`` it boots now
        (``RDY``…), else it stays silent until :meth:`finish_boot`."""
        with self._lock:
            self._back_at = self._ready_at = None
            if self._port is None:
                self._plug_locked()
            if ready:
                self.state.boot()
            self._wake()

    def finish_boot(self) -> None:
        """The module's firmware is up: ``RDY``, ``+CPIN: <code>``, answers from now."""
        with self._lock:
            self._ready_at = None
            self.state.boot()

    def complete_reset(self, *, ready: bool = True) -> None:
        """Skip the rest of a reset's wait: the port back now (and RDY with ``ready``)."""
        with self._lock:
            if self._back_at is not None or self._port is None:
                self.plug(ready=ready)
            elif ready:
                self.finish_boot()

    def tick(self) -> None:
        """Apply the clock now (after a test advanced a fake one)."""
        with self._lock:
            self._run_timers()
            self._wake()

    # -- inside ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\0")

    def _plug_locked(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        port = _Port(master, slave, os.ttyname(slave))
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(port.tty_name, temporary)
        os.replace(temporary, self.path)
        self._port = port
        self.generation += 1
        logger.debug("modem port %s -> %s", self.path, port.tty_name)

    def _unplug_locked(self) -> None:
        port, self._port = self._port, None
        self._remove_link()
        if port is not None:
            port.retire_by = time.monotonic() + RETIRE_TIMEOUT_S
            self._retiring.append(port)
            self.reenumerations += 1
        self._wake()

    def _remove_link(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _begin_reset(self) -> None:
        """After AT+CFUN=…,1 was answered: away (or silent) until the clock says so."""
        self.state.power_off()
        now = self._clock()
        if self._reenumerate:
            self._unplug_locked()
            self._back_at = now + self._reset_s
        else:
            self._ready_at = now + self._reset_s + self._ready_delay_s

    def _run_timers(self) -> None:
        now = self._clock()
        if self._back_at is not None and now >= self._back_at:
            self._back_at = None
            self._plug_locked()
            self._ready_at = now + self._ready_delay_s
        if self._ready_at is not None and now >= self._ready_at:
            self._ready_at = None
            self.state.boot()

    def _run(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._run_timers()
                self._retire_drained()
                ports = [p for p in (self._port, *self._retiring) if p is not None]
                wanted = {self._wake_r: select.POLLIN}
                for port in ports:
                    wanted[port.master] = select.POLLIN | (select.POLLOUT if port.outbox else 0)
                timeout = None
                if self._back_at is not None or self._ready_at is not None or self._retiring:
                    timeout = TIMER_POLL_S * 1000
            for fd in registered - wanted.keys():
                poller.unregister(fd)
            for fd, mask in wanted.items():
                poller.register(fd, mask)  # (re)registering updates the mask
            registered = set(wanted)
            events = dict(poller.poll(timeout))
            with self._lock:
                if self._wake_r in events:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                # Output queued before this round (an injection that happened before the
                # host wrote) goes ahead of the answers; URCs a command causes follow them.
                self._drain_output()
                for port in ports:  # closed only by this thread, at the top of the loop
                    if port.master in events:
                        self._service(port, events[port.master])
                self._drain_output()

    def _drain_output(self) -> None:
        output = self.state.take_output()
        if self._port is not None:
            self._send(self._port, output)
            self._flush(self._port)

    def _service(self, port: _Port, mask: int) -> None:
        if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = os.read(port.master, READ_CHUNK)
            except BlockingIOError:
                data = b""
            except OSError as error:
                if error.errno != errno.EIO:
                    raise
                data = b""
            if data and port is self._port:
                self._send(port, self.state.feed(data))
                if self.state.take_reset_request():
                    self._begin_reset()  # the symlink goes before the OK is written
        self._flush(port)

    def _send(self, port: _Port, data: bytes) -> None:
        if not data:
            return
        room = MAX_OUTBOX_BYTES - len(port.outbox)
        port.outbox += data[:room]
        if len(data) > room:
            self.dropped_bytes += len(data) - room

    def _flush(self, port: _Port) -> None:
        while port.outbox:
            try:
                written = os.write(port.master, port.outbox)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno != errno.EIO:
                    raise
                port.outbox.clear()
                return
            del port.outbox[:written]
            port.last_write = time.monotonic()

    def _retire_drained(self) -> None:
        now = time.monotonic()
        for port in list(self._retiring):
            self._flush(port)
            settled = now - port.last_write >= RETIRE_SETTLE_S
            drained = not port.outbox and settled and port.unread() == 0
            if drained or (port.retire_by is not None and now >= port.retire_by):
                self._retiring.remove(port)
                port.close()


# ----------------------------------------------------------------------------
# Presets, for the CLI and for tests that want a named starting point
# ----------------------------------------------------------------------------

PRESETS: Final[Sequence[str]] = (
    "lte",
    "nr5g-nsa",
    "nr5g-sa",
    "roaming",
    "searching",
    "denied",
    "no-sim",
    "pin",
    "puk",
    "weak",
)


def preset_state(name: str) -> ModemState:
    """A :class:`ModemState` in one of :data:`PRESETS` (``pin``: PIN 1234; ``puk``: PUK
    12345678; ``weak``: LTE at -118 dBm RSRP, -3 dB SINR)."""
    if name not in PRESETS:
        raise ValueError(f"unknown modem state {name!r}; one of {', '.join(PRESETS)}")
    technology = {"nr5g-nsa": Technology.NR5G_NSA, "nr5g-sa": Technology.NR5G_SA}.get(
        name, Technology.LTE
    )
    registration = {
        "roaming": Registration.ROAMING,
        "searching": Registration.SEARCHING,
        "denied": Registration.DENIED,
    }.get(name, Registration.HOME)
    sim: SimCard | None = SimCard()
    if name in ("pin", "puk"):
        sim = replace(SimCard(), pin="1234")
    elif name == "no-sim":
        sim = None
    weak = Signal(rsrp_dbm=-118, rsrq_db=-17, sinr_db=-3, rssi_dbm=-95)
    signal = weak if name == "weak" else None
    state = ModemState(sim=sim, technology=technology, signal=signal, registration=registration)
    if name == "puk":
        state.require_puk()
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hil.emulators.modem [--state NAME] [--dir DIR] [--name ttyUSB2]``."""
    parser = argparse.ArgumentParser(
        prog="python -m hil.emulators.modem",
        description="Run an emulated Quectel RM5xxQ-class modem on a pseudo-terminal.",
    )
    parser.add_argument("--state", choices=PRESETS, default="lte")
    parser.add_argument("--dir", type=Path, help="where to put the port (default: a temp dir)")
    parser.add_argument("--name", default=DEFAULT_PORT_NAME)
    parser.add_argument("--reset-s", type=float, default=DEFAULT_RESET_S)
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="homehub-modem-"))
    directory.mkdir(parents=True, exist_ok=True)
    modem = EmulatedModem(directory, preset_state(args.state), name=args.name, reset_s=args.reset_s)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with modem:
        print(modem.path, flush=True)
        print(
            f"modem emulator ({args.state}) at {modem.path} -> {modem.tty_name}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        stopped.wait()
    return 0


__all__ = [
    "DEFAULT_PORT_NAME",
    "DEFAULT_READY_DELAY_S",
    "DEFAULT_RESET_S",
    "MAX_COMMAND_LINE_BYTES",
    "MAX_OUTBOX_BYTES",
    "PRESETS",
    "Cell",
    "CmeError",
    "Counters",
    "EmulatedModem",
    "ModemState",
    "ModuleIdentity",
    "Network",
    "PdpContext",
    "Registration",
    "Signal",
    "SimCard",
    "SimStatus",
    "Technology",
    "WrongApn",
    "main",
    "preset_state",
]

if __name__ == "__main__":
    sys.exit(main())
