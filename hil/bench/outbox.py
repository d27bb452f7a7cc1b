"""Outbox benchmark: each figure beside a raw-SQLite baseline measured in the same run.

    python hil/bench/outbox.py [--dir DIR] [--quick]

Figures (all on the same filesystem, a temporary directory under ``--dir``):

- durable single-reading ingest/s: prepare (decode, normalize) + one-item group commit
  (sign inside the transaction, seal, insert, dedup entry, COMMIT with synchronous=FULL),
  beside raw SQLite one-row transactions of the same size with WAL + synchronous=FULL
  (goal: at least 0.5 of raw);
- batched ingest/s of a 1,000-reading download, committed in group-commit batches as the
  daemon does, beside raw inserts of the same rows in transactions of the same size;
- delivered bookkeeping/s: claim + one ``mark_delivered`` transaction per PUBACK, beside raw
  one-row DELETE transactions;
- bytes on disk per stored reading (after a checkpoint), beside the envelope's own size.

The last line is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
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
from agent.ble.bps_session import RawMeasurement
from agent.ingest import BLOOD_PRESSURE_MEASUREMENT, Prepared, Signer, prepare
from agent.ingest_batcher import GROUP_COMMIT_MAX, Item, commit_batch
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


def _rate(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    return conn


def _raw_single(path: Path, n: int, size: int) -> float:
    conn = _raw_db(path)
    body = os.urandom(size)

    def run() -> None:
        for _ in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
            conn.execute("COMMIT")

    rate = _rate(n, run)
    conn.close()
    return rate


def _raw_batched(path: Path, n: int, size: int, batch: int) -> float:
    conn = _raw_db(path)
    bodies = [os.urandom(size) for _ in range(n)]

    def run() -> None:
        for start in range(0, n, batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO t (body) VALUES (?)", [(b,) for b in bodies[start : start + batch]]
            )
            conn.execute("COMMIT")

    rate = _rate(n, run)
    conn.close()
    return rate


def _raw_deletes(path: Path, n: int, size: int) -> float:
    conn = _raw_db(path)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (body) VALUES (?)", [(os.urandom(size),) for _ in range(n)])
    conn.execute("COMMIT")
    ids = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]

    def run() -> None:
        for rowid in ids:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM t WHERE id = ?", (rowid,))
            conn.execute("COMMIT")

    rate = _rate(n, run)
    conn.close()
    return rate


def measure(directory: Path, singles: int) -> dict[str, Any]:
    """Run every figure in ``directory``; returns them as a dict."""
    signer = Signer.from_key(ec.generate_private_key(ec.SECP256R1()))
    sealer = Sealer(DataKey.generate())
    envelope_bytes = len(_prepared(0).envelope(1, signer))

    # Durable single-reading ingest, storage only: a signed envelope of the real size stored
    # by the outbox (seq, seal, dedup entry, COMMIT), one transaction per reading.
    envelope = _prepared(0).envelope(1, signer)
    with Outbox.open(directory / "append.db", sealer, HUB) as box:

        def append() -> None:
            for i in range(singles):
                (outcome,) = commit_batch(box, [Item("observation", f"k{i}", lambda _s: envelope)])
                assert outcome.seq == i + 1

        append_single = _rate(singles, append)
    # The same through the whole ingest step: prepare (decode, normalize) and sign too.
    with Outbox.open(directory / "single.db", sealer, HUB) as box:

        def single() -> None:
            for i in range(singles):
                (outcome,) = commit_batch(box, [_item(i, signer)])
                assert outcome.seq == i + 1

        ingest_single = _rate(singles, single)
    raw_single = _raw_single(directory / "raw-single.db", singles, envelope_bytes)

    # A 1,000-reading download in group-commit batches, then raw batched inserts.
    path = directory / "batched.db"
    with Outbox.open(path, sealer, HUB) as box:
        items = [_item(i, signer) for i in range(DOWNLOAD)]

        def batched() -> None:
            for start in range(0, DOWNLOAD, GROUP_COMMIT_MAX):
                commit_batch(box, items[start : start + GROUP_COMMIT_MAX])

        ingest_batched = _rate(DOWNLOAD, batched)
        # Bytes on disk per stored reading: everything checkpointed into the db file.
        conn = box._conn
        assert conn is not None
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used_per_reading = box.counts().used_bytes / DOWNLOAD
        file_per_reading = path.stat().st_size / DOWNLOAD

        # Delivered bookkeeping: claim a window, one mark_delivered per PUBACK.
        def deliver() -> None:
            while records := box.claim(20):
                for record in records:
                    box.mark_delivered(record.seq)

        delivered = _rate(DOWNLOAD, deliver)
    raw_batched = _raw_batched(
        directory / "raw-batched.db", DOWNLOAD, envelope_bytes, GROUP_COMMIT_MAX
    )
    raw_delete = _raw_deletes(directory / "raw-delete.db", DOWNLOAD, envelope_bytes)

    return {
        "sqlite_version": sqlite3.sqlite_version,
        "envelope_bytes": envelope_bytes,
        "single_append_per_s": round(append_single, 1),
        "single_ingest_per_s": round(ingest_single, 1),
        "raw_single_tx_per_s": round(raw_single, 1),
        "single_append_ratio": round(append_single / raw_single, 3),
        "single_ingest_ratio": round(ingest_single / raw_single, 3),
        "batched_ingest_per_s": round(ingest_batched, 1),
        "raw_batched_per_s": round(raw_batched, 1),
        "batched_ratio": round(ingest_batched / raw_batched, 3),
        "group_commit_max": GROUP_COMMIT_MAX,
        "delivered_per_s": round(delivered, 1),
        "raw_delete_tx_per_s": round(raw_delete, 1),
        "delivered_ratio": round(delivered / raw_delete, 3),
        "used_bytes_per_reading": round(used_per_reading, 1),
        "file_bytes_per_reading": round(file_per_reading, 1),
        "disk_overhead_ratio": round(file_per_reading / envelope_bytes, 3),
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
    print(f"  envelope: {f['envelope_bytes']} B signed reading")
    print(
        f"  durable single-reading store (signed envelope → outbox): {f['single_append_per_s']}/s"
        f"  | raw one-row tx: {f['raw_single_tx_per_s']}/s  | ratio {f['single_append_ratio']}"
        " (goal >= 0.5)"
    )
    print(
        f"  durable single-reading ingest (+ decode, normalize, sign): {f['single_ingest_per_s']}/s"
        f"  | raw one-row tx: {f['raw_single_tx_per_s']}/s  | ratio {f['single_ingest_ratio']}"
    )
    print(
        f"  batched ingest, {DOWNLOAD}-reading download in batches of {GROUP_COMMIT_MAX}:"
        f" {f['batched_ingest_per_s']}/s  | raw batched insert: {f['raw_batched_per_s']}/s"
        f"  | ratio {f['batched_ratio']}"
    )
    print(
        f"  delivered bookkeeping (claim + mark_delivered per PUBACK): {f['delivered_per_s']}/s"
        f"  | raw one-row DELETE tx: {f['raw_delete_tx_per_s']}/s  | ratio {f['delivered_ratio']}"
    )
    print(
        f"  on disk per stored reading: {f['file_bytes_per_reading']} B file"
        f" ({f['used_bytes_per_reading']} B in used pages)  | envelope {f['envelope_bytes']} B"
        f"  | ratio {f['disk_overhead_ratio']}"
    )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
