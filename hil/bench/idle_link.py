"""Idle-link benchmark: the IP bytes a keepalive costs, per profile, per idle day.

    python -m hil.bench.idle_link [--keepalive S] [--pings N] [--dir DIR]

One paho client per profile (agent/profiles.py: its MQTT version; the hub's TLS client
certificate) connects to a real TLS mosquitto on loopback with a *short* keepalive (2 s by
default) and then sends nothing, so the only traffic is PINGREQ/PINGRESP. The three clients
idle at the same time, each on its own connection, for ``--pings`` round trips (8: about 20 s).

Counting: the kernel's own counters of each client socket (``getsockopt(TCP_INFO)``:
``tcpi_bytes_acked`` and ``tcpi_bytes_received`` for the TLS bytes each way,
``tcpi_segs_out`` and ``tcpi_segs_in`` for every segment, pure ACKs included), read right after
a PINGRESP (and its delayed ACK) and again N round trips later. Other traffic on the machine
cannot pollute them: they belong to this one connection. IP bytes = TLS bytes both ways +
segments both ways × header bytes, the header being 20 (IPv4) + 20 (TCP) + 12 (the timestamps
option) = 52 when the connection negotiated timestamps (``tcpi_options``; Linux's default), 40
without. Loopback has no link-layer framing worth counting and no loss; a cellular link adds its
own (not counted here) and retransmissions.

Then, per profile: bytes per round trip, segments per round trip, and the day extrapolated to the
profile's keepalive (86,400 / keepalive_s round trips), beside the baseline of today, the same
round trip every 60 s, and the ratio baseline / profile; issue 9's goal is ≤ 30 KB a day. The
last line is one JSON object with every figure; :func:`measure` is the function
``hil/bench/uplink.py`` can call.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.profiles import (
    BASELINE_KEEPALIVE_S,
    IDLE_BYTES_PER_DAY_GOAL,
    PING_ROUND_TRIP_IP_BYTES,
    PROFILES,
    MqttVersion,
    UplinkProfile,
    idle_bytes_per_day,
)
from hil.broker import Broker
from hil.pki import DevPki, make_dev_pki

HUB_ID: Final = "hub-bench-idle"
KEEPALIVE_S: Final = 2
"""The bench's short keepalive: a round trip's bytes do not depend on it, the run time does."""

PINGS: Final = 8
"""Round trips counted per connection (about 20 s with the 2 s keepalive)."""

ACK_SETTLE_S: Final = 0.3
"""After a PINGRESP, wait this long before reading the counters: the client's delayed ACK of it
goes out within 40-200 ms (Linux), and the next PINGREQ not before a keepalive."""

CONNECT_TIMEOUT_S: Final = 10.0

IPV4_TCP_HEADER_BYTES: Final = 40
TCP_TIMESTAMPS_OPTION_BYTES: Final = 12
"""The timestamps option (10 bytes) padded to 12: 52-byte headers on Linux by default."""

_TCPI_OPT_TIMESTAMPS: Final = 1
_TCP_INFO_LEN: Final = 232
_TCP_INFO_FIELDS: Final = {
    "options": (5, "B"),
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "segs_out": (136, "I"),
    "segs_in": (140, "I"),
}
"""Offsets in Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h; bytes_acked and
bytes_received since 4.1, segs_out and segs_in since 4.2)."""


@dataclass(frozen=True, slots=True)
class TcpCounters:
    """One socket's kernel counters (bytes are TLS bytes, i.e. TCP payload)."""

    bytes_out: int
    bytes_in: int
    segments_out: int
    segments_in: int
    timestamps: bool

    @classmethod
    def of(cls, sock: socket.socket) -> TcpCounters:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if len(raw) < 144:
            raise RuntimeError(f"TCP_INFO of {len(raw)} bytes: kernel too old for segs_out")
        v = {
            name: struct.unpack_from(f"={fmt}", raw, off)[0]
            for name, (off, fmt) in _TCP_INFO_FIELDS.items()
        }
        return cls(
            bytes_out=v["bytes_acked"],
            bytes_in=v["bytes_received"],
            segments_out=v["segs_out"],
            segments_in=v["segs_in"],
            timestamps=bool(v["options"] & _TCPI_OPT_TIMESTAMPS),
        )


@dataclass(frozen=True, slots=True)
class IdleMeasurement:
    """One profile's idle link, measured and extrapolated."""

    profile: str
    mqtt_version: str
    tls_version: str
    round_trips: int
    tls_bytes_per_round_trip: float
    segments_per_round_trip: float
    header_bytes_per_segment: int
    ip_bytes_per_round_trip: float
    keepalive_s: int
    ip_bytes_per_day: float
    baseline_keepalive_s: int
    baseline_ip_bytes_per_day: float
    baseline_over_profile: float
    goal_bytes_per_day: int
    within_goal: bool


class _PingCounter:
    """Counts PINGRESPs from paho's log (its thread) and wakes the bench at a target."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def on_log(self, _c: Any, _u: Any, _level: int, message: str) -> None:
        if message.startswith("Received PINGRESP"):
            with self._cond:
                self.count += 1
                self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= count, timeout_s):
                raise TimeoutError(f"{self.count} PINGRESPs of {count} within {timeout_s} s")


def _client(
    pki: DevPki, profile: UplinkProfile
) -> tuple[mqtt.Client, _PingCounter, threading.Event]:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(pki.hub_cert, pki.hub_key)
    version = (
        MQTTProtocolVersion.MQTTv5
        if profile.mqtt_version is MqttVersion.V5
        else MQTTProtocolVersion.MQTTv311
    )
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{HUB_ID}-{profile.name}", protocol=version
    )
    client.tls_set_context(ctx)
    pings = _PingCounter()
    connected = threading.Event()
    client.on_log = pings.on_log
    client.on_connect = lambda *_: connected.set()
    return client, pings, connected


def measure(
    pki: DevPki,
    port: int,
    profiles: Sequence[UplinkProfile],
    *,
    keepalive_s: int = KEEPALIVE_S,
    pings: int = PINGS,
    host: str = "127.0.0.1",
) -> list[IdleMeasurement]:
    """Idle one connection per profile at once (see the module doc); one figure each."""
    clients = [(p, *_client(pki, p)) for p in profiles]
    timeout_s = CONNECT_TIMEOUT_S + (pings + 2) * (keepalive_s + 1.5)
    try:
        for _p, client, _pings, connected in clients:
            client.connect(host, port, keepalive_s)
            client.loop_start()
            if not connected.wait(CONNECT_TIMEOUT_S):
                raise TimeoutError("no CONNACK")
        # Start the window right after a round trip and its ACK (every client: one each).
        for _p, _c, counter, _e in clients:
            counter.wait_for(1, timeout_s)
        time.sleep(ACK_SETTLE_S)  # the delayed ACK of the PINGRESP; nothing to wait on
        start = [(counter.count, TcpCounters.of(_sock(c))) for _p, c, counter, _e in clients]
        for (_p, _c, counter, _e), (first, _) in zip(clients, start, strict=True):
            counter.wait_for(first + pings, timeout_s)
        time.sleep(ACK_SETTLE_S)
        end = [(counter.count, TcpCounters.of(_sock(c))) for _p, c, counter, _e in clients]
        tls = [_sock(c).version() or "?" for _p, c, _n, _e in clients]
    finally:
        for _p, client, _n, _e in clients:
            client.disconnect()
            client.loop_stop()
    return [
        _figures(p, version, (n1 - n0), c0, c1)
        for (p, *_), version, (n0, c0), (n1, c1) in zip(clients, tls, start, end, strict=True)
    ]


def _sock(client: mqtt.Client) -> ssl.SSLSocket:
    sock = client.socket()
    if not isinstance(sock, ssl.SSLSocket):
        raise RuntimeError("no TLS socket: not connected")
    return sock


def _figures(
    profile: UplinkProfile, tls: str, round_trips: int, c0: TcpCounters, c1: TcpCounters
) -> IdleMeasurement:
    header = IPV4_TCP_HEADER_BYTES + (TCP_TIMESTAMPS_OPTION_BYTES if c1.timestamps else 0)
    tls_bytes = (c1.bytes_out - c0.bytes_out) + (c1.bytes_in - c0.bytes_in)
    segments = (c1.segments_out - c0.segments_out) + (c1.segments_in - c0.segments_in)
    per_rt = (tls_bytes + segments * header) / round_trips
    day = idle_bytes_per_day(profile.keepalive_s, per_rt)
    baseline = idle_bytes_per_day(BASELINE_KEEPALIVE_S, per_rt)
    return IdleMeasurement(
        profile=profile.name,
        mqtt_version="5" if profile.mqtt_version is MqttVersion.V5 else "3.1.1",
        tls_version=tls,
        round_trips=round_trips,
        tls_bytes_per_round_trip=tls_bytes / round_trips,
        segments_per_round_trip=segments / round_trips,
        header_bytes_per_segment=header,
        ip_bytes_per_round_trip=per_rt,
        keepalive_s=profile.keepalive_s,
        ip_bytes_per_day=day,
        baseline_keepalive_s=BASELINE_KEEPALIVE_S,
        baseline_ip_bytes_per_day=baseline,
        baseline_over_profile=baseline / day,
        goal_bytes_per_day=IDLE_BYTES_PER_DAY_GOAL,
        within_goal=day <= IDLE_BYTES_PER_DAY_GOAL,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keepalive", type=int, default=KEEPALIVE_S, help="seconds (short)")
    parser.add_argument("--pings", type=int, default=PINGS, help="round trips counted")
    parser.add_argument("--dir", type=Path, default=None, help="run directory (PKI, broker)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="homehub-idle-") as tmp:
        run_dir = args.dir or Path(tmp)
        pki = make_dev_pki(run_dir / "pki", HUB_ID)
        with Broker(pki, run_dir / "broker") as broker:
            figures = measure(
                pki,
                broker.port,
                list(PROFILES.values()),
                keepalive_s=args.keepalive,
                pings=args.pings,
            )
    print(
        f"idle link: {args.pings} PINGREQ/PINGRESP round trips per connection at a"
        f" {args.keepalive} s keepalive, TLS mosquitto on loopback (kernel TCP_INFO counters)"
    )
    print(
        f"{'profile':<15}{'MQTT':>6}{'TLS':>9}{'B/RT':>8}{'seg/RT':>8}{'keepalive':>11}"
        f"{'B/idle day':>12}{'60 s: B/day':>13}{'ratio':>7}  goal 30 KB"
    )
    for m in figures:
        print(
            f"{m.profile:<15}{m.mqtt_version:>6}{m.tls_version:>9}"
            f"{m.ip_bytes_per_round_trip:>8.1f}{m.segments_per_round_trip:>8.1f}"
            f"{m.keepalive_s:>9} s{m.ip_bytes_per_day:>12,.0f}{m.baseline_ip_bytes_per_day:>13,.0f}"
            f"{m.baseline_over_profile:>6.1f}x  {'met' if m.within_goal else 'MISSED'}"
        )
    print(
        f"(agent/profiles.py estimates with {PING_ROUND_TRIP_IP_BYTES} B per round trip, the"
        f" figure measured for issue 9; headers {figures[0].header_bytes_per_segment} B per"
        " segment: IPv4 + TCP"
        + (" + timestamps)" if figures[0].header_bytes_per_segment > 40 else ")")
    )
    print(
        json.dumps(
            {
                "bench": "idle_link",
                "keepalive_s": args.keepalive,
                "pings": args.pings,
                "estimate_ip_bytes_per_round_trip": PING_ROUND_TRIP_IP_BYTES,
                "profiles": {m.profile: asdict(m) for m in figures},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
