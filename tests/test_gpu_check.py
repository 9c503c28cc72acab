"""The prepared GPU check runs end to end (here on a tiny model, on whatever device there is)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--json", str(out)],
                   check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["training"]["steps"] == 2 and figures["training"]["response_tok_s"] > 0
    generation = figures["generation"]
    assert generation["prompts"] == 8 and generation["a_tok_s"] > 0 and generation["b_tok_s"] > 0
    same, total = map(int, generation["same_tokens"].split("/"))
    assert total == 2 and same == total  # float32 batched greedy gives batch-1's tokens
