"""Run one scenario on a fresh virtual home, end to end, and judge it.

In order: the run's identities and dev PKI, mosquitto (TLS, client certificates, the
scenario's persistence), the reference platform (hil/receiver.py, in this process, on a
durable store in the run directory), the virtual radio with the devices that start powered
on, ``homehub run`` as its own process with a generated configuration; then the scenario's
``drive``, then *settling*: the run waits until the platform holds every expected reading and
the outbox is empty (the time to recover ends there). The daemon is stopped with SIGTERM, as
systemd stops it, everything else is closed, and the platform-side checks run
(hil/scenarios/checks.py). Every part's log stays in the run directory: ``agent-<n>.log``
(the daemon's lives), ``mosquitto.log``, ``platform.log`` (receiver, broker control, Bumble
and paho warnings of this process).

On a real rig (hil/rig.py, ``rig`` given) the same, with the rig's radio (each emulated
device on a dongle of its own) in place of the virtual radio and the agent's configuration
written with the rig's stack and modem; a scenario needing what the rig lacks is not run but
reported skipped, with the reason.

Bounds nest: each wait of a scenario is bounded (``Home.until``, 30 s by default), the drive
and settling together by the scenario's ``timeout_s``, the stops by their own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

import structlog

from hil.broker import Broker
from hil.pki import make_dev_pki
from hil.rig import Rig, RigRadio, RigRunError
from hil.scenarios.agent_config import write_agent_config
from hil.scenarios.base import HUB_ID, Check, RunIdentities, Scenario
from hil.scenarios.checks import all_checks, expected_readings, match
from hil.scenarios.home import Home, HomeError
from hil.scenarios.results import Figures, ScenarioResult, percentile
from hil.virtual_radio import VirtualRadio

SETTLE_S: Final = 45.0
"""Settling's own bound, under every scenario's (60 s and more): a receipt timeout (5 s here)
and a resend take seconds."""


@contextlib.contextmanager
def platform_log(path: Path, *, min_level: int = logging.NOTSET) -> Iterator[IO[str]]:
    """Send this process's structlog events (of ``min_level`` and above) and stdlib warnings
    (Bumble, paho) to ``path`` for the run, as JSON lines; the caller's configuration is
    restored afterwards (a test session's own, under pytest)."""
    previous = structlog.get_config()
    with path.open("a", buffering=1) as stream:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(min_level),
            logger_factory=structlog.PrintLoggerFactory(stream),
            cache_logger_on_first_use=False,
        )
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.WARNING)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield stream
        finally:
            root.removeHandler(handler)
            structlog.configure(**previous)


def fresh_directory(path: Path) -> None:
    """``path`` created empty: a run never starts on an earlier run's logs, outbox or
    platform store (a report directory used twice)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def everything_arrived(home: Home) -> bool:
    """Every expected reading arrived at least once."""
    matched, _ = match(home)
    return all(matched.values())


def settled(home: Home) -> bool:
    """Everything arrived, and the outbox (read by the sampler) is empty."""
    return home.outbox_path.is_file() and home.pending == 0 and everything_arrived(home)


async def run_scenario(
    scenario: Scenario, run_dir: Path, *, rig: Rig | None = None
) -> ScenarioResult:
    """Run ``scenario`` in ``run_dir`` (made afresh) and return what it found; on ``rig``
    when given (the virtual home when None), skipped when the rig lacks what it needs."""
    if rig is not None and (reason := rig.skip_reason(scenario)) is not None:
        return ScenarioResult(
            name=scenario.name,
            purpose=scenario.purpose,
            faults=scenario.faults,
            quick=scenario.quick,
            checks=(),
            figures=Figures(),
            skipped=reason,
            rig=rig.name,
        )
    # The agent reads relative paths of its configuration from the file's directory: absolute.
    run_dir = await asyncio.to_thread(run_dir.absolute)
    await asyncio.to_thread(fresh_directory, run_dir)
    started = time.monotonic()
    with platform_log(run_dir / "platform.log"):
        home, error, recovered_at = await _run(scenario, run_dir, rig)
    checks: tuple[Check, ...] = ()
    if home is not None:
        try:
            checks = tuple(all_checks(home))
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed run, reported
            error = error or f"checks failed to run: {type(exc).__name__}: {exc}"
    figures = Figures()
    latencies: list[float] = []
    if home is not None:
        figures, latencies = _figures(home, recovered_at, time.monotonic() - started)
    return ScenarioResult(
        name=scenario.name,
        purpose=scenario.purpose,
        faults=scenario.faults,
        quick=scenario.quick,
        checks=checks,
        figures=figures,
        error=error,
        depth=tuple(home.timeline.depth) if home is not None else (),
        fault_windows=tuple(home.timeline.faults) if home is not None else (),
        latencies_s=tuple(round(x, 4) for x in latencies),
        run_dir=str(run_dir),
        rig=None if rig is None else rig.name,
    )


async def _run(
    scenario: Scenario, run_dir: Path, rig: Rig | None = None
) -> tuple[Home | None, str | None, float | None]:
    """Build the home, drive, settle, stop: (home, error, when it settled)."""
    ids = RunIdentities.fresh()
    pki = await asyncio.to_thread(make_dev_pki, run_dir / "pki", HUB_ID)
    broker = Broker(
        pki,
        run_dir / "broker",
        persistence=scenario.broker_persistence,
        log_path=run_dir / "mosquitto.log",
    )
    home: Home | None = None
    error: str | None = None
    recovered_at: float | None = None
    try:
        await broker.astart()
        async with VirtualRadio() if rig is None else RigRadio(rig) as radio:
            home = Home(scenario, run_dir, pki, ids, broker, radio, rig)
            if rig is not None:
                rig.apply(home)
            async with home.parts, asyncio.TaskGroup() as tg:
                sampler = tg.create_task(home.sample_forever(), name="hil.sampler")
                try:
                    recovered_at = await _drive_and_settle(home)
                except (HomeError, TimeoutError, RigRunError) as exc:
                    error = str(exc) or f"the scenario's bound of {scenario.timeout_s:g} s passed"
                except Exception as exc:  # noqa: BLE001 - a scenario's bug fails that run only
                    error = f"{type(exc).__name__}: {exc}"
                    (run_dir / "runner-traceback.txt").write_text(traceback.format_exc())
                finally:
                    await _stop_all(home)
                    sampler.cancel()
    except Exception as exc:  # noqa: BLE001 - a part that would not start fails that run only
        error = error or f"{type(exc).__name__}: {exc}"
        (run_dir / "runner-traceback.txt").write_text(traceback.format_exc())
    finally:
        await broker.aclose()
    return home, error, recovered_at


def _write_config(home: Home) -> None:
    scenario = home.scenario
    allow_listed = [(i, d) for i, d in enumerate(scenario.devices) if d.delivers]
    write_agent_config(
        home.run_dir,
        stack=home.radio.stack,
        broker_port=home.mqtt_port,
        pki=home.pki,
        ids=home.ids,
        devices=allow_listed,
        receipt_timeout_s=scenario.receipt_timeout_s,
        overrides=home.config_overrides,
    )


async def _drive_and_settle(home: Home) -> float:
    scenario = home.scenario
    async with asyncio.timeout(scenario.timeout_s):
        if scenario.setup is not None:
            await scenario.setup(home)
        await asyncio.to_thread(_write_config, home)
        await home.start_platform(receipts=scenario.platform_receipts)
        for device in scenario.devices:
            if device.starts:
                await home.add_device(device)
        await home.start_agent()
        await scenario.drive(home)
        await home.until(lambda: settled(home), "every reading at the platform", SETTLE_S)
        return home.now()


async def _stop_all(home: Home) -> None:
    if home.agent is not None:
        await home.stop_agent()
    await home.stop_platform()
    await home.stop_devices()


def _figures(
    home: Home, recovered_at: float | None, duration_s: float
) -> tuple[Figures, list[float]]:
    wanted = expected_readings(home)
    matched, _ = match(home)
    latencies = []
    for n, arrivals in matched.items():
        taken = home.timeline.taken.get((wanted[n].label, wanted[n].values))
        if arrivals and taken is not None:
            latencies.append(arrivals[0].at - home.started - taken)
    stats = home.platform_stats()
    duplicates = sum(s.duplicates for s in stats)
    stored = sum(s.verified for s in stats)
    end = home.last_fault_end()
    delivering = [d for d in home.scenario.devices if d.delivers and d.label in home.emulators]
    figures = Figures(
        readings_expected=len(wanted),
        device_sends=sum(d.sends(home.emulators[d.label]) for d in delivering),
        platform_received=stored + duplicates,
        platform_stored=stored,
        duplicates_removed=duplicates,
        time_to_recover_s=None
        if end is None or recovered_at is None
        else round(recovered_at - end, 3),
        latency_p50_s=_rounded(percentile(latencies, 0.5)),
        latency_p99_s=_rounded(percentile(latencies, 0.99)),
        outbox_high_water=max((n for _, n in home.timeline.depth), default=0),
        security_events=len(home.agent_events("security")),
        duration_s=round(duration_s, 2),
    )
    return figures, latencies


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
