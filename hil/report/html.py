"""One self-contained HTML page for a HIL run: a verdict, the scenario table (purpose,
faults, every check, the figures that matter), and the plots (one outbox-depth plot per
scenario, one latency histogram), each embedded as a ``data:`` URI so the page opens alone
from a CI artefact, and also written beside it as a PNG file.

Everything shown comes from the results (counts, check names, figures): no reading value and
no identifier, so the page can be attached to a ticket.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path
from typing import Final

from hil.report.plots import latency_histogram_png, outbox_depth_png
from hil.scenarios.results import ScenarioResult

STYLE: Final = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.35em 0.5em; vertical-align: top; font-size: 0.9em; }
th { background: #eee; text-align: left; }
.pass { color: #176b2c; font-weight: bold; }
.fail { color: #a61b1b; font-weight: bold; }
ul { margin: 0; padding-left: 1.1em; }
figure { display: inline-block; margin: 0.5em; }
td.checks { min-width: 24em; }
td.purpose { min-width: 14em; }
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
    return f'<tr class="scenario" data-name="{html.escape(result.name)}">{"".join(cells)}</tr>'


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


def render(results: list[ScenarioResult], images: dict[str, bytes]) -> str:
    """The page's HTML; ``images``: file name -> PNG, in display order."""
    passed = sum(1 for r in results if r.passed)
    verdict_class = "pass" if passed == len(results) and results else "fail"
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    rows = "".join(_row(r) for r in results)
    figures = "".join(_img(png, name.removesuffix(".png"), name) for name, png in images.items())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>homehub HIL report</title>
<style>{STYLE}</style><script>{IMAGES_LOADED}</script></head>
<body>
<h1>homehub HIL report</h1>
<p class="{verdict_class}" id="verdict">{passed} of {len(results)} scenarios passed</p>
<p>Made {when}. Each scenario ran the real daemon (<code>homehub run</code>) against a real
mosquitto (TLS, client certificates), the reference platform and emulated devices on the
Bumble virtual radio. Latency: from the device holding a reading to the platform's verified,
durable store.</p>
<table id="scenarios"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<h2>Plots</h2>
<div id="plots">{figures}</div>
<p>Signed off by: ______________________ &nbsp; date: ____________</p>
</body></html>
"""


def write_html(results: list[ScenarioResult], path: Path) -> Path:
    """Write ``report.html`` and its PNGs (``<scenario>-outbox.png``, ``latency.png``)."""
    images = {f"{r.name}-outbox.png": outbox_depth_png(r) for r in results}
    images["latency.png"] = latency_histogram_png(results)
    for name, png in images.items():
        (path.parent / name).write_bytes(png)
    path.write_text(render(results, images))
    return path
