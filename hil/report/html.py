"""One self-contained HTML page for a HIL run: a verdict, the scenario table (purpose,
faults, every check, the figures that matter), the plots (one outbox-depth plot per
scenario, one latency histogram), and, when the fleet scenario ran (hil/fleet/), its section:
its figures (hubs, broker restart, the reconnections' spread, the backlog delivered), its
verdict and its plot (:func:`hil.fleet.plot.plot_connections`). Each plot is embedded as a
``data:`` URI so the page opens alone from a CI artefact, and also written beside it as a PNG
file.

Everything shown comes from the results (counts, check names, figures): no reading value and
no identifier, so the page can be attached to a ticket.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path
from typing import Any, Final

from hil.fleet.figures import STORM_MIN_COUNT, STORM_SHARE, synchronised_storm
from hil.fleet.plot import plot_connections, title
from hil.report.plots import latency_histogram_png, outbox_depth_png
from hil.scenarios.results import FleetResult, ScenarioResult

STYLE: Final = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.35em 0.5em; vertical-align: top; font-size: 0.9em; }
th { background: #eee; text-align: left; }
.pass { color: #176b2c; font-weight: bold; }
.fail { color: #a61b1b; font-weight: bold; }
.skip { color: #8a6d00; font-weight: bold; }
ul { margin: 0; padding-left: 1.1em; }
figure { display: inline-block; margin: 0.5em; }
td.checks { min-width: 24em; }
td.purpose { min-width: 14em; }
table#fleet { width: auto; }
"""
IMAGES_LOADED: Final = """
window.addEventListener("load", () => {
  const ok = [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images-loaded", String(ok));
});
"""
"""Marks how many plots decoded once the page loaded: what the headless-browser test reads."""


def _fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _img(png: bytes, alt: str, file_name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
        f'data-file="{html.escape(file_name)}"><figcaption>{html.escape(alt)}</figcaption>'
        "</figure>"
    )


def _row(result: ScenarioResult) -> str:
    f = result.figures
    verdict = (
        '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    )
    faults = "".join(f"<li>{html.escape(x)}</li>" for x in result.faults)
    checks = "".join(
        f'<li><span class="{"pass" if c.ok else "fail"}">{"ok" if c.ok else "FAILED"}</span> '
        f"{html.escape(c.name)}: {html.escape(c.detail)}</li>"
        for c in result.checks
    )
    if result.error is not None:
        checks += f'<li><span class="fail">ERROR</span> {html.escape(result.error)}</li>'
    if result.skipped is not None:  # on a real rig lacking a part it needs (hil/rig.py)
        verdict = '<span class="skip">SKIPPED</span>'
        checks += f'<li><span class="skip">SKIPPED</span> {html.escape(result.skipped)}</li>'
    cells = [
        f"<td>{html.escape(result.name)}{' (quick)' if result.quick else ''}</td>",
        f"<td>{verdict}</td>",
        f'<td class="purpose">{html.escape(result.purpose)}<ul>{faults}</ul></td>',
        f'<td class="checks"><ul>{checks}</ul></td>',
        f"<td>{f.readings_expected}</td>",
        f"<td>{f.device_sends}</td>",
        f"<td>{f.platform_received}</td>",
        f"<td>{f.platform_stored}</td>",
        f"<td>{f.duplicates_removed}</td>",
        f"<td>{_fmt(f.time_to_recover_s, ' s')}</td>",
        f"<td>{_fmt(f.latency_p50_s, ' s')}</td>",
        f"<td>{_fmt(f.latency_p99_s, ' s')}</td>",
        f"<td>{f.outbox_high_water}</td>",
        f"<td>{f.security_events}</td>",
        f"<td>{_fmt(f.duration_s, ' s')}</td>",
    ]
    state = "skipped" if result.skipped is not None else "passed" if result.passed else "failed"
    name = html.escape(result.name)
    return f'<tr class="scenario" data-name="{name}" data-state="{state}">{"".join(cells)}</tr>'


FLEET_PLOT: Final = "fleet-reconnects.png"


def _fleet_rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, value) of each figure the fleet's table shows."""
    r, s, b, p = f["restart"], f["restart"]["reconnects"], f["boot"], f["platform"]
    storm = synchronised_storm(s)
    return [
        ("hubs", "hubs", f"{f['hubs']}: each its own identity, certificate, outbox and uplink"),
        ("processes", "worker processes", f"{f['processes']} ({f['per_process']} hubs each)"),
        (
            "backlog",
            "backlog",
            f"{f['readings_per_hub']} readings a hub, {f['readings']} in all",
        ),
        ("boot", "boot: every hub connected", f"{b['last_s']:.1f} s (p50 {b['p50_s']:.1f} s)"),
        (
            "restart",
            "broker restart",
            f"{r['mode']}, down {r['down_s']:.1f} s, with {r['held_at_restart']} of {f['readings']}"
            f" readings at the platform; {r['failed_attempts']} connect attempts failed meanwhile",
        ),
        (
            "reconnects",
            "reconnections after the broker was back: first / p50 / p90 / last",
            f"{s['first_s']:.2f} / {s['p50_s']:.2f} / {s['p90_s']:.2f} / {s['last_s']:.2f} s"
            f" ({s['count']} hubs)",
        ),
        (
            "peak",
            "peak reconnections",
            f"{s['max_per_s']} in one second ({s['max_per_s'] / max(1, s['count']):.0%} of the"
            f" hubs; even spread {s['uniform_per_s']:.1f}/s), {s['max_per_100ms']} in 100 ms",
        ),
        ("per-second", "reconnections per second", " ".join(str(n) for n in s["per_s"])),
        (
            "storm",
            "synchronised storm",
            f"{'YES' if storm else 'no'}: {s['max_per_100ms']} of {s['count']} hubs in the"
            " busiest 100 ms",
        ),
        (
            "delivered",
            "backlog readings: expected / delivered / duplicates removed",
            f"{p['readings_expected']} / {p['readings_handed_on']} / {p['duplicates_removed']}",
        ),
        (
            "exactly-once",
            "every reading exactly once",
            f"{'yes' if p['exactly_once'] else 'NO'} ({p['missing']} missing,"
            f" {p['handed_on_twice']} twice, {p['unexpected']} unexpected)",
        ),
        (
            "all-arrived",
            "every backlog arrived",
            f"{f['all_arrived_after_broker_back_s']:.1f} s after the broker was back"
            f" ({f['drain_s']:.1f} s after publishing began)",
        ),
    ]


def _fleet_section(fleet: FleetResult, image: tuple[str, bytes] | None) -> str:
    verdict = '<span class="pass">PASS</span>' if fleet.passed else '<span class="fail">FAIL</span>'
    failures = "".join(
        f'<li><span class="fail">FAILED</span> {html.escape(x)}</li>' for x in fleet.failures()
    )
    rows = [("duration", "duration", _fmt(round(fleet.duration_s, 1), " s"))]
    if fleet.figures:
        rows = _fleet_rows(fleet.figures) + rows
    table = "".join(
        f'<tr data-figure="{key}"><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>'
        for key, label, value in rows
    )
    hubs = fleet.figures.get("hubs", "?")
    plot = _img(image[1], image[0].removesuffix(".png"), image[0]) if image else ""
    return f"""<h2>Fleet: {hubs} hubs, one broker that restarts</h2>
<p>Each hub is the product's own outbox, publisher and uplink (no BLE side) with its own
identity and certificate, several hubs a worker process, all against one mosquitto that
restarts mid-drain; the reference platform verifies, deduplicates and receipts
(<code>python -m hil.fleet</code>, hil/fleet/README.md). It passes when every reading of
every backlog reached the platform exactly once, every hub came back after the restart, and
not in a synchronised storm: more than {STORM_SHARE:.0%} of the hubs in one 100 ms (every one
of them, for fewer than {STORM_MIN_COUNT} hubs).</p>
<p id="fleet-verdict">{verdict}</p><ul id="fleet-failures">{failures}</ul>
<table id="fleet"><tbody>{table}</tbody></table>
<div id="fleet-plots">{plot}</div>
"""


HEADERS: Final = (
    "scenario",
    "verdict",
    "purpose and faults",
    "checks",
    "readings measured",
    "sent by devices",
    "received by platform",
    "stored (new)",
    "duplicates removed",
    "time to recover",
    "latency p50",
    "latency p99",
    "outbox high-water",
    "security events",
    "duration",
)


def render(
    results: list[ScenarioResult],
    images: dict[str, bytes],
    fleet: FleetResult | None = None,
    fleet_image: tuple[str, bytes] | None = None,
) -> str:
    """The page's HTML; ``images``: file name -> PNG, in display order; ``fleet_image``: the
    fleet's plot (file name, PNG)."""
    passed = sum(1 for r in results if r.passed)
    skipped = sum(1 for r in results if r.skipped is not None)
    all_passed = passed == len(results) - skipped and passed > 0 and (fleet is None or fleet.passed)
    also = f", {skipped} skipped" if skipped else ""
    rigs = sorted({r.rig for r in results if r.rig is not None})
    where = (
        "the Bumble virtual radio"
        if not rigs
        else f"the real rig {html.escape(', '.join(rigs))} (hil/rig.py; skipped: what it lacks)"
    )
    verdict_class = "pass" if all_passed else "fail"
    fleet_section = "" if fleet is None else _fleet_section(fleet, fleet_image)
    fleet_summary = ""
    if fleet is not None:
        fleet_summary = (
            f'<p class="{"pass" if fleet.passed else "fail"}" id="fleet-summary">fleet of'
            f" {fleet.figures.get('hubs', '?')} hubs: {'passed' if fleet.passed else 'FAILED'}</p>"
        )
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    rows = "".join(_row(r) for r in results)
    figures = "".join(_img(png, name.removesuffix(".png"), name) for name, png in images.items())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>homehub HIL report</title>
<style>{STYLE}</style><script>{IMAGES_LOADED}</script></head>
<body>
<h1>homehub HIL report</h1>
<p class="{verdict_class}" id="verdict">{passed} of {len(results)} scenarios passed{also}</p>
{fleet_summary}
<p>Made {when}. Each scenario ran the real daemon (<code>homehub run</code>) against a real
mosquitto (TLS, client certificates), the reference platform and emulated devices on
{where}. Latency: from the device holding a reading to the platform's verified,
durable store.</p>
<table id="scenarios"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<h2>Plots</h2>
<div id="plots">{figures}</div>
{fleet_section}<p>Signed off by: ______________________ &nbsp; date: ____________</p>
</body></html>
"""


def write_html(results: list[ScenarioResult], path: Path, fleet: FleetResult | None = None) -> Path:
    """Write ``report.html`` and its PNGs (``<scenario>-outbox.png``, ``latency.png``, the
    fleet's ``fleet-reconnects.png`` when it ran)."""
    images = {f"{r.name}-outbox.png": outbox_depth_png(r) for r in results if r.skipped is None}
    images["latency.png"] = latency_histogram_png(results)
    for name, png in images.items():
        (path.parent / name).write_bytes(png)
    fleet_image = None
    if fleet is not None and fleet.figures:
        fleet_png = path.parent / FLEET_PLOT
        drawn = plot_connections(
            fleet_png, fleet.boot_offsets_s, fleet.reconnect_offsets_s, title(fleet.figures)
        )
        fleet_image = (FLEET_PLOT, fleet_png.read_bytes()) if drawn else None
    path.write_text(render(results, images, fleet, fleet_image))
    return path
