"""``make hil``: the fault campaign on the virtual home, repeated.

Runs the scenario tests that put the whole chain through faults (broker stopped mid-run, BLE
link dropped mid-transfer, connect timeouts, SIGKILLed agents, poison records, stops
mid-transfer, flooding devices, slow disks) ``--rounds`` times each and
prints one line per round and a summary line of JSON. A flaky recovery path shows up here
long before it shows up in a patient's home. Exit code 0 only if every round passed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
SCENARIOS: Final = (
    "tests/test_end_to_end.py",
    "tests/test_ble_bps_session.py",
    "tests/test_uplink.py",
    "tests/test_publisher.py",
    "tests/test_ble_stop.py",
    "tests/test_ble_floods.py",
    "tests/test_loop_responsive.py",
    "tests/test_collector.py",
    "tests/test_collector_watchdog.py",
    "tests/test_device_quirks.py",
    "tests/test_glucometer_quirks.py",
    "tests/test_gls_download.py",
)


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m hil.campaign", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    present = [s for s in SCENARIOS if (ROOT / s).is_file()]
    failures = 0
    durations: list[float] = []
    for round_no in range(1, args.rounds + 1):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *present],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.monotonic() - started
        durations.append(took)
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(
            f"round {round_no}/{args.rounds}: {'ok' if result.returncode == 0 else 'FAILED'} "
            f"in {took:.1f} s: {last}"
        )
        if result.returncode != 0:
            failures += 1
            print(result.stdout[-4000:])
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "failed": failures,
                "scenarios": present,
                "mean_round_s": round(sum(durations) / len(durations), 2),
            }
        )
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
