"""`sdft distill` killed at random points resumes to exactly the output of an uninterrupted run.

The real embedded model runs in subprocesses that are SIGKILLed (no cleanup, no handlers), each kill
landing at a random moment after the k-th batch file appears: during generation of the next batch,
while a batch file is being written, or while the model loads. Changing inputs or settings while
partial results are on disk is refused with exit code 2 until --force is given.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdft.cli import main

N, BATCH, NEW_TOKENS = 20, 2, 16  # 10 small batches of about a second each
N_BATCHES = N // BATCH
KILLS = 5


def distill_cmd(out: Path, n: int = N, new_tokens: int = NEW_TOKENS) -> list[str]:
    return [sys.executable, "-m", "sdft.cli", "distill", "--model", "default", "--data",
            f"builtin:arithmetic?n={n}", "--task", "math", "--out", str(out), "--batch-size", str(BATCH),
            "--max-new-tokens", str(new_tokens)]


def env() -> dict[str, str]:
    # One thread: identical arithmetic in every run (and no fighting over shared cores).
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                         "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)


def batch_files(parts: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(parts.glob("batch-*.jsonl"))} if parts.is_dir() else {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run (the first call ever also converts the embedded GGUF into the cache)."""
    out = tmp_path_factory.mktemp("ref") / "distilled.jsonl"
    proc = run(distill_cmd(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.integration
def test_killed_five_times_resumes_to_identical_output(reference, tmp_path):
    out = tmp_path / "distilled.jsonl"
    parts = out.with_name(out.name + ".parts")
    rng = random.Random(1234)
    # Kill once the k-th batch file is on disk, plus a random delay: later kills need later batches.
    # k = -1: a random moment while starting up, before any batch is done.
    targets = sorted(rng.sample(range(-1, N_BATCHES - 2), KILLS))
    seen: dict[str, bytes] = {}
    for k in targets:
        delay = rng.uniform(0.0, 1.0)
        proc = subprocess.Popen(distill_cmd(out), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while len(batch_files(parts)) <= k and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"finished before the kill (target {k}): {err.decode()[-2000:]}"
        assert not out.exists(), "the final file appeared before every batch was done"
        now = batch_files(parts)
        # Nothing lost: every batch saved before is still there, unchanged; each file is whole JSONL.
        assert all(now.get(name) == data for name, data in seen.items())
        for data in now.values():
            rows = [json.loads(line) for line in data.decode().splitlines()]
            assert len(rows) == BATCH and all(set(r) == {"index", "text"} for r in rows)
        assert len(now) >= k + 1
        print(f"kill once {k + 1} batch files are on disk, +{delay:.2f}s: {len(now)} were")
        seen = now

    proc = run(distill_cmd(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == reference.read_bytes()
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    ref_summary = json.loads(reference.with_name(reference.name + ".summary.json").read_text())
    assert summary == ref_summary
    assert not parts.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distilled.jsonl", "distilled.jsonl.summary.json"]


def test_changed_inputs_with_partial_state_need_force(tiny_model, tmp_path, interrupt_generation, capsys):
    """Leftover parts of one run are never mixed into a run with other inputs or settings."""
    out = tmp_path / "d.jsonl"
    parts = out.with_name(out.name + ".parts")

    def distill(data: str, *extra: str, to: Path = out) -> int:
        return main(["distill", "--model", tiny_model, "--task", "math", "--out", str(to), "--batch-size", "2",
                     "--max-new-tokens", "8", "--data", f"builtin:arithmetic?{data}", *extra])

    interrupt_generation(2)
    assert distill("n=8") == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert len(batch_files(parts)) == 2
    interrupt_generation(None)

    for data, extra in (("n=10", ()), ("n=8&seed=1", ()), ("n=8", ("--max-new-tokens", "9")),
                        ("n=8", ("--max-context", "200")), ("n=8", ("--template", "refer"))):
        assert distill(data, *extra) == 2, (data, extra)
        err = capsys.readouterr().err
        assert "--force" in err and str(parts) in err, err
        assert len(batch_files(parts)) == 2 and not out.exists()

    # --force starts over with the new settings; the result equals a clean run's.
    assert distill("n=10", "--force") == 0
    clean = tmp_path / "clean" / "d.jsonl"
    assert distill("n=10", to=clean) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert len(out.read_text().splitlines()) == 10 and not parts.exists()

    # A finished output is refused for other settings too, and left as it is.
    before = out.read_bytes()
    assert distill("n=8") == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    # The same command again is a no-op that reports the saved summary.
    assert distill("n=10") == 0
    assert out.read_bytes() == before
