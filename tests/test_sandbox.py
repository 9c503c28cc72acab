"""The sandbox contains what model-written code may do: time, memory, network, files, processes."""

import dis
import os
import socket
import sys
import time
import types

import pytest

from sdft.evaluate import sandbox
from sdft.evaluate.sandbox import PROGRAM_NAME, Program, run_many


def run_code(code: str, timeout_s: float = 10.0) -> sandbox.SandboxResult:
    """`code` as the one program of one job, through the same entry point grading uses."""
    ((result,),) = run_many([[Program(PROGRAM_NAME, files={PROGRAM_NAME: code})]], timeout_s)
    return result


def test_normal_code_passes_with_stdout():
    r = run_code("import math\nprint('hello', math.factorial(5))")
    assert r.status == "passed"
    assert r.returncode == 0
    assert r.stdout == "hello 120\n"


def test_assert_failure_is_failed():
    r = run_code("assert 1 + 1 == 3, 'bad sum'")
    assert r.status == "failed"
    assert "AssertionError: bad sum" in r.stderr
    assert "_sandbox_prelude" not in r.stderr  # the traceback shows only the program


def test_syntax_error_is_error():
    assert run_code("def f(:\n    pass").status == "error"


def test_infinite_loop_times_out():
    start = time.monotonic()
    r = run_code("while True:\n    pass", timeout_s=1.0)
    assert r.status == "timeout"
    assert time.monotonic() - start < 4.0


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10**10)", "x = []\nwhile True:\n    x.append(bytearray(10**6))"],
    ids=["one-big-allocation", "growing-list"],
)
def test_memory_bomb_is_memory(code):
    r = run_code(code, timeout_s=10.0)
    assert r.status == "memory"


@pytest.mark.parametrize("module", ["socket", "_socket"])
@pytest.mark.parametrize("os_isolation", [True, False], ids=["netns", "hook-only"])
def test_network_connection_is_blocked(module, os_isolation, monkeypatch):
    if not os_isolation:  # as for a non-root user: no namespace, no capability drop
        monkeypatch.setattr(sandbox, "_libc", lambda: None)
    # A real listener: without the sandbox this connect would succeed.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = (
            f"import {module}\n"
            f"s = {module}.socket({module}.AF_INET, {module}.SOCK_STREAM)\n"
            "s.settimeout(2)\n"
            f"s.connect(('127.0.0.1', {port}))\n"
            "print('connected')\n"
        )
        r = run_code(code, timeout_s=5.0)
        assert r.status == "blocked"
        assert "connected" not in r.stdout
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()


@pytest.mark.parametrize(
    "template",
    [
        "open({path!r}, 'w').write('x')",
        "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib\npathlib.Path({path!r}).write_text('x')",
        "import os\nopen('f', 'w').close()\nos.rename('f', {path!r})",
        "import os\nos.symlink({path!r}, 'link')\nopen('link', 'w')",
        "try:\n    open({path!r}, 'w')\nexcept OSError:\n    pass\nprint('carried on')",
    ],
    ids=["open", "os.open", "pathlib", "rename", "symlink", "caught"],
)
def test_write_outside_scratch_is_blocked(tmp_path, template):
    target = tmp_path / "escaped.txt"
    r = run_code(template.format(path=str(target)))
    assert r.status == "blocked"
    assert not target.exists()


def test_scratch_dir_is_private_and_removed(monkeypatch):
    monkeypatch.setenv("SDFT_FAKE_SECRET", "hunter2")
    code = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('kept')\n"
        "print(open('notes.txt').read())\n"
        "with tempfile.NamedTemporaryFile('w') as f:\n"
        "    f.write('tmp')\n"
        "with open(os.devnull, 'w') as f:\n"
        "    f.write('ignored')\n"
        "print(os.getcwd())\n"
        "print(os.environ.get('HOME') == os.getcwd(), 'SDFT_FAKE_SECRET' in os.environ)\n"
        "try:\n"
        "    input()\n"
        "except EOFError:\n"
        "    print('stdin is empty')\n"
    )
    r = run_code(code)
    assert r.status == "passed", r.stderr
    kept, cwd, env, stdin = r.stdout.splitlines()
    assert kept == "kept"
    assert env == "True False"
    assert stdin == "stdin is empty"
    assert not os.path.exists(cwd)


@pytest.mark.parametrize(
    "template",
    [
        "import os\nif os.fork() == 0:\n    open({marker!r}, 'w')",
        "import subprocess\nsubprocess.run(['touch', {marker!r}])",
        "import os\nos.system('touch ' + {marker!r})",
        "import os\nos.execv('/usr/bin/touch', ['touch', {marker!r}])",
        "import multiprocessing.util as u, sys\n"
        "u.spawnv_passfds(b'/usr/bin/touch', ['touch', {marker!r}], [])",
    ],
    ids=["fork", "subprocess", "system", "exec", "fork_exec"],
)
def test_process_creation_is_blocked(tmp_path, template):
    marker = tmp_path / "child-ran"
    r = run_code(template.format(marker=str(marker)))
    assert r.status == "blocked"
    assert not marker.exists()


@pytest.mark.parametrize(
    "code",
    [
        "import ctypes",
        "import os\nos.kill(os.getppid(), 0)",  # signal 0: harmless even if it got through
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        "import gc\ngc.get_objects()",
        "import _xxsubinterpreters",
        "import os\nos.chdir('/')",
    ],
    ids=["ctypes", "kill", "setrlimit", "gc", "subinterpreter", "chdir"],
)
def test_other_escapes_are_blocked(code):
    assert run_code(code).status == "blocked"


def test_output_is_truncated():
    r = run_code("print('x' * 100_000)")
    assert r.status == "passed"
    assert len(r.stdout) < sandbox.MAX_OUTPUT_CHARS + 100


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_root_child_has_own_netns_and_no_capabilities():
    code = (
        "import os\n"
        "print(os.readlink('/proc/self/ns/net'))\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])\n"
    )
    r = run_code(code)
    assert r.status == "passed", r.stderr
    netns, cap_eff = r.stdout.split()
    ours = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0], 16)
    if ours & (1 << 8):  # with CAP_SETPCAP we can empty the child's bounding set
        assert int(cap_eff, 16) == 0
    if netns == os.readlink("/proc/self/ns/net"):
        pytest.skip("network namespaces are not available here (the audit hook still blocks sockets)")


def test_hook_reads_no_globals():
    # The hook's globals can be reached from a traceback; it must not look anything up there.
    module = compile(sandbox.PRELUDE_PATH.read_text(encoding="utf-8"), "prelude", "exec")
    guard = next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == "_guard")
    stack, seen = [guard], []
    while stack:
        code = stack.pop()
        seen += [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    assert seen == []


def test_child_uses_this_interpreter():
    r = run_code("import sys\nprint(sys.version)")
    assert r.stdout.strip() == sys.version


def test_program_file_by_path_with_a_helper_joined_by_a_pipe(tmp_path):
    # The main program reads what its helper writes; the helper then lingers and is killed after the grace time.
    script = tmp_path / "prog.py"
    script.write_text(
        "import os, sys, time\n"
        "role, fd = sys.argv[1], int(sys.argv[2])\n"
        "if role == 'helper':\n"
        "    os.write(fd, b'hi from helper')\n"
        "    os.close(fd)\n"
        "    time.sleep(60)\n"
        "else:\n"
        "    print(sys.argv[0].endswith('prog.py'), os.read(fd, 100).decode())\n"
    )
    r, w = os.pipe()
    start = time.monotonic()
    ((main, helper),) = run_many(
        [[Program(script, ["main", str(r)], pass_fds=(r,)), Program(script, ["helper", str(w)], pass_fds=(w,))]],
        timeout_s=20.0,
    )
    assert main.status == "passed", main.stderr
    assert main.stdout == "True hi from helper\n"
    assert helper.status == "timeout"
    assert time.monotonic() - start < 10.0  # not the 60 s sleep nor the 20 s deadline
    for fd in (r, w):  # handed over: closed here once the children started
        with pytest.raises(OSError):
            os.fstat(fd)
