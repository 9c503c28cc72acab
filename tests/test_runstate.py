"""Run state (sdft.core.runstate): one process at a time writes an output, and resume keys."""

import json
import os
import subprocess
import sys
import time

import pytest

from sdft.core.runstate import RunLockedError, fingerprint, hold, lock_path


def test_hold_refuses_a_second_holder_and_nests_in_one_process(tmp_path):
    out = tmp_path / "out.jsonl"
    with hold(out):
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid()
        with hold(out):  # the same process again (a stage inside a command): no deadlock
            pass
        assert lock_path(out).exists()
        other = subprocess.run([sys.executable, "-c", "import sys; from sdft.core.runstate import hold\n"
                                f"with hold({str(out)!r}): pass"], capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and "RunLockedError" in other.stderr and f"pid {os.getpid()}" in other.stderr
    assert not lock_path(out).exists()  # removed on the way out
    with hold(out):  # and free again
        pass


def test_a_killed_holder_leaves_the_output_free(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from sdft.core.runstate import hold\n"
                               f"with hold({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        with hold(out):
            pass
    holder.kill()
    holder.wait()
    with hold(out):  # the kernel dropped the dead holder's lock; its file is taken over
        pass


def test_fingerprint_depends_on_every_part():
    assert fingerprint("m", {"a": 1}, [1, 2]) == fingerprint("m", {"a": 1}, [1, 2])
    assert fingerprint("m", {"a": 1}, [1, 2]) != fingerprint("m", {"a": 2}, [1, 2])
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})  # key order does not matter


def test_a_second_distill_on_the_same_output_refuses_at_once(tiny_model, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write about topic {i}.", "response": f"Topic {i} is fine."})
                            + "\n" for i in range(40)))
    out = tmp_path / "same.jsonl"
    cmd = [sys.executable, "-m", "sdft.cli", "distill", "--model", tiny_model, "--data", str(data), "--task",
           "general", "--out", str(out), "--max-new-tokens", "48", "--batch-size", "8", "--workers", "1",
           "--dtype", "float32"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not lock_path(out).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock_path(out).exists(), "the first process never took the output"
    start = time.time()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    refused_in = time.time() - start
    still_running = first.poll() is None
    stdout, stderr = first.communicate(timeout=600)
    assert still_running, "the first run ended before the second started: make it longer"
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr[-2000:]
    assert "being written by another process" in second.stderr
    assert refused_in < 30  # before loading any model or decoding
    assert first.returncode == 0, stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and all(r["response"] for r in rows)
    assert json.loads(out.with_name("same.jsonl.summary.json").read_text())["rows"] == 40
    assert not out.with_name("same.jsonl.parts").exists() and not lock_path(out).exists()
