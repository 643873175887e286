"""The picture next to the text report: one panel per row, the distribution of its
samples per contender (box: p25-p75 and median, whiskers: p1-p99; every sample drawn
as a dot where there are few)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

_SCALE = {"us": (1e6, "microseconds per call"), "s": (1.0, "seconds"), "MB": (1.0, "MB"),
          "specs/s": (1.0, "specs per second"), "ops/s": (1.0, "operations per second"),
          "rows/s": (1.0, "rows per second")}


class PlotRow(Protocol):
    name: str
    unit: str
    samples: Mapping[str, Sequence[float]]


def plot_rows(rows: Sequence[PlotRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = 3
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 5.4, nrows * 2.4), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        factor, label = _SCALE.get(row.unit, (1.0, row.unit))
        names = list(row.samples)
        data = [[v * factor for v in row.samples[n]] for n in names]
        ax.boxplot(data, vert=False, whis=(1, 99), showfliers=False, widths=0.6)
        for i, values in enumerate(data, start=1):
            if len(values) <= 60:
                ax.plot(values, [i] * len(values), "o", markersize=3, alpha=0.6, color="tab:blue")
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
        ax.set_title(row.name, fontsize=7.5)
        ax.set_xlabel(label, fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
