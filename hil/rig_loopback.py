"""A rig without hardware: Bumble virtual controllers served over HCI/TCP on loopback, and a
rig file that uses them, so that the real-rig path (hil/rig.py: the rig file, its radio, the
runner with ``--rig``) can be run on any machine::

    python -m hil.rig_loopback --devices 2 --write /tmp/loop-rig.toml &
    python -m hil run impostor-cuff --rig /tmp/loop-rig.toml

One controller is the hub's (the agent opens it as ``bumble:tcp-client:127.0.0.1:<port>``),
one per emulated device (the rig's radio opens each as ``tcp-client:127.0.0.1:<port>`` where a
real rig has ``usb:N``), all on one Bumble ``LocalLink``, each the virtual radio's
:class:`~hil.virtual_radio.HubController` (HCI Reset and LE Create Connection Cancel as the
spec has them) served as the virtual radio serves the hub's: one host at a time, a new host
replacing the last. It serves until interrupted (SIGINT, SIGTERM).

What it is not: real controllers and radio (no range, no interference, instant links), nor
BlueZ, nor USB.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bumble.link import LocalLink
from bumble.transport.common import StreamPacketSource

# The virtual radio's own HCI server parts (hil-internal): one host at a time, as a UART.
from hil.virtual_radio import LOOPBACK, HubController, _HciConnection, _HostSink

MAX_DEVICES: Final = 8


async def serve(link: LocalLink, name: str) -> tuple[int, asyncio.Server]:
    """One controller on ``link`` served over HCI/TCP on loopback: (port, server)."""
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only then (hil/virtual_radio.py says why).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port: int = sock.getsockname()[1]
    source, sink = StreamPacketSource(), _HostSink()
    server = await asyncio.get_running_loop().create_server(
        lambda: _HciConnection(source, sink), sock=sock
    )
    HubController(name, host_source=source, host_sink=sink, link=link)
    return port, server


def rig_text(name: str, hub_port: int, device_ports: Sequence[int]) -> str:
    """A rig file for the served controllers."""
    transports = ", ".join(f'"tcp-client:{LOOPBACK}:{p}"' for p in device_ports)
    return f"""\
# Written by python -m hil.rig_loopback: Bumble virtual controllers on loopback, no hardware.
[rig]
name = "{name}"

[agent]
ble_stack = "bumble:tcp-client:{LOOPBACK}:{hub_port}"

[devices]
provide = "emulated"
transports = [{transports}]
"""


async def run(devices: int, write: Path, name: str) -> None:
    """Serve until SIGINT or SIGTERM; the rig file written once every controller listens."""
    link = LocalLink()  # type: ignore[no-untyped-call]  # (Bumble leaves it untyped)
    hub_port, hub_server = await serve(link, "hub")
    served = [await serve(link, f"dongle-{n}") for n in range(devices)]
    text = rig_text(name, hub_port, [port for port, _ in served])
    await asyncio.to_thread(write.write_text, text)
    print(f"rig {name}: hub on {hub_port}, {devices} devices; rig file {write}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in [hub_server, *(s for _, s in served)]:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m hil.rig_loopback", description=__doc__)
    parser.add_argument("--devices", type=int, default=3, help=f"1-{MAX_DEVICES} (default 3)")
    parser.add_argument("--write", type=Path, required=True, help="the rig file to write")
    parser.add_argument("--name", default="loopback", help="the rig's name")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= MAX_DEVICES:
        parser.error(f"--devices must be 1-{MAX_DEVICES}")
    asyncio.run(run(args.devices, args.write, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
