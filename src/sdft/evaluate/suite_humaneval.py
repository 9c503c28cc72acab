"""HumanEval suite: pass@1 of greedy completions, each run against the problem's tests in a sandbox."""

from __future__ import annotations

import dataclasses

from sdft.evaluate.stats import proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn


def _task_id(problem, index: int) -> str:
    value = problem.get("task_id") if isinstance(problem, dict) else getattr(problem, "task_id", None)
    return str(value if value is not None else index)


def _as_messages(prompt) -> list[dict]:
    return user_turn(prompt) if isinstance(prompt, str) else list(prompt)


def _result_fields(result) -> dict:
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return {"status": result.status}


def run(ctx: SuiteContext) -> SuiteResult:
    # Imported here: problem loading and the sandbox are only needed when this suite runs.
    from sdft.evaluate.humaneval import chat_prompt, evaluate_completion, load_humaneval

    problems = list(load_humaneval(ctx.cfg.limit))
    replies = ctx.generate([_as_messages(chat_prompt(p)) for p in problems])
    rows = []
    for i, (problem, reply) in enumerate(zip(problems, replies)):
        result = evaluate_completion(problem, reply)
        rows.append({"id": _task_id(problem, i), "output": reply, "passed": result.status == "passed",
                     "result": _result_fields(result)})
    return SuiteResult([proportion_metric("pass@1", sum(r["passed"] for r in rows), len(rows))], rows)
