"""``homehub status [--json] [--watch [--interval S]]``: the hub at a glance for a technician.

Devices with their last reading's age and battery, the outbox's depth and oldest item's age
and what awaits the platform's receipt, the uplink, the modem's registration and signal, the
clock, storage use and the installed version. Everything is read from the disk
(agent/status_report.py, whose docstring lists the JSON keys), so it works whether or not
the daemon runs, and says which.

- default: one rich table;
- ``--json``: the report as one JSON object on one line;
- ``--watch``: a live view (rich.live.Live) re-read every ``--interval`` seconds (default 2)
  until Ctrl-C, which exits 0; with ``--json``, one JSON line per refresh, for ``| jq``.

Nothing shown is protected health information: counts, times, labels and the last two octets
of a device's address.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.config import Config
from agent.errors import UsageError
from agent.tech.output import json_default

INTERVAL_DEFAULT_S: Final = 2.0
INTERVAL_MIN_S: Final = 0.2
INTERVAL_MAX_S: Final = 3600.0
COUNT_MAX: Final = 1_000_000


def add_parser(sub: Any) -> None:
    """Add the ``status`` subcommand to the ``homehub`` parser."""
    status = sub.add_parser(
        "status",
        help="devices, outbox, uplink, modem, clock, storage and version (a table, or JSON)",
    )
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="one JSON object (a line per refresh)")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval",
        type=float,
        default=INTERVAL_DEFAULT_S,
        help=f"seconds between refreshes with --watch ({INTERVAL_MIN_S}-{INTERVAL_MAX_S:g})",
    )
    # How many refreshes --watch shows before it returns (tests, scripts): not advertised.
    status.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run ``homehub status``."""
    from agent import config, status_report

    interval = _checked_interval(args.interval)
    count = _checked_count(args.count)
    cfg = config.load(args.config)
    if not args.watch:
        report = status_report.status(cfg)
        if args.json:
            sys.stdout.write(to_json_line(report))
        else:
            Console(file=sys.stdout).print(render(report))
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a watch: not a failure
        watch(
            cfg,
            lambda: status_report.status(cfg),
            as_json=args.json,
            interval_s=interval,
            frames=count,
            stop=threading.Event(),
            out=sys.stdout,
        )
    return 0


def _checked_interval(value: float) -> float:
    if not INTERVAL_MIN_S <= value <= INTERVAL_MAX_S:  # NaN fails too
        raise UsageError(
            "--interval", f"{value:g} s is not between {INTERVAL_MIN_S} and {INTERVAL_MAX_S:g} s"
        )
    return value


def _checked_count(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= COUNT_MAX:
        raise UsageError("--count", f"{value} is not between 1 and {COUNT_MAX}")
    return value


def to_json_line(report: dict[str, Any]) -> str:
    """The report as one line of JSON (keys in the report's stable order)."""
    return json.dumps(report, default=json_default) + "\n"


def watch(
    cfg: Config,
    read: Callable[[], dict[str, Any]],
    *,
    as_json: bool,
    interval_s: float,
    frames: int | None,
    stop: threading.Event,
    out: TextIO,
    terminal: bool | None = None,
) -> int:
    """Show ``read()`` every ``interval_s`` until ``stop`` is set or ``frames`` refreshes were
    shown (Ctrl-C raises KeyboardInterrupt through it); returns how many were. A report that
    cannot be read (the outbox being replaced, a disk error) is shown as that error's one
    line, and the watch goes on. On a terminal (``terminal`` None: whether ``out`` is one)
    the table is redrawn in place; elsewhere (a pipe, a file) each refresh follows the last."""

    def frame() -> Any:
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - shown, then read again next refresh
            return {"error": f"{type(exc).__name__}: {exc}", "hub": cfg.hub.id}

    def repeat(show: Callable[[Any], None]) -> int:
        shown = 0
        while not stop.is_set():
            show(frame())
            shown += 1
            if frames is not None and shown >= frames:
                break
            stop.wait(interval_s)
        return shown

    def line(report: Any) -> None:
        out.write(to_json_line(report))
        out.flush()

    if as_json:
        return repeat(line)
    console = Console(file=out, force_terminal=terminal)
    if not console.is_terminal:  # nothing to redraw in place: one table after the other

        def table(report: Any) -> None:
            console.print(render(report))
            out.flush()

        return repeat(table)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        return repeat(lambda report: live.update(render(report), refresh=True))


def _age(seconds: float | None) -> str:
    """``42 s``, ``3 min``, ``5 h``, ``2 d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> Any:
    """The report as rich renderables: the hub's table, then the devices'."""
    if "error" in report:
        return Text(f"homehub status: {report['error']}", style="red")
    hub = Table(title=f"homehub {report['version']}  hub {report['hub']}", show_header=False)
    hub.add_column("what", style="bold")
    hub.add_column("value")
    daemon = report["daemon"]
    if daemon["running"]:
        hub.add_row("daemon", f"running (pid {_or_dash(daemon['pid'])})")
    else:
        stopped = f", stopped {daemon['stopped_at']}" if daemon["stopped_at"] else ""
        hub.add_row("daemon", Text(f"daemon not running{stopped}", style="yellow"))
    uplink = report["uplink"]
    style = {"online": "green", "offline": "red"}.get(uplink["state"], "yellow")
    since = f" for {_age(uplink['for_s'])}" if uplink["for_s"] is not None else ""
    hub.add_row("uplink", Text(f"{uplink['state']}{since}", style=style))
    hub.add_row("last delivery", f"{_age(uplink['last_delivery_age_s'])} ago")
    outbox = report["outbox"]
    hub.add_row(
        "outbox",
        f"{outbox['pending']} pending (awaiting receipt {_or_dash(outbox['awaiting_receipt'])}),"
        f" oldest {_age(outbox['oldest_age_s'])}; {outbox['refused']} refused,"
        f" {outbox['damaged']} damaged",
    )
    storage = report["storage"]
    hub.add_row(
        "storage",
        f"{_bytes(storage['used_bytes'])} of {_bytes(storage['quota_bytes'])} ({storage['level']});"
        f" disk free {_bytes(storage['disk_free_bytes'])}",
    )
    clock = report["clock"]
    synced = {True: "synchronized", False: "NOT synchronized", None: "sync unknown"}
    clock_text = f"system clock {synced[clock['system_synchronized']]}"
    if clock["problem"] is not None:
        clock_text += f"; problem: {clock['problem']}"
    if clock["correction_s"] is not None:
        clock_text += f"; corrected by {clock['correction_s']:+.0f} s (network time)"
    hub.add_row("clock", clock_text)
    hub.add_row("modem", _modem_text(report["modem"]))
    indicator = report["indicator"]
    if indicator["backend"] != "none":
        hub.add_row("indicator", f"{_or_dash(indicator['state'])} ({indicator['backend']})")
    devices = Table(title="devices")
    for column in ("label", "kind", "device", "last reading", "last session", "battery"):
        devices.add_column(column)
    for row in report["devices"]:
        session = _age(row["last_session_age_s"])
        if row["last_session_result"] is not None:
            session += f" ({row['last_session_result']})"
        battery = row["battery_percent"]
        devices.add_row(
            row["label"],
            row["kind"],
            row["device"],
            _age(row["last_reading_age_s"]),
            session,
            "-" if battery is None else f"{battery} %",
        )
    return Group(hub, devices, Text(f"as of {report['as_of']}", style="dim"))


def _modem_text(modem: dict[str, Any]) -> str:
    if modem["backend"] == "none":
        return "none (no cellular modem)"
    figures = modem["figures"]
    if figures is None:
        return f"{modem['backend']}: no figures yet"
    parts = [
        f"{_or_dash(figures.get('registration'))} on {_or_dash(figures.get('technology'))}",
        f"operator {_or_dash(figures.get('operator'))}",
    ]
    if figures.get("rsrp_dbm") is not None:
        parts.append(f"RSRP {figures['rsrp_dbm']} dBm")
    if figures.get("sinr_db") is not None:
        parts.append(f"SINR {figures['sinr_db']} dB")
    return f"{modem['backend']}: " + ", ".join(parts) + f" (as of {_or_dash(modem['as_of'])})"


__all__ = ["add_parser", "render", "run", "to_json_line", "watch"]
