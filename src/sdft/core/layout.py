"""Where things live on disk: the run folder of `sdft run`, and the files beside each stage's output.

Run folder:
    config.yaml, environment.json        resolved config, library versions, seeds
    stages.json                          wall time and peak memory of each stage of the latest run
    distilled.jsonl (+ .summary.json)    the distilled training set with provenance
    train/<method>/seed-N/               adapter/, train_log.jsonl, loss.png, train_summary.json,
                                         snapshots/step-K/ (the adapter at the curve's steps)
    eval/seed/<suite>/                   predictions.jsonl, metrics.json, settings.json
    eval/<method>/seed-N/<suite>/        the same, for each method of the config's `methods`
    eval/seed/curve.jsonl                the seed's point of the learning-against-forgetting curve (step 0)
    eval/<method>/seed-N/curve.jsonl     one row per measured checkpoint of that training run
    loss_curves.png, plots/, report.md, report.html

A stage's output `out` (a file or a folder) has beside it `<out>.summary.json` (distill: written last,
the done marker), `<out>.parts/` (resumable partial results) and `<out>.lock` (who is writing it).
"""

from __future__ import annotations

import re
from pathlib import Path

SEED_ROW = "seed"  # the seed model's evaluation folder under eval/
SEED_DIR = re.compile(r"seed-(\d+)")


def summary_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".summary.json")


def parts_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def distilled_path(run: str | Path) -> Path:
    return Path(run) / "distilled.jsonl"


def distilled_columns(target: str) -> dict[str, str]:
    """How a distilled JSONL is read for training: the original prompt parts, and one response column
    (`response`: the kept rewrite; `original`: the reference)."""
    return {"prompt": "instruction", "input": "input", "response": target}


def train_dir(run: str | Path, method: str, seed: int | None = None) -> Path:
    """train/<method>/seed-N, or without a seed the method's folder that holds them."""
    base = Path(run) / "train" / method
    return base if seed is None else base / f"seed-{seed}"


def eval_dir(run: str | Path, method: str, seed: int | None = None) -> Path:
    """eval/seed for the seed model (method "seed"), else eval/<method>/seed-N."""
    base = Path(run) / "eval" / method
    return base if seed is None else base / f"seed-{seed}"


def snapshot_dir(train_folder: str | Path, step: int | None = None) -> Path:
    """train/<method>/seed-N/snapshots, or its step-K adapter."""
    base = Path(train_folder) / "snapshots"
    return base if step is None else base / f"step-{step}"


def snapshot_steps(train_folder: str | Path) -> list[int]:
    """Steps of the complete adapter snapshots of one training run, ascending."""
    base = snapshot_dir(train_folder)
    if not base.is_dir():
        return []
    steps = [int(p.name[5:]) for p in base.iterdir() if re.fullmatch(r"step-\d+", p.name)
             and (p / "adapter_config.json").is_file()]
    return sorted(steps)


def curve_path(eval_folder: str | Path) -> Path:
    """The learning-against-forgetting rows of one model's evaluation folder (sdft.evaluate.curve)."""
    return Path(eval_folder) / "curve.jsonl"


def seed_dirs(parent: str | Path) -> list[Path]:
    """`parent/seed-N` folders in numeric order (seed-2 before seed-10)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    dirs = [p for p in parent.iterdir() if p.is_dir() and SEED_DIR.fullmatch(p.name)]
    return sorted(dirs, key=lambda p: int(SEED_DIR.fullmatch(p.name).group(1)))


def seed_of(folder: str | Path) -> int:
    """N of a `seed-N` folder."""
    return int(SEED_DIR.fullmatch(Path(folder).name).group(1))
