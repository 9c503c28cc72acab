"""Run model-written Python in a separate, limited process.

`run_many` runs jobs of Python programs, each program in a fresh interpreter
(`python -I -S -B`: no PYTHON* variables, no site-packages, no .pyc writes)
whose cwd is a new scratch directory, deleted afterwards. A job is one program,
or several joined by pipes (e.g. a grader and the code it grades); several jobs
are kept in flight at once.

What it does:
- wall-clock timeout; on expiry the child's whole process group is killed;
- rlimits: address space (memory), CPU time, file size, open files, no core dumps;
- a minimal environment (HOME and TMPDIR are the scratch dir), stdin is /dev/null;
- as root: the child gets its own network namespace (only a downed loopback)
  and keeps no capabilities across exec (empty bounding set, no_new_privs),
  so it cannot mknod devices, mount, ptrace, raise its rlimits, etc.;
- before the program runs, a prelude (`_sandbox_prelude.py`, run by path) installs an audit hook (PEP 578) that
  raises PermissionError for: sockets (except AF_UNIX pairs) and name lookups;
  fork/exec/spawn/system/subprocess (the real `_posixsubprocess`, which forks
  without an audit event, is swapped for a refusing stand-in and cannot be
  loaded); ctypes, cffi and extension modules from outside the stdlib; writes,
  renames, deletes and metadata changes outside the scratch dir; opening
  directories outside it and chdir out of it; links; signals to other
  processes; rlimit changes; gc object walks; subinterpreters. Audit hooks
  cannot be removed from Python, and this one reads nothing mutable, so Python
  code cannot switch it off. A blocked action ends the run as "blocked", even
  if the program catches the PermissionError.

What it does NOT do: it is not a VM or container. Reads are not restricted
(the program can read whatever its user can read). `os.mknod`/`os.mkfifo`
have no audit event, so it can create empty files or FIFOs wherever its user
may (not overwrite or write into existing ones). Native code that gets past
the audit layer (an interpreter bug; a stdlib extension compiled into the
binary, e.g. `_posixsubprocess` on some distro Pythons, which `_imp` can
instantiate unaudited) meets only the rlimits and, as root, the namespace and
dropped capabilities. RLIMIT_NPROC is not used: it counts all of the user's
processes and is not enforced for root; the audit hook stops fork bombs
instead. For hostile code, run the whole evaluation in a container or VM.

Limits are applied in `preexec_fn`, which is not safe while other threads run:
parallelise evaluation with processes, not threads.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sdft.evaluate._sandbox_prelude import BLOCKED_EXIT, ERROR_EXIT, MARKER, MEMORY_EXIT

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")

MAX_OUTPUT_CHARS = 4096  # per stream, in the result
MAX_FILE_BYTES = 16 * 2**20  # RLIMIT_FSIZE: also caps the captured stdout/stderr files
MAX_OPEN_FILES = 256
# After the main program of a job ends, its helpers get this long to end before they are killed.
HELPER_GRACE_S = 1.0
POLL_S = 0.005

CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

PRELUDE_PATH = Path(__file__).with_name("_sandbox_prelude.py")
BLOCK_MARKER = MARKER
PROGRAM_NAME = "main.py"


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float


@dataclass
class Program:
    """One sandboxed child: a Python file run by path as `__main__` under the prelude.

    `script` is absolute, or relative to the child's scratch dir (where `files` are written first).
    `pass_fds` are inherited by the child under the same numbers and are closed in this process once
    the child has started (handed over: a pipe's reader then sees EOF when the child exits).
    """

    script: str | Path = PROGRAM_NAME
    args: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()


def run_many(jobs: Iterable[list[Program]], timeout_s: float = 10.0, memory_mb: int = 512,
             workers: int = 2) -> list[list[SandboxResult]]:
    """Run many jobs, up to `workers` jobs in flight; one result per program, jobs in input order.

    The programs of one job run at once, each in its own sandboxed child and scratch dir. The first
    is the job's main one and the rest its helpers: all share one wall-clock deadline (on expiry
    every child is killed), and once the main program has ended the helpers get HELPER_GRACE_S to
    end, then are killed (status "timeout"). Limits are per child.

    `jobs` is consumed lazily (a generator can open each job's pipes only when it starts). All
    children are started and watched from this thread (limits are set in `preexec_fn`, which is not
    safe while other threads run), so parallel grading needs no thread or process pool.
    """
    results: dict[int, list[SandboxResult]] = {}
    pending = enumerate(jobs)
    running: list[tuple[int, _Job]] = []
    exhausted = False
    try:
        while not exhausted or running:
            while not exhausted and len(running) < max(1, workers):
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                index, programs = item
                job = _Job(programs, timeout_s, memory_mb)
                running.append((index, job))
                job.start()
            if not running:
                break
            time.sleep(POLL_S)
            now = time.monotonic()
            for index, job in list(running):
                if job.poll(now):
                    results[index] = job.finish()
                    running.remove((index, job))
    finally:  # interrupted (or a bug): no child may outlive us, no scratch dir may stay behind
        for _, job in running:
            job.abort()
    return [results[i] for i in range(len(results))]


@dataclass
class _Child:
    program: Program
    dir: Path
    proc: subprocess.Popen | None = None
    start_error: str = ""
    started: float = 0.0
    ended: float | None = None
    returncode: int | None = None
    killed_by_us: bool = False


class _Job:
    """The children of one job, from start to their results (driven by `run_many`)."""

    def __init__(self, programs: list[Program], timeout_s: float, memory_mb: int):
        self.root = Path(tempfile.mkdtemp(prefix="sdft-sandbox-")).resolve()
        self.children = [_Child(p, self.root / str(i)) for i, p in enumerate(programs)]
        self.timeout_s = timeout_s
        self.preexec = _make_preexec(timeout_s, memory_mb)
        self.deadline = 0.0
        self.grace_until: float | None = None

    def start(self) -> None:
        try:
            for child in self.children:
                self._start_child(child)
        finally:
            for child in self.children:
                _close_fds(child.program.pass_fds)
        self.deadline = time.monotonic() + self.timeout_s

    def _start_child(self, child: _Child) -> None:
        scratch = child.dir / "scratch"
        scratch.mkdir(parents=True)
        for name, text in child.program.files.items():
            (scratch / name).write_text(text, encoding="utf-8")
        # Output goes to files outside the scratch dir: bounded by RLIMIT_FSIZE instead of
        # piling up in this process, and not writable by path from inside the sandbox.
        with open(child.dir / "stdout", "wb") as out, open(child.dir / "stderr", "wb") as err:
            child.started = time.monotonic()
            try:
                child.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", str(PRELUDE_PATH), str(child.program.script),
                     *child.program.args],
                    cwd=scratch,
                    env=_child_env(scratch),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    close_fds=True,
                    pass_fds=child.program.pass_fds,
                    start_new_session=True,  # own process group, so a timeout kills all of it
                    preexec_fn=self.preexec,
                )
            except (OSError, subprocess.SubprocessError) as e:
                child.start_error = f"could not start the sandbox: {e}"
                child.ended = child.started

    def poll(self, now: float) -> bool:
        """Reap what has ended and kill what is overdue; True once every child has ended."""
        for child in self.children:
            if child.proc is not None and child.returncode is None:
                rc = child.proc.poll()
                if rc is not None:
                    child.returncode, child.ended = rc, now
        main = self.children[0]
        if main.ended is not None and self.grace_until is None:
            self.grace_until = now + HELPER_GRACE_S
        overdue = now >= self.deadline or (self.grace_until is not None and now >= self.grace_until)
        for child in self.children:
            if child.ended is None and overdue:
                self._kill(child, now)
        return all(child.ended is not None for child in self.children)

    def _kill(self, child: _Child, now: float) -> None:
        _kill_group(child.proc.pid)
        child.returncode = child.proc.wait()
        child.ended = now
        child.killed_by_us = True

    def finish(self) -> list[SandboxResult]:
        try:
            return [self._result(child) for child in self.children]
        finally:
            _remove_tree(self.root)

    def _result(self, child: _Child) -> SandboxResult:
        if child.proc is None:
            return SandboxResult("error", None, "", child.start_error, 0.0)
        stdout = (child.dir / "stdout").read_bytes()[:MAX_FILE_BYTES]
        stderr = (child.dir / "stderr").read_bytes()[:MAX_FILE_BYTES]
        return SandboxResult(
            status=_classify(child.returncode, stderr, child.killed_by_us),
            returncode=child.returncode,
            stdout=_clip(stdout),
            stderr=_clip(stderr),
            duration_s=child.ended - child.started,
        )

    def abort(self) -> None:
        for child in self.children:
            if child.proc is not None and child.returncode is None:
                _kill_group(child.proc.pid)
                child.proc.wait()
        _remove_tree(self.root)


def _close_fds(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass  # already closed: handed over before


def _classify(rc: int, stderr: bytes, timed_out: bool) -> str:
    if rc == BLOCKED_EXIT or BLOCK_MARKER.encode() in stderr:
        return "blocked"
    if timed_out or rc == -signal.SIGXCPU:
        return "timeout"
    if rc == MEMORY_EXIT or rc == -signal.SIGKILL or (rc < 0 and b"MemoryError" in stderr):
        return "memory"  # a SIGKILL we did not send is the kernel's OOM killer
    if rc == 0:
        return "passed"
    if rc == ERROR_EXIT:
        return "error"
    return "failed"


def _child_env(scratch: Path) -> dict[str, str]:
    # Nothing inherited: API keys and tokens in our environment must not reach the program.
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}


def _make_preexec(timeout_s: float, memory_mb: int):
    """Build the function the child runs between fork and exec (everything is prepared here)."""
    cpu_s = int(timeout_s) + 1
    # (resource, soft, hard). Hard limits are set too, so the child cannot raise them again.
    limits = [
        (resource.RLIMIT_AS, memory_mb * 2**20, memory_mb * 2**20),
        # Backstop for the wall clock. Soft < hard: at the soft limit the kernel sends
        # SIGXCPU ("timeout"); at the hard one SIGKILL, which we would read as the OOM killer.
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_FSIZE, MAX_FILE_BYTES, MAX_FILE_BYTES),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    limits = [(r, _clamp(r, soft), _clamp(r, hard)) for r, soft, hard in limits]
    libc = _libc()
    is_root = os.geteuid() == 0
    last_cap = _last_cap()

    def preexec() -> None:
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))
        if libc is None:
            return
        unshare, prctl = libc
        unshare(CLONE_NEWNET)  # fails (harmlessly) without CAP_SYS_ADMIN: the audit hook still blocks sockets
        if is_root:
            # An empty bounding set means root keeps no capabilities across exec.
            for cap in range(last_cap + 1):
                prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return preexec


def _clamp(res: int, value: int) -> int:
    _, hard = resource.getrlimit(res)
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


@functools.lru_cache(maxsize=1)
def _libc():
    """(unshare, prctl) from libc, resolved once in the parent; None off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        unshare, prctl = lib.unshare, lib.prctl
    except (OSError, AttributeError):
        return None
    unshare.argtypes = [ctypes.c_int]
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return unshare, prctl


@functools.lru_cache(maxsize=1)
def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():  # the program may have chmod-ed its dirs to 000 (matters when not root)
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(root, ignore_errors=True)


def _clip(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    half = MAX_OUTPUT_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} chars cut] ...\n{text[-half:]}"
