"""Scale-out on one machine: `accelerate launch` with 2 processes, for training and for distillation.

On a machine without GPUs, `--multi_gpu` makes accelerate start 2 CPU processes joined by gloo,
which is enough to check the bookkeeping: DDP training reports world size 2 and writes one adapter;
sharded distillation writes every row once, in input order, with the texts of a 1-process run.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xdist_group("scale_out")  # two launches at once would fight over 2 cores

TIMEOUT = 180  # seconds per command; each takes ~10 s on an idle 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _launch(args: list[str], cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "sdft.cli", *args]
    return _run(cmd, cwd)


def _run(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-5000:]}"
    return out


def test_two_process_training(tiny_model, tmp_path):
    data = tmp_path / "train.jsonl"
    with data.open("w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."}) + "\n")
    out = tmp_path / "run"
    _launch(["train", "--model", tiny_model, "--data", str(data), "--out", str(out), "--max-steps", "4"], tmp_path)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 4
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def _assert_each_process_on_its_device(out: subprocess.CompletedProcess) -> None:
    """Every process logs where its model copy went; it must be the device accelerate gave that process
    (on GPUs cuda:0, cuda:1, ...; here, without GPUs, the CPU)."""
    import re

    found = re.findall(r"sdft: process (\d) of 2 loaded \S+ on (\S+) \(its accelerate device: (\S+)\)",
                       out.stderr + out.stdout)
    assert sorted(rank for rank, _, _ in found) == ["0", "1"], out.stderr[-3000:]

    def same(device: str) -> str:  # the CPU has one device, named cpu or cpu:0
        return "cpu" if device.startswith("cpu") else device

    for _, loaded_on, assigned in found:
        assert same(loaded_on) == same(assigned)


def test_sharded_generation_each_process_on_its_device(tiny_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(6)))
    common = ["generate", "--model", tiny_model, "--data", str(data), "--max-new-tokens", "6", "--batch-size", "2"]
    _run([sys.executable, "-m", "sdft.cli", *common, "--out", str(tmp_path / "one.jsonl")], tmp_path)
    _assert_each_process_on_its_device(_launch([*common, "--out", str(tmp_path / "two.jsonl")], tmp_path))
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()


def test_sharded_distillation_equals_one_process(tiny_model, tmp_path):
    from sdft.data.load import load_examples

    source = "builtin:arithmetic?n=24"
    common = ["distill", "--model", tiny_model, "--data", source, "--task", "math",
              "--max-new-tokens", "8", "--batch-size", "4"]
    _run([sys.executable, "-m", "sdft.cli", *common, "--out", str(tmp_path / "one.jsonl")], tmp_path)
    launched = _launch([*common, "--out", str(tmp_path / "two.jsonl")], tmp_path)
    _assert_each_process_on_its_device(launched)

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    one, two = rows("one.jsonl"), rows("two.jsonl")
    expected = [ex.id for ex in load_examples(source)]
    assert [r["id"] for r in two] == expected  # every row once, in input order: no duplicates, no gaps
    assert [r["id"] for r in one] == expected
    assert [r["distilled"] for r in two] == [r["distilled"] for r in one]
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()  # the merged file: identical
    assert not (tmp_path / "two.jsonl.parts").exists()
