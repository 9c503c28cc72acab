"""train.report_to: the training loss reaches TensorBoard through transformers' integration, and the final
metrics and verdict of a run land in the same event folder (sdft.recipes.tracking)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from sdft.core.config import TrainConfig, load_config  # noqa: E402
from sdft.core.errors import SetupError  # noqa: E402
from sdft.data.load import load_examples  # noqa: E402
from sdft.recipes.tracking import log_final_metrics  # noqa: E402
from sdft.train.session import tensorboard_dir, trackers  # noqa: E402
from sdft.train.trainer import train  # noqa: E402


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def evaluated(run: Path, row: str, accuracy_right: int, of: int = 20) -> None:
    """An eval folder with a math metrics.json and its per-prompt rows."""
    folder = run / "eval" / row / "math"
    write_jsonl(folder / "predictions.jsonl", [{"id": i, "correct": i < accuracy_right} for i in range(of)])
    (folder / "metrics.json").write_text(json.dumps([{"suite": "math", "name": "accuracy", "value": accuracy_right / of,
                                                      "n": of, "low": 0.0, "high": 1.0}]))


def read_events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_two_steps_to_tensorboard_then_the_final_metrics(tiny_model, tmp_path):
    run = tmp_path / "run"
    out = run / "train" / "sdft" / "seed-1"
    cfg = TrainConfig(max_steps=2, batch_size=2, logging_steps=1, save_steps=50, report_to=["tensorboard"])
    summary = train(tiny_model, load_examples("builtin:arithmetic?n=4"), out, cfg, progress=False)
    assert summary["steps"] == 2

    events = tensorboard_dir(out)
    acc = read_events(events)
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2]
    logged = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert [e.value for e in losses] == pytest.approx(logged, rel=1e-5)

    # The run is evaluated (the seed, SFT and SDFT) and its final metrics go to the same folder.
    evaluated(run, "seed", 5)
    evaluated(run, "sft/seed-1", 4)
    evaluated(run, "sdft/seed-1", 16)
    assert log_final_metrics(run, ["tensorboard"], progress=False) == [events]

    acc = read_events(events)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]  # the loss is still there, beside them
    (final,) = acc.Scalars("eval/math/accuracy")
    assert (final.step, final.value) == (2, pytest.approx(16 / 20))
    (seed,) = acc.Scalars("eval_seed/math/accuracy")
    assert seed.value == pytest.approx(5 / 20)
    (verdict,) = acc.Tensors("verdict/text_summary")
    text = verdict.tensor_proto.string_val[0].decode()
    assert text.startswith("- SDFT solved more held-out math problems than SFT: accuracy +60.0 pts"), text


def test_report_to_none_logs_nothing_and_a_missing_tracker_is_one_line(tmp_path, monkeypatch):
    evaluated(tmp_path, "sdft/seed-1", 3)
    (tmp_path / "train" / "sdft" / "seed-1").mkdir(parents=True)
    assert log_final_metrics(tmp_path, ["none"], progress=False) == []
    assert not tensorboard_dir(tmp_path / "train" / "sdft" / "seed-1").exists()

    assert load_config(None, ["train.report_to=tensorboard,wandb"]).train.report_to == ["tensorboard", "wandb"]
    assert trackers(["none"]) == []
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SetupError, match="train.report_to wandb needs the wandb package"):
        trackers(["tensorboard", "wandb"])
