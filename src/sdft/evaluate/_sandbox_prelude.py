"""sdft sandbox prelude: install the audit-hook guard, then run a program file as __main__.

Run by path in the sandboxed child (`python -I -S -B _sandbox_prelude.py PROGRAM [ARGS...]`), never
imported there: the child has no site-packages, so this file uses only the standard library.
`sdft.evaluate.sandbox` imports it for the exit codes and marker below, which is why everything
that acts runs under `if __name__ == "__main__"`.
"""
import builtins
import os
import posix
import sys
import traceback

# Exit codes the prelude uses to report how the program ended, and the line it writes to
# stderr when the hook blocks something.
BLOCKED_EXIT, MEMORY_EXIT, ERROR_EXIT = 86, 87, 88
MARKER = "[sdft-sandbox] blocked"
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


def _run(program):
    with open(program, "rb") as f:
        source = f.read()
    try:
        code = compile(source, program, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        traceback.print_exception(type(e), e, None)
        return ERROR_EXIT
    main = type(sys)("__main__")
    main.__file__ = os.path.abspath(program)
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


def main():
    # `state` stays a local: the program can reach this module's globals (through the stub's
    # fork_exec), and must not be able to clear the record of what was blocked.
    state = []
    _install(state)
    program = sys.argv[1]
    sys.argv = sys.argv[1:]  # the program sees itself as argv[0], as if run directly
    rc = _run(program)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    sys.exit(BLOCKED_EXIT if state else rc)


if __name__ == "__main__":
    main()
