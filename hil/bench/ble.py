"""BLE benchmark: a glucose download through our session beside a bare client, and a
record's arrival → commit time through the daemon.

    python -m hil.bench.ble [--dir DIR] [--records N] [--rounds N] [--paced N] [--paced-rounds N]

Everything runs on the virtual radio (Bumble controllers linked in software, the emulated
glucometer of :mod:`hil.emulators.glucometer`); each figure beside a baseline measured in
the same run, on the same machine:

- **download, our overhead**: ``--records`` (1,000) records pulled by
  :func:`agent.ble.gls_session.collect_glucose` (decoding the headers, joining, the bounds,
  the marks, handing each on) into a sink that keeps them, beside a bare bleak client on
  the same stack that only subscribes, writes the RACP request ``01 01`` and keeps each
  notification (no decoding, no storing): the emulator's *link time*. Both are timed from
  the meter receiving the request to the last record reaching the consumer (our sink / the
  bare client's callback), ``--rounds`` times alternately; medians of wall and process CPU
  time. Both sides run in this process with the emulator, so a noisy neighbour moves both
  by tens of percent; the time spent in our session's own code per record is therefore
  also taken directly (:class:`_InOurCode`). Goal: overhead ≤ 5 % of link time.
  Unpaced, the virtual link delivers ~9,000 records/s, some 70 times what a BLE link can
  (one record per connection event: 133/s at the shortest interval, 20-33/s at a typical
  30-50 ms; performance anchors, "RACP download rate"): there our overhead is our CPU per
  record against a link that costs nothing, a stress figure. **The goal is judged at a real
  link's pace**: the same download each way with the meter sending one record per 7.5 ms
  event (``--paced-rounds``, 7.5 s each), where the overhead is the wall time our session
  adds to the link's, and beside it the process CPU it adds, as a share of the link time.
- **arrival → commit p50/p99**: a ``--paced``-record (500) download at one record per
  7.5 ms connection event (the fastest legal pace of a meter sending one record per event)
  into the running daemon (:class:`agent.daemon.Hub`, its real collector, ingest, storage
  thread and encrypted outbox, a real TLS mosquitto as its broker): from the bleak callback
  (``RawMeasurement.received_monotonic``) to the hub's observer hearing the record
  committed; beside a bare ``write`` + ``fsync`` of one 4 KiB page (what a WAL commit
  appends at least) in the same directory, and beside the lateness of a separate process's
  timer waking at the same pace meanwhile (the machine's own scheduling noise: what other
  processes on this VM's two cores add to any wake-up). Goal: p99 ≤ 10 ms here. The sizes
  of the publisher's deletes meanwhile are reported. The same again at a typical meter's
  pace (one record per 30 ms event), for comparison.
- **rates for the bounds** (``drivers.gls_sync.MAX_READY_RECORDS``): the virtual radio's
  link rate (the bare client's records/s) and the daemon's ingest rate storing an unpaced
  ``--records`` download (records/s from the first arrival to the last commit), with the
  session's peak buffer.

The last line is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic

from agent import config
from agent.ble import gls_session
from agent.ble.gls_session import collect_glucose
from agent.ble.stack import BleStack
from agent.ble.uuids import (
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    RECORD_ACCESS_CONTROL_POINT,
)
from agent.daemon import Arrival, Fate, Hub
from agent.ingest_batcher import Outcome, Status
from agent.logs import configure as configure_logs
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from drivers.gls_sync import GlsSync
from hil.broker import Broker
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, GlucoseContext, GlucoseRecord, mg_per_dl
from hil.pki import DevPki, make_dev_pki
from hil.virtual_radio import VirtualRadio

HUB_ID: Final = "hub-bench-ble"
PATIENT: Final = "bench-patient"
ADDRESS: Final = "F0:00:00:00:B1:E0"
RECORDS: Final = 1000
ROUNDS: Final = 5
PACED: Final = 500
EVENT_S: Final = 0.0075
"""The shortest LE connection interval (Core Vol 6 Part B §4.5.1): one record per event."""
TYPICAL_S: Final = 0.030
"""A typical meter's pace: one record per 30 ms connection event (performance anchors)."""
TIMEOUT_S: Final = 120.0
FSYNC_BYTES: Final = 4096
"""The bare fsync's write: one SQLite page, the least a WAL commit appends."""
REPORT_ALL: Final = bytes.fromhex("0101")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def meter_records(count: int) -> list[GlucoseRecord]:
    """``count`` records numbered from 1, every seventh with a context (two notifications)."""
    day = DateTime(2025, 3, 14, 7, 0, 0)
    return [
        GlucoseRecord(
            n,
            day,
            mg_per_dl(str(70 + n % 150)),
            time_offset_min=n % 600,
            context=GlucoseContext(meal=1 + n % 3) if n % 7 == 0 else None,
        )
        for n in range(1, count + 1)
    ]


class _Clock:
    """Wall and process-CPU time from the meter receiving its first report request (its
    RACP server wrapped) to the last record reaching the consumer (:meth:`record`)."""

    def __init__(self, meter: Glucometer) -> None:
        self.at = (0.0, 0.0)
        self.last = (0.0, 0.0)
        handle = meter.racp.handle

        def timed(data: bytes, **kwargs: bool) -> Any:
            if data == REPORT_ALL and not self.at[0]:
                self.at = (time.perf_counter(), time.process_time())
            return handle(data, **kwargs)

        meter.racp.handle = timed  # type: ignore[method-assign]

    def record(self, last: bool) -> None:
        """A record reached the consumer; ``last``: the last one. Process CPU time is read
        for the last only: reading it costs ≈ 1 µs (a system call), which was counted as
        our session's own time for every record (the sink runs inside the hand-on)."""
        self.last = (time.perf_counter(), time.process_time() if last else 0.0)

    def span(self) -> tuple[float, float]:
        """(wall s, CPU s) from the request to the last record."""
        return self.last[0] - self.at[0], self.last[1] - self.at[1]


async def _ours(ble: BleStack, meter: Glucometer, count: int) -> tuple[float, float]:
    """Request → last record handed on, through our session: (wall s, CPU s)."""
    clock = _Clock(meter)
    kept: list[RawMeasurement] = []

    async def sink(raw: RawMeasurement, _facts: DeviceFacts) -> None:
        kept.append(raw)
        clock.record(len(kept) == count)

    result = await collect_glucose(ble, ADDRESS, sink, None, scan_timeout_s=10.0)
    if result.measurements != count or len(kept) != count:
        raise RuntimeError(f"our session got {result.measurements} of {count} records")
    return clock.span()


async def _bare(ble: BleStack, meter: Glucometer, count: int) -> tuple[float, float]:
    """Request → last record received by a bare bleak client on the same stack (wall s,
    CPU s): subscribe, write ``01 01``, keep each notification until the final RACP
    indication."""
    clock = _Clock(meter)
    assert ble.scanner_backend is not None  # the virtual radio: our Bumble backend
    device = await BleakScanner.find_device_by_address(
        ADDRESS, timeout=10.0, backend=ble.scanner_backend
    )
    if device is None:
        raise RuntimeError("bare client: meter not found")
    values: list[bytes] = []
    done = asyncio.Event()
    received = [0]

    def on_record(_sender: BleakGATTCharacteristic, data: bytearray) -> None:
        values.append(bytes(data))
        received[0] += 1
        clock.record(received[0] == count)

    def on_context(_sender: BleakGATTCharacteristic, data: bytearray) -> None:
        values.append(bytes(data))

    def on_racp(_sender: BleakGATTCharacteristic, _data: bytearray) -> None:
        done.set()

    async with BleakClient(device, backend=ble.client_backend) as client:
        await client.start_notify(GLUCOSE_MEASUREMENT, on_record)
        await client.start_notify(GLUCOSE_MEASUREMENT_CONTEXT, on_context)
        await client.start_notify(RECORD_ACCESS_CONTROL_POINT, on_racp)
        await client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, REPORT_ALL, response=True)
        await done.wait()
    records = sum(1 for v in values if len(v) >= 10)  # measurements; contexts are shorter
    if records != count:
        raise RuntimeError(f"bare client got {records} of {count} records")
    return clock.span()


Span = tuple[float, float]


class _InOurCode:
    """Accumulates the time spent in our session's own per-value work while installed: the
    bleak callbacks feeding the sans-I/O core, :meth:`GlsSync.next_event` and the hand-on
    (its sink included: a list append). Asyncio's own cost of waking the session is not in
    it (it is in the wall figures)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.async_calls = 0
        self._saved: list[tuple[type, str, Any]] = []

    def own_time(self, rounds: int = 20_000) -> float:
        """What the timing itself added to :attr:`seconds` (s): the wrappers' cost, measured
        here on empty functions (median of three), times the calls they timed."""

        def empty() -> None:
            return None

        async def empty_async() -> None:
            return None

        def per_call(fn: Callable[[_InOurCode], Callable[[], Any]]) -> float:
            runs = []
            for _ in range(3):
                probe = _InOurCode()
                timed = fn(probe)
                for _ in range(rounds):
                    timed()
                runs.append(probe.seconds / rounds)
            return statistics.median(runs)

        def sync_probe(probe: _InOurCode) -> Callable[[], Any]:
            return probe._timed(empty)

        def async_probe(probe: _InOurCode) -> Callable[[], Any]:
            timed = probe._timed_async(empty_async)

            def drive() -> None:
                coroutine = timed()
                with contextlib.suppress(StopIteration):
                    coroutine.send(None)

            return drive

        return self.calls * per_call(sync_probe) + self.async_calls * per_call(async_probe)

    def __enter__(self) -> _InOurCode:
        for owner, name in (
            (gls_session._GlsSession, "on_measurement_value"),
            (gls_session._GlsSession, "on_context_value"),
            (gls_session._GlsSession, "on_racp_value"),
            (GlsSync, "next_event"),
        ):
            self._wrap(owner, name, self._timed(getattr(owner, name)))
        self._wrap(
            gls_session._GlsSession, "hand_on", self._timed_async(gls_session._GlsSession.hand_on)
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)

    def _wrap(self, owner: type, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed

    def _timed_async(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args)
            finally:
                self.seconds += time.perf_counter() - started
                self.async_calls += 1

        return timed


class _Downloads:
    """The download rounds' spans: unpaced each way, our own code's time, and paced each way."""

    def __init__(self) -> None:
        self.ours: list[Span] = []
        self.bare: list[Span] = []
        self.in_code: list[float] = []
        self.paced_ours: list[Span] = []
        self.paced_bare: list[Span] = []


async def _download_rounds(count: int, rounds: int, paced_rounds: int) -> _Downloads:
    """``rounds`` downloads each way, alternately, on one radio and one meter; then as many
    of ours with our own code's time taken (:class:`_InOurCode`); then ``paced_rounds`` each
    way with the meter at one record per :data:`EVENT_S` connection event."""
    runs = _Downloads()
    ours, bare, in_code = runs.ours, runs.bare, runs.in_code
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(ADDRESS, "glucometer")
        meter = Glucometer(device, meter_records(count))
        await meter.start()
        try:
            async with BleStack.open(radio.stack) as ble:
                for _ in range(rounds):
                    async with asyncio.timeout(TIMEOUT_S):
                        meter.sent.clear()  # the emulator's log of values: not to grow
                        gc.collect()  # each side starts with the same heap
                        ours.append(await _ours(ble, meter, count))
                        meter.sent.clear()
                        gc.collect()
                        bare.append(await _bare(ble, meter, count))
                for _ in range(rounds):
                    async with asyncio.timeout(TIMEOUT_S):
                        meter.sent.clear()
                        gc.collect()
                        with _InOurCode() as timer:
                            await _ours(ble, meter, count)
                        in_code.append(timer.seconds - timer.own_time())
                meter.record_interval_s = EVENT_S
                for _ in range(paced_rounds):
                    async with asyncio.timeout(TIMEOUT_S):
                        meter.sent.clear()
                        gc.collect()
                        runs.paced_ours.append(await _ours(ble, meter, count))
                        meter.sent.clear()
                        gc.collect()
                        runs.paced_bare.append(await _bare(ble, meter, count))
        finally:
            await meter.stop()
    return runs


class _Committed:
    """The hub's observer: when each arrival was committed (monotonic), and when all were."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.latencies: list[float] = []
        self.first_arrival = 0.0
        self.last_commit = 0.0
        self.all_stored = asyncio.Event()

    def stored(self, arrival: Arrival, fate: Fate) -> None:
        now = time.monotonic()
        if not (isinstance(fate, Outcome) and fate.status is Status.STORED):
            return
        if not self.latencies:
            self.first_arrival = arrival.raw.received_monotonic
        self.latencies.append(now - arrival.raw.received_monotonic)
        self.last_commit = now
        if len(self.latencies) >= self.expect:
            self.all_stored.set()

    def delivered(self, seqs: Sequence[int]) -> None:
        pass


def _hub_config(directory: Path, stack: str, pki: DevPki, port: int) -> config.Config:
    state = directory / "state"
    (directory / "keys").mkdir(mode=0o700, exist_ok=True)
    return config.from_mapping(
        {
            "hub": {"id": pki.hub_id, "timezone": "UTC", "state_dir": str(state)},
            "patient": {"id": PATIENT},
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(directory / "keys/k")},
            "signing": {"key_file": str(pki.hub_key)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.hub_cert),
                "key_file": str(pki.hub_key),
                "first_connect_jitter_s": 0.0,
            },
            "ble": {
                "stack": stack,
                "scan_timeout_s": 10.0,
                "connect_timeout_s": 10.0,
                "session_timeout_s": 100.0,
                "cycle_interval_s": 60.0,
            },
            "devices": [{"kind": "glucose", "address": ADDRESS, "label": "meter"}],
        },
        directory / "homehub.toml",
    )


ROOT: Final = Path(__file__).resolve().parents[2]
"""The checkout: the radio child imports ``hil`` from it."""

_RADIO_CHILD: Final = """
import asyncio, sys
from hil.bench.ble import ADDRESS, meter_records
from hil.emulators.glucometer import Glucometer
from hil.virtual_radio import VirtualRadio

async def main(count: int, interval_s: float) -> None:
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(ADDRESS, "glucometer")
        meter = Glucometer(device, meter_records(count), record_interval_s=interval_s)
        await meter.start()
        print(radio.stack, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await meter.stop()

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""
"""The virtual radio and the emulated meter in a process of their own: a real meter's work
is not on the hub's CPU (or its GIL), so it must not be in the hub's figures either."""


async def _through_daemon(
    directory: Path, pki: DevPki, port: int, count: int, interval_s: float
) -> _Committed:
    """One download of ``count`` records (paced at ``interval_s``) into the running daemon,
    the meter and the radio in another process (:data:`_RADIO_CHILD`); its commits."""
    observer = _Committed(count)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RADIO_CHILD,
        str(count),
        str(interval_s),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            stack = (await child.stdout.readline()).decode().strip()
        stop = asyncio.Event()
        hub = Hub(_hub_config(directory, stack, pki, port), observer=observer)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run(stop), name="bench.hub")
            async with asyncio.timeout(TIMEOUT_S):
                await observer.all_stored.wait()
            stop.set()
    finally:
        child.stdin.close()
        try:
            async with asyncio.timeout(10):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()
    return observer


_NOISE_PROBE: Final = """
import json, select, sys, time
interval = float(sys.argv[1])
late = []
due = time.monotonic() + interval
while not select.select([sys.stdin], [], [], max(0.0, due - time.monotonic()))[0]:
    late.append(time.monotonic() - due)
    due += interval
print(json.dumps(late))
"""


class _SchedulingNoise:
    """A separate process (no GIL shared with ours) that wakes every ``interval_s`` and notes
    how late each wake-up was, while the daemon runs beside it: the lateness the machine
    itself adds (other processes on its two cores, the hypervisor), a same-run floor under
    the arrival -> commit tail that no code of ours can go below."""

    def __init__(self, interval_s: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _NOISE_PROBE, str(interval_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> list[float]:
        """End the probe; the lateness of each wake-up (s)."""
        out, _ = self._process.communicate(b"", timeout=10)
        late: list[float] = json.loads(out)
        return late


def _peak_ready(log: Path, offset: int) -> int:
    """The largest session buffer (``peak_gls_ready``) logged past ``offset`` of ``log``."""
    peaks = [0]
    with log.open() as lines:
        lines.seek(offset)
        for line in lines:
            event = json.loads(line)
            if event.get("event") == "ble_session_ended":
                peaks.append(int(event.get("peak_gls_ready", 0)))
    return max(peaks)


def _delete_batches(log: Path, start: int, end: int) -> list[int]:
    """The sizes of the publisher's deletes (``measurements_delivered``) logged in ``log``
    between the offsets ``start`` and ``end``."""
    with log.open("rb") as stream:
        stream.seek(start)
        lines = stream.read(end - start).decode().splitlines()
    events = (json.loads(line) for line in lines if line.strip())
    return [int(e["count"]) for e in events if e.get("event") == "measurements_delivered"]


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


def measure(
    directory: Path, records: int, rounds: int, paced: int, log: Path, paced_rounds: int = 2
) -> dict[str, Any]:
    """Every figure, measured in ``directory``; the hub's log goes to ``log`` (info level,
    as ``homehub run`` logs)."""
    runs = asyncio.run(_download_rounds(records, rounds, paced_rounds))
    ours, bare, in_code = runs.ours, runs.bare, runs.in_code
    pki = make_dev_pki(directory / "pki", HUB_ID)
    broker = Broker(pki, directory / "broker")
    broker.start()
    try:
        paced_dir = directory / "paced"
        paced_dir.mkdir()
        paced_at = log.stat().st_size
        noise_probe = _SchedulingNoise(EVENT_S)
        try:
            committed = asyncio.run(_through_daemon(paced_dir, pki, broker.port, paced, EVENT_S))
        finally:
            noise = noise_probe.stop()
        deletes = _delete_batches(log, paced_at, log.stat().st_size)
        typical_dir = directory / "typical"
        typical_dir.mkdir()
        typical = asyncio.run(_through_daemon(typical_dir, pki, broker.port, paced, TYPICAL_S))
        burst_dir = directory / "burst"
        burst_dir.mkdir()
        offset = log.stat().st_size
        burst = asyncio.run(_through_daemon(burst_dir, pki, broker.port, records, 0.0))
        peak = _peak_ready(log, offset)
    finally:
        broker.close()
    fsyncs = _bare_fsyncs(directory, FSYNC_BYTES, len(committed.latencies))
    ours_s = statistics.median(wall for wall, _ in ours)
    bare_s = statistics.median(wall for wall, _ in bare)
    code_s = statistics.median(in_code)
    lat = committed.latencies
    ingest_s = burst.last_commit - burst.first_arrival
    paced_ours_s = statistics.median(wall for wall, _ in runs.paced_ours)
    paced_bare_s = statistics.median(wall for wall, _ in runs.paced_bare)
    paced_cpu_ours_s = statistics.median(cpu for _, cpu in runs.paced_ours)
    paced_cpu_bare_s = statistics.median(cpu for _, cpu in runs.paced_bare)
    return {
        "records": records,
        "rounds": rounds,
        "download_ours_ms": round(ours_s * 1000, 1),
        "download_link_ms": round(bare_s * 1000, 1),
        "download_overhead_ms": round((ours_s - bare_s) * 1000, 1),
        "download_overhead_pct": round((ours_s - bare_s) / bare_s * 100, 1),
        "download_ratio": round(ours_s / bare_s, 3),
        "download_cpu_ours_ms": round(statistics.median(cpu for _, cpu in ours) * 1000, 1),
        "download_cpu_link_ms": round(statistics.median(cpu for _, cpu in bare) * 1000, 1),
        "session_code_ms": round(code_s * 1000, 1),
        "session_code_pct_of_link": round(code_s / bare_s * 100, 1),
        "session_code_us_per_record": round(code_s / records * 1e6, 1),
        "link_records_per_s": round(records / bare_s, 1),
        "paced_download_rounds": paced_rounds,
        "paced_download_ours_ms": round(paced_ours_s * 1000, 1),
        "paced_download_link_ms": round(paced_bare_s * 1000, 1),
        "paced_download_overhead_pct": round(
            (paced_ours_s - paced_bare_s) / paced_bare_s * 100 + 0.0, 2
        ),
        "paced_download_cpu_ours_ms": round(paced_cpu_ours_s * 1000, 1),
        "paced_download_cpu_link_ms": round(paced_cpu_bare_s * 1000, 1),
        "paced_download_extra_cpu_pct_of_link": round(
            (paced_cpu_ours_s - paced_cpu_bare_s) / paced_bare_s * 100, 2
        ),
        "session_code_pct_of_paced_link": round(code_s / paced_bare_s * 100, 2),
        "paced_records": paced,
        "paced_interval_ms": EVENT_S * 1000,
        "arrival_commit_p50_ms": round(statistics.median(lat) * 1000, 3),
        "arrival_commit_p99_ms": round(_percentile(lat, 0.99) * 1000, 3),
        "arrival_commit_max_ms": round(max(lat) * 1000, 3),
        "paced_deletes": len(deletes),
        "paced_delete_mean_records": round(statistics.mean(deletes), 1) if deletes else 0.0,
        "typical_interval_ms": TYPICAL_S * 1000,
        "typical_arrival_commit_p50_ms": round(statistics.median(typical.latencies) * 1000, 3),
        "typical_arrival_commit_p99_ms": round(_percentile(typical.latencies, 0.99) * 1000, 3),
        "bare_fsync_p50_ms": round(statistics.median(fsyncs) * 1000, 3),
        "bare_fsync_p99_ms": round(_percentile(fsyncs, 0.99) * 1000, 3),
        "fsync_bytes": FSYNC_BYTES,
        "commit_ratio_p99": round(_percentile(lat, 0.99) / _percentile(fsyncs, 0.99), 1),
        "noise_late_p50_ms": round(statistics.median(noise) * 1000, 3),
        "noise_late_p99_ms": round(_percentile(noise, 0.99) * 1000, 3),
        "burst_ingest_records_per_s": round(records / ingest_s, 1),
        "burst_arrival_commit_p99_ms": round(_percentile(burst.latencies, 0.99) * 1000, 1),
        "burst_peak_ready": peak,
    }


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Run the benchmark and print each figure beside its baseline, then one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m hil.bench.ble", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--records", type=int, default=RECORDS, help="records downloaded")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds")
    parser.add_argument("--paced", type=int, default=PACED, help="paced records to time")
    parser.add_argument(
        "--paced-rounds", type=int, default=2, help="paced downloads each way (7.5 s each)"
    )
    args = parser.parse_args(argv)
    if args.records < 1 or args.rounds < 1 or args.paced < 1 or args.paced_rounds < 1:
        parser.error("--records, --rounds, --paced and --paced-rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="homehub-ble-", dir=args.dir) as tmp:
        log = Path(tmp) / "hub.log"
        with log.open("w") as stream:
            configure_logs("info", stream)
            f = measure(Path(tmp), args.records, args.rounds, args.paced, log, args.paced_rounds)
    out(f"BLE benchmark ({f['records']} glucose records, {f['rounds']} rounds each way)")
    out(
        f"  download, request -> last record (median): our session {f['download_ours_ms']} ms"
        f"  | bare bleak client (link time) {f['download_link_ms']} ms"
        f"  | overhead {f['download_overhead_ms']} ms = {f['download_overhead_pct']} %"
        f" (ratio {f['download_ratio']}; unpaced: a stress figure, the goal is judged paced)"
    )
    out(
        f"    process CPU (median): ours {f['download_cpu_ours_ms']} ms"
        f"  | link {f['download_cpu_link_ms']} ms"
    )
    out(
        f"    time in our session's own code: {f['session_code_ms']} ms"
        f" ({f['session_code_us_per_record']} µs a record)  | link time"
        f" {f['download_link_ms']} ms  | {f['session_code_pct_of_link']} % of it"
    )
    out(
        f"  the same download at a real link's pace, one record per {f['paced_interval_ms']} ms"
        f" event (the fastest at one a connection event; {f['paced_download_rounds']} rounds):"
        f" ours {f['paced_download_ours_ms']} ms  | link {f['paced_download_link_ms']} ms"
        f"  | overhead {f['paced_download_overhead_pct']} % (goal <= 5 %)"
    )
    out(
        f"    process CPU (median): ours {f['paced_download_cpu_ours_ms']} ms"
        f"  | link {f['paced_download_cpu_link_ms']} ms  | the difference is"
        f" {f['paced_download_extra_cpu_pct_of_link']} % of link time; our session's own code"
        f" {f['session_code_pct_of_paced_link']} % of it"
    )
    out(
        f"  arrival -> commit, {f['paced_records']} records at one per"
        f" {f['paced_interval_ms']} ms: p50 {f['arrival_commit_p50_ms']} ms,"
        f" p99 {f['arrival_commit_p99_ms']} ms  | bare fsync ({f['fsync_bytes']} B):"
        f" p50 {f['bare_fsync_p50_ms']} ms, p99 {f['bare_fsync_p99_ms']} ms"
        f"  | ratio p99 {f['commit_ratio_p99']} (goal p99 <= 10 ms)"
    )
    out(
        f"    meanwhile a separate process's {f['paced_interval_ms']} ms timer woke late by"
        f" p50 {f['noise_late_p50_ms']} ms, p99 {f['noise_late_p99_ms']} ms"
        " (the machine's own scheduling noise)"
    )
    out(
        f"    meanwhile the publisher deleted in {f['paced_deletes']} transactions of"
        f" {f['paced_delete_mean_records']} records on average"
    )
    out(
        f"    at a typical meter's one per {f['typical_interval_ms']} ms:"
        f" p50 {f['typical_arrival_commit_p50_ms']} ms, p99 {f['typical_arrival_commit_p99_ms']} ms"
    )
    out(
        f"  rates for the bounds: virtual link {f['link_records_per_s']} records/s"
        f"  | daemon ingest of an unpaced download {f['burst_ingest_records_per_s']} records/s"
        f" (arrival -> commit p99 {f['burst_arrival_commit_p99_ms']} ms,"
        f" session buffer peak {f['burst_peak_ready']})"
    )
    out(json.dumps(f, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
