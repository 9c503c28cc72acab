"""benchmarks/compare_runs.py: two run folders agree, or the differences are named."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path) -> Path:
    (root / "eval" / "seed" / "math").mkdir(parents=True)
    (root / "train" / "sft" / "seed-1").mkdir(parents=True)
    (root / "distilled.jsonl").write_text('{"response": "a"}\n')
    (root / "eval" / "seed" / "math" / "predictions.jsonl").write_text('{"output": "4"}\n')
    (root / "eval" / "seed" / "math" / "metrics.json").write_text(json.dumps(
        [{"suite": "math", "name": "accuracy", "value": 0.5, "low": 0.1, "high": 0.9, "n": 2}]))
    (root / "train" / "sft" / "seed-1" / "train_log.jsonl").write_text(
        json.dumps({"loss": 1.25, "step": 1}) + "\n" + json.dumps({"train_runtime": 3.0}) + "\n")
    return root


def compare(a, b):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare_runs.py"), str(a), str(b)],
                          capture_output=True, text=True, timeout=60)


def test_same_runs_agree_and_each_difference_is_named(tmp_path):
    a = make_run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "train" / "sft" / "seed-1" / "train_log.jsonl").write_text(  # timings are not compared
        json.dumps({"loss": 1.25, "step": 1}) + "\n" + json.dumps({"train_runtime": 9.0}) + "\n")
    same = compare(a, b)
    assert same.returncode == 0 and "same results" in same.stdout
    (b / "distilled.jsonl").write_text('{"response": "b"}\n')
    metrics = json.loads((b / "eval/seed/math/metrics.json").read_text())
    metrics[0]["value"] = 0.75
    (b / "eval/seed/math/metrics.json").write_text(json.dumps(metrics))
    (b / "train/sft/seed-1/train_log.jsonl").write_text(json.dumps({"loss": 1.5, "step": 1}) + "\n")
    diff = compare(a, b)
    assert diff.returncode == 1
    assert "distilled.jsonl: differs" in diff.stdout and "accuracy.value 0.5 vs 0.75" in diff.stdout
    assert "train_log.jsonl: logged losses differ" in diff.stdout and "3 difference(s)" in diff.stdout
