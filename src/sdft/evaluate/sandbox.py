"""Run model-written Python in a separate, limited process.

`run_sandboxed(code)` runs `code` as a program in a fresh interpreter
(`python -I -S -B`: no PYTHON* variables, no site-packages, no .pyc writes)
whose cwd is a new scratch directory, deleted afterwards.

What it does:
- wall-clock timeout; on expiry the child's whole process group is killed;
- rlimits: address space (memory), CPU time, file size, open files, no core dumps;
- a minimal environment (HOME and TMPDIR are the scratch dir), stdin is /dev/null;
- as root: the child gets its own network namespace (only a downed loopback)
  and keeps no capabilities across exec (empty bounding set, no_new_privs),
  so it cannot mknod devices, mount, ptrace, raise its rlimits, etc.;
- before the program runs, a prelude installs an audit hook (PEP 578) that
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
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")

# Exit codes the prelude uses to report how the program ended.
BLOCKED_EXIT = 86
MEMORY_EXIT = 87
ERROR_EXIT = 88
BLOCK_MARKER = "[sdft-sandbox] blocked"

MAX_OUTPUT_CHARS = 4096  # per stream, in the result
MAX_FILE_BYTES = 16 * 2**20  # RLIMIT_FSIZE: also caps the captured stdout/stderr files
MAX_OPEN_FILES = 256

CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

PRELUDE_NAME = "_sandbox_prelude.py"
PROGRAM_NAME = "main.py"


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_sandboxed(code: str, timeout_s: float = 10.0, memory_mb: int = 512) -> SandboxResult:
    """Run `code` as a Python program in a sandboxed child process; see the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="sdft-sandbox-")).resolve()
    scratch = root / "scratch"
    scratch.mkdir()
    try:
        (scratch / PRELUDE_NAME).write_text(PRELUDE, encoding="utf-8")
        (scratch / PROGRAM_NAME).write_text(code, encoding="utf-8")
        # Output goes to files outside the scratch dir: bounded by RLIMIT_FSIZE instead of
        # piling up in this process, and not writable by path from inside the sandbox.
        with open(root / "stdout", "w+b") as out, open(root / "stderr", "w+b") as err:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", PRELUDE_NAME],
                    cwd=scratch,
                    env=_child_env(scratch),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    close_fds=True,
                    start_new_session=True,  # own process group, so a timeout kills all of it
                    preexec_fn=_make_preexec(timeout_s, memory_mb),
                )
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult("error", None, "", f"could not start the sandbox: {e}", 0.0)
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout_s)
            except BaseException as e:  # the timeout, or we are interrupted: the child must not outlive us
                _kill_group(proc.pid)
                rc = proc.wait()
                if not isinstance(e, subprocess.TimeoutExpired):
                    raise
                timed_out = True
            duration = time.monotonic() - start
            out.seek(0)
            stdout = out.read(MAX_FILE_BYTES)
            err.seek(0)
            stderr = err.read(MAX_FILE_BYTES)
    finally:
        _remove_tree(root)
    return SandboxResult(
        status=_classify(rc, stderr, timed_out),
        returncode=rc,
        stdout=_clip(stdout),
        stderr=_clip(stderr),
        duration_s=duration,
    )


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


# The prelude runs in the child as the main script. It installs the audit hook, then runs
# the program as __main__. It is plain source (not imported from sdft) because the child has no
# site-packages and must not depend on this package being importable.
PRELUDE = r'''"""sdft sandbox prelude: install the audit-hook guard, then run the program as __main__."""
import builtins
import os
import posix
import sys
import traceback

BLOCKED_EXIT, MEMORY_EXIT, ERROR_EXIT = %(BLOCKED_EXIT)d, %(MEMORY_EXIT)d, %(ERROR_EXIT)d
MARKER = %(BLOCK_MARKER)r
PROGRAM = %(PROGRAM)r
# Modules that would hand out unaudited power: fork+exec, raw memory/FFI, a second
# interpreter without this hook, files written from C.
BLOCKED_MODULES = (
    "_posixsubprocess", "_ctypes", "ctypes", "_cffi_backend", "_multiprocessing", "_posixshmem",
    "_dbm", "_gdbm", "readline", "_xxsubinterpreters", "_xxinterpchannels", "_interpreters",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_testsinglephase",
)


def _guard(scratch, ext_dirs, blocked_modules, marker, consts, state, b):
    # Called with empty globals (see _install). The hook is one function whose free variables
    # are all immutable (except `state`, which only records what was blocked): code that gets
    # hold of the hook's frame through a traceback sees copies and cannot change its behaviour.
    isinstance, len, repr, str, bytes, int, PermissionError, OSError, lstat, readlink, getcwd, getpid, write = b
    WRITE_FLAGS, DIR_FLAGS, AF_UNIX = consts
    prefix = scratch + "/"
    n_prefix = len(prefix)
    # rule per checked path: 1 write-open (scratch or /dev/null), 2 modify (scratch only),
    # 3 raw open for reading (a directory only inside scratch), 4 extension module (stdlib dir)

    def hook(event, args):
        targets = ()
        dir_fd = None
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return  # an already-open descriptor
            writing = isinstance(flags, int) and (flags & WRITE_FLAGS) != 0
            if isinstance(mode, str):
                for c in "wax+":
                    if c in mode:
                        writing = True
            if mode is None:  # os.open: may be relative to a dir_fd, may open a directory
                dir_fd = True
            if writing:
                targets = ((path, 1),)
            elif mode is None:
                targets = ((path, 3),)
            else:
                return  # builtin open for reading
        elif event in {"os.mkdir", "os.chmod", "os.chown", "os.utime", "os.remove", "os.rmdir",
                       "os.truncate", "os.setxattr", "os.removexattr", "os.chflags",
                       "shutil.rmtree", "os.rename", "os.chdir", "sqlite3.connect"}:
            path = args[0]
            if event == "os.rename":
                targets = ((path, 2), (args[1], 2))
                dir_fd = args[2] is not None or args[3] is not None
            elif event == "os.chdir":
                if isinstance(path, int):
                    return  # fchdir: only directories inside scratch can be opened
                targets = ((path, 2),)
            elif event == "sqlite3.connect":
                if path == ":memory:" or path == "" or path == b":memory:":
                    return
                if (isinstance(path, str) and path[:5] == "file:") or isinstance(path, int):
                    targets = ((None, 2),)
                else:
                    targets = ((path, 2),)
            else:
                if isinstance(path, int) and event == "os.truncate":
                    return  # ftruncate needs a descriptor opened for writing
                targets = ((path, 2),)
                if event in {"os.mkdir", "os.chmod"}:
                    dir_fd = args[2] is not None
                elif event in {"os.chown", "os.utime"}:
                    dir_fd = args[3] is not None
                elif event in {"os.remove", "os.rmdir", "shutil.rmtree"}:
                    dir_fd = len(args) > 1 and args[1] is not None
        elif event == "import":
            name, filename = args[0], args[1]
            if isinstance(name, str) and name.rpartition(".")[2] in blocked_modules:
                targets = ((None, 0),)
            elif filename is not None:
                targets = ((filename, 4),)  # an extension module being loaded from a file
            else:
                return
        elif event[:7] == "socket.":
            if event == "socket.gethostname":
                return
            if event == "socket.__new__" and args[1] == AF_UNIX:
                return  # socketpair and friends; connect/bind/sendto stay blocked
            targets = ((None, 0),)
        elif event[:7] == "ctypes." or event in {
                "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
                "subprocess.Popen", "os.link", "os.symlink", "resource.setrlimit", "resource.prlimit",
                "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sqlite3.enable_load_extension",
                "sqlite3.load_extension", "webbrowser.open", "syslog.openlog", "syslog.syslog",
                "cpython.PyInterpreterState_New", "os.startfile", "sdft.fork_exec"}:
            targets = ((None, 0),)
        elif event in {"os.kill", "os.killpg"}:
            if args[0] == getpid():
                return
            targets = ((None, 0),)
        else:
            return

        ok = True
        for path, rule in targets:
            if path is None or not (isinstance(path, str) or isinstance(path, bytes)):
                ok = False
                break
            if isinstance(path, bytes):
                path = path.decode("utf-8", "surrogateescape")
            relative = path[:1] != "/"
            if relative and dir_fd and ".." in path.split("/"):
                ok = False  # with a dir_fd we cannot tell where ".." leads
                break
            # Resolve like os.path.realpath, using only builtin functions captured above.
            if relative:
                path = getcwd() + "/" + path
            todo = path.split("/")
            todo.reverse()
            real = ""
            hops = 0
            while todo:
                part = todo.pop()
                if part == "" or part == ".":
                    continue
                if part == "..":
                    real = real[: real.rfind("/")] if real else ""
                    continue
                cand = real + "/" + part
                try:
                    st_mode = lstat(cand).st_mode
                except OSError:
                    real = cand
                    continue
                if (st_mode & 0o170000) != 0o120000:
                    real = cand
                    continue
                hops += 1
                try:
                    link = readlink(cand)
                except OSError:
                    hops = 99
                if hops > 40:
                    real = None
                    break
                if link[:1] == "/":
                    real = ""
                more = link.split("/")
                more.reverse()
                todo.extend(more)
            if real is None:
                ok = False
                break
            real = real or "/"
            inside = real == scratch or real[:n_prefix] == prefix
            if rule == 1:
                ok = inside or real == "/dev/null"
            elif rule == 2:
                ok = inside
            elif rule == 3:
                if not inside:
                    is_dir = False
                    try:
                        is_dir = (lstat(real).st_mode & 0o170000) == 0o040000
                    except OSError:
                        pass
                    ok = not is_dir and (args[2] & DIR_FLAGS) == 0
            elif rule == 4:
                ok = real[: real.rfind("/")] in ext_dirs
            if not ok:
                break
        if ok:
            return
        state.append(event)
        detail = event + " " + repr(args[:2])[:300]
        try:
            write(2, ("\n" + marker + ": " + detail + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
        raise PermissionError("sandbox blocked " + detail)

    return hook


def _install(state):
    scratch = posix.getcwd()
    # -S: sys.path holds only the stdlib, so its dirs are the only places extensions may load from.
    ext_dirs = frozenset(os.path.realpath(p) for p in sys.path if p)
    consts = (
        os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
        os.O_DIRECTORY | getattr(os, "O_PATH", 0),
        1,  # AF_UNIX
    )
    b = (isinstance, len, repr, str, bytes, int, PermissionError, OSError,
         posix.lstat, posix.readlink, posix.getcwd, posix.getpid, posix.write)
    # Rebind the factory to empty globals: the hook inherits them and uses none.
    guard = type(_guard)(_guard.__code__, {"__builtins__": {}})
    if any(name in sys.modules for name in BLOCKED_MODULES):
        os.write(2, b"sandbox prelude: a blocked module was preloaded\n")
        os._exit(ERROR_EXIT)  # fail closed
    sys.addaudithook(guard(scratch, ext_dirs, BLOCKED_MODULES, MARKER, consts, state, b))
    sys.dont_write_bytecode = True
    # subprocess, asyncio and multiprocessing import _posixsubprocess.fork_exec, which forks
    # without an audit event. A stand-in whose fork_exec is refused lets them import; the real
    # module cannot be loaded any more (the hook blocks its import).
    stub = type(sys)("_posixsubprocess")
    stub.fork_exec = _refuse_fork_exec
    sys.modules["_posixsubprocess"] = stub


def _refuse_fork_exec(*args):
    sys.audit("sdft.fork_exec")  # the hook raises PermissionError
    raise PermissionError("sandbox blocked fork_exec")


def _print_exception(e):
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None  # hide this file's frame
    try:
        traceback.print_exception(type(e), e, tb)
    except BaseException:
        os.write(2, (type(e).__name__ + "\n").encode())


def _run():
    with open(PROGRAM, "rb") as f:
        source = f.read()
    try:
        code = compile(source, PROGRAM, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        traceback.print_exception(type(e), e, None)
        return ERROR_EXIT
    main = type(sys)("__main__")
    main.__file__ = os.path.abspath(PROGRAM)
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return 1 if e.code in (BLOCKED_EXIT, MEMORY_EXIT, ERROR_EXIT) else e.code
        print(e.code, file=sys.stderr)
        return 1
    except MemoryError as e:
        traceback.clear_frames(e.__traceback__)  # free the hog's locals before formatting
        _print_exception(e)
        return MEMORY_EXIT
    except BaseException as e:
        _print_exception(e)
        return 1
    return 0


_state = []
_install(_state)
del _install, _guard
_rc = _run()
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except BaseException:
        pass
sys.exit(BLOCKED_EXIT if _state else _rc)
''' % {
    "BLOCKED_EXIT": BLOCKED_EXIT,
    "MEMORY_EXIT": MEMORY_EXIT,
    "ERROR_EXIT": ERROR_EXIT,
    "BLOCK_MARKER": BLOCK_MARKER,
    "PROGRAM": PROGRAM_NAME,
}
