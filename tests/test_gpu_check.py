"""The prepared GPU command runs end to end (here on a tiny model, on whatever device there is)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_command_runs_on_a_tiny_model(tmp_path):
    env = os.environ | {"PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--tiny", "--dtype", "float32",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("gpu-*.json")
    figures = json.loads(path.read_text())
    for name in ("training", "training_checkpointed"):
        t = figures[name]
        assert t["steps"] == 2 and t["batch_size"] == 4 and t["response_tok_s"] > 0
        assert t["estimate_gb"]["total"] > t["estimate_gb"]["runtime"]
        assert t["mean_row_tokens"] == 64  # rows fill max_length, as the memory estimate assumes
    assert figures["training_checkpointed"]["gradient_checkpointing"] is True
    generation = figures["generation"]
    assert generation["prompts"] == 8 and min(generation[k] for k in ("a_tok_s", "b_tok_s", "c_tok_s")) > 0
    # float32: the engine's batched greedy replies are batch-1's and padded generate's, token for token
    assert generation["same_tokens_as_a"] == "2/2" and generation["same_tokens_as_c"] == "4/4"
    run = figures["sdft_run"]
    assert run["returncode"] == 0 and run["report"], run["stderr_tail"]
    assert set(run["train"]) == {"sft", "sdft"} and all(t["steps"] == 2 for t in run["train"].values())
    assert {"seed/gap/metrics.json", "sft/seed-1/retention/metrics.json"} <= set(run["metrics"])
