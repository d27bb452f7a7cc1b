"""Uplink benchmark: issue 9's figures for the whole uplink, each beside a baseline of the same run.

    python -m hil.bench.uplink [--readings N] [--rounds R] [--quick] [--no-idle] [--dir DIR]

1. **Backlog drain, readings/s**: ``--readings`` real signed blood-pressure readings (20,000
   by default) stored through the pipeline's group commit into the encrypted outbox
   (:func:`hil.bench.drain.fill_outbox`: ``agent.ingest.prepare``, signing, sealing, SQLite),
   then drained by the product's own :class:`agent.publisher.Publisher` and
   :class:`agent.uplink.Uplink` (storage thread, unsealing, the publisher's window, TLS
   publish) to a real TLS mosquitto and the reference platform (:class:`hil.receiver.Receiver`
   with receipts, in a process of its own as a platform is: it verifies with pycose, stores
   durably in SQLite and sends signed receipts), until every record is deleted:

   - ``ack = "receipt"``: the hub verifies each receipt and deletes what it holds;
   - ``ack = "puback"``: the broker's PUBACK deletes (for comparison).

   Baseline: raw paho (its own network thread, QoS 1, the hub's in-flight window
   :data:`agent.uplink.INFLIGHT_MAX`, the hub's TLS client certificate) publishing *the same
   MQTT payloads the hub sent* (captured from its uplink: batches and compression included
   once the publisher makes them) over the same broker to the same kind of platform: timed
   until every PUBACK is in (``raw_paho_puback``) and until the platform stored every reading
   (``raw_paho``: the end point the receipt path also needs). Ratios: the hub with receipts
   against raw paho to the platform (issue 9's goal ≥ 0.8), the hub with PUBACKs against raw
   paho's PUBACKs.

   Every drain starts from a copy of the same filled outbox, and every phase gets a fresh
   platform (an empty store, its client id's session resumed), so each side sends new
   readings to an empty platform. ``--rounds`` rounds, the order of the three phases reversed
   every other round; rates are medians over the rounds, ratios the median of each round's.
   Also per reading: this process's CPU, the platform's, mosquitto's, and the bytes on the
   wire (MQTT payloads).

   When the publisher's constructor takes ``dictionary`` (batching and compression), it is
   given the newest shipped dictionary (:data:`DICTIONARY_ID`, 3: version-3 readings, without
   derived identifiers, their Devices by reference once a receipt confirmed the platform holds
   them) as a platform that announced it would (a callable returning it, as the constructor
   asks since f73c6e9), and ``signer``, the hub's key: a backlog then goes in compressed
   batches (``batch_max_readings``, fresh window and budget at the product's defaults). The
   platform holds the shipped dictionaries in every case.

2. **Envelope bytes per reading**, per device kind (blood pressure, glucose with its
   Measurement Context, glucose, pulse oximetry): readings made by the real pipeline from
   emulated device bytes (``hil/train_dictionaries.py``'s generators) with a seed of their own
   (:data:`SIZE_SEED`: neither the training seed nor the documented held-out one); single
   envelopes as stored (uncompressed) and as :func:`agent.envelopes.build_single` makes them
   with the newest shipped dictionary, for the **first** reading of a device (its Devices in
   full: the platform does not hold them yet) and in **steady state** (its Devices by
   reference: docs/platform-protocol.md "Devices by reference"), beside the newest dictionary
   before it (:data:`BASELINE_DICTIONARY_ID`, 2: version-2 readings); per reading in batches
   of 10 and 50 of one hub (:func:`agent.envelopes.build_batch`, steady state), plain beside
   dictionary-compressed. Goals (issue 9): a single blood-pressure envelope ≤ 400 B, glucose
   with context ≤ 600 B, a reading in a batch ≤ 250 B; judged on the steady-state median (the
   maximum and the first reading's printed beside it and reported too).

3. **IP bytes per idle day** per profile: :func:`hil.bench.idle_link.measure` (kernel TCP_INFO
   counters of idle TLS connections, extrapolated to each profile's keepalive) beside today's
   60 s keepalive; goal ≤ 30 KB.

The last line is one JSON object holding every figure. A full run takes 10-15 minutes here
(the fill ~1-2, nine drains, 20 s of idle link). ``--quick``: 300 readings, one round, few
size samples, a 1 s keepalive for 2 round trips: a smoke test of the whole bench (~15 s), not
a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import cbor2
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent import cose, device_refs, dictionaries
from agent.dictionaries import Dictionary
from agent.envelopes import ReadingPayload, build_batch, build_single
from agent.ingest import Signer
from agent.outbox import Outbox
from agent.profiles import BASELINE_KEEPALIVE_S, IDLE_BYTES_PER_DAY_GOAL, PROFILES, AckMode
from agent.publisher import Publisher, PublisherStats
from agent.sealing import Sealer, load_data_key
from agent.security import load_platform_key
from agent.storage import StorageThread
from agent.uplink import INFLIGHT_MAX, PublishDone, Uplink, UplinkSettings, readings_topic
from hil.bench.drain import fill_outbox
from hil.bench.idle_link import measure as measure_idle
from hil.broker import Broker
from hil.pki import DevPki, make_dev_pki
from hil.platform_verify import Dictionaries
from hil.receiver import Receiver
from hil.train_dictionaries import (
    SyntheticReading,
    hub_backlog,
    synthetic_readings,
    synthetic_signer,
)

HUB_ID: Final = "hub-bench-uplink"
READINGS: Final = 20_000
ROUNDS: Final = 3
QUICK_READINGS: Final = 300

RATIO_GOAL: Final = 0.8
SINGLE_GOALS: Final = {"blood_pressure": 400, "glucose_with_context": 600}
BATCH_GOAL: Final = 250
BATCH_SIZES: Final = (10, 50)

SIZE_SEED: Final = 555_000_001
"""Readings for the sizes: neither hil.train_dictionaries.TRAINING_SEED nor its HELD_OUT_SEED."""
DICTIONARY_ID: Final = max(dictionaries.load())
"""The dictionary the hub compresses with: the newest shipped, as a platform holding all of
them announces (the hub takes the highest announced id)."""
BASELINE_DICTIONARY_ID: Final = max(
    (d.id for d in dictionaries.load().values() if d.reading_version < device_refs.READING_V3),
)
"""The newest shipped dictionary before Devices by reference (2): the singles' baseline."""
SIZE_COUNT: Final = 60
"""Single envelopes measured per kind (median and maximum)."""
SIZE_BATCHES: Final = 5
"""Batches measured per kind and size (median bytes per reading)."""
SIZE_KINDS: Final = ("blood_pressure", "glucose_with_context", "glucose", "pulse_oximetry")

IDLE_KEEPALIVE_S: Final = 2
IDLE_PINGS: Final = 8

PHASE_TIMEOUT_S: Final = 900.0
"""Longest one drain may take (20,000 readings: 30-130 s here, the platform ~30 s of it)."""
CHILD_TIMEOUT_S: Final = 60.0
"""Longest the platform process may take to start, subscribe, or report."""
PLATFORM_CLIENT_ID: Final = "platform-receiver-bench"

PHASES: Final = ("hub_receipt", "raw_paho", "hub_puback")


# ---------------------------------------------------------------------------
# The platform, in a process of its own
# ---------------------------------------------------------------------------


def _platform_main(pki: DevPki, port: int, conn: Connection) -> None:
    """The child: serves :class:`_Platform`'s requests until told to exit."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(_platform_serve(pki, port, conn))


async def _platform_serve(pki: DevPki, port: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: requests.put_nowait(conn.recv()))
    held = dictionaries.PACKAGE_DIR
    receiver: Receiver | None = None
    consumer: asyncio.Task[None] | None = None
    cpu = 0.0
    try:
        while True:
            what, arg = await requests.get()
            if what == "start":
                receiver = Receiver.for_dev_pki(
                    pki,
                    port,
                    receipts=True,
                    state_dir=Path(arg),
                    dictionaries=Dictionaries.load(held),
                    client_id=PLATFORM_CLIENT_ID,
                )
                await receiver.start()
                consumer = asyncio.create_task(_consume(receiver), name="bench.consumer")
                async with asyncio.timeout(CHILD_TIMEOUT_S):
                    await receiver.subscribed.wait()
                cpu = time.process_time()
                conn.send(("ready", 0.0))
            elif what == "wait" and receiver is not None:
                async with asyncio.timeout(PHASE_TIMEOUT_S):
                    await receiver.wait_until(_verified_at_least(int(arg)))
                conn.send(("reached", time.perf_counter()))
            elif what == "stop" and receiver is not None and consumer is not None:
                await receiver.stop()
                consumer.cancel()
                conn.send(("stats", _platform_figures(receiver, time.process_time() - cpu)))
                receiver = consumer = None
            elif what == "exit":
                return
            else:
                raise RuntimeError(f"unexpected request {what!r}")
    finally:
        loop.remove_reader(conn.fileno())
        if receiver is not None:
            await receiver.stop()


def _platform_figures(receiver: Receiver, cpu_s: float) -> dict[str, Any]:
    s = receiver.stats
    return {
        "cpu_s": cpu_s,
        "verified": s.verified,
        "duplicates": s.duplicates,
        "rejected": s.rejected_total,
        "envelopes": s.envelopes,
        "batches": s.batches,
        "compressed": s.compressed,
        "receipts_sent": s.receipts_sent,
        "held_items": s.held_items,
    }


def _verified_at_least(count: int) -> Callable[[Any], bool]:
    return lambda stats: bool(stats.verified >= count)


async def _consume(receiver: Receiver) -> None:
    """Take the platform's new readings off its queue, as its consumer would."""
    while True:
        await receiver.readings.get()


class _Platform:
    """The reference platform (hil.receiver with receipts) in a process of its own, started
    once (spawned: a clean interpreter, its own core to run on). Each phase gets a fresh
    :class:`~hil.receiver.Receiver` with an empty store (:meth:`start` … :meth:`finish`); all
    use one client id, whose session at the broker each resumes, so no absent client's
    session collects messages between phases."""

    def __init__(self, pki: DevPki, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, self._child = context.Pipe()
        self._process = context.Process(
            target=_platform_main, args=(pki, port, self._child), name="bench-platform"
        )

    def __enter__(self) -> _Platform:
        self._process.start()
        self._child.close()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("exit", None))
            self._process.join(CHILD_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(CHILD_TIMEOUT_S)
        self._conn.close()

    def start(self, state_dir: Path) -> None:
        """A fresh receiver storing in ``state_dir``, subscribed when this returns."""
        self._conn.send(("start", str(state_dir)))
        self._recv("ready")

    def expect(self, readings: int) -> None:
        """Ask to be told when ``readings`` new readings are stored (:meth:`reached`)."""
        self._conn.send(("wait", readings))

    def reached(self, timeout_s: float = PHASE_TIMEOUT_S) -> float:
        """The ``perf_counter`` time (the machine's monotonic clock) the platform held them."""
        at = self._recv("reached", timeout_s)
        assert isinstance(at, float)
        return at

    def finish(self) -> dict[str, Any]:
        """Stop the receiver; its figures (``cpu_s``: the process's CPU since :meth:`start`)."""
        self._conn.send(("stop", None))
        figures = self._recv("stats")
        assert isinstance(figures, dict)
        return figures

    def _recv(self, kind: str, timeout_s: float = CHILD_TIMEOUT_S) -> object:
        try:
            if not self._conn.poll(timeout_s):
                raise TimeoutError(f"the platform sent no {kind!r} within {timeout_s} s")
            got, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the platform process ended (exit code {self._process.exitcode})"
            ) from None
        if got != kind:
            raise RuntimeError(f"the platform sent {got!r}, expected {kind!r}")
        return value


# ---------------------------------------------------------------------------
# The two senders
# ---------------------------------------------------------------------------


class _CapturingUplink(Uplink):
    """The product's uplink, remembering each distinct MQTT payload it sent (by digest, in
    order): what raw paho then sends."""

    def __init__(self, settings: UplinkSettings) -> None:
        super().__init__(settings)
        self.sent: dict[bytes, bytes] = {}

    def publish_then(self, payload: bytes, done: PublishDone) -> bytes:
        digest = super().publish_then(payload, done)
        self.sent.setdefault(digest, payload)
        return digest


@dataclass(frozen=True, slots=True)
class _HubResult:
    started: float
    ended: float
    cpu_s: float
    sent: list[bytes]
    stats: PublisherStats


def _publisher_options(signing_key: Path, dictionary: Dictionary) -> dict[str, Any]:
    """Batching and compression when the publisher offers them (its constructor's parameters):
    the dictionary (itself, or a callable returning it, as the parameter's annotation says)
    and the hub's signer."""
    params = inspect.signature(Publisher).parameters
    options: dict[str, Any] = {}
    if "dictionary" in params:
        wants_callable = "Callable" in str(params["dictionary"].annotation)
        options["dictionary"] = (lambda: dictionary) if wants_callable else dictionary
    if "signer" in params:
        options["signer"] = Signer.from_key(cose.load_signing_key(signing_key))
    return options


async def _hub_drain(
    pki: DevPki,
    port: int,
    db: Path,
    data_key: Path,
    count: int,
    ack: AckMode,
    options: dict[str, Any],
) -> _HubResult:
    """The product's publisher empties an outbox of ``count`` records (see the module doc)."""
    settings = UplinkSettings(
        hub_id=HUB_ID,
        host="127.0.0.1",
        port=port,
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

    platform_key = load_platform_key(pki.platform_cert) if ack is AckMode.RECEIPT else None
    async with StorageThread() as storage:
        box = await storage.call(Outbox.open, db, Sealer(load_data_key(data_key)), HUB_ID)
        uplink = _CapturingUplink(settings)
        publisher = Publisher(
            storage,
            box,
            uplink,
            on_delivered=on_delivered,
            ack=ack,
            platform_key=platform_key,
            **options,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="bench.uplink")
                async with asyncio.timeout(CHILD_TIMEOUT_S):
                    await uplink.connected.wait()
                    if ack is AckMode.RECEIPT:  # receipts subscribed before the first publish
                        await uplink.wait_until(lambda s: s.subscribed >= 1)
                started, cpu = time.perf_counter(), time.process_time()
                tg.create_task(publisher.run(), name="bench.publisher")
                async with asyncio.timeout(PHASE_TIMEOUT_S):
                    await done.wait()
                ended, cpu = time.perf_counter(), time.process_time() - cpu
                publisher.stop()
                await uplink.close()
        finally:
            await storage.call(box.close)
    return _HubResult(started, ended, cpu, list(uplink.sent.values()), publisher.stats)


@dataclass(frozen=True, slots=True)
class _RawResult:
    started: float
    acked: float
    cpu_s: float


def _raw_paho(pki: DevPki, port: int, payloads: Sequence[bytes]) -> _RawResult:
    """Raw paho (``loop_start``) publishes ``payloads`` at QoS 1 with the hub's in-flight
    window, as the hub (its client id and certificate), until every PUBACK is in."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=HUB_ID, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.hub_cert), keyfile=str(pki.hub_key))
    client.max_inflight_messages_set(INFLIGHT_MAX)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    all_acked = threading.Event()
    acked = 0
    acked_at = 0.0

    def on_connect(*_args: Any) -> None:
        connected.set()

    def on_publish(*_args: Any) -> None:
        nonlocal acked, acked_at
        acked += 1
        if acked >= len(payloads):
            acked_at = time.perf_counter()
            all_acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not connected.wait(CHILD_TIMEOUT_S):
            raise RuntimeError("raw paho did not connect")
        topic = readings_topic(HUB_ID)
        started, cpu = time.perf_counter(), time.process_time()
        for payload in payloads:
            client.publish(topic, payload, qos=1)
        if not all_acked.wait(PHASE_TIMEOUT_S):
            raise RuntimeError(f"raw paho: only {acked} PUBACKs of {len(payloads)}")
        return _RawResult(started, acked_at, time.process_time() - cpu)
    finally:
        client.disconnect()
        client.loop_stop()


def _process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# Part 1: the drain
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """One timed drain of the whole backlog."""

    name: str
    round: int
    readings: int
    seconds: float
    """Until done: every record deleted (hub), every PUBACK in and every reading at the
    platform (raw paho)."""
    puback_seconds: float
    """Raw paho: until every PUBACK; the hub: the same as ``seconds``."""
    platform_seconds: float
    """Until the platform had stored every reading."""
    cpu_s: float
    platform_cpu_s: float
    broker_cpu_s: float
    envelopes: int
    wire_bytes: int
    published: int
    """Envelopes handed to the broker, re-sends included."""
    receipt_timeouts: int
    platform: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.readings / self.seconds

    @property
    def puback_rate(self) -> float:
        return self.readings / self.puback_seconds


@dataclass(slots=True)
class _Run:
    pki: DevPki
    broker: Broker
    platform: _Platform
    directory: Path
    snapshot: Path
    data_key: Path
    readings: int
    options: dict[str, Any]
    payloads: list[bytes]
    phases: list[Phase] = field(default_factory=list)
    serial: int = 0

    def fresh_platform(self) -> None:
        """A fresh receiver with an empty store."""
        self.serial += 1
        self.platform.start(self.directory / f"platform-{self.serial}")

    def fresh_outbox(self) -> Path:
        """A copy of the filled outbox (the previous copy removed)."""
        self.serial += 1
        target = self.directory / f"hub-{self.serial}"
        for old in self.directory.glob("hub-*"):
            shutil.rmtree(old)
        shutil.copytree(self.snapshot, target)
        return target / "outbox.db"

    def hub(self, ack: AckMode, round_no: int) -> Phase:
        db = self.fresh_outbox()
        self.fresh_platform()
        broker_cpu = _process_cpu_s(self.broker.pid)
        self.platform.expect(self.readings)
        result = asyncio.run(
            _hub_drain(
                self.pki, self.broker.port, db, self.data_key, self.readings, ack, self.options
            )
        )
        at_platform = self.platform.reached()
        broker_cpu = _process_cpu_s(self.broker.pid) - broker_cpu
        figures = self.platform.finish()
        if ack is AckMode.RECEIPT:
            self.payloads = result.sent
        seconds = result.ended - result.started
        return Phase(
            name=f"hub_{ack.value}",
            round=round_no,
            readings=self.readings,
            seconds=seconds,
            puback_seconds=seconds,
            platform_seconds=at_platform - result.started,
            cpu_s=result.cpu_s,
            platform_cpu_s=figures["cpu_s"],
            broker_cpu_s=broker_cpu,
            envelopes=len(result.sent),
            wire_bytes=sum(map(len, result.sent)),
            # Envelopes handed to the uplink, tries counted (``envelopes`` once the publisher
            # batches: its ``published`` then counts readings).
            published=getattr(result.stats, "envelopes", result.stats.published),
            receipt_timeouts=result.stats.receipt_timeouts,
            platform=figures,
        )

    def raw(self, round_no: int) -> Phase:
        payloads = self.payloads
        self.fresh_platform()
        broker_cpu = _process_cpu_s(self.broker.pid)
        self.platform.expect(self.readings)
        result = _raw_paho(self.pki, self.broker.port, payloads)
        at_platform = self.platform.reached()
        broker_cpu = _process_cpu_s(self.broker.pid) - broker_cpu
        figures = self.platform.finish()
        ended = max(result.acked, at_platform)
        return Phase(
            name="raw_paho",
            round=round_no,
            readings=self.readings,
            seconds=ended - result.started,
            puback_seconds=result.acked - result.started,
            platform_seconds=at_platform - result.started,
            cpu_s=result.cpu_s,
            platform_cpu_s=figures["cpu_s"],
            broker_cpu_s=broker_cpu,
            envelopes=len(payloads),
            wire_bytes=sum(map(len, payloads)),
            published=len(payloads),
            receipt_timeouts=0,
            platform=figures,
        )


def measure_drain(
    pki: DevPki,
    broker: Broker,
    directory: Path,
    readings: int,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Part 1 (see the module doc); its figures."""
    snapshot = directory / "snapshot"
    keys = directory / "keys"
    snapshot.mkdir()
    keys.mkdir(mode=0o700)
    data_key = keys / "data.key"
    with _Platform(pki, broker.port) as platform:  # its interpreter starts during the fill
        started = time.perf_counter()
        stored = fill_outbox(snapshot / "outbox.db", data_key, pki.hub_key, 0, readings, HUB_ID)
        progress(
            f"  filled the outbox with {readings} readings in {time.perf_counter() - started:.1f} s"
        )
        options = _publisher_options(pki.hub_key, dictionaries.load()[DICTIONARY_ID])
        run = _Run(pki, broker, platform, directory, snapshot, data_key, readings, options, stored)
        _drain_rounds(run, rounds, progress)
    return _drain_figures(run, stored, options)


def _drain_rounds(run: _Run, rounds: int, progress: Callable[[str], None]) -> None:
    for round_no in range(rounds):
        order = PHASES if round_no % 2 == 0 else PHASES[::-1]
        for name in order:
            if name == "raw_paho":
                phase = run.raw(round_no)
            else:
                phase = run.hub(
                    AckMode.RECEIPT if name == "hub_receipt" else AckMode.PUBACK, round_no
                )
            run.phases.append(phase)
            pubacks = f"every PUBACK {phase.puback_rate:.1f}/s, " if name == "raw_paho" else ""
            progress(
                f"  round {round_no + 1}/{rounds} {phase.name:<12} {phase.rate:8.1f} readings/s"
                f"  ({pubacks}the platform had all after {phase.platform_seconds:.2f} s;"
                f" {phase.envelopes} envelopes, {phase.published} publishes)"
            )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _drain_figures(run: _Run, stored: list[bytes], options: dict[str, Any]) -> dict[str, Any]:
    by: dict[str, list[Phase]] = {
        name: [p for p in run.phases if p.name == name] for name in PHASES
    }
    receipt, raw, puback = by["hub_receipt"], by["raw_paho"], by["hub_puback"]
    n = run.readings

    def per_reading_us(phases: list[Phase], attr: str) -> float:
        return round(_median([getattr(p, attr) for p in phases]) / n * 1e6, 1)

    receipt_ratios = [h.rate / r.rate for h, r in zip(receipt, raw, strict=True)]
    receipt_vs_puback = [h.rate / r.puback_rate for h, r in zip(receipt, raw, strict=True)]
    puback_ratios = [h.rate / r.puback_rate for h, r in zip(puback, raw, strict=True)]
    last = receipt[-1]
    return {
        "readings": n,
        "rounds": len(receipt),
        "window": INFLIGHT_MAX,
        "publisher_options": sorted(options),
        "batching": "dictionary" in options,
        "stored_envelope_bytes": round(_median([len(b) for b in stored])),
        "hub_envelopes": last.envelopes,
        "wire_bytes_per_reading": round(last.wire_bytes / n, 1),
        "hub_receipt_per_s": round(_median([p.rate for p in receipt]), 1),
        "hub_puback_per_s": round(_median([p.rate for p in puback]), 1),
        "raw_paho_per_s": round(_median([p.rate for p in raw]), 1),
        "raw_paho_puback_per_s": round(_median([p.puback_rate for p in raw]), 1),
        "receipt_ratio": round(_median(receipt_ratios), 3),
        "receipt_ratio_vs_raw_puback": round(_median(receipt_vs_puback), 3),
        "puback_ratio": round(_median(puback_ratios), 3),
        "ratio_goal": RATIO_GOAL,
        "receipt_ratio_met": _median(receipt_ratios) >= RATIO_GOAL,
        "hub_receipt_platform_per_s": round(_median([n / p.platform_seconds for p in receipt]), 1),
        "cpu_us_per_reading": {
            "hub_receipt": per_reading_us(receipt, "cpu_s"),
            "hub_puback": per_reading_us(puback, "cpu_s"),
            "raw_paho": per_reading_us(raw, "cpu_s"),
        },
        "platform_cpu_us_per_reading": {
            "hub_receipt": per_reading_us(receipt, "platform_cpu_s"),
            "hub_puback": per_reading_us(puback, "platform_cpu_s"),
            "raw_paho": per_reading_us(raw, "platform_cpu_s"),
        },
        "broker_cpu_us_per_reading": {
            "hub_receipt": per_reading_us(receipt, "broker_cpu_s"),
            "hub_puback": per_reading_us(puback, "broker_cpu_s"),
            "raw_paho": per_reading_us(raw, "broker_cpu_s"),
        },
        "receipt_timeouts": sum(p.receipt_timeouts for p in receipt),
        "resent": sum(p.published - p.envelopes for p in receipt + puback),
        "platform_receipts_sent": last.platform["receipts_sent"],
        "platform_rejected": sum(p.platform["rejected"] for p in run.phases),
        "per_round": [
            {
                "hub_receipt_per_s": round(h.rate, 1),
                "raw_paho_per_s": round(r.rate, 1),
                "raw_paho_puback_per_s": round(r.puback_rate, 1),
                "hub_puback_per_s": round(p.rate, 1),
                "receipt_ratio": round(h.rate / r.rate, 3),
            }
            for h, r, p in zip(receipt, raw, puback, strict=True)
        ],
    }


# ---------------------------------------------------------------------------
# Part 2: envelope bytes
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindSizes:
    """Envelope bytes of one kind: singles (median, max) stored and compressed with the
    dictionary, in steady state (``single``: Devices by reference) and for a device's first
    reading (``first``: Devices in full), and with the baseline dictionary; per reading in a
    batch of each size (steady state), plain and with the dictionary."""

    kind: str
    stored_median: int
    stored_max: int
    single_median: int
    single_max: int
    batch_plain: dict[str, int]
    batch: dict[str, int]
    first_median: int
    first_max: int
    baseline_median: int
    baseline_max: int


def _seq(reading: SyntheticReading) -> int:
    seq = cbor2.loads(reading.payload)["seq"]
    assert isinstance(seq, int)
    return seq


def _payloads(readings: Sequence[SyntheticReading]) -> list[ReadingPayload]:
    return [ReadingPayload.from_stored(_seq(r), r.envelope) for r in readings]


def _kind_readings(kind: str, count: int, seed: int) -> list[SyntheticReading]:
    if kind == "glucose_with_context":
        drawn = synthetic_readings("glucose", 3 * count, seed)
        held = [r for r in drawn if r.with_context][:count]
    else:
        held = synthetic_readings(kind, count, seed)
    if len(held) < count:
        raise RuntimeError(f"only {len(held)} readings of {kind}")
    return held


def _hub_batch_readings(kind: str, count: int, seed: int) -> list[SyntheticReading]:
    """``count`` readings of one hub of ``kind`` (one device, consecutive arrivals)."""
    if kind == "glucose_with_context":
        drawn = hub_backlog(4 * count, seed, ("glucose",))
        held = [r for r in drawn if r.with_context][:count]
    else:
        held = hub_backlog(count, seed, (kind,))
    if len(held) < count:
        raise RuntimeError(f"only {len(held)} readings of {kind} in a hub's backlog")
    return held


def _device_sets(payloads: Sequence[ReadingPayload]) -> frozenset[bytes]:
    """The device sets of ``payloads``: what a platform that received them holds."""
    return frozenset(
        found[0]
        for p in payloads
        if (found := device_refs.device_set(cbor2.loads(p.payload))) is not None
    )


def _single_sizes(
    payloads: Sequence[ReadingPayload],
    signer: Signer,
    dictionary: Dictionary,
    known: frozenset[bytes],
) -> list[int]:
    """Each reading's single envelope bytes, ascending (Devices by reference when ``known``)."""
    return sorted(
        len(build_single(p, signer, dictionary, known_device_sets=known).data) for p in payloads
    )


def measure_sizes(count: int, batches: int, seed: int = SIZE_SEED) -> list[KindSizes]:
    """Part 2 (see the module doc)."""
    loaded = dictionaries.load()
    dictionary, baseline = loaded[DICTIONARY_ID], loaded[BASELINE_DICTIONARY_ID]
    signer = synthetic_signer(seed)
    rows = []
    for kind in SIZE_KINDS:
        held = _kind_readings(kind, count, seed)
        stored = sorted(len(r.envelope) for r in held)
        singles = _payloads(held)
        known = _device_sets(singles)
        single = _single_sizes(singles, signer, dictionary, known)
        first = _single_sizes(singles, signer, dictionary, frozenset())
        before = _single_sizes(singles, signer, baseline, frozenset())
        plain: dict[str, int] = {}
        compressed: dict[str, int] = {}
        for n in BATCH_SIZES:
            per_plain, per_dict = [], []
            for b in range(batches):
                payloads = _payloads(_hub_batch_readings(kind, n, seed + 1000 * n + b))
                envelope = build_batch(
                    payloads, signer, dictionary, 1 << 20, known_device_sets=_device_sets(payloads)
                )
                bare = build_batch(payloads, signer, None, 1 << 20, compress=False)
                if len(envelope.seqs) != n or len(bare.seqs) != n:
                    raise RuntimeError(f"a batch of {n} {kind} readings was cut")
                per_dict.append(len(envelope.data) / n)
                per_plain.append(len(bare.data) / n)
            plain[str(n)] = round(_median(per_plain))
            compressed[str(n)] = round(_median(per_dict))
        rows.append(
            KindSizes(
                kind=kind,
                stored_median=stored[len(stored) // 2],
                stored_max=stored[-1],
                single_median=single[len(single) // 2],
                single_max=single[-1],
                batch_plain=plain,
                batch=compressed,
                first_median=first[len(first) // 2],
                first_max=first[-1],
                baseline_median=before[len(before) // 2],
                baseline_max=before[-1],
            )
        )
    return rows


def _size_figures(rows: list[KindSizes], count: int, batches: int) -> dict[str, Any]:
    goals: dict[str, dict[str, Any]] = {}
    for row in rows:
        goal = SINGLE_GOALS.get(row.kind)
        if goal is not None:
            goals[f"single_{row.kind}"] = {
                "goal_bytes": goal,
                "median": row.single_median,
                "max": row.single_max,
                "met": row.single_median <= goal,
                "met_by_max": row.single_max <= goal,
                "first_median": row.first_median,
                "met_by_first": row.first_median <= goal,
            }
        for n, per in row.batch.items():
            goals[f"batch{n}_{row.kind}"] = {
                "goal_bytes": BATCH_GOAL,
                "median": per,
                "met": per <= BATCH_GOAL,
            }
    return {
        "seed": SIZE_SEED,
        "singles_per_kind": count,
        "batches_per_size": batches,
        "dictionary_id": DICTIONARY_ID,
        "baseline_dictionary_id": BASELINE_DICTIONARY_ID,
        "kinds": {row.kind: asdict(row) for row in rows},
        "goals": goals,
        "all_goals_met": all(g["met"] for g in goals.values()),
    }


# ---------------------------------------------------------------------------
# Part 3: idle link
# ---------------------------------------------------------------------------


def _idle_figures(pki: DevPki, port: int, keepalive_s: int, pings: int) -> dict[str, Any]:
    measured = measure_idle(
        pki, port, list(PROFILES.values()), keepalive_s=keepalive_s, pings=pings
    )
    return {
        "bench_keepalive_s": keepalive_s,
        "round_trips": pings,
        "baseline_keepalive_s": BASELINE_KEEPALIVE_S,
        "goal_bytes_per_day": IDLE_BYTES_PER_DAY_GOAL,
        "profiles": {
            m.profile: {
                "keepalive_s": m.keepalive_s,
                "ip_bytes_per_round_trip": round(m.ip_bytes_per_round_trip, 1),
                "ip_bytes_per_day": round(m.ip_bytes_per_day),
                "baseline_ip_bytes_per_day": round(m.baseline_ip_bytes_per_day),
                "baseline_over_profile": round(m.baseline_over_profile, 2),
                "met": m.within_goal,
            }
            for m in measured
        },
        "all_met": all(m.within_goal for m in measured),
    }


# ---------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------


def measure(
    directory: Path,
    *,
    readings: int,
    rounds: int,
    size_count: int,
    size_batches: int,
    idle: tuple[int, int] | None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every figure, measured in ``directory``; ``idle``: (keepalive s, round trips) or None."""
    pki = make_dev_pki(directory / "pki", HUB_ID)
    figures: dict[str, Any] = {"bench": "uplink"}
    with Broker(pki, directory / "broker") as broker:
        progress(f"drain: {readings} readings, {rounds} round(s) of {', '.join(PHASES)}")
        figures["drain"] = measure_drain(pki, broker, directory, readings, rounds, progress)
        progress("envelope sizes ...")
        figures["sizes"] = _size_figures(
            measure_sizes(size_count, size_batches), size_count, size_batches
        )
        if idle is not None:
            progress(f"idle link: {idle[1]} round trips at a {idle[0]} s keepalive ...")
            figures["idle"] = _idle_figures(pki, broker.port, *idle)
        else:
            figures["idle"] = None
    return figures


def _met(flag: bool) -> str:
    return "met" if flag else "UNMET"


def report(f: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """Each figure beside its baseline, for a person."""
    d = f["drain"]
    out(
        f"uplink benchmark: {d['readings']} readings, {d['rounds']} round(s), window"
        f" {d['window']}, publisher options {d['publisher_options'] or 'none'}"
        f" ({'batching' if d['batching'] else 'no batching'}): stored envelope"
        f" {d['stored_envelope_bytes']} B, {d['wire_bytes_per_reading']} B per reading on the"
        f" wire in {d['hub_envelopes']} envelopes"
    )
    out(
        f"  hub, ack=receipt: {d['hub_receipt_per_s']}/s  | raw paho QoS 1 to the platform:"
        f" {d['raw_paho_per_s']}/s  | ratio {d['receipt_ratio']} (goal >= {RATIO_GOAL}:"
        f" {_met(d['receipt_ratio_met'])})"
    )
    out(
        f"  hub, ack=puback:  {d['hub_puback_per_s']}/s  | raw paho, every PUBACK:"
        f" {d['raw_paho_puback_per_s']}/s  | ratio {d['puback_ratio']}"
        f"  (receipt path vs raw PUBACKs: {d['receipt_ratio_vs_raw_puback']})"
    )
    cpu, plat, brk = (
        d["cpu_us_per_reading"],
        d["platform_cpu_us_per_reading"],
        d["broker_cpu_us_per_reading"],
    )
    for name in ("hub_receipt", "hub_puback", "raw_paho"):
        out(
            f"  CPU per reading, {name:<11}: sender {cpu[name]:7.1f} µs, platform"
            f" {plat[name]:7.1f} µs, mosquitto {brk[name]:6.1f} µs"
        )
    out(
        f"  receipts: {d['platform_receipts_sent']} sent by the platform (last round),"
        f" {d['receipt_timeouts']} receipt timeouts, {d['resent']} envelopes sent again,"
        f" {d['platform_rejected']} rejected by the platform"
    )
    s = f["sizes"]
    out(
        f"envelope bytes per reading (seed {s['seed']}; singles: median/max of"
        f" {s['singles_per_kind']}; batches: median of {s['batches_per_size']}),"
        f" dictionary {s['dictionary_id']} (first: a device's first reading, Devices in full;"
        f" steady: Devices by reference; batches steady) beside dictionary"
        f" {s['baseline_dictionary_id']}:"
    )
    header = "".join(
        f"{'b' + str(n) + ' plain':>10}{'b' + str(n) + ' dict':>9}" for n in BATCH_SIZES
    )
    out(
        f"  {'kind':<22}{'stored':>13}{'first':>13}{'steady':>13}"
        f"{'dict ' + str(s['baseline_dictionary_id']):>13}{header}"
    )
    for kind, row in s["kinds"].items():
        batches = "".join(
            f"{row['batch_plain'][str(n)]:>10}{row['batch'][str(n)]:>9}" for n in BATCH_SIZES
        )
        out(
            f"  {kind:<22}{row['stored_median']:>6}/{row['stored_max']:<6}"
            f"{row['first_median']:>6}/{row['first_max']:<6}"
            f"{row['single_median']:>6}/{row['single_max']:<6}"
            f"{row['baseline_median']:>6}/{row['baseline_max']:<6}{batches}"
        )
    for name, g in s["goals"].items():
        extra = f" (max {g['max']})" if "max" in g else ""
        first = ""
        if "first_median" in g:
            over = "" if g["met_by_first"] else ", over the goal"
            first = (
                f"; a device's first reading (once per device set: its Devices in full)"
                f" {g['first_median']} B{over}"
            )
        out(
            f"  goal {name}: {g['median']} B{extra} <= {g['goal_bytes']} B: {_met(g['met'])}"
            + first
        )
    idle = f["idle"]
    if idle is None:
        out("idle link: not measured (--no-idle)")
        return
    out(
        f"IP bytes per idle day ({idle['round_trips']} round trips at {idle['bench_keepalive_s']}"
        f" s, extrapolated), beside a {idle['baseline_keepalive_s']} s keepalive:"
    )
    for name, p in idle["profiles"].items():
        out(
            f"  {name:<14} keepalive {p['keepalive_s']:>4} s: {p['ip_bytes_per_day']:>8,} B"
            f"  | 60 s: {p['baseline_ip_bytes_per_day']:>8,} B  | {p['baseline_over_profile']}x"
            f" less  (goal <= {idle['goal_bytes_per_day']:,} B: {_met(p['met'])})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print each figure beside its baseline, then one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m hil.bench.uplink", description=__doc__)
    parser.add_argument("--readings", type=int, default=None, help=f"backlog ({READINGS:,})")
    parser.add_argument("--rounds", type=int, default=None, help=f"alternating rounds ({ROUNDS})")
    parser.add_argument("--quick", action="store_true", help="smoke test: small and fast")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-link measurement")
    parser.add_argument("--idle-keepalive", type=int, default=None, help="seconds (short)")
    parser.add_argument("--idle-pings", type=int, default=None, help="round trips counted")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args(argv)
    quick = args.quick
    readings = args.readings or (QUICK_READINGS if quick else READINGS)
    rounds = args.rounds or (1 if quick else ROUNDS)
    keepalive = args.idle_keepalive or (1 if quick else IDLE_KEEPALIVE_S)
    pings = args.idle_pings or (2 if quick else IDLE_PINGS)
    if readings < 1 or rounds < 1 or keepalive < 1 or pings < 1:
        parser.error("--readings, --rounds, --idle-keepalive and --idle-pings must be >= 1")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="homehub-uplink-", dir=args.dir) as tmp:
        figures = measure(
            Path(tmp),
            readings=readings,
            rounds=rounds,
            size_count=10 if quick else SIZE_COUNT,
            size_batches=1 if quick else SIZE_BATCHES,
            idle=None if args.no_idle else (keepalive, pings),
        )
    figures["quick"] = quick
    report(figures)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
