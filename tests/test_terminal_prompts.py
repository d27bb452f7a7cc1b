"""agent/terminal_prompts.py: the technician's answers read without blocking the loop."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import pytest

from agent.terminal_prompts import TerminalPrompter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe: (read end, write end)."""
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):  # a test closed it already
            os.close(fd)


async def test_passkey_asked_again_until_six_digits(pipe: tuple[int, int]) -> None:
    """A typo (5 digits, letters) is asked again; six digits are the passkey."""
    read, write = pipe
    os.write(write, b"12345\nabcdef\n012345\n")
    out = io.StringIO()
    prompter = TerminalPrompter(read, out)
    assert 12345 == await prompter.ask_passkey("HH Glucometer (..:12:34)")
    assert 3 == out.getvalue().count("Type the 6-digit passkey HH Glucometer (..:12:34) shows")
    assert "passkey_entry" == prompter.method


async def test_empty_answer_or_end_of_input_refuses(pipe: tuple[int, int]) -> None:
    """An empty line refuses; so does the end of input."""
    read, write = pipe
    os.write(write, b"\n")
    os.close(write)
    prompter = TerminalPrompter(read, io.StringIO())
    assert await prompter.ask_passkey("meter") is None
    assert await prompter.confirm_number("meter", 42) is False


async def test_confirm_yes_and_the_number_shown(pipe: tuple[int, int]) -> None:
    """'y' confirms; the number is shown with its leading zeros."""
    read, write = pipe
    os.write(write, b"Y\n")
    out = io.StringIO()
    prompter = TerminalPrompter(read, out)
    assert await prompter.confirm_number("meter", 4242)
    assert "Does meter show 004242? [y/N] " == out.getvalue()
    assert "numeric_comparison" == prompter.method


async def test_no_answer_in_time_refuses(pipe: tuple[int, int]) -> None:
    """No answer within the timeout: a refusal, said on the terminal."""
    read, _write = pipe
    out = io.StringIO()
    prompter = TerminalPrompter(read, out, timeout_s=0.05)
    assert await prompter.ask_passkey("meter") is None
    assert "no answer in time" in out.getvalue()


async def test_show_passkey() -> None:
    """The hub's passkey is shown for typing on the device."""
    out = io.StringIO()
    prompter = TerminalPrompter(0, out)
    await prompter.show_passkey("cuff", 7)
    assert "Type 000007 on cuff\n" == out.getvalue()
    assert "passkey_display" == prompter.method


async def test_dev_null_is_the_end_of_input() -> None:
    """Input from /dev/null (not pollable): every question is refused, nothing blocks."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        prompter = TerminalPrompter(fd, io.StringIO())
        assert await prompter.ask_passkey("meter") is None
        assert await prompter.ask_line("row? ") is None
    finally:
        os.close(fd)
