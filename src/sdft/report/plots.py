"""The report's figures as PNG files: the learning-against-forgetting curves, overlaid histograms, a
metric bar chart, and the training-loss curves, which are training's own plot
(sdft.train.plots.plot_losses), drawn in the same style.

Each function takes plain numbers (no run-folder knowledge) and writes one PNG atomically, in the
colours of sdft.train.plots: one per model, on every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sdft.train.plots import FALLBACK_COLORS, color_of, plot_losses, save_png  # noqa: E402

__all__ = ["learning_forgetting", "histogram", "bar_chart", "plot_losses"]

# (value, distance down to the interval's low end, distance up to its high end)
Bar = tuple[float, float, float]
# (training step, task value, forgetting value) of one checkpoint
Point = tuple[int, float, float]


def distinct_colors(names: list[str]) -> dict[str, str]:
    """The shared colour of each name (color_of), but never one colour for two names: "SDFT" and
    "SDFT (on-policy)" share a first word and would otherwise share SDFT's colour."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        color = color_of(name, i)
        if color in out.values():
            color = next((c for c in FALLBACK_COLORS if c not in out.values()), "#333333")
        out[name] = color
    return out


def _labelled(points: list[Point], k: int) -> list[Point]:
    """Up to k checkpoints spread along a curve, the last included; the seed's point has its own mark."""
    trained = [p for p in points if p[0] > 0]
    if len(trained) <= k:
        return trained
    picks = np.linspace(0, len(trained) - 1, k).round().astype(int)
    return [trained[i] for i in sorted(set(picks.tolist()))]


def learning_forgetting(curves: dict[str, tuple[list[list[Point]], list[Point]]], path: str | Path,
                        xlabel: str, ylabel: str, title: str, seed_point: tuple[float, float] | None = None,
                        labelled_steps: int = 4) -> Path:
    """x: task learning, y: forgetting; per method, {name: (each training seed's points, mean points)},
    each in step order. Every seed is a thin line, the mean a bold line with a dot per checkpoint and a
    few steps written beside it; the seed model's point is a black star where given."""
    if not any(mean or seeds for seeds, mean in curves.values()):
        raise ValueError("learning_forgetting needs at least one curve with points")
    colors = distinct_colors(list(curves))
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for name, (seeds, mean) in curves.items():
        color = colors[name]
        for points in seeds:
            if points:
                ax.plot([p[1] for p in points], [p[2] for p in points], color=color, linewidth=0.7, alpha=0.45)
        if mean:
            ax.plot([p[1] for p in mean], [p[2] for p in mean], color=color, linewidth=2.2, marker="o",
                    markersize=4, label=f"{name} (mean of {len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
            for step, x, y in _labelled(mean, labelled_steps):
                ax.annotate(f"{step}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=color)
    if seed_point is not None:
        ax.plot([seed_point[0]], [seed_point[1]], marker="*", markersize=13, color="black", linestyle="none",
                label="seed model (step 0)", zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


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
