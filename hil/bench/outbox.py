"""Outbox benchmark: each figure beside a raw-SQLite baseline measured in the same run.

    python -m hil.bench.outbox [--dir DIR] [--quick]

Figures (all on the same filesystem, a temporary directory under ``--dir``):

- durable single-reading ingest/s: prepare (decode, normalize) + one-item group commit
  (sign inside the transaction, seal, insert, dedup entry, COMMIT with synchronous=FULL),
  beside raw SQLite one-row transactions of the same size with WAL + synchronous=FULL
  (goal: at least 0.5 of raw);
- batched ingest/s of a 1,000-reading download, committed in group-commit batches as the
  daemon does, beside raw inserts of the same rows in transactions of the same size;
- delivered bookkeeping/s: read a window of pending records (no write, as the publisher
  does) + one ``mark_delivered_many`` transaction for the window's PUBACKs, beside raw
  DELETEs of the same rows in one transaction;
- bytes on disk per stored reading (after a checkpoint), beside the envelope's own size.

Every outbox figure includes the WAL checkpoints the daemon's storage thread runs between
its calls (:meth:`agent.outbox.Outbox.checkpoint_if_due`, called here after each
transaction); the raw baselines include SQLite's automatic ones.

The last line is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from agent import logs
from agent.ingest import BLOOD_PRESSURE_MEASUREMENT, Prepared, Signer, prepare
from agent.ingest_batcher import GROUP_COMMIT_MAX, Item, Outcome, commit_batch
from agent.measurement import RawMeasurement
from agent.normalize.phd import Context
from agent.outbox import Outbox
from agent.sealing import DataKey, Sealer
from hil.crash_child import DEVICE, measurement

HUB: Final = "hub-bench-0001"
PATIENT: Final = "patient-bench-0001"
DOWNLOAD: Final = 1000


def _prepared(index: int) -> Prepared:
    received = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index, seconds=5)
    raw = RawMeasurement(
        characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
        data=measurement(index),
        received_monotonic=float(index),
        received_wall=received,
    )
    ctx = Context(hub_id=HUB, patient_id=PATIENT, timezone="UTC", received=received)
    return prepare(raw, DEVICE, ctx)


def _item(index: int, signer: Signer) -> Item:
    prepared = _prepared(index)

    def make(seq: int) -> bytes:
        return prepared.envelope(seq, signer)

    return Item(prepared.kind, prepared.identifier, make)


ROUNDS: Final = 10
"""Each figure and its baseline are measured in alternating slices, so a disk that slows
down during the run (other load, writeback) weighs on both alike."""


class _Meter:
    """Accumulated operations and seconds of one figure over its slices."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def run(self, count: int, work: Callable[[], None]) -> None:
        started = time.perf_counter()
        work()
        self.seconds += time.perf_counter() - started
        self.count += count

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise RuntimeError("WAL not available for the baseline")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    return conn


def _raw_insert(conn: sqlite3.Connection, bodies: list[bytes]) -> None:
    """One transaction inserting ``bodies``: the baseline."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t (body) VALUES (?)", [(b,) for b in bodies])
    conn.execute("COMMIT")


def _raw_singles(conn: sqlite3.Connection, body: bytes, indices: range) -> None:
    for _ in indices:
        _raw_insert(conn, [body])


def _raw_deletes(conn: sqlite3.Connection, rowids: list[int]) -> None:
    """The window's DELETEs in one transaction: the baseline of delivered bookkeeping."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("DELETE FROM t WHERE id = ?", [(r,) for r in rowids])
    conn.execute("COMMIT")


def _check(outcomes: list[Outcome], indices: range) -> None:
    if [o.seq for o in outcomes] != [i + 1 for i in indices]:
        raise RuntimeError("not stored as expected")


def _store_singles(box: Outbox, envelope: bytes, indices: range) -> None:
    """Store a ready signed envelope per reading, one transaction each."""
    for i in indices:
        _check(
            commit_batch(box, [Item("observation", f"k{i}", lambda _seq: envelope)]),
            range(i, i + 1),
        )
        box.checkpoint_if_due()  # the storage thread's idle work between two readings


def _ingest_singles(box: Outbox, signer: Signer, indices: range) -> None:
    """The whole ingest step per reading, one transaction each."""
    for i in indices:
        _check(commit_batch(box, [_item(i, signer)]), range(i, i + 1))
        box.checkpoint_if_due()


def _store_batch(box: Outbox, envelope: bytes, indices: range) -> None:
    items = [Item("observation", f"k{i}", lambda _seq: envelope) for i in indices]
    _check(commit_batch(box, items), indices)
    box.checkpoint_if_due()


def _ingest_batch(box: Outbox, signer: Signer, indices: range) -> None:
    """Decode and normalize each arrival, then one group commit (signing inside)."""
    _check(commit_batch(box, [_item(i, signer) for i in indices]), indices)
    box.checkpoint_if_due()


def _deliver(box: Outbox, window: int) -> None:
    """Read a window (opening each record) and delete it as its PUBACKs would: one batch."""
    records = box.pending_after(0, window)
    box.mark_delivered_many([r.seq for r in records])
    box.checkpoint_if_due()


def measure(directory: Path, singles: int) -> dict[str, Any]:
    """Run every figure in ``directory``; returns them as a dict."""
    signer = Signer.from_key(ec.generate_private_key(ec.SECP256R1()))
    sealer = Sealer(DataKey.generate())
    envelope = _prepared(0).envelope(1, signer)
    size = len(envelope)
    body = os.urandom(size)
    per_round = max(1, singles // ROUNDS)

    # Single readings, one transaction each: raw SQLite; the outbox storing a signed
    # envelope of the real size (seq, seal, dedup entry, COMMIT); the whole ingest step
    # (decode, normalize, sign inside the transaction, store).
    raw, store, ingest = _Meter(), _Meter(), _Meter()
    raw_conn = _raw_db(directory / "raw-single.db")
    with (
        Outbox.open(directory / "store.db", sealer, HUB) as store_box,
        Outbox.open(directory / "ingest.db", sealer, HUB) as ingest_box,
    ):
        for r in range(ROUNDS):
            indices = range(r * per_round, (r + 1) * per_round)
            slices = [
                (raw, functools.partial(_raw_singles, raw_conn, body, indices)),
                (store, functools.partial(_store_singles, store_box, envelope, indices)),
                (ingest, functools.partial(_ingest_singles, ingest_box, signer, indices)),
            ]
            for meter, work in slices[r % 3 :] + slices[: r % 3]:
                meter.run(per_round, work)
    raw_conn.close()

    # A 1,000-reading download: group-commit batches, as the daemon commits them, of the
    # whole ingest step and of storing alone, beside raw inserts in transactions of that size.
    raw_b, store_b, ingest_b = _Meter(), _Meter(), _Meter()
    batches = range(0, DOWNLOAD, GROUP_COMMIT_MAX)
    raw_conn = _raw_db(directory / "raw-batched.db")
    ingest_path = directory / "download.db"
    with (
        Outbox.open(directory / "store-batched.db", sealer, HUB) as store_box,
        Outbox.open(ingest_path, sealer, HUB) as ingest_box,
    ):
        for start in batches:
            indices = range(start, min(start + GROUP_COMMIT_MAX, DOWNLOAD))
            n = len(indices)
            raw_b.run(n, functools.partial(_raw_insert, raw_conn, [body] * n))
            store_b.run(n, functools.partial(_store_batch, store_box, envelope, indices))
            ingest_b.run(n, functools.partial(_ingest_batch, ingest_box, signer, indices))

        # Bytes on disk per stored reading: everything checkpointed into the db file.
        conn = ingest_box._conn
        assert conn is not None
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used_per_reading = ingest_box.counts().used_bytes / DOWNLOAD
        file_per_reading = ingest_path.stat().st_size / DOWNLOAD

        # Delivered bookkeeping: read a window of 20, one mark_delivered_many for it; beside
        # raw DELETEs of 20 rows in one transaction, in alternating slices.
        ids = [r[0] for r in raw_conn.execute("SELECT id FROM t ORDER BY id")]
        deliver, raw_d = _Meter(), _Meter()
        window = 20
        for start in range(0, DOWNLOAD, window):
            deliver.run(window, functools.partial(_deliver, ingest_box, window))
            raw_d.run(
                window, functools.partial(_raw_deletes, raw_conn, ids[start : start + window])
            )
        if ingest_box.counts().pending:
            raise RuntimeError("not everything delivered")
    raw_conn.close()

    return {
        "sqlite_version": sqlite3.sqlite_version,
        "envelope_bytes": size,
        "single_store_per_s": round(store.rate, 1),
        "single_ingest_per_s": round(ingest.rate, 1),
        "raw_single_tx_per_s": round(raw.rate, 1),
        "single_store_ratio": round(store.rate / raw.rate, 3),
        "single_ingest_ratio": round(ingest.rate / raw.rate, 3),
        "download_ingest_per_s": round(ingest_b.rate, 1),
        "download_store_per_s": round(store_b.rate, 1),
        "raw_batched_per_s": round(raw_b.rate, 1),
        "download_ingest_ratio": round(ingest_b.rate / raw_b.rate, 3),
        "download_store_ratio": round(store_b.rate / raw_b.rate, 3),
        "group_commit_max": GROUP_COMMIT_MAX,
        "delivered_per_s": round(deliver.rate, 1),
        "raw_delete_tx_per_s": round(raw_d.rate, 1),
        "delivered_ratio": round(deliver.rate / raw_d.rate, 3),
        "used_bytes_per_reading": round(used_per_reading, 1),
        "file_bytes_per_reading": round(file_per_reading, 1),
        "disk_overhead_ratio": round(file_per_reading / size, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Print each figure beside its baseline, then one JSON line with all of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp directory")
    parser.add_argument("--quick", action="store_true", help="fewer single transactions")
    args = parser.parse_args(argv)
    logs.configure("warning")  # the outbox's info events would drown the figures
    singles = 100 if args.quick else 500
    with tempfile.TemporaryDirectory(prefix="homehub-bench-", dir=args.dir) as tmp:
        figures = measure(Path(tmp), singles)
        where = os.path.realpath(tmp)
    f = figures
    print(f"outbox benchmark in {where} (SQLite {f['sqlite_version']}, WAL, synchronous=FULL)")
    print(f"  signed BP envelope: {f['envelope_bytes']} B")
    print(
        f"  durable single-reading store: {f['single_store_per_s']}/s"
        f"  | raw one-row tx: {f['raw_single_tx_per_s']}/s"
        f"  | ratio {f['single_store_ratio']} (goal >= 0.5)"
    )
    print(
        f"  durable single-reading ingest (decode, normalize, sign, store):"
        f" {f['single_ingest_per_s']}/s  | raw one-row tx: {f['raw_single_tx_per_s']}/s"
        f"  | ratio {f['single_ingest_ratio']}"
    )
    print(
        f"  {DOWNLOAD}-reading download, batches of {GROUP_COMMIT_MAX}:"
        f" ingest {f['download_ingest_per_s']}/s, store {f['download_store_per_s']}/s"
        f"  | raw batched insert: {f['raw_batched_per_s']}/s"
        f"  | ratios {f['download_ingest_ratio']}, {f['download_store_ratio']}"
    )
    print(
        f"  delivered bookkeeping (read 20, one mark_delivered_many): {f['delivered_per_s']}/s"
        f"  | raw DELETE of 20 rows, one tx: {f['raw_delete_tx_per_s']}/s"
        f"  | ratio {f['delivered_ratio']}"
    )
    print(
        f"  on disk per stored reading: {f['file_bytes_per_reading']} B"
        f" ({f['used_bytes_per_reading']} B in pages in use)  | envelope {f['envelope_bytes']} B"
        f"  | ratio {f['disk_overhead_ratio']}"
    )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
