"""Training-loss curves as PNG, and the figure style the report's figures share (sdft.report.plots).

Colours are fixed per model so every figure reads the same way: what SFT trains on (the original
responses) shares SFT's colour, what SDFT trains on (the distilled ones) shares SDFT's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402

from sdft.core.io import atomic_write  # noqa: E402

COLORS = {"Seed": "#7f7f7f", "SFT": "#1f77b4", "SDFT": "#ff7f0e",
          "original": "#1f77b4", "distilled": "#ff7f0e"}
FALLBACK_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
LINE_STYLES = ["-", "--", ":", "-."]
DPI = 120


def color_of(name: str, i: int) -> str:
    """Colour by the label's first word, so "original (SFT's targets)" gets the "original" colour and
    "SFT seed-42" SFT's; other names take the i-th fallback colour."""
    return COLORS.get(name.split(" ", 1)[0], FALLBACK_COLORS[i % len(FALLBACK_COLORS)])


def save_png(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    plt.close(fig)
    return path


def plot_losses(curves: dict[str, list[tuple[float, float]]], path: str | Path,
                title: str = "training loss") -> Path:
    """One line per named curve of (step, loss) points. Curves of one model ("SFT seed-1", "SFT seed-2")
    share its colour and differ in line style."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    drawn: dict[str, int] = {}  # colour -> curves drawn in it so far
    for i, (name, points) in enumerate(curves.items()):
        if not points:
            continue
        steps, losses = zip(*points)
        color = color_of(name, i)
        style = LINE_STYLES[drawn.get(color, 0) % len(LINE_STYLES)]
        drawn[color] = drawn.get(color, 0) + 1
        ax.plot(steps, losses, color=color, linestyle=style, linewidth=1.4, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return save_png(fig, path)
