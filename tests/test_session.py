"""`sdft train` killed mid-run resumes to the same steps, losses and adapter as an uninterrupted run.

Each kill is a real SIGKILL that the training process sends itself at a chosen place: in the middle of
an optimizer step, while a checkpoint is half written, with trainer_state.json cut off, and after the
adapter is saved but before the summary. The reruns must pass over the broken checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.cli import main
from sdft.train.session import latest_checkpoint

STEPS, SAVE = 12, 4

KILLER = r'''
import os, signal, sys
from transformers import Trainer, TrainerState
import sdft.train.session as trainer_module

step, where = int(os.environ["KILL_STEP"]), os.environ["KILL_WHERE"]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

if where == "step":  # gradients computed, not yet applied
    orig_step = Trainer.training_step
    def training_step(self, *args, **kwargs):
        loss = orig_step(self, *args, **kwargs)
        if self.state.global_step == step:
            die()
        return loss
    Trainer.training_step = training_step
elif where == "save":  # the checkpoint's weights and optimizer are on disk, its RNG and trainer state not
    orig_rng = Trainer._save_rng_state
    def _save_rng_state(self, output_dir):
        if self.state.global_step == step:
            die()
        return orig_rng(self, output_dir)
    Trainer._save_rng_state = _save_rng_state
elif where == "state":  # trainer_state.json cut off half-way
    orig_json = TrainerState.save_to_json
    def save_to_json(self, path):
        orig_json(self, path)
        if self.global_step == step:
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            die()
    TrainerState.save_to_json = save_to_json
elif where == "summary":  # training done, adapter and log saved, the done-marker not yet
    orig_write = trainer_module.write_json
    def write_json(path, obj):
        if os.path.basename(path) == "train_summary.json":
            die()
        return orig_write(path, obj)
    trainer_module.write_json = write_json

from sdft.cli import main
from sdft.train.session import latest_checkpoint
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    with open(path, "w") as f:
        for i in range(24):
            prompt = f"Question {i}: " + " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(rng.randint(3, 30)))
            response = " ".join(rng.choice(["one", "two", "three"]) for _ in range(rng.randint(5, 40)))
            f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
    return path


def train_args(model: str, data: Path, out: Path) -> list[str]:
    # A high learning rate so the loss moves, and lora_dropout > 0 so the RNG state matters.
    return ["train", "--model", model, "--data", str(data), "--out", str(out), "--max-steps", str(STEPS),
            "--set", f"save_steps={SAVE}", "--set", "batch_size=2", "--set", "learning_rate=0.01",
            "--set", "lora_dropout=0.1"]


def run(args: list[str], kill_at: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if kill_at:
        env |= {"KILL_STEP": str(kill_at[0]), "KILL_WHERE": kill_at[1]}
        cmd = [sys.executable, "-c", KILLER, *args]
    else:
        cmd = [sys.executable, "-m", "sdft.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_killed_train_resumes_like_uninterrupted(tiny_model, data_file, tmp_path):
    ref = tmp_path / "ref"
    proc = run(train_args(tiny_model, data_file, ref))
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "killed"
    args = train_args(tiny_model, data_file, out)
    checkpoints = out / "checkpoints"
    for kill_at, expect_latest in (((6, "step"), 4), ((8, "save"), 4), ((8, "state"), 4), ((STEPS, "summary"), 12)):
        proc = run(args, kill_at)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr[-3000:])
        assert not (out / "train_summary.json").exists()
        if kill_at[1] in ("save", "state"):  # a checkpoint-8 is on disk, but not whole
            assert (checkpoints / "checkpoint-8" / "adapter_model.safetensors").is_file()
        assert latest_checkpoint(checkpoints) == str(checkpoints / f"checkpoint-{expect_latest}"), kill_at

    proc = run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = json.loads((ref / "train_summary.json").read_text())
    got = json.loads((out / "train_summary.json").read_text())
    assert got["steps"] == want["steps"] == STEPS
    assert got["resumed_from"].endswith(f"checkpoint-{STEPS}")
    assert got["final_loss"] == pytest.approx(want["final_loss"], rel=0.01)
    # Stronger: every step's loss and the mean over all steps are the same, and so are the weights.
    assert [s for s, _ in losses(out)] == [s for s, _ in losses(ref)] == list(range(1, STEPS + 1))
    assert [x for _, x in losses(out)] == pytest.approx([x for _, x in losses(ref)], rel=1e-4)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    a, b = adapter(out), adapter(ref)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].allclose(b[name], rtol=1e-4, atol=1e-6), name


def test_changed_settings_with_leftover_state_need_force(tiny_model, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--model", tiny_model, "--data", str(data_file), "--out", str(out), "--max-steps", "2",
            "--set", "save_steps=1", "--set", "batch_size=2"]
    assert main(base) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    # Done: the same command returns at once; other settings are refused.
    assert main(base) == 0
    assert main(base + ["--set", "learning_rate=0.001"]) == 2
    assert "--force" in capsys.readouterr().err
    # Checkpoints without a summary (a killed run): other data is refused, the summary is not rewritten.
    (out / "train_summary.json").unlink()
    assert main(base + ["--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "checkpoints" in err
    # Changing only how often checkpoints are saved is not a different run.
    assert main(base[:-4] + ["--set", "save_steps=5", "--set", "batch_size=2"]) == 0
    again = json.loads((out / "train_summary.json").read_text())
    # Resumed from its final checkpoint: no extra step, the same loss and mean loss.
    assert again["steps"] == summary["steps"] and again["resumed_from"].endswith("checkpoint-2")
    assert again["final_loss"] == summary["final_loss"]
    assert again["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-6)
    assert main(base + ["--limit", "10", "--force"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["rows"] == 10
