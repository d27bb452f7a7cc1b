"""The report's plots, drawn with matplotlib on its Agg backend (no display needed):

- the outbox's depth over time for one scenario, with its faults shaded: how far a fault
  lets readings pile up on the hub, and how fast they drain;
- the measurement -> platform latency histogram over every scenario of the run.

Each returns PNG bytes; the HTML page embeds them as ``data:`` URIs and writes them beside
itself. Figures are made with matplotlib's object API on an Agg canvas, never pyplot: no
display, no global figure state between scenarios.
"""

from __future__ import annotations

import io
from typing import Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hil.scenarios.results import ScenarioResult

SIZE_IN: Final = (6.4, 2.6)
DPI: Final = 96


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=SIZE_IN)
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def outbox_depth_png(result: ScenarioResult) -> bytes:
    """Pending records over time, faults shaded."""
    figure, axes = _figure()
    if result.depth:
        times = [t for t, _ in result.depth]
        depth = [n for _, n in result.depth]
        axes.step(times, depth, where="post", color="#1f5fa8", linewidth=1.4, label="pending")
    end = result.depth[-1][0] if result.depth else result.figures.duration_s
    for n, (name, start, stop) in enumerate(result.fault_windows):
        axes.axvspan(
            start,
            stop if stop is not None else end,
            color="#d9534f",
            alpha=0.18,
            label="fault" if n == 0 else None,
        )
        del name
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("records pending")
    axes.set_title(f"{result.name}: outbox depth")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if result.depth or result.fault_windows:
        axes.legend(loc="upper right", fontsize="small")
    return _png(figure)


def latency_histogram_png(results: list[ScenarioResult]) -> bytes:
    """Measurement -> platform latency of every reading of the run, stacked by scenario."""
    figure, axes = _figure()
    series = [(r.name, [x * 1000 for x in r.latencies_s]) for r in results if r.latencies_s]
    if series:
        top = max(max(values) for _, values in series)
        axes.hist(
            [values for _, values in series],
            bins=30,
            range=(0, top * 1.05 or 1.0),
            stacked=True,
            label=[name for name, _ in series],
        )
        axes.legend(loc="upper right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no readings arrived", ha="center", va="center")
    axes.set_xlabel("measurement -> platform (ms)")
    axes.set_ylabel("readings")
    axes.set_title("latency")
    axes.grid(alpha=0.3)
    return _png(figure)
