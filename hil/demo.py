"""``make demo``: the whole chain on the virtual home, from an emulated cuff to the platform.

Starts, in order: a dev PKI for this run, a real mosquitto on a free loopback port (TLS,
client certificates), the reference receiver (the hospital side), the virtual radio (Bumble
controllers linked in software) with the emulated cuff holding :data:`DEMO_READINGS`, and
``homehub run`` as its own process with a generated configuration. It prints each reading as
the receiver verified it, checks it against what the cuff held, then, as the platform, sends
the hub a signed ``report_status`` command and prints its signed reply and status; exits 0
once all have arrived and the command was answered (1 on a mismatch or a timeout).
Everything it started is stopped on the way out, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Final

from hil.broker import Broker
from hil.pki import make_dev_pki
from hil.platform_console import PlatformConsole
from hil.receiver import Receiver
from hil.virtual_home import (
    CUFF_ADDRESS,
    DEMO_READINGS,
    HUB_ID,
    BpSummary,
    expected,
    summarize,
    write_agent_config,
)
from hil.virtual_radio import VirtualRadio

COMMAND_TIMEOUT_S: Final = 30.0
"""The command round trip: the hub is connected by then; it answers in milliseconds."""
DEMO_TIMEOUT_S: Final = 120.0
"""Generous: a cold start (imports, TLS, BLE scan and connect) takes a few seconds here."""
AGENT_STOP_TIMEOUT_S: Final = 20.0
"""The unit's TimeoutStopSec: time to finish a commit and send DISCONNECT."""


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


async def run_demo(run_dir: Path, timeout_s: float = DEMO_TIMEOUT_S) -> int:
    """Run the demo in ``run_dir``; the process exit code."""
    print(f"homehub demo: working in {run_dir}")
    pki = make_dev_pki(run_dir / "pki", HUB_ID)
    broker = Broker(pki, run_dir / "broker", persistence=True)
    await broker.astart()
    print(f"  broker      mosquitto with TLS + client certificates on 127.0.0.1:{broker.port}")
    agent_log = run_dir / "agent.log"
    try:
        async with (
            Receiver.for_dev_pki(pki, broker.port) as receiver,
            PlatformConsole.for_dev_pki(pki, broker.port) as console,
            VirtualRadio() as radio,
        ):
            await receiver.subscribed.wait()
            await console.subscribed.wait()
            print(
                "  receiver    subscribed to homehub/v1/+/readings, verifying with the hub's cert,"
                " receipts signed with the platform key"
            )
            await radio.add_cuff(DEMO_READINGS, address=CUFF_ADDRESS)
            print(f"  radio       two Bumble controllers linked in software; {radio.stack}")
            print(f"  cuff        emulated BPS 0x1810 holding {len(DEMO_READINGS)} readings")
            config = write_agent_config(
                run_dir, stack=radio.stack, broker_port=broker.port, pki=pki
            )
            with agent_log.open("wb") as log_file:
                agent = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "agent",
                    "run",
                    "--config",
                    str(config),
                    stdout=log_file,
                    stderr=log_file,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                print(f"  agent       homehub run (pid {agent.pid}), log {agent_log}")
                try:
                    code = await _watch_while_running(agent, receiver, timeout_s)
                    if code == 0:
                        code = await _command_round_trip(console)
                    return code
                finally:
                    code = await _stop_agent(agent)
                    print(f"  agent       stopped (exit code {code})")
    finally:
        await broker.aclose()
        print("  broker      stopped")


async def _watch_while_running(
    agent: asyncio.subprocess.Process, receiver: Receiver, timeout_s: float
) -> int:
    """Watch the receiver; give up at once if the agent exits."""
    watch = asyncio.ensure_future(_watch(receiver, timeout_s))
    exited = asyncio.ensure_future(agent.wait())
    done, _ = await asyncio.wait({watch, exited}, return_when=asyncio.FIRST_COMPLETED)
    if watch in done:
        exited.cancel()
        return watch.result()
    watch.cancel()
    print(f"homehub demo: FAILED, the agent exited with code {agent.returncode}")
    return 1


async def _watch(receiver: Receiver, timeout_s: float) -> int:
    wanted = [expected(r) for r in DEMO_READINGS]
    seen: list[BpSummary] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(seen) < len(wanted):
                reading = await receiver.readings.get()
                summary = summarize(reading)
                seen.append(summary)
                mark = "ok" if summary in wanted else "UNEXPECTED"
                print(f"verified  seq={reading.seq}  {summary.line()}  [{mark}]")
            # The platform vouches for what it stored: signed receipts, then the hub deletes.
            await receiver.wait_until(lambda s: s.held_items >= len(wanted))
    except TimeoutError:
        print(f"homehub demo: FAILED, {len(seen)} of {len(wanted)} readings after {timeout_s} s")
        return 1
    if sorted(seen, key=lambda s: s.effective) != sorted(wanted, key=lambda s: s.effective):
        print("homehub demo: FAILED, verified readings differ from what the cuff held")
        return 1
    stats = receiver.stats
    print(
        f"homehub demo: all {len(wanted)} readings arrived signed and verified, values equal to "
        f"the cuff's (duplicates dropped by id: {stats.duplicates}, rejected: "
        f"{stats.rejected_total}; receipts sent so far: {stats.receipts_sent}, naming "
        f"{stats.held_items} envelopes held)"
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


def main(argv: list[str] | None = None) -> int:
    """``python -m hil.demo [--keep] [--timeout S]``."""
    parser = argparse.ArgumentParser(prog="python -m hil.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--timeout", type=float, default=DEMO_TIMEOUT_S, help="seconds")
    args = parser.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="homehub-demo-"))
    code = 1
    try:
        code = asyncio.run(run_demo(run_dir, args.timeout))
    except KeyboardInterrupt:
        print("homehub demo: interrupted; everything it started is stopped")
        code = 130
    finally:
        if args.keep or code != 0:
            print(f"homehub demo: run directory kept at {run_dir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(run_dir)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
