"""The end of `sdft run` in the user's experiment tracker: each trained model's evaluation metrics and the
report's verdict, logged where its training loss already is.

Training reports its loss through transformers' own integrations (`train.report_to`, see
sdft.train.session). Once the models are evaluated, `log_final_metrics` adds to each training run's
TensorBoard folder (`train/<method>/seed-N/tensorboard/`) its metrics as `eval/<suite>/<metric>`, the
seed model's as `eval_seed/<suite>/<metric>` (the baseline, in the same view), at the run's last training
step, and the verdict as text. Other trackers keep their runs on their own servers, which a later
process cannot reopen through transformers, so for them a note says where the final metrics are instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdft.core.config import METHODS
from sdft.core.layout import SEED_ROW, eval_dir, seed_dirs, seed_of, train_dir
from sdft.train.session import tensorboard_dir


def read_metrics(eval_folder: Path) -> dict[str, float]:
    """{"<suite>/<metric>": value} of every metrics.json under one model's eval folder (numbers only:
    entries that were not computed carry no value)."""
    found = {}
    for path in sorted(eval_folder.glob("*/metrics.json")):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in entries if isinstance(entries, list) else []:
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[f"{path.parent.name}/{entry.get('name')}"] = float(value)
    return found


def verdict_lines(run: Path) -> list[str]:
    """The report's verdict lines (each method against SFT, prompt by prompt); none without SFT and
    another method evaluated on the same seeds."""
    from sdft.report.build import label, predictions_by_seed
    from sdft.report.verdict import verdict_line, verdicts

    problems: list[str] = []  # unreadable files: the report lists them; here they only drop a line
    predictions = {m: predictions_by_seed(run, m, problems) for m in METHODS}
    return [verdict_line(c, label(m), label("sft")) for m in METHODS if m != "sft"
            for c in verdicts(predictions, m, "sft")]


def last_step(train_folder: Path) -> int:
    """The run's last optimizer step (train_summary.json), where the final metrics are plotted."""
    try:
        return int(json.loads((train_folder / "train_summary.json").read_text(encoding="utf-8"))["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def log_to_tensorboard(run: Path) -> list[Path]:
    """Write the final metrics and the verdict into every training run's TensorBoard folder; returns them."""
    from torch.utils.tensorboard import SummaryWriter

    seed_metrics = read_metrics(eval_dir(run, SEED_ROW))
    verdict = verdict_lines(run)
    written = []
    for method in METHODS:
        for folder in seed_dirs(train_dir(run, method)):
            metrics = read_metrics(eval_dir(run, method, seed_of(folder)))
            if not metrics:
                continue  # not evaluated (yet): nothing final to log
            step = last_step(folder)
            writer = SummaryWriter(log_dir=str(tensorboard_dir(folder)))
            try:
                for name, value in metrics.items():
                    writer.add_scalar(f"eval/{name}", value, step)
                for name, value in seed_metrics.items():
                    writer.add_scalar(f"eval_seed/{name}", value, step)
                if verdict:
                    writer.add_text("verdict", "\n".join(f"- {line}" for line in verdict), step)
            finally:
                writer.close()
            written.append(tensorboard_dir(folder))
    return written


def log_final_metrics(run_dir: str | Path, report_to: list[str], progress: bool = True) -> list[Path]:
    """Log a finished run's evaluation metrics and verdict to the trackers of `report_to` (as
    `train.report_to` takes them); returns the folders written. "none" (the default) logs nothing."""
    import importlib.util

    run = Path(run_dir)
    chosen = [t for t in dict.fromkeys(report_to) if t != "none"]
    to_tensorboard = "tensorboard" in chosen or ("all" in chosen and importlib.util.find_spec("tensorboard"))
    written = log_to_tensorboard(run) if to_tensorboard else []
    if progress and written:
        print(f"      final metrics logged to TensorBoard in {len(written)} training run folder(s)", flush=True)
    others = [t for t in chosen if t not in ("tensorboard", "all")]
    if progress and others:
        print(f"      note: final metrics go to TensorBoard only, not to {', '.join(others)}; they are in "
              f"{run / 'eval'}/*/metrics.json and the report", flush=True)
    return written
