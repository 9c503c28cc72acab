"""Outputs appear only complete, and a full disk ends a run cleanly with nothing saved lost.

A full disk is simulated in-process (writes through sdft.core.io fail with ENOSPC from the k-th file on),
and, where the tests run as root and may mount, for real on a tiny tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import sdft.core.io
import sdft.engine.resumable
from sdft.cli import main
from sdft.core.io import atomic_write, write_json


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def error_lines(stderr: str) -> list[str]:
    """The CLI's own messages (progress bars also go to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("sdft ")]


def batches(parts: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in sorted(parts.glob("batch-*.jsonl"))}


# ---------------------------------------------------------------- atomic_write


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert files(tmp_path) == ["out.jsonl"]  # no temp file left behind


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    # mkstemp makes 0600 files; outputs must be as readable as any other file the user writes.
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


class FullDisk:
    """Files opened by sdft.core.io from the `fail_from`-th on (1-based) fail to write with ENOSPC."""

    def __init__(self, fail_from: int):
        self.fail_from, self.opened = fail_from, 0

    def fdopen(self, fd, *args, **kwargs):
        self.opened += 1
        return _Failing(os.fdopen(fd, *args, **kwargs), self.opened >= self.fail_from)


class _Failing:
    def __init__(self, f, full: bool):
        self._f, self._full = f, full

    def write(self, data):
        if self._full:  # like write(2): no file name in the error
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, fail_from: int) -> FullDisk:
    disk = FullDisk(fail_from)

    class OsWithFullDisk:  # only sdft.core.io sees the full disk
        def __getattr__(self, name):
            return disk.fdopen if name == "fdopen" else getattr(os, name)

    monkeypatch.setattr(sdft.core.io, "os", OsWithFullDisk())
    return disk


def test_write_error_names_the_file(tmp_path, monkeypatch):
    full_disk(monkeypatch, 1)
    with pytest.raises(OSError) as e:
        write_json(tmp_path / "a.json", {"x": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "a.json")
    assert str(tmp_path / "a.json") in str(e.value) and "No space left on device" in str(e.value)
    assert files(tmp_path) == []


# ---------------------------------------------------------------- distill on a full disk

N, BATCH = 10, 2
N_BATCHES = N // BATCH


def distill(model: str, out: Path, *extra: str) -> int:
    return main(["distill", "--model", model, "--data", f"builtin:arithmetic?n={N}", "--task", "math",
                 "--out", str(out), "--batch-size", str(BATCH), "--max-new-tokens", "8", *extra])


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "d.jsonl"
    assert distill(tiny_model, out) == 0
    return out.read_bytes()


# Files written, in order: manifest, batches 0..4, the output, its summary.
@pytest.mark.parametrize("fail_from,failing", [(3, "batch-000001.jsonl"), (N_BATCHES + 2, "d.jsonl"),
                                               (N_BATCHES + 3, "d.jsonl.summary.json")])
def test_disk_full_ends_cleanly_and_resumes(tiny_model, reference, tmp_path, monkeypatch, capsys, fail_from, failing):
    out = tmp_path / "d.jsonl"
    parts = tmp_path / "d.jsonl.parts"
    full_disk(monkeypatch, fail_from)
    assert distill(tiny_model, out) == 1
    err = capsys.readouterr().err
    # One line naming the file and the cause; no traceback.
    [line] = error_lines(err)
    assert "Traceback" not in err and "No space left on device" in line and failing in line, err

    saved = batches(parts)
    assert len(saved) == (fail_from - 2 if fail_from <= N_BATCHES + 1 else N_BATCHES)
    for text in saved.values():  # whole batches only
        assert [set(json.loads(line)) for line in text.splitlines()] == [{"index", "text"}] * BATCH
    assert not list(tmp_path.rglob("*.tmp")), "temp files left behind"
    assert not (tmp_path / "d.jsonl.summary.json").exists()
    if failing != "d.jsonl.summary.json":
        assert not out.exists()

    # Space again: the rerun keeps every saved batch and generates only the missing ones.
    monkeypatch.undo()
    generated = []
    real = sdft.engine.resumable.iter_generate

    def counting(*args, **kwargs):
        for item in real(*args, **kwargs):
            generated.append(item[0])
            yield item

    monkeypatch.setattr(sdft.engine.resumable, "iter_generate", counting)
    assert distill(tiny_model, out) == 0
    assert sorted(generated) == [n for n in range(N_BATCHES) if f"batch-{n:06d}.jsonl" not in saved]
    assert out.read_bytes() == reference
    assert files(tmp_path) == ["d.jsonl", "d.jsonl.summary.json"]


def _mount_tmpfs(path: Path, size: str, remount: bool = False) -> bool:
    opts = f"remount,size={size}" if remount else f"size={size}"
    cmd = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_real_full_disk_on_tmpfs(tiny_model, tmp_path, capsys):
    """The same on a real 48 KiB filesystem: each file takes a 4 KiB page, so it fills after a few batches."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "48k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = disk / "d.jsonl"
        args = ["distill", "--model", tiny_model, "--data", "builtin:arithmetic?n=40", "--task", "math",
                "--out", str(out), "--batch-size", "2", "--max-new-tokens", "8"]
        assert main(args) == 1
        err = capsys.readouterr().err
        [line] = error_lines(err)
        assert "Traceback" not in err and "No space left on device" in line and str(disk) in line, err
        saved = batches(disk / "d.jsonl.parts")
        assert 0 < len(saved) < 20 and not out.exists()
        for text in saved.values():
            assert len(text.splitlines()) == 2 and all(json.loads(line) for line in text.splitlines())

        assert _mount_tmpfs(disk, "2m", remount=True)  # contents are kept
        assert batches(disk / "d.jsonl.parts") == saved
        assert main(args) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 40 and not (disk / "d.jsonl.parts").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---------------------------------------------------------------- interrupted generate and eval


def test_interrupted_generate_resumes(tiny_model, tmp_path, interrupt_generation, capsys):
    def generate(out: Path) -> int:
        return main(["generate", "--model", tiny_model, "--data", "builtin:arithmetic?n=8", "--out", str(out),
                     "--batch-size", "2", "--max-new-tokens", "8"])

    clean = tmp_path / "clean.jsonl"
    assert generate(clean) == 0
    interrupt_generation(2)
    out = tmp_path / "out.jsonl"
    assert generate(out) == 130
    assert not out.exists() and len(batches(tmp_path / "out.jsonl.parts")) == 2
    interrupt_generation(None)
    assert generate(out) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_interrupted_eval_resumes(tiny_model, tmp_path, interrupt_generation):
    def evaluate(out: Path) -> int:
        return main(["eval", "--model", tiny_model, "--suite", "math", "--limit", "6", "--out", str(out),
                     "--batch-size", "2", "--max-new-tokens", "8"])

    assert evaluate(tmp_path / "clean") == 0
    interrupt_generation(1)
    out = tmp_path / "run"
    assert evaluate(out) == 130
    assert not (out / "math" / "metrics.json").exists() and not (out / "math" / "predictions.jsonl").exists()
    interrupt_generation(None)
    assert evaluate(out) == 0
    for name in ("metrics.json", "predictions.jsonl"):
        assert (out / "math" / name).read_bytes() == (tmp_path / "clean" / "math" / name).read_bytes()
    assert files(out) == files(tmp_path / "clean")


def test_interrupted_joint_decode_resumes(tiny_model, tmp_path, interrupt_generation):
    """math and safety decode together; a run stopped inside that decode keeps its finished batches."""
    def evaluate(out: Path) -> int:
        return main(["eval", "--model", tiny_model, "--suite", "math,safety", "--limit", "3",
                     "--out", str(out), "--batch-size", "3", "--max-new-tokens", "8"])

    assert evaluate(tmp_path / "clean") == 0
    interrupt_generation(1)
    out = tmp_path / "run"
    assert evaluate(out) == 130
    assert len(batches(out / "replies-8.parts")) == 1  # 3 math + 6 safety prompts in batches of 3
    assert not (out / "math" / "metrics.json").exists() and not (out / "safety" / "metrics.json").exists()
    interrupt_generation(None)
    assert evaluate(out) == 0
    for suite in ("math", "safety"):
        for name in ("metrics.json", "predictions.jsonl", "settings.json"):
            assert (out / suite / name).read_bytes() == (tmp_path / "clean" / suite / name).read_bytes()
    assert files(out) == files(tmp_path / "clean") and not (out / "replies-8.parts").exists()
