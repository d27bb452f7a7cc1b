"""The fleet scenario in small (hil/fleet/): 5 hubs in two worker processes, each the product's
own outbox, publisher and uplink with its own client certificate and key, against a real TLS
mosquitto that restarts (with its persistence) mid-run, and the reference platform verifying
and receipting through an MQTT 5 shared subscription.

It asserts what ``python -m hil.fleet`` reports for 200 hubs: every hub's backlog arrived, each
reading handed on by the platform exactly once and deleted on the hub by a receipt; every hub
reconnected after the restart, and not all in one 100 ms instant. The delays are the real full
jitter of agent/retry.py (first ceiling 1 s) drawn from seeded RNGs, so the draws are
reproducible; the times are measured. The run takes ~3 s here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest

from hil.bench.drain import PATIENT
from hil.crash_child import DEVICE
from hil.fleet.figures import failures, spread, synchronised_storm
from hil.fleet.plan import FleetOptions, RestartMode
from hil.fleet.scenario import FleetRun, run_fleet
from hil.report import write_report
from hil.scenarios.results import FleetResult

OPTIONS: Final = FleetOptions(
    hubs=5,
    per_process=3,
    backlog=20,
    batch_max_readings=5,
    boot_jitter_s=0.5,
    restart=RestartMode.PERSISTENT,
    down_s=0.0,
    restart_at=0.25,
    seed=12,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def fleet(run_dir: Path) -> FleetRun:
    return run_fleet(OPTIONS, run_dir)


@pytest.mark.slow
def test_every_backlog_arrives_exactly_once(fleet: FleetRun) -> None:
    p = fleet.figures["platform"]
    assert p["readings_expected"] == OPTIONS.hubs * OPTIONS.backlog == 100
    assert p["readings_handed_on"] == 100
    assert (p["missing"], p["unexpected"], p["handed_on_twice"]) == (0, 0, 0)
    assert p["exactly_once"] is True
    assert (p["rejected"], p["conflicting_duplicates"]) == (0, 0)
    counters = fleet.figures["hub_counters"]
    assert counters["hubs"] == 5
    assert counters["receipts_rejected"] == 0
    assert counters["receipts_accepted"] >= 5  # every hub deleted its backlog on receipts
    assert fleet.figures["all_arrived_after_broker_back_s"] > 0


@pytest.mark.slow
def test_reconnections_after_the_restart_are_spread(fleet: FleetRun) -> None:
    r = fleet.figures["restart"]
    assert r["mode"] == "persistent"
    s = r["reconnects"]
    assert s["count"] == len(fleet.reconnect_offsets_s) == 5
    assert sum(s["per_s"]) == 5
    # Full jitter over a 1 s ceiling: not all in one 100 ms bucket (a synchronised storm is).
    assert s["max_per_100ms"] < 5
    assert s["last_s"] - s["first_s"] > 0.1
    assert s["first_s"] <= s["p50_s"] <= s["p90_s"] <= s["last_s"]
    # Every hub connected once at boot and again after the restart, at the least.
    assert fleet.figures["hub_counters"]["connects"] >= 10
    assert fleet.figures["boot"]["count"] == 5


@pytest.mark.slow
def test_figures_describe_the_run(fleet: FleetRun) -> None:
    f = fleet.figures
    assert (f["hubs"], f["processes"], f["readings_per_hub"]) == (5, 2, 20)
    assert len(f["cpu_s"]["per_worker"]) == 2
    assert all(c > 0 for c in f["cpu_s"]["per_worker"])
    assert f["cpu_s"]["platform"] > 0
    assert f["drain_s"] > 0
    assert f["options"]["seed"] == 12
    assert json.loads(json.dumps(f)) == f


@pytest.mark.slow
def test_the_report_holds_the_fleet(fleet: FleetRun, tmp_path: Path) -> None:
    """``make hil``'s report made from this run's own figures: passed by the fleet's verdict
    (every reading once; not every hub in one 100 ms, as asserted above), in each file."""
    assert [] == failures(fleet.figures)
    result = FleetResult(fleet.figures, fleet.boot_offsets_s, fleet.reconnect_offsets_s)
    paths = write_report([], tmp_path, result)
    junit = paths["junit"].read_text()
    assert '<testcase classname="hil.fleet" name="fleet"' in junit
    assert "<failure" not in junit
    page = paths["html"].read_text()
    assert '<p id="fleet-verdict"><span class="pass">PASS</span></p>' in page
    assert '<tr data-figure="delivered"><th>' in page
    assert (tmp_path / "fleet-reconnects.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads(paths["json"].read_text())["fleet"]["passed"] is True


@pytest.mark.slow
def test_nothing_of_a_reading_is_logged(fleet: FleetRun, run_dir: Path) -> None:
    """The broker's log and the figures hold counts and hub ids, never the patient or the
    device the synthetic readings name."""
    texts = [json.dumps(fleet.figures), (run_dir / "broker" / "mosquitto.log").read_text()]
    assert "fleet-hub-0004" in texts[1]  # the log is the one the broker wrote
    named = [PATIENT, DEVICE.address, *filter(None, [DEVICE.serial])]
    for text in texts:
        for value in named:
            assert value not in text


def test_spread_tells_a_storm_from_full_jitter() -> None:
    """The figures' arithmetic on known times: a storm fills one bucket, jitter spreads them."""
    storm = spread([100.0 + i * 0.001 for i in range(50)], origin=100.0)
    assert (storm.per_s, storm.max_per_s, storm.max_per_100ms) == ((50,), 50, 50)
    jitter = spread([100.05 + i * 0.1 for i in range(50)], origin=100.0)  # mid-bucket each
    assert jitter.per_s == (10, 10, 10, 10, 10)
    assert (jitter.max_per_s, jitter.max_per_100ms) == (10, 1)
    assert (jitter.first_s, jitter.last_s) == pytest.approx((0.05, 4.95))
    assert (jitter.p50_s, jitter.p90_s) == pytest.approx((2.45, 4.45))
    assert jitter.uniform_per_s == pytest.approx(50 / 4.9)
    early = spread([99.9, 100.5], origin=100.0)  # a connect just before the broker's "ready"
    assert early.per_s == (2,)
    assert synchronised_storm(storm.as_dict())
    assert not synchronised_storm(jitter.as_dict())
    # More than half of 20 hubs or more in one 100 ms; of fewer, every one of them.
    half = spread([100.01] * 11 + [101.0 + i * 0.2 for i in range(9)], origin=100.0)
    assert (half.count, half.max_per_100ms, synchronised_storm(half.as_dict())) == (20, 11, True)
    few = spread([100.01, 100.02, 100.03, 100.5, 100.9], origin=100.0)
    assert (few.max_per_100ms, synchronised_storm(few.as_dict())) == (3, False)
    assert synchronised_storm(spread([100.01] * 5, origin=100.0).as_dict())
    assert not synchronised_storm(spread([100.01], origin=100.0).as_dict())
