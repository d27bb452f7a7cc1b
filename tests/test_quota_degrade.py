"""Under quota pressure continuous oximetry degrades to one sample per 15 minutes; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.ble.uuids import PLX_CONTINUOUS_MEASUREMENT, PLX_SPOT_CHECK_MEASUREMENT
from agent.daemon import DEGRADED_CONTINUOUS_INTERVAL_S, Arrival, Hub, Shed, open_outbox
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.outbox import StorageLevel
from hil.emulators.oximeter import example_continuous, example_spot_checks
from tests.example_config import example_config


def _arrival(uuid: str, data: bytes, at_s: float) -> Arrival:
    raw = RawMeasurement(uuid, data, at_s, datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    return Arrival(DeviceFacts(address="F0:00:00:00:20:01"), "..:20:01", "oximeter", raw)


@pytest.mark.parametrize(
    ("quota_bytes", "expected_shed"),
    [(256 * 1024 * 1024, 0), (1, 2)],
    ids=["room", "over-quota"],
)
def test_continuous_samples_thin_out_only_under_pressure(
    tmp_path: Path, quota_bytes: int, expected_shed: int
) -> None:
    """Over quota, continuous samples close to the last kept one are shed; spot-checks never."""
    cfg = example_config(tmp_path, quota_bytes=quota_bytes)
    outbox, signer = open_outbox(cfg)
    over = quota_bytes == 1
    with outbox:
        assert (outbox.level is StorageLevel.OK) == (not over)
        hub = Hub(cfg)
        sample = bytes(example_continuous()[0])
        spot = bytes(example_spot_checks()[0])
        arrivals = [
            *(_arrival(PLX_SPOT_CHECK_MEASUREMENT, spot, at_s) for at_s in (0.0, 60.0, 120.0)),
            *(
                _arrival(PLX_CONTINUOUS_MEASUREMENT, sample, at_s)
                for at_s in (0.0, 60.0, 120.0, DEGRADED_CONTINUOUS_INTERVAL_S + 1.0)
            ),
        ]
        fates = hub._store_batch(outbox, signer, arrivals)
        with capture_logs() as events:
            hub._report(arrivals, fates)
    shed = [isinstance(fate, Shed) for fate in fates]
    assert [False] * 3 + [False, over, over, False] == shed
    assert [Shed(StorageLevel.FULL)] * expected_shed == [f for f in fates if isinstance(f, Shed)]
    assert expected_shed == hub.shed_continuous
    logged = [e for e in events if e["event"] == "continuous_sample_shed"]
    assert [("full", "warning")] * expected_shed == [(e["level"], e["log_level"]) for e in logged]
    # What was not shed went to the outbox: stored (or its duplicate) with room, refused
    # (not stored, logged) over the quota.
    kept = hub.stored + hub.duplicates
    assert (0 if over else 7, 5 if over else 0) == (kept, hub.not_stored)
