"""A PNG of the fleet's connections over time, when matplotlib is installed.

matplotlib is a development extra, imported only here and only when a plot is asked for, so
the fleet runs without it (:func:`plot_connections` then says so and draws nothing).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hil.fleet.figures import BUCKET_S


def plotting_available() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def title(figures: Mapping[str, Any]) -> str:
    """The plot's title from a run's figures: hubs, restart mode, outage."""
    r = figures["restart"]
    return f"{figures['hubs']} hubs, broker restart ({r['mode']}, down {r['down_s']:.1f} s)"


def plot_connections(
    path: Path, boot_offsets_s: Sequence[float], reconnect_offsets_s: Sequence[float], title: str
) -> bool:
    """Draw connections per second at boot and after the broker restart into ``path``, each
    with the hubs connected so far over time; False (nothing written) without matplotlib."""
    if not plotting_available():
        return False
    import matplotlib  # optional: imported only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), constrained_layout=True)
    panels = (
        (axes[0], boot_offsets_s, "seconds after the fleet booted", "connects a second"),
        (axes[1], reconnect_offsets_s, "seconds after the broker was back", "reconnects a second"),
    )
    for ax, offsets, xlabel, ylabel in panels:
        shown = [max(0.0, t) for t in offsets]
        edges = [i * BUCKET_S for i in range(math.floor(max(shown, default=0.0)) + 2)]
        ax.hist(shown, bins=edges, color="tab:blue", edgecolor="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        so_far = ax.twinx()
        ordered = sorted(shown)
        so_far.step(ordered, range(1, len(ordered) + 1), where="post", color="tab:orange")
        so_far.set_ylabel("hubs connected", color="tab:orange")
        so_far.set_ylim(bottom=0)
    axes[0].set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
