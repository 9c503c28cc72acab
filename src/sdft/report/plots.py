"""The report's figures as PNG files: overlaid histograms, a metric bar chart, and the training-loss
curves, which are training's own plot (sdft.train.plots.plot_losses), drawn in the same style.

Each function takes plain numbers (no run-folder knowledge) and writes one PNG atomically, in the
colours of sdft.train.plots: one per model, on every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sdft.train.plots import color_of, plot_losses, save_png  # noqa: E402

__all__ = ["histogram", "bar_chart", "plot_losses"]

# (value, distance down to the interval's low end, distance up to its high end)
Bar = tuple[float, float, float]


def histogram(series: dict[str, list[float]], path: str | Path, title: str, xlabel: str) -> Path:
    """Overlaid histograms on shared bins; y is the fraction of each series so unequal sizes compare."""
    series = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    if not series:
        raise ValueError("histogram needs at least one non-empty series")
    pooled = np.concatenate(list(series.values()))
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi - lo < 1e-9:  # all equal: widen so there is a visible bin
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, x) in enumerate(series.items()):
        color = color_of(name, i)
        mean = float(x.mean())
        ax.hist(x, bins=bins, weights=np.full(x.size, 1.0 / x.size), alpha=0.5, color=color,
                edgecolor=color, linewidth=0.8, label=f"{name} (mean {mean:.3f}, n={x.size})")
        ax.axvline(mean, color=color, linestyle="--", linewidth=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of rows")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def bar_chart(groups: list[str], series: dict[str, list[Bar | None]], path: str | Path, ylabel: str,
              title: str, ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: one group per metric, one bar per model, with asymmetric error bars; None = no bar."""
    if not groups or not series:
        raise ValueError("bar_chart needs at least one group and one series")
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(4.8, 1.4 * len(groups) + 2.6), 4.0))
    for i, (name, bars) in enumerate(series.items()):
        pos = [x[g] + (i - (len(series) - 1) / 2) * width for g, b in enumerate(bars) if b is not None]
        vals = [b for b in bars if b is not None]
        if not vals:
            continue
        ax.bar(pos, [v[0] for v in vals], width=width, color=color_of(name, i), label=name,
               yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]), capsize=3,
               error_kw={"elinewidth": 1.0, "ecolor": "#333333"})
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                  fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars can reach 100%
    return save_png(fig, path)
