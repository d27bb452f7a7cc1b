"""A storage fault in the middle of a download never lets the device's mark pass the reading
it kept out (agent/daemon.py, ``Hub._sync_held``).

Each reading of a glucometer's RACP download carries the high-water mark that commits with
it. Found by the HIL scenario ``disk-full-during-outage``: when one batch of a download failed
(a full disk) and a later batch of the same session was stored once there was room, that
batch committed a mark past the readings that were never stored, and the meter was never
asked for them again. Here the daemon's own store path (``_store_batch`` then ``_report``,
as its ingest task runs them) meets an injected storage fault on one batch: the session's
later readings are stored without advancing the mark, the next session asks again from the
committed mark and the missing reading is stored, the rest come again as duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from structlog.testing import capture_logs

from agent.ble.uuids import BLOOD_PRESSURE_MEASUREMENT
from agent.daemon import Arrival, Hub, open_outbox
from agent.errors import RecordTooLargeError, StorageFullError
from agent.ingest_batcher import Status
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.outbox import Outbox
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from tests.example_config import example_config

RECEIVED: Final = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
DEVICE: Final = DeviceFacts(
    address="F0:00:00:00:B2:01",
    system_id="0110000000FEFFB2",
    manufacturer="Hold Test Medical",
    model="H-1",
    serial="H-0001",
    firmware="1.0",
)
MARK: Final = "mark"
"""The sync-state key these readings carry (a stand-in for the RACP high-water mark)."""


class FailingAppends:
    """Named injection: the outbox, except that the appends whose call numbers are in
    ``fail`` raise ``error`` (a full disk), as SQLite's SQLITE_FULL surfaces."""

    def __init__(self, outbox: Outbox, fail: set[int], error: Exception) -> None:
        self._outbox = outbox
        self._fail = fail
        self._error = error
        self.calls = 0

    def append_many(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self._fail:
            raise self._error
        return self._outbox.append_many(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


def reading(n: int, session: int) -> Arrival:
    """Reading ``n`` of a download, carrying mark ``n``, received in ``session``."""
    bp = BpReading(110 + n, 70, 85, time_stamp=DateTime(2026, 12, 3, 8, n, 0), pulse_rate=60)
    raw = RawMeasurement(
        BLOOD_PRESSURE_MEASUREMENT,
        bytes(bp),
        float(n),
        RECEIVED,
        sync_state={MARK: str(n).encode()},
    )
    return Arrival(DEVICE, "..:B2:01", "meter", raw, session)


def store(hub: Hub, outbox: Any, signer: Any, batch: Sequence[Arrival]) -> list[Status]:
    """One turn of the daemon's ingest task: store the batch, then report it."""
    fates = hub._store_batch(outbox, signer, batch)
    hub._report(batch, fates)
    return [getattr(f, "status", None) for f in fates]


def committed_mark(outbox: Outbox) -> bytes | None:
    return outbox.all_sync_state().get(("meter", MARK))


def test_a_refused_batch_holds_the_mark_for_the_rest_of_its_session(tmp_path: Path) -> None:
    cfg = example_config(tmp_path)
    outbox, signer = open_outbox(cfg)
    with outbox:
        full = FailingAppends(outbox, {2}, StorageFullError("outbox.db", "append", "disk full"))
        hub = Hub(cfg)
        with capture_logs() as events:
            assert [Status.STORED] * 2 == store(hub, full, signer, [reading(1, 1), reading(2, 1)])
            assert b"2" == committed_mark(outbox)
            assert [Status.NOT_STORED] == store(hub, full, signer, [reading(3, 1)])
            # Room again, same session: stored, and the mark stays where it was.
            assert [Status.STORED] * 2 == store(hub, full, signer, [reading(4, 1), reading(5, 1)])
            assert b"2" == committed_mark(outbox)
            assert b"2" == hub._sync_cache[("meter", MARK)]
            # The next session asks again from mark 2: 3 is stored, 4 and 5 are duplicates.
            again = [reading(3, 2), reading(4, 2), reading(5, 2)]
            assert [Status.STORED, Status.DUPLICATE, Status.DUPLICATE] == store(
                hub, full, signer, again
            )
        assert b"5" == committed_mark(outbox)
        assert b"5" == hub._sync_cache[("meter", MARK)]
        assert 5 == outbox.counts().pending
    held = [e for e in events if e["event"] == "sync_state_held"]
    assert [1] == [e["session"] for e in held]
    assert (5, 1, 2) == (hub.stored, hub.not_stored, hub.duplicates)


def test_a_record_too_large_to_ever_store_holds_nothing(tmp_path: Path) -> None:
    """A record over the size bound can never be stored: asking the device again would not
    help, so the mark may pass it (agent/ingest_batcher.py) and nothing is held."""
    cfg = example_config(tmp_path)
    outbox, signer = open_outbox(cfg)
    with outbox:
        too_large = FailingAppends(outbox, {1}, RecordTooLargeError("observation", 70_000, 65_536))
        hub = Hub(cfg)
        assert [Status.NOT_STORED] == store(hub, too_large, signer, [reading(1, 1)])
        assert [Status.STORED] == store(hub, too_large, signer, [reading(2, 1)])
        assert b"2" == committed_mark(outbox)
    assert {} == hub._sync_held
