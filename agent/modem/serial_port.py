"""The modem's AT port: pyserial under the event loop, the sans-I/O codec on top.

:class:`AtPort` is the thin adapter between a serial port and
:class:`~drivers.modem.at_codec.AtCodec`. pyserial opens and configures the port (baud
rate, raw mode, an exclusive ``flock`` so that ModemManager or a second hub cannot share it);
after that the port's file descriptor is driven from the event loop, aiomqtt-style:

- **reads** come from ``loop.add_reader(fd)``: pyserial's non-blocking ``read`` (timeout 0)
  is called only when the descriptor is readable, the bytes go to the codec and its events
  are dispatched at once (answers to the pending command, URCs to a bounded queue);
- **writes** never block: ``os.write`` on the non-blocking descriptor, the rest (a full tty
  buffer) waits in a bounded buffer flushed by ``loop.add_writer``.

Theory of operation::

    command(cmd) ──lock──▶ [resync "AT" if the last command timed out]
                           codec.send → write ─▶ modem
                           await final result code  ◀── reader: codec events
                               │ per-command timeout (inside the caller's own)
                               ├─ OK/ERROR/+CME ERROR ─▶ AtResponse
                               ├─ timeout ─▶ abort_pending, resync next time,
                               │             ModemTimeoutError (or ModemPortLostError
                               │             when the path no longer names our device)
                               └─ read/write failure ─▶ ModemPortLostError; port closed

Timeouts nest: each command waits at most its own ``timeout_s`` (the AT manual's figure,
capped by ``timeout_cap_s``), inside whatever ``asyncio.timeout`` the caller holds; when the
caller's expires first the command is aborted the same way (the codec drains its late
answer, the next command resynchronises).

The port disappearing (USB re-enumeration after ``AT+CFUN=1,1``, a module unplugged) shows
as a failing read (EIO, or "readiness to read but no data"): the port closes itself, the
waiting command fails with :class:`~agent.errors.ModemPortLostError` (a
:class:`~agent.errors.TransportError`, retryable) and :meth:`AtPort.open` may be called again
once the path is back: each open makes a fresh codec.

Bounds: the codec bounds lines and queued events; here the URC queue
(:data:`MAX_QUEUED_URCS`, older ones dropped and counted) and the write buffer
(:data:`MAX_WRITE_BUFFER_BYTES`).

Nothing here logs a line's content or a command's text: both can carry an identifier (IMSI,
ICCID, IMEI) or a secret (PIN); logs name commands by their prefix (``+CPIN``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, cast

import structlog
from serial.serialposix import Serial
from serial.serialutil import SerialException

from agent.errors import (
    ModemPortLostError,
    ModemTimeoutError,
    ModemTransportError,
    UsageError,
)
from drivers.modem.at_codec import (
    AtCodec,
    AtCommand,
    Echo,
    FinalResult,
    InformationLine,
    LineRejected,
    RejectReason,
    UnsolicitedResult,
)

__all__ = [
    "DEFAULT_BAUDRATE",
    "MAX_QUEUED_URCS",
    "MAX_WRITE_BUFFER_BYTES",
    "RESYNC_TIMEOUT_S",
    "STANDARD_BAUDRATES",
    "AtPort",
    "AtResponse",
    "FreshLogger",
    "SerialFactory",
    "SerialPort",
    "command_name",
]


class FreshLogger:
    """A structlog logger looked up again at every call.

    ``homehub`` commands configure logging with ``cache_logger_on_first_use`` on the stderr
    of the moment; a module-level proxy first used during one in-process run (the CLI tests)
    would keep writing to that run's stream after it closed. The modem logs rarely, so the
    lookup costs nothing that matters.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        return getattr(structlog.get_logger(self._name), method)


log = FreshLogger("agent.modem.port")

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_BAUDRATE: Final = 115200
"""The RM5xxQ's USB AT port ignores the rate; 115200 is its UART default (AT+IPR)."""
STANDARD_BAUDRATES: Final = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
"""Rates an RM5xxQ UART accepts (AT+IPR); the CLI refuses others."""
READ_CHUNK_BYTES: Final = 4096
"""One read's size: the codec's default queue never fills when drained after reads of at most
4 KiB (drivers/modem/at_codec.py, "Bounds"), and the events are drained after every read."""
MAX_QUEUED_URCS: Final = 256
"""URCs kept for the link manager between two of its rounds (a round every few seconds sees
a handful; a modem flooding URCs loses the oldest, counted in :attr:`AtPort.dropped_urcs`)."""
MAX_WRITE_BUFFER_BYTES: Final = 4096
"""Bytes waiting for a full tty buffer: eight of the longest commands (512 B)."""
RESYNC_TIMEOUT_S: Final = 2.0
"""The plain ``AT`` sent after a timeout: any live module answers it within 300 ms."""


class SerialPort(Protocol):
    """What the adapter uses of a pyserial ``Serial`` (pyserial has no annotations)."""

    def fileno(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def close(self) -> None: ...


SerialFactory = Callable[[str, int], SerialPort]


def _open_serial(path: str, baudrate: int) -> SerialPort:
    """pyserial, non-blocking (timeouts 0: the loop waits, not pyserial), exclusive."""
    port = Serial(path, baudrate, timeout=0, write_timeout=0, exclusive=True)  # type: ignore[no-untyped-call]
    return cast(SerialPort, port)


def command_name(command: AtCommand) -> str:
    """What logs and errors call a command: its response prefix (``+CPIN``), or its text for a
    basic command that is not sensitive (``ATI``), never a PIN or an APN."""
    if command.response_prefixes:
        return command.response_prefixes[0]
    return "<sensitive>" if command.sensitive else command.text


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AtResponse:
    """A command's whole answer: its information lines and its final result code.

    Attributes:
        command: what was sent.
        lines: the information lines, in order (URCs and the echo are not among them).
        final: the final result code.
    """

    command: AtCommand
    lines: tuple[str, ...]
    final: FinalResult

    @property
    def ok(self) -> bool:
        """The command succeeded."""
        return self.final.ok

    def __repr__(self) -> str:
        lines = "<redacted>" if self.command.sensitive else repr(self.lines)
        return f"AtResponse({self.command!r}, lines={lines}, final={self.final.kind.value})"


# ---------------------------------------------------------------------------
# The port
# ---------------------------------------------------------------------------


class AtPort:
    """One modem AT port on the running event loop (module docstring).

    Args:
        path: the port, e.g. ``/dev/ttyUSB2`` or a udev symlink.
        baudrate: for a UART; USB ports ignore it.
        timeout_cap_s: an upper bound on every command's own timeout (tests shorten them;
            None: the manuals' figures, up to 180 s for +COPS).
        open_serial: the pyserial constructor (the OS edge; tests of failures replace it).

    Use it as ``async with AtPort(path) as port: response = await port.command(...)``.
    """

    def __init__(
        self,
        path: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout_cap_s: float | None = None,
        open_serial: SerialFactory = _open_serial,
    ) -> None:
        if timeout_cap_s is not None and not 0 < timeout_cap_s <= 3600:
            raise UsageError("timeout_cap_s", "must be in (0, 3600] seconds")
        self._path = path
        self._baudrate = baudrate
        self._cap = timeout_cap_s
        self._open_serial = open_serial
        self._serial: SerialPort | None = None
        self._fd = -1
        self._rdev = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._codec = AtCodec()
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[AtResponse] | None = None
        self._lines: list[str] = []
        self._out = bytearray()
        self._writing = False
        self._needs_resync = False
        self._urcs: collections.deque[UnsolicitedResult] = collections.deque()
        self._urc_ready = asyncio.Event()
        self.dropped_urcs = 0
        """URCs dropped because :data:`MAX_QUEUED_URCS` were waiting."""
        self.rejected: collections.Counter[RejectReason] = collections.Counter()
        """Lines the codec rejected, by reason, since this object was made."""
        self.timeouts = 0
        """Commands that timed out since this object was made."""
        self.lost_reason: str | None = None
        """Why the port was lost, when it was (None while open or closed by us)."""

    # -- life cycle ----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The port's path."""
        return self._path

    @property
    def is_open(self) -> bool:
        """The port is open and has not been lost."""
        return self._serial is not None

    async def open(self) -> None:
        """Open the port (again, after a loss or a reset); a fresh codec each time.

        Raises:
            ModemTransportError: the port is absent, not a serial port, or locked by another
                program (ModemManager holds the AT port unless told to leave it alone).
        """
        if self._serial is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            port = self._open_serial(self._path, self._baudrate)
        except (SerialException, OSError, ValueError) as exc:
            raise ModemTransportError(self._path, _open_failure(exc)) from None
        self._serial = port
        self._loop = loop
        self._fd = port.fileno()
        self._rdev = os.fstat(self._fd).st_rdev
        self._codec = AtCodec()
        self._needs_resync = False
        self._out.clear()
        self._writing = False
        self.lost_reason = None
        loop.add_reader(self._fd, self._on_readable)
        log.debug("modem_port_opened", port=self._path)

    def close(self) -> None:
        """Close the port; a command waiting fails with :class:`ModemPortLostError`."""
        self._shut("closed")

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def still_present(self) -> bool:
        """Whether :attr:`path` still names the device we opened (after a USB re-enumeration
        the node is gone, or another device took its name)."""
        try:
            return os.stat(self._path).st_rdev == self._rdev
        except OSError:
            return False

    # -- commands ------------------------------------------------------------------------

    async def command(
        self, command: AtCommand | str, *, timeout_s: float | None = None
    ) -> AtResponse:
        """Send one command and wait for its final result code.

        Args:
            command: an :class:`AtCommand`, or a command line for :meth:`AtCommand.of`.
            timeout_s: instead of the command's own timeout (still capped).

        Raises:
            ModemTimeoutError: no final result code in time (the next command resyncs first).
            ModemPortLostError: the port failed or vanished, before or while waiting.
            AtCommandError: the command line is malformed (nothing was sent).
        """
        if isinstance(command, str):
            command = AtCommand.of(command)
        async with self._lock:
            if self._needs_resync:
                await self._transact(AtCommand.of("AT", timeout_s=RESYNC_TIMEOUT_S), None)
                self._needs_resync = False
            return await self._transact(command, timeout_s)

    def take_urcs(self) -> list[UnsolicitedResult]:
        """The URCs received since the last call, oldest first."""
        urcs = list(self._urcs)
        self._urcs.clear()
        self._urc_ready.clear()
        return urcs

    async def wait_urc(self) -> None:
        """Return once a URC is waiting in :meth:`take_urcs` (wrap in a timeout)."""
        await self._urc_ready.wait()

    async def _transact(self, command: AtCommand, timeout_s: float | None) -> AtResponse:
        port = self._require_open()
        loop = asyncio.get_running_loop()
        timeout = command.timeout_s if timeout_s is None else timeout_s
        if self._cap is not None:
            timeout = min(timeout, self._cap)
        data = self._codec.send(command, now=loop.time())
        waiter: asyncio.Future[AtResponse] = loop.create_future()
        self._waiter = waiter
        self._lines = []
        try:
            self._write(port, data)
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            self.timeouts += 1
            if not self.still_present():
                self._shut("port vanished")
                raise ModemPortLostError(self._path, "port vanished") from None
            log.warning("modem_command_timeout", command=command_name(command), timeout_s=timeout)
            raise ModemTimeoutError(self._path, command_name(command), timeout) from None
        finally:
            self._waiter = None
            if self._codec.pending is not None:  # timed out, or the caller's timeout
                self._codec.abort_pending()
                self._needs_resync = True

    def _require_open(self) -> SerialPort:
        if self._serial is None:
            raise ModemPortLostError(self._path, self.lost_reason or "not open")
        return self._serial

    # -- the loop's callbacks ------------------------------------------------------------

    def _on_readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(READ_CHUNK_BYTES)
        except (SerialException, OSError) as exc:
            self._shut(f"read failed ({type(exc).__name__})", lost=True)
            return
        if not data:
            return
        self._codec.receive_data(data)
        for event in self._codec.events():
            self._dispatch(event)

    def _dispatch(
        self, event: Echo | InformationLine | FinalResult | UnsolicitedResult | LineRejected
    ) -> None:
        waiter = self._waiter
        if isinstance(event, InformationLine):
            self._lines.append(event.text)
        elif isinstance(event, FinalResult):
            if waiter is not None and not waiter.done():
                waiter.set_result(AtResponse(event.command, tuple(self._lines), event))
            self._lines = []
        elif isinstance(event, UnsolicitedResult):
            if len(self._urcs) >= MAX_QUEUED_URCS:
                self._urcs.popleft()
                self.dropped_urcs += 1
            self._urcs.append(event)
            self._urc_ready.set()
        elif isinstance(event, LineRejected):
            self.rejected[event.reason] += event.lines
            log.info(
                "modem_lines_rejected",
                reason=event.reason.value,
                lines=event.lines,
                length_bytes=event.length_bytes,
            )

    def _write(self, port: SerialPort, data: bytes) -> None:
        if len(self._out) + len(data) > MAX_WRITE_BUFFER_BYTES:
            raise ModemTransportError(self._path, "write buffer full: the port does not drain")
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out and self._serial is not None:
            try:
                written = os.write(self._fd, self._out)
            except (BlockingIOError, InterruptedError):
                if not self._writing and self._loop is not None:
                    self._loop.add_writer(self._fd, self._flush)
                    self._writing = True
                return
            except OSError as exc:
                self._shut(f"write failed ({type(exc).__name__})", lost=True)
                return
            del self._out[:written]
        if self._writing and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _shut(self, reason: str, *, lost: bool = False) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
        self._writing = False
        self._out.clear()
        with contextlib.suppress(Exception):
            port.close()
        if lost:
            self.lost_reason = reason
            log.warning("modem_port_lost", port=self._path, reason=reason)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ModemPortLostError(self._path, reason))


def _open_failure(exc: BaseException) -> str:
    """Why an open failed, in a technician's words (pyserial wraps the OS error in text)."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text:
        return "no such port (module absent, or not enumerated yet)"
    if "exclusively lock" in text or "Resource temporarily unavailable" in text:
        return (
            "locked by another program (ModemManager? tell it to leave the port alone, or"
            " choose the modem_manager backend)"
        )
    if isinstance(exc, PermissionError) or "Permission denied" in text:
        return "permission denied (is the hub's user in the dialout group?)"
    return f"cannot be opened ({type(exc).__name__})"
