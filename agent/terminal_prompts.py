"""Pairing's questions asked at the technician's terminal: a :class:`~agent.ble.prompts.Prompter`.

``homehub pair`` runs the Bluetooth host on the same event loop that waits for the
technician's answer, so input is read without blocking the loop: the terminal's descriptor
is watched with ``loop.add_reader`` and read a line at a time (a terminal in canonical mode
hands over whole lines; a pipe works too; a regular file is read directly, it never
blocks). Each question is bounded by :data:`PROMPT_TIMEOUT_S`: pairing's SMP transaction
times out after 30 s without a PDU (Core Spec Vol 3 Part H §3.4), so a later answer could
not be used anyway; an unanswered question is a refusal.

Questions and notices go to ``output`` (stderr by default, so ``--json`` keeps stdout for
the result). A device is named as the technician sees it (name and shortened address); no
full address is ever written. The passkey typed is echoed by the terminal as usual: it is
the number the device itself displays.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from typing import Final, TextIO

from agent.ble.prompts import PASSKEY_MAX

PROMPT_TIMEOUT_S: Final = 30.0
"""A question's answer must come within the SMP transaction timeout (Vol 3 Part H §3.4)."""

MAX_LINE_BYTES: Final = 256
"""Longest answer line read; the rest of a longer line is dropped (a paste gone wrong)."""

PASSKEY_TRIES: Final = 3
"""Mistyped passkeys (not 6 digits) asked again; a wrong 6-digit one fails the pairing."""


def _stdin_fd() -> int:
    """stdin's descriptor; -1 (no input: every question refused) when it has none."""
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError):  # closed, or replaced by an object without a descriptor
        return -1


class TerminalPrompter:
    """Answers pairing's questions from the technician at a terminal.

    Args:
        input_fd: the descriptor answers are read from (stdin).
        output: where questions are written (stderr).
        timeout_s: how long one question waits for its answer.
    """

    def __init__(
        self,
        input_fd: int | None = None,
        output: TextIO | None = None,
        *,
        timeout_s: float = PROMPT_TIMEOUT_S,
    ) -> None:
        self._fd = _stdin_fd() if input_fd is None else input_fd
        self._out = output or sys.stderr
        self._timeout_s = timeout_s
        self._buffer = b""
        self._eof = False
        #: Which questions were asked, in order (``"passkey"``, ``"confirm"``, ``"show"``):
        #: how the pairing went, without the numbers.
        self.asked: list[str] = []

    def say(self, text: str) -> None:
        """Write one line to the technician."""
        self._out.write(text + "\n")
        self._out.flush()

    async def ask_line(self, question: str) -> str | None:
        """Ask ``question``; the answer line (stripped), or ``None`` on end of input or when
        no answer came within the timeout."""
        self._out.write(question)
        self._out.flush()
        try:
            async with asyncio.timeout(self._timeout_s):
                line = await self._read_line()
        except TimeoutError:
            self._out.write("\n")
            self.say("no answer in time")
            return None
        return None if line is None else line.strip()

    async def _read_line(self) -> str | None:
        while b"\n" not in self._buffer:
            if self._eof:
                if not self._buffer:
                    return None
                break
            chunk = await self._read_some()
            if not chunk:
                self._eof = True
            self._buffer = (self._buffer + chunk)[-MAX_LINE_BYTES * 4 :]
        line, _sep, self._buffer = self._buffer.partition(b"\n")
        return line[:MAX_LINE_BYTES].decode("utf-8", errors="replace")

    async def _read_some(self) -> bytes:
        try:
            if stat.S_ISREG(os.fstat(self._fd).st_mode):
                return os.read(self._fd, MAX_LINE_BYTES)
        except OSError:
            return b""  # no such descriptor: no input at all
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bytes] = loop.create_future()

        def on_readable() -> None:
            if ready.done():
                return
            try:
                ready.set_result(os.read(self._fd, MAX_LINE_BYTES))
            except OSError as exc:
                ready.set_exception(exc)

        try:
            loop.add_reader(self._fd, on_readable)
        except PermissionError:
            # Not pollable (/dev/null and other devices epoll refuses): such a read does
            # not block.
            try:
                return os.read(self._fd, MAX_LINE_BYTES)
            except OSError:
                return b""
        try:
            return await ready
        except OSError:
            return b""  # a terminal that went away (EIO): end of input
        finally:
            loop.remove_reader(self._fd)

    # -- Prompter -----------------------------------------------------------------------

    async def ask_passkey(self, device: str) -> int | None:
        """The 6-digit passkey ``device`` displays, as typed; empty or no answer refuses."""
        self.asked.append("passkey")
        for _ in range(PASSKEY_TRIES):
            answer = await self.ask_line(
                f"Type the 6-digit passkey {device} shows (empty to refuse): "
            )
            if not answer:
                return None
            if len(answer) == 6 and answer.isdigit() and int(answer) <= PASSKEY_MAX:
                return int(answer)
            self.say("a passkey is 6 digits")
        return None

    async def confirm_number(self, device: str, number: int) -> bool:
        """Whether ``device`` shows ``number`` too (numeric comparison): 'y' confirms."""
        self.asked.append("confirm")
        answer = await self.ask_line(f"Does {device} show {number:06d}? [y/N] ")
        return answer is not None and answer.lower() in ("y", "yes")

    async def show_passkey(self, device: str, passkey: int) -> None:
        """Tell the technician to type ``passkey`` on the device."""
        self.asked.append("show")
        self.say(f"Type {passkey:06d} on {device}")

    @property
    def method(self) -> str:
        """The association model the questions show (``"just_works"`` when none came)."""
        if "confirm" in self.asked:
            return "numeric_comparison"
        if "passkey" in self.asked:
            return "passkey_entry"
        if "show" in self.asked:
            return "passkey_display"
        return "just_works"


__all__ = ["PROMPT_TIMEOUT_S", "TerminalPrompter"]
