"""The real embedded model (SmolLM2-135M-Instruct) through distill and train on a handful of rows."""

import json

import pytest

from sdft.cli import main

pytestmark = pytest.mark.integration


def test_embedded_model_distill_then_train(tmp_path, capsys):
    out = tmp_path / "distilled.jsonl"
    assert main(["distill", "--model", "default", "--data", "builtin:arithmetic?n=4&seed=7", "--task", "math",
                 "--out", str(out), "--max-new-tokens", "64", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "accepted" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    # the real model writes real text (the tiny random models in unit tests don't)
    assert all(r["distilled"] and len(r["distilled"].split()) >= 3 for r in rows)
    summary = json.loads((tmp_path / "distilled.jsonl.summary.json").read_text())
    assert summary["accepted"] == sum(r["accepted"] for r in rows)

    run = tmp_path / "sdft"
    assert main(["train", "--model", "default", "--data", str(out), "--target", "response", "--out", str(run),
                 "--max-steps", "2", "--set", "batch_size=2"]) == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 2 and all(0.0 < x < 20.0 for x in losses)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
