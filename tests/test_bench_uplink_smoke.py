"""Smoke test of hil/bench/uplink.py: the whole benchmark in quick mode (300 readings, one round,
a 1 s keepalive for 2 round trips) against a real mosquitto and the reference platform.

It checks that the last line is one JSON object holding every figure and that the figures are
sane (positive, consistent with one another, goals judged as their numbers say). It asserts
nothing about speed: speed is what the benchmark itself measures, beside its baselines.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from agent.profiles import PROFILES
from tests import phi_canaries

REPO: Final = Path(__file__).resolve().parents[1]
READINGS: Final = 300
RUN_TIMEOUT_S: Final = 110.0
"""The run takes ~15-30 s here (most of it starting interpreters and the platform); the bound is
for a machine loaded by other test runs."""

DRAIN_FIELDS: Final = {
    "batching",
    "broker_cpu_us_per_reading",
    "cpu_us_per_reading",
    "hub_envelopes",
    "hub_puback_per_s",
    "hub_receipt_per_s",
    "hub_receipt_platform_per_s",
    "per_round",
    "platform_cpu_us_per_reading",
    "platform_receipts_sent",
    "platform_rejected",
    "puback_ratio",
    "publisher_options",
    "ratio_goal",
    "raw_paho_per_s",
    "raw_paho_puback_per_s",
    "readings",
    "receipt_ratio",
    "receipt_ratio_met",
    "receipt_ratio_vs_raw_puback",
    "receipt_timeouts",
    "resent",
    "rounds",
    "stored_envelope_bytes",
    "window",
    "wire_bytes_per_reading",
}
PHASES: Final = {"hub_receipt", "hub_puback", "raw_paho"}
KINDS: Final = {"blood_pressure", "glucose_with_context", "glucose", "pulse_oximetry"}
GOALS: Final = {
    "single_blood_pressure",
    "single_glucose_with_context",
    *(f"batch{n}_{kind}" for n in (10, 50) for kind in KINDS),
}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hil.bench.uplink",
            "--quick",
            "--readings",
            str(READINGS),
            "--dir",
            str(tmp_path_factory.mktemp("bench-uplink")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    phi_canaries.record_output("figures (hil.bench.uplink): stdout", run.stdout)
    phi_canaries.record_output("figures (hil.bench.uplink): stderr", run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) > 10, "the figures are printed for a person before the JSON"
    parsed = json.loads(lines[-1])
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.slow
def test_the_last_line_holds_every_part(figures: dict[str, Any]) -> None:
    assert {"bench", "quick", "drain", "sizes", "idle"} == set(figures)
    assert figures["bench"] == "uplink"
    assert figures["quick"] is True


@pytest.mark.slow
def test_drain_figures_are_complete_and_sane(figures: dict[str, Any]) -> None:
    d = figures["drain"]
    assert set(d) == DRAIN_FIELDS
    assert d["readings"] == READINGS
    assert d["rounds"] == 1
    for name in (
        "hub_receipt_per_s",
        "hub_puback_per_s",
        "raw_paho_per_s",
        "raw_paho_puback_per_s",
        "hub_receipt_platform_per_s",
        "receipt_ratio",
        "puback_ratio",
        "receipt_ratio_vs_raw_puback",
        "stored_envelope_bytes",
        "wire_bytes_per_reading",
    ):
        assert _positive(d[name]), name
    # Raw paho is done when every PUBACK is in *and* the platform holds every reading.
    assert d["raw_paho_per_s"] <= d["raw_paho_puback_per_s"]
    assert d["receipt_ratio_met"] == (d["receipt_ratio"] >= d["ratio_goal"])
    (one_round,) = d["per_round"]
    assert one_round["receipt_ratio"] == pytest.approx(d["receipt_ratio"], abs=0.002)
    assert 1 <= d["hub_envelopes"] <= READINGS
    # Every reading went out, in envelopes of at most the stored size each (compressed or not).
    assert d["wire_bytes_per_reading"] <= d["stored_envelope_bytes"] * 1.1
    assert d["batching"] == ("dictionary" in d["publisher_options"])
    if d["batching"]:
        assert d["hub_envelopes"] < READINGS
    assert d["platform_rejected"] == 0
    assert d["platform_receipts_sent"] >= 1
    assert d["resent"] >= 0
    for group in ("cpu_us_per_reading", "platform_cpu_us_per_reading"):
        assert set(d[group]) == PHASES
        assert all(_positive(v) for v in d[group].values()), group
    assert set(d["broker_cpu_us_per_reading"]) == PHASES


@pytest.mark.slow
def test_size_figures_are_complete_and_sane(figures: dict[str, Any]) -> None:
    s = figures["sizes"]
    assert set(s["kinds"]) == KINDS
    for kind, row in s["kinds"].items():
        assert row["kind"] == kind
        assert 0 < row["single_median"] <= row["single_max"]
        assert row["stored_median"] <= row["stored_max"]
        # The dictionary shrinks a reading many times over; a batch shares its overhead.
        assert row["single_median"] * 3 < row["stored_median"], kind
        for n in ("10", "50"):
            assert 0 < row["batch"][n] < row["batch_plain"][n], (kind, n)
            assert row["batch"][n] < row["single_max"], (kind, n)
    assert set(s["goals"]) == GOALS
    for name, goal in s["goals"].items():
        assert goal["met"] == (goal["median"] <= goal["goal_bytes"]), name
    assert s["all_goals_met"] == all(g["met"] for g in s["goals"].values())


@pytest.mark.slow
def test_idle_figures_cover_every_profile(figures: dict[str, Any]) -> None:
    idle = figures["idle"]
    assert idle is not None
    assert set(idle["profiles"]) == set(PROFILES)
    for name, p in idle["profiles"].items():
        assert p["keepalive_s"] == PROFILES[name].keepalive_s
        assert _positive(p["ip_bytes_per_round_trip"]), name
        assert p["ip_bytes_per_day"] == pytest.approx(
            86_400 / p["keepalive_s"] * p["ip_bytes_per_round_trip"], rel=0.01
        )
        assert p["baseline_ip_bytes_per_day"] > p["ip_bytes_per_day"]  # keepalive > 60 s
        assert p["met"] == (p["ip_bytes_per_day"] <= idle["goal_bytes_per_day"])
    assert idle["all_met"] == all(p["met"] for p in idle["profiles"].values())
