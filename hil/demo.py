"""``make demo``: the whole chain on the virtual home, from three emulated devices to the platform.

Starts, in order: a dev PKI for this run, a real mosquitto on a free loopback port (TLS,
client certificates), the reference receiver (the hospital side), the virtual radio (Bumble
controllers linked in software) with an emulated blood-pressure cuff, glucometer and pulse
oximeter holding the readings of :mod:`hil.virtual_home`, and ``homehub run`` as its own
process with a generated configuration (the glucometer bonds on first contact).

While it runs it shows each reading's hops live, one short line per hop (:mod:`hil.demo_view`):
measured on the device, received by the hub over BLE, stored sealed and signed, published,
verified at the platform (with the values the platform read, checked against what the device
held), the platform's signed receipt, deleted on the hub. The hub's hops come from the
daemon's own JSON log (its stdout and stderr, also kept in ``agent.log``). Then, as the
platform, it sends the hub a signed ``report_status`` command and prints its verified reply
and status, and a table of the readings as the platform verified them.

Exit code 0 once every reading of every device arrived exactly once with exact values, was
deleted on the hub after its receipt, and the command was answered; 1 on a mismatch, an early
exit of the agent or a timeout. Everything it started is stopped on the way out, also on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import structlog
from rich.console import Console

from agent.logs import scrub_text
from hil.broker import Broker
from hil.demo_view import HUB, PLATFORM, Hop, HopEvent, HubLog, TableRow, Timeline, summary_table
from hil.emulators.glucometer import Glucometer
from hil.emulators.oximeter import EmulatedOximeter
from hil.pki import make_dev_pki
from hil.platform_console import PlatformConsole
from hil.platform_signing import envelope_digest
from hil.receiver import Receipt, Receiver
from hil.virtual_home import (
    CUFF_ADDRESS,
    CUFF_LABEL,
    DEMO_DEVICES,
    DEMO_GLUCOSE_RECORDS,
    DEMO_READINGS,
    DEMO_SPOT_CHECKS,
    GLUCOMETER_ADDRESS,
    GLUCOMETER_LABEL,
    HUB_ID,
    OXIMETER_ADDRESS,
    OXIMETER_LABEL,
    BpSummary,
    GlucoseSummary,
    SpotCheckSummary,
    Summary,
    expected,
    expected_glucose,
    expected_spot_check,
    summarize_any,
    write_agent_config,
)
from hil.virtual_radio import VirtualRadio

COMMAND_TIMEOUT_S: Final = 30.0
"""The command round trip: the hub is connected by then; it answers in milliseconds."""
DEMO_TIMEOUT_S: Final = 60.0
"""Every reading verified and deleted on the hub: ~2 s here (a cold start of the agent, TLS,
scan, three BLE sessions); generous for a loaded machine."""
AGENT_STOP_TIMEOUT_S: Final = 20.0
"""The unit's TimeoutStopSec: time to finish a commit and send DISCONNECT."""
VIEW_SETTLE_S: Final = 0.05
"""A line of merged hops is printed once nothing of it came for this long."""
EVENTS_MAX: Final = 10_000
AGENT_LINE_MAX: Final = 1 << 20
"""Longest agent log line parsed (its lines are short JSON; after a longer one the log is only
kept, no longer shown)."""

WANTED: Final[dict[str, tuple[Summary, ...]]] = {
    CUFF_LABEL: tuple(expected(r) for r in DEMO_READINGS),
    GLUCOMETER_LABEL: tuple(expected_glucose(r) for r in DEMO_GLUCOSE_RECORDS),
    OXIMETER_LABEL: tuple(expected_spot_check(s) for s in DEMO_SPOT_CHECKS),
}
"""Per device, what the platform must read: exactly these, each once."""
LABEL_OF: Final[dict[type, str]] = {
    BpSummary: CUFF_LABEL,
    GlucoseSummary: GLUCOMETER_LABEL,
    SpotCheckSummary: OXIMETER_LABEL,
}


def brief(summary: Summary) -> str:
    """A reading's value in a few characters, for the "measured" line."""
    match summary:
        case BpSummary():
            return f"{summary.systolic}/{summary.diastolic} {summary.unit}"
        case GlucoseSummary():
            return f"{summary.value} {summary.unit}"
        case SpotCheckSummary():
            return f"SpO2 {summary.spo2} %"


@dataclass(slots=True)
class Progress:
    """What the demo has seen so far; the view's events go through :meth:`emit`. Mutable on
    purpose: the run's one tally, written only from the event loop."""

    started: float
    hub: HubLog
    events: asyncio.Queue[HopEvent | None] = field(
        default_factory=lambda: asyncio.Queue(EVENTS_MAX)
    )
    remaining: dict[str, list[Summary]] = field(
        default_factory=lambda: {label: list(w) for label, w in WANTED.items()}
    )
    rows: list[TableRow] = field(default_factory=list)
    mismatch: str | None = None
    showing: bool = True
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        """Readings the devices hold."""
        return sum(len(w) for w in WANTED.values())

    @property
    def done(self) -> bool:
        """Each reading verified once and deleted on the hub, or a mismatch."""
        complete = not any(self.remaining.values()) and self.hub.deleted >= self.total
        return complete or self.mismatch is not None

    def now(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def emit(self, event: HopEvent) -> None:
        """Hand ``event`` to the view (while it shows), and wake whoever waits for progress."""
        if self.showing:
            with contextlib.suppress(asyncio.QueueFull):  # bounded: a line less, never a stall
                self.events.put_nowait(event)
        event_set, self._change = self._change, asyncio.Event()
        event_set.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (wrap in a timeout)."""
        while not predicate():
            await self._change.wait()


async def _stop_agent(agent: asyncio.subprocess.Process) -> int:
    if agent.returncode is None:
        agent.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(AGENT_STOP_TIMEOUT_S):
                await agent.wait()
        except TimeoutError:
            agent.kill()
            await agent.wait()
    return agent.returncode if agent.returncode is not None else -1


async def _read_agent_log(stream: asyncio.StreamReader, log_file: IO[bytes], p: Progress) -> None:
    """Keep ``agent.log`` and turn the daemon's log lines into hops, until it closes them.
    The pipe is drained to the end whatever comes: a full pipe would stall the daemon."""
    try:
        while raw := await stream.readline():
            log_file.write(raw)
            log_file.flush()
            for event in p.hub.feed(raw.decode("utf-8", "replace"), p.now()):
                p.emit(event)
    except ValueError:  # a line past AGENT_LINE_MAX: no more hops, the rest kept as it comes
        log_file.write(b"[homehub demo: a log line past the reader's limit; no more parsing]\n")
        while chunk := await stream.read(AGENT_LINE_MAX):
            log_file.write(chunk)


async def _show(p: Progress) -> None:
    """Print the hops as they come, consecutive ones of a device and hop merged."""
    timeline = Timeline()
    while True:
        try:
            async with asyncio.timeout(VIEW_SETTLE_S):
                event = await p.events.get()
        except TimeoutError:
            for text in timeline.flush():
                print(text, flush=True)
            event = await p.events.get()
        if event is None:
            for text in timeline.flush():
                print(text, flush=True)
            return
        for text in timeline.add(event):
            print(text, flush=True)


async def _watch_platform(receiver: Receiver, p: Progress) -> None:
    """Each verified reading: its published and verified hops, checked against the device.
    The readings verified together show their published hops first (one line per device)."""
    envelopes: set[bytes] = set()
    while True:
        arrived = [await receiver.readings.get()]
        while not receiver.readings.empty():
            arrived.append(receiver.readings.get_nowait())
        at = p.now()
        summaries = [(reading, summarize_any(reading)) for reading in arrived]
        for reading, summary in summaries:
            digest = envelope_digest(reading.envelope)
            new_envelope = digest not in envelopes
            envelopes.add(digest)
            size = len(reading.envelope) if new_envelope else 0
            label = LABEL_OF[type(summary)]
            p.emit(HopEvent(at, label, Hop.PUBLISHED, (reading.seq,), int(new_envelope), size))
        for reading, summary in summaries:
            check_verified(reading.seq, summary, p, at)


def check_verified(seq: int, summary: Summary, p: Progress, at: float) -> None:
    """The verified hop of one reading: its values, and whether its device held exactly them."""
    label = LABEL_OF[type(summary)]
    remaining = p.remaining[label]
    matches = summary in remaining
    if matches:
        remaining.remove(summary)
    elif p.mismatch is None:
        p.mismatch = f"seq {seq} of the {label} is not one it held (or came twice)"
    mark = "ok" if matches else "UNEXPECTED"
    p.rows.append(TableRow(label, seq, summary.line(), matches))
    p.emit(HopEvent(at, label, Hop.VERIFIED, (seq,), text=f"seq {seq}  {summary.line()}  [{mark}]"))


def _on_receipt(p: Progress) -> Callable[[Receipt], None]:
    def receipt(r: Receipt) -> None:
        seqs = tuple(seq for _digest, seqs in r.held for seq in seqs)
        owner = p.hub.owner(seqs)
        p.emit(HopEvent(p.now(), owner if owner != HUB else PLATFORM, Hop.RECEIPT, seqs))

    return receipt


async def _until_done(
    agent: asyncio.subprocess.Process, p: Progress, timeout_s: float
) -> str | None:
    """None once every reading is verified and deleted; else what failed: a mismatch, a
    timeout or the agent's exit."""
    try:
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
            done = tg.create_task(p.wait_until(lambda: p.done), name="demo-progress")
            exited = tg.create_task(agent.wait(), name="demo-agent-exit")
            await asyncio.wait({done, exited}, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            exited.cancel()
    except TimeoutError:
        verified = p.total - sum(len(r) for r in p.remaining.values())
        return (
            f"{verified} of {p.total} readings verified and {p.hub.deleted} deleted on the hub"
            f" after {timeout_s} s"
        )
    if p.mismatch is not None:
        return p.mismatch
    if agent.returncode is not None:
        return f"the agent exited with code {agent.returncode}"
    return None


async def run_demo(run_dir: Path, timeout_s: float = DEMO_TIMEOUT_S) -> int:
    """Run the demo in ``run_dir``; the process exit code."""
    print(f"homehub demo: working in {run_dir}")
    pki = make_dev_pki(run_dir / "pki", HUB_ID)
    broker = Broker(pki, run_dir / "broker", persistence=True)
    await broker.astart()
    print(f"  broker      mosquitto with TLS + client certificates on 127.0.0.1:{broker.port}")
    devices = {scrub_text(d.address): d.label for d in DEMO_DEVICES}
    p = Progress(time.monotonic(), HubLog(devices, racp={GLUCOMETER_LABEL}))
    try:
        async with (
            Receiver.for_dev_pki(pki, broker.port, on_receipt=_on_receipt(p)) as receiver,
            PlatformConsole.for_dev_pki(pki, broker.port) as console,
            VirtualRadio() as radio,
            contextlib.AsyncExitStack() as devices_on,
        ):
            await receiver.subscribed.wait()
            await console.subscribed.wait()
            print(
                "  receiver    subscribed to homehub/v1/+/readings, verifying with the hub's cert,"
                " receipts signed with the platform key"
            )
            await radio.add_cuff(DEMO_READINGS, address=CUFF_ADDRESS)
            meter = Glucometer(
                await radio.add_peripheral_device(GLUCOMETER_ADDRESS, GLUCOMETER_LABEL),
                DEMO_GLUCOSE_RECORDS,
                require_encryption=True,  # GLS 1.0: records only over an encrypted link
            )
            await meter.start()
            devices_on.push_async_callback(meter.stop)
            oximeter = EmulatedOximeter(
                await radio.add_peripheral_device(OXIMETER_ADDRESS, OXIMETER_LABEL),
                DEMO_SPOT_CHECKS,
            )
            await oximeter.start()
            devices_on.push_async_callback(oximeter.stop)
            print(f"  radio       four Bumble controllers linked in software; {radio.stack}")
            print(
                "  devices     cuff (BPS 0x1810), glucometer (GLS 0x1808 + RACP, encrypted link"
                " only), pulse oximeter (PLXS 0x1822)"
            )
            config = write_agent_config(
                run_dir, stack=radio.stack, broker_port=broker.port, pki=pki, devices=DEMO_DEVICES
            )
            return await _run_agent(run_dir, config, receiver, console, p, timeout_s)
    finally:
        await broker.aclose()
        print("  broker      stopped")


async def _run_agent(
    run_dir: Path,
    config: Path,
    receiver: Receiver,
    console: PlatformConsole,
    p: Progress,
    timeout_s: float,
) -> int:
    """``homehub run`` beside the view; the checks; the command round trip; the table."""
    agent_log = run_dir / "agent.log"
    with agent_log.open("wb") as log_file:
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            limit=AGENT_LINE_MAX,
        )
        assert agent.stdout is not None
        print(f"  agent       homehub run (pid {agent.pid}), log {agent_log}")
        print()
        print("  time   device      hop        what happened")
        for label, wanted in WANTED.items():
            held = ", ".join(brief(s) for s in wanted)
            text = f"{len(wanted)} readings held, the hub not yet connected: {held}"
            p.emit(HopEvent(p.now(), label, Hop.MEASURED, text=text))
        code = 1
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_read_agent_log(agent.stdout, log_file, p), name="demo-agent-log")
                view = tg.create_task(_show(p), name="demo-view")
                platform = tg.create_task(_watch_platform(receiver, p), name="demo-platform")
                failure: str | None = "interrupted"
                try:
                    failure = await _until_done(agent, p, timeout_s)
                finally:
                    platform.cancel()
                    await _close_view(p, view)
                code = _report(receiver, p, failure)
                if code == 0:
                    code = await _command_round_trip(console)
                await _stop_agent(agent)  # the log reader ends with the agent's output
        finally:
            stopped = await _stop_agent(agent)
            print(f"  agent       stopped (exit code {stopped})")
    return code


async def _close_view(p: Progress, view: asyncio.Task[None]) -> None:
    """Let the view print what it holds and end (at once if its queue is full)."""
    p.showing = False
    try:
        p.events.put_nowait(None)
    except asyncio.QueueFull:
        view.cancel()
    await asyncio.wait({view})


def _report(receiver: Receiver, p: Progress, failure: str | None) -> int:
    """The closing lines: the table of readings as the platform read them, and the verdict."""
    if p.rows:
        print()
        Console(width=132).print(summary_table(p.rows))
    if failure is None and not receiver.readings.empty():
        failure = "more readings arrived than the devices held"
    if failure is not None:
        print(f"homehub demo: FAILED, {failure}")
        return 1
    stats = receiver.stats
    print(
        f"homehub demo: all {p.total} readings of the 3 devices arrived once, signed and verified,"
        f" values equal to what each device held; deleted on the hub after {stats.receipts_sent}"
        f" signed receipts (duplicates dropped by id: {stats.duplicates}, rejected:"
        f" {stats.rejected_total})"
    )
    return 0


async def _command_round_trip(console: PlatformConsole) -> int:
    """The platform asks the hub for its status: a signed command out, the hub's signed reply
    and its status in (both verified with pycose against the hub's certificate)."""
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            seen = len(console.messages)
            reply = await console.ask(HUB_ID, "report_status")
            status = await console.wait_for(
                lambda m: m.kind == "status" and m.body.get("state") == "online", after=seen
            )
    except TimeoutError:
        print(f"homehub demo: FAILED, no reply and status within {COMMAND_TIMEOUT_S} s")
        return 1
    body = reply.body
    print(f"command   report_status -> reply ok={body['ok']} (signed by the hub, verified)")
    s = status.body
    print(
        f"status    {s['state']}: pending {s['pending']}, refused {s['refused']}, "
        f"damaged {s['damaged']}, awaiting receipt {s['awaiting_receipt']}, "
        f"dictionaries {s['dictionaries']}"
    )
    return 0 if body["ok"] is True else 1


def _quiet_platform_logs() -> None:
    """The broker's and the receiver's own info lines would bury the view: warnings only."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hil.demo [--keep] [--timeout S]``."""
    parser = argparse.ArgumentParser(prog="python -m hil.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--timeout", type=float, default=DEMO_TIMEOUT_S, help="seconds")
    args = parser.parse_args(argv)
    _quiet_platform_logs()
    run_dir = Path(tempfile.mkdtemp(prefix="homehub-demo-"))
    code = 1
    started = time.monotonic()
    try:
        code = asyncio.run(run_demo(run_dir, args.timeout))
    except KeyboardInterrupt:
        print("homehub demo: interrupted; everything it started is stopped")
        code = 130
    finally:
        print(f"homehub demo: exit code {code} after {time.monotonic() - started:.1f} s")
        if args.keep or code != 0:
            print(f"homehub demo: run directory kept at {run_dir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(run_dir)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
