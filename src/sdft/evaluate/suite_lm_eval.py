"""lm_eval suite: standard benchmarks (MMLU, ARC, ...) through EleutherAI's lm-evaluation-harness.

`eval.suites: [lm_eval]` with `eval.lm_eval_tasks: [arc, mmlu]` (short names from
sdft.evaluate.lm_eval_bridge or any harness task name). The harness loads the model itself (with the
adapter as a PEFT module) and fetches its datasets from the hub, so this suite needs the `lm-eval` extra
and, for most tasks, a network. Each task's main number becomes a metric named `<task>/<metric>` with a
normal-approximation interval from the harness's standard error.
"""

from __future__ import annotations

import importlib.util

from sdft.core.config import EvalConfig
from sdft.core.errors import InputError, SetupError
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.stats import Z_95, Metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, note

# Preferred metric per task, in order: the first one the harness reports is the task's number.
MAIN_METRICS = ("acc_norm", "acc", "mc2", "exact_match", "f1", "pass@1")

# Named `<task>/<metric>`, so declared per metric for every task.
METRICS = (
    MetricSpec("*/acc_norm", "<task>/acc_norm", "%", +1, "forgetting",
               "the harness's accuracy with length-normalised likelihoods"),
    MetricSpec("*/acc", "<task>/acc", "%", +1, "forgetting", "the harness's accuracy"),
    MetricSpec("*/mc2", "<task>/mc2", "%", +1, "forgetting",
               "probability mass the model gives the true answers (TruthfulQA MC2)"),
    MetricSpec("*/exact_match", "<task>/exact_match", "%", +1, "forgetting",
               "answers that match the reference exactly"),
    MetricSpec("*/f1", "<task>/f1", None, +1, "forgetting", "token-overlap F1 of answers with the reference"),
    MetricSpec("*/pass@1", "<task>/pass@1", "%", +1, "forgetting",
               "programs that pass their unit tests on the first sample"),
)


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    # Imported here: the bridge loads torch, and the report imports this module for its METRICS only.
    from sdft.evaluate.lm_eval_bridge import LM_EVAL_TASKS

    if not getattr(cfg, "lm_eval_tasks", None):
        raise InputError("the lm_eval suite needs eval.lm_eval_tasks (e.g. [arc, mmlu]); short names: "
                         + ", ".join(LM_EVAL_TASKS))
    if importlib.util.find_spec("lm_eval") is None:
        raise SetupError("the lm_eval suite needs EleutherAI's lm-evaluation-harness: pip install 'sdft[lm-eval]'")


def metrics_from_results(output: dict) -> tuple[list[Metric], list[dict], list[dict]]:
    """(metrics, rows, notes) from `lm_eval.simple_evaluate`'s output: one row and one metric per task."""
    metrics, rows, notes = [], [], []
    samples = output.get("n-samples") or {}
    for task, values in sorted((output.get("results") or {}).items()):
        scores = {key.split(",")[0]: v for key, v in values.items()
                  if "," in key and "_stderr" not in key and isinstance(v, (int, float))}
        stderrs = {key.split(",")[0].removesuffix("_stderr"): v for key, v in values.items()
                   if "_stderr," in key and isinstance(v, (int, float))}
        n = int((samples.get(task) or {}).get("effective") or 0)
        rows.append({"id": task, "scores": scores, "stderr": stderrs, "n": n})
        main = next((m for m in MAIN_METRICS if m in scores), None)
        if main is None:
            notes.append(note(f"{task}/?", f"no known metric among {sorted(scores)}"))
            continue
        value, err = float(scores[main]), stderrs.get(main)
        half = Z_95 * float(err) if isinstance(err, (int, float)) else 0.0
        metrics.append(Metric(f"{task}/{main}", value, n, value - half, value + half))
    return metrics, rows, notes


def run(ctx: SuiteContext) -> SuiteResult:
    from sdft.evaluate.lm_eval_bridge import run_lm_eval

    output = run_lm_eval(ctx.spec.name, ctx.cfg.lm_eval_tasks, adapter=ctx.adapter, batch_size=ctx.cfg.batch_size,
                         limit=ctx.cfg.limit, device=ctx.spec.device, dtype=ctx.spec.dtype,
                         revision=ctx.spec.revision)
    metrics, rows, notes = metrics_from_results(output)
    return SuiteResult(metrics, rows, notes)
