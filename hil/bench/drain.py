"""Drain benchmark: the daemon's own publisher beside raw paho, and a lone reading's commit.

    python -m hil.bench.drain [--dir DIR] [--readings N] [--lone N]

Figures, each beside a baseline measured in the same run, on the same machine:

- **backlog drain/s**: a backlog of ``--readings`` real signed BP envelopes (10,000 by
  default) in the encrypted outbox, sent by :class:`agent.publisher.Publisher` (storage
  thread, :class:`agent.uplink.Uplink`, deletion in batches) to a real TLS mosquitto until the
  outbox is empty; beside raw paho (``loop_start``, QoS 1, the same
  ``max_inflight_messages`` window, the same TLS client certificate) publishing the same
  payloads to the same broker until every PUBACK is in. Goal: ratio ≥ 0.5.
- **lone reading, arrival → commit p50/p99**: one reading at a time handed to the running
  daemon (:meth:`agent.daemon.Hub.receive`, as a BLE session hands on an indication) until
  its transaction committed (the hub's observer), the next one only once the previous was
  published and deleted (so each is really alone), ``--lone`` times; beside a bare
  ``write`` + ``fsync`` of the same size in the same directory. Goal: p99 ≤ 5 ms here.

The last line is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent import cose
from agent.daemon import Arrival, Fate, Hub
from agent.ingest import Signer, prepare
from agent.ingest_batcher import GROUP_COMMIT_MAX, Item, commit_batch
from agent.normalize.phd import Context
from agent.outbox import Outbox
from agent.publisher import Publisher
from agent.sealing import Sealer, create_data_key, load_data_key
from agent.storage import StorageThread
from agent.uplink import INFLIGHT_MAX, Uplink, UplinkSettings, readings_topic
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, ChildSettings, child_config, raw_measurement
from hil.pki import DevPki, make_dev_pki

HUB_ID: Final = "hub-bench-1"
PATIENT: Final = "bench-patient"
READINGS: Final = 10_000
LONE: Final = 200
SLICES: Final = 5
DRAIN_TIMEOUT_S: Final = 600.0


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill_outbox(
    db: Path, data_key: Path, signing_key: Path, first: int, count: int, hub_id: str = HUB_ID
) -> list[bytes]:
    """Store readings ``first`` … ``first + count - 1`` of ``hub_id`` through the pipeline's
    group commit into the (empty) outbox; their envelopes. (hil/bench/uplink.py uses it too.)"""
    key = load_data_key(data_key) if data_key.exists() else create_data_key(data_key)
    sealer = Sealer(key)
    signer = Signer.from_key(cose.load_signing_key(signing_key))
    with Outbox.open(db, sealer, hub_id) as box:
        for start in range(first, first + count, GROUP_COMMIT_MAX):
            items = []
            for i in range(start, min(first + count, start + GROUP_COMMIT_MAX)):
                raw = raw_measurement(i)
                ctx = Context(hub_id, PATIENT, "UTC", raw.received_wall)
                p = prepare(raw, DEVICE, ctx)
                envelope = functools.partial(p.envelope, signer=signer)
                items.append(Item(p.kind, p.dedup_key, envelope))
            commit_batch(box, items)
        bodies: list[bytes] = []
        cursor = 0
        while batch := box.pending_after(cursor, 1000):
            bodies += [r.body for r in batch]
            cursor = batch[-1].seq
        return bodies


async def _publisher_drain(
    pki: DevPki, broker: Broker, db: Path, data_key: Path, count: int
) -> tuple[float, float]:
    """Seconds (wall, process CPU) the daemon's publisher takes to empty an outbox of
    ``count`` records."""
    settings = UplinkSettings(
        hub_id=HUB_ID,
        host="127.0.0.1",
        port=broker.port,
        ca_file=pki.ca_cert,
        cert_file=pki.hub_cert,
        key_file=pki.hub_key,
    )
    delivered = 0
    done = asyncio.Event()

    def on_delivered(seqs: Sequence[int]) -> None:
        nonlocal delivered
        delivered += len(seqs)
        if delivered >= count:
            done.set()

    async with StorageThread() as storage:
        sealer = Sealer(load_data_key(data_key))
        box = await storage.call(Outbox.open, db, sealer, HUB_ID)
        uplink = Uplink(settings)
        publisher = Publisher(storage, box, uplink, on_delivered=on_delivered)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="bench.uplink")
                await uplink.connected.wait()
                started, cpu = time.perf_counter(), time.process_time()
                tg.create_task(publisher.run(), name="bench.publisher")
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await done.wait()
                elapsed = time.perf_counter() - started, time.process_time() - cpu
                publisher.stop()
                await uplink.close()
        finally:
            await storage.call(box.close)
    return elapsed


def _raw_paho(pki: DevPki, broker: Broker, payloads: list[bytes]) -> tuple[float, float]:
    """Seconds (wall, process CPU) raw paho (its own network thread) takes to publish
    ``payloads`` at QoS 1 with the same in-flight window, until every PUBACK is in."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=HUB_ID, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.hub_cert), keyfile=str(pki.hub_key))
    client.max_inflight_messages_set(INFLIGHT_MAX)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    all_acked = threading.Event()
    acked = 0

    def on_connect(*_args: Any) -> None:
        connected.set()

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1
        if acked >= len(payloads):
            all_acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        if not connected.wait(30):
            raise RuntimeError("raw paho did not connect")
        topic = readings_topic(HUB_ID)
        started, cpu = time.perf_counter(), time.process_time()
        for payload in payloads:
            client.publish(topic, payload, qos=1)
        if not all_acked.wait(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"raw paho: only {acked} PUBACKs")
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        client.disconnect()
        client.loop_stop()


class _Lone:
    """The hub's observer: wakes the benchmark when a reading's commit is done, and when it
    was delivered (so that the next reading is really alone)."""

    def __init__(self) -> None:
        self.committed = asyncio.Event()
        self.delivered_all = asyncio.Event()
        self.at = 0.0
        self.stored_count = 0
        self.delivered_count = 0

    def stored(self, _arrival: Arrival, _fate: Fate) -> None:
        self.at = time.perf_counter()
        self.stored_count += 1
        self.committed.set()

    def delivered(self, seqs: Sequence[int]) -> None:
        self.delivered_count += len(seqs)
        if self.delivered_count >= self.stored_count:
            self.delivered_all.set()


async def _lone_latencies(pki: DevPki, broker: Broker, directory: Path, count: int) -> list[float]:
    """Arrival → commit of ``count`` lone readings through the running daemon, in seconds."""
    state = directory / "lone-state"
    keys = directory / "lone-keys"
    state.mkdir()
    keys.mkdir(mode=0o700)
    settings = ChildSettings(
        db=str(state / "outbox.db"),
        data_key=str(keys / "data.key"),
        signing_key=str(pki.hub_key),
        hub_id=pki.hub_id,
        patient_id=PATIENT,
        broker_port=broker.port,
        ca_file=str(pki.ca_cert),
        cert_file=str(pki.hub_cert),
        key_file=str(pki.hub_key),
        start=0,
        count=0,
        seed=0,
    )
    observer = _Lone()
    hub = Hub(child_config(settings), observer=observer, collect=False)
    stop = asyncio.Event()
    latencies: list[float] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(hub.run(stop), name="bench.hub")
        await hub.ready.wait()
        for i in range(count):
            observer.committed.clear()
            observer.delivered_all.clear()
            started = time.perf_counter()
            await hub.receive(raw_measurement(READINGS + i), DEVICE, DEVICE_CONFIG)
            await observer.committed.wait()
            latencies.append(observer.at - started)
            await observer.delivered_all.wait()  # published and deleted: the hub is idle again
        stop.set()
    return latencies


def _bare_fsyncs(directory: Path, size: int, count: int) -> list[float]:
    """``write`` + ``fsync`` of ``size`` bytes, ``count`` times, in seconds each."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = os.urandom(size)
    out = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            out.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return out


def measure(directory: Path, readings: int, lone: int, slices: int) -> dict[str, Any]:
    """Every figure, measured in ``directory``. The backlog is drained in ``slices`` rounds,
    each timed for both sides back to back (ours, then raw paho on the same payloads), so a
    noisy neighbour slows both alike."""
    pki = make_dev_pki(directory / "pki", HUB_ID)
    (directory / "keys").mkdir(mode=0o700)
    (directory / "state").mkdir()
    db = directory / "state" / "outbox.db"
    data_key = directory / "keys" / "data.key"
    broker = Broker(pki, directory / "broker")
    broker.start()
    ours_s = raw_s = ours_cpu_s = raw_cpu_s = 0.0
    size = 0
    try:
        per_slice = -(-readings // slices)
        for first in range(0, readings, per_slice):
            count = min(per_slice, readings - first)
            payloads = fill_outbox(db, data_key, pki.hub_key, first, count)
            size = len(payloads[0])
            wall_s, cpu_s = asyncio.run(_publisher_drain(pki, broker, db, data_key, count))
            ours_s, ours_cpu_s = ours_s + wall_s, ours_cpu_s + cpu_s
            wall_s, cpu_s = _raw_paho(pki, broker, payloads)
            raw_s, raw_cpu_s = raw_s + wall_s, raw_cpu_s + cpu_s
        lone_s = asyncio.run(_lone_latencies(pki, broker, directory, lone))
    finally:
        broker.close()
    fsyncs = _bare_fsyncs(directory, size, lone)
    ours_rate, raw_rate = readings / ours_s, readings / raw_s
    return {
        "readings": readings,
        "slices": slices,
        "envelope_bytes": size,
        "window": INFLIGHT_MAX,
        "publisher_drain_per_s": round(ours_rate, 1),
        "raw_paho_per_s": round(raw_rate, 1),
        "drain_ratio": round(ours_rate / raw_rate, 3),
        "publisher_cpu_us_per_msg": round(ours_cpu_s / readings * 1e6, 1),
        "raw_paho_cpu_us_per_msg": round(raw_cpu_s / readings * 1e6, 1),
        "cpu_ratio": round(raw_cpu_s / ours_cpu_s, 3),
        "lone_commit_p50_ms": round(statistics.median(lone_s) * 1000, 3),
        "lone_commit_p99_ms": round(_percentile(lone_s, 0.99) * 1000, 3),
        "bare_fsync_p50_ms": round(statistics.median(fsyncs) * 1000, 3),
        "bare_fsync_p99_ms": round(_percentile(fsyncs, 0.99) * 1000, 3),
        "lone_samples": lone,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print each figure beside its baseline, then one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m hil.bench.drain", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--readings", type=int, default=READINGS, help="backlog size")
    parser.add_argument("--lone", type=int, default=LONE, help="lone readings to time")
    parser.add_argument("--slices", type=int, default=SLICES, help="alternating rounds")
    args = parser.parse_args(argv)
    if args.readings < 1 or args.lone < 1 or not 1 <= args.slices <= args.readings:
        parser.error("--readings and --lone must be at least 1, --slices 1..readings")
    with tempfile.TemporaryDirectory(prefix="homehub-drain-", dir=args.dir) as tmp:
        f = measure(Path(tmp), args.readings, args.lone, args.slices)
    print(
        f"drain benchmark ({f['readings']} readings of {f['envelope_bytes']} B"
        f" in {f['slices']} rounds, window {f['window']})"
    )
    print(
        f"  backlog drain, daemon's publisher: {f['publisher_drain_per_s']}/s"
        f"  | raw paho QoS 1: {f['raw_paho_per_s']}/s  | ratio {f['drain_ratio']} (goal >= 0.5)"
    )
    print(
        f"  process CPU per message: {f['publisher_cpu_us_per_msg']} µs"
        f"  | raw paho: {f['raw_paho_cpu_us_per_msg']} µs  | ratio {f['cpu_ratio']}"
    )
    print(
        f"  lone reading arrival -> commit: p50 {f['lone_commit_p50_ms']} ms,"
        f" p99 {f['lone_commit_p99_ms']} ms  | bare fsync: p50 {f['bare_fsync_p50_ms']} ms,"
        f" p99 {f['bare_fsync_p99_ms']} ms (goal p99 <= 5 ms)"
    )
    print(json.dumps(f, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
