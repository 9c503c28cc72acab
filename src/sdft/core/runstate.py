"""The state of a run on disk and among processes: which process this is, who holds an output, the
key that says which inputs and settings a saved result belongs to, and deleting a parts folder so that
it is gone at once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from pathlib import Path

from sdft.core.io import fsync_dir


def process_state():
    """This process's place among `accelerate launch` processes (rank 0 of 1 when not launched)."""
    import torch
    from accelerate import PartialState

    # Without GPUs, accelerate joins the launched processes into one group only when asked for CPU.
    return PartialState(cpu=not torch.cuda.is_available())


class StaleStateError(RuntimeError):
    """Saved partial results belong to different inputs or settings."""


class RunLockedError(RuntimeError):
    """Another process is writing the same output."""


def fingerprint(*parts) -> str:
    """The resume key of a result: a digest of everything it depends on (JSON-serialisable parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".lock")


_HELD: dict[Path, int] = {}  # outputs this process holds, and how many times over (hold nests)


@contextlib.contextmanager
def hold(out: str | Path):
    """Hold `out` (a file or folder that a stage writes) for this process while inside; another process
    that asks for it meanwhile is refused at once with RunLockedError naming the holder. Under
    `accelerate launch` only the main process takes it (its partners write under its lead).

    The lock is an flock on `<out>.lock`, which names the holder and is removed on the way out; the
    kernel drops the flock if the holder dies, so a killed run never leaves `out` locked."""
    path = lock_path(out).resolve()
    if path in _HELD or not process_state().is_main_process:
        _HELD[path] = _HELD.get(path, 0) + 1
        try:
            yield
        finally:
            _HELD[path] -= 1
            if not _HELD[path]:
                del _HELD[path]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"{out} is being written by another process ({_holder(path)}); wait for it "
                                 "to finish or stop it, then rerun") from None
        # The holder before us may have removed the file between our open and our lock: lock the file
        # that is at the path now
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing drops the flock


def holds(param: str):
    """Decorate a stage function: it holds its argument `param` (its output) while it runs (`hold`)."""
    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with hold(signature.bind(*args, **kwargs).arguments[param]):
                return fn(*args, **kwargs)
        return inner
    return wrap


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {info.get('pid')}, started {info.get('since')}: {info.get('command')}"


def finish(parts: Path) -> None:
    """Drop the parts folder once the final file is in place (main process only)."""
    state = process_state()
    state.wait_for_everyone()
    if state.is_main_process:
        remove_tree(Path(parts))


def remove_tree(path: Path) -> None:
    """Delete a folder so that it is gone at once: rename it aside first (atomic), then delete that."""
    trash = path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)  # left by a kill during an earlier delete
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)
