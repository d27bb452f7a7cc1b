"""``homehub doctor``: a checklist of what a hub needs, each check passed, failed (with the
fix) or skipped (with the reason); the exit code is the number of failures.

The checks, in order (docs/doctor.md says what each looks at and every fix): configuration
valid, the daemon, key files and permissions, certificates, the key provider, the state and
outbox directories, disk space, the BLE adapter, modem and SIM, registration, the clock, the
platform over TLS, the unit's hardening. Each runs under its own timeout; one that fails,
raises or times out is one failed line and never stops the others. A configuration that does
not load is one failure; the checks that need it are skipped (the unit is still rated).

Nothing printed holds a reading, a patient id, a full device address or key material.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from agent.errors import ConfigError, HubError
from agent.tech import doctor_links, doctor_probes
from agent.tech.doctor_probes import Context, off_loop
from agent.tech.doctor_report import CheckResult, exit_code, print_table, to_json

DEFAULT_CONFIG: Final = Path("/etc/homehub/homehub.toml")

Found = CheckResult | list[CheckResult]
Probe = Callable[[Context], Awaitable[Found]]


def threaded(probe: Callable[[Context], Found]) -> Probe:
    """A blocking probe, run off the event loop (:func:`~agent.tech.doctor_probes.off_loop`)."""

    async def run(ctx: Context) -> Found:
        return await off_loop(lambda: probe(ctx), f"doctor.{probe.__name__}")

    return run


CHECKS: Final[tuple[tuple[str, Probe, float], ...]] = (
    ("daemon", doctor_probes.daemon, 10.0),
    ("key files", threaded(doctor_probes.key_files), 10.0),
    ("certificates", threaded(doctor_probes.certificates), 10.0),
    ("key provider", threaded(doctor_probes.key_provider), 20.0),
    ("directories", threaded(doctor_probes.directories), 10.0),
    ("disk space", threaded(doctor_probes.disk_space), 10.0),
    ("BLE adapter", doctor_links.ble_adapter, 15.0),
    ("modem and SIM", doctor_links.modem, 40.0),
    ("clock synchronized", doctor_links.clock, 15.0),
    ("platform reachable (TLS)", doctor_links.platform, 15.0),
    ("unit hardening", doctor_probes.unit_hardening, 30.0),
)
"""Name (for a check that fails as a whole), probe, and the bound of its run (s): each
above the probe's own timeouts, so a probe's own finding wins over the runner's."""

NEEDS_NO_CONFIG: Final = frozenset({"unit hardening"})


def add_parser(sub: Any) -> None:
    """Add the ``doctor`` subcommand to the ``homehub`` parser."""
    doctor = sub.add_parser(
        "doctor",
        help="a checklist with the fix for each failure; the exit code is the number of failures",
    )
    doctor.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    doctor.add_argument("--json", action="store_true", help="a JSON list of the results")
    doctor.add_argument(
        "--unit",
        type=Path,
        help="the unit file to rate (default: the installed homehub.service, else the source"
        " tree's)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``homehub doctor``: print the checklist, return the number of failures."""
    from agent import logs

    logs.configure("error")  # the checklist is the output; the probes' info logs are not
    console = Console(stderr=True)
    shown = not args.json and console.is_terminal

    def progress(name: str) -> None:
        if shown:
            console.print(f"checking {name}…", style="dim")

    results = asyncio.run(run_checks(args.config, unit=args.unit, on_check=progress))
    if args.json:
        sys.stdout.write(to_json(results) + "\n")
    else:
        print_table(results, Console(highlight=False))
    return exit_code(results)


async def run_checks(
    config_path: Path,
    *,
    unit: Path | None = None,
    on_check: Callable[[str], None] = lambda _name: None,
    checks: Sequence[tuple[str, Probe, float]] = CHECKS,
) -> list[CheckResult]:
    """Every check of ``checks``, in order (module docstring)."""
    from agent import config
    from agent.instance_lock import running_pid

    on_check("configuration")
    try:
        cfg = config.load(config_path)
    except ConfigError as exc:
        results = [
            CheckResult.failed(
                "configuration",
                str(exc),
                "correct it (homehub check-config FILE; homehub config-schema lists every"
                " key), or re-provision the hub (homehub provision)",
            )
        ]
        for name, probe, timeout_s in checks:
            if name in NEEDS_NO_CONFIG:
                on_check(name)
                results.extend(await _run_one(name, probe, _NoConfig(unit), timeout_s))
            else:
                results.append(CheckResult.skipped(name, "the configuration does not load"))
        return results
    results = [
        CheckResult.passed("configuration", f"{cfg.source}: valid, {len(cfg.devices)} device(s)")
    ]
    ctx = Context(cfg, running_pid(cfg.hub.state_dir), dt.datetime.now(dt.UTC), unit)
    for name, probe, timeout_s in checks:
        on_check(name)
        results.extend(await _run_one(name, probe, ctx, timeout_s))
    return results


class _NoConfig:
    """What the checks that need no configuration get when it does not load."""

    def __init__(self, unit: Path | None) -> None:
        self.unit = unit


async def _run_one(name: str, probe: Probe, ctx: Any, timeout_s: float) -> Sequence[CheckResult]:
    """One check under its bound; its failure or exception is one failed line."""
    try:
        async with asyncio.timeout(timeout_s):
            found = await probe(ctx)
    except TimeoutError:
        return [
            CheckResult.failed(
                name,
                f"no answer within {timeout_s:.0f} s",
                "see docs/doctor.md for what this check asks, and ask it by hand",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
        what = f": {exc}" if isinstance(exc, HubError) else ""
        return [
            CheckResult.failed(
                name,
                f"the check failed: {type(exc).__name__}{what}",
                "report it with the output of homehub doctor --json",
            )
        ]
    return found if isinstance(found, list) else [found]
