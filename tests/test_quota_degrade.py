"""Under quota pressure continuous oximetry degrades to one sample per 15 minutes; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.daemon import DEGRADED_CONTINUOUS_INTERVAL_S, Hub, _Arrival, open_outbox
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.pulse_oximetry import PLX_CONTINUOUS_MEASUREMENT
from agent.outbox import StorageLevel
from hil.emulators.oximeter import example_continuous, example_spot_checks
from tests.example_config import example_config

PLX_SPOT_CHECK = "00002a5e-0000-1000-8000-00805f9b34fb"


def _arrival(uuid: str, data: bytes, at_s: float) -> _Arrival:
    raw = RawMeasurement(uuid, data, at_s, datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    return _Arrival(DeviceFacts(address="F0:00:00:00:20:01"), "..:20:01", "oximeter", raw)


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
    outbox, _signer = open_outbox(cfg)
    with outbox:
        assert (outbox.level is StorageLevel.OK) == (quota_bytes > 1)
        hub = Hub(cfg)
        sample = bytes(example_continuous()[0])
        spot = bytes(example_spot_checks()[0])
        for at_s in (0.0, 60.0, 120.0):
            assert not hub._shed_continuous(outbox, _arrival(PLX_SPOT_CHECK, spot, at_s))
        shed = [
            hub._shed_continuous(outbox, _arrival(PLX_CONTINUOUS_MEASUREMENT, sample, at_s))
            for at_s in (0.0, 60.0, 120.0, DEGRADED_CONTINUOUS_INTERVAL_S + 1.0)
        ]
        assert expected_shed == hub.shed_continuous
        assert [False, quota_bytes == 1, quota_bytes == 1, False] == shed
