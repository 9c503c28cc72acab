"""Function-calling suite (OpenFunctions-style): does the reply make the reference API call?

"exact": some call in the reply equals the reference call (same function, same arguments).
"loose": the same up to positional-vs-keyword form, e.g. f(1, y=2) for f(x=1, y=2).
Rows whose reference does not parse as a Python call cannot be scored and are left out of n.
"""

from __future__ import annotations

from sdft.core.config import EvalConfig
from sdft.data.load import load_examples
from sdft.core.errors import InputError
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult

METRICS = (
    MetricSpec("exact", "exact", "%", +1, "task", "function calls that match the reference exactly", ("exact",),
               Verdict("exact match",
                       "{m} wrote more exactly correct function calls than {b}",
                       "{m} wrote fewer exactly correct function calls than {b}",
                       "function-call accuracy")),
    MetricSpec("loose", "loose", "%", +1, "task", "function calls that match the reference up to formatting",
               ("loose",)),
)


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    if not cfg.function_data:
        raise InputError("the function suite has no built-in data: pass --function-data FILE "
                         "(OpenFunctions-style instruction/output rows; eval.function_data in a config)")


def score_function(replies: list[str], references: list[str]) -> tuple[list[dict], list[Metric]]:
    # Imported here: grading loads math_verify (sympy, slow), and the report imports this module for its
    # METRICS only.
    from sdft.grading.verify import calls_equal, calls_match_loosely, extract_calls, parse_call

    rows = []
    for reply, reference in zip(replies, references, strict=True):
        ref = parse_call(reference)
        if ref is None:
            rows.append({"scorable": False, "exact": None, "loose": None})
            continue
        calls = extract_calls(reply)
        exact = any(calls_equal(c, ref) for c in calls)
        loose = exact or any(calls_match_loosely(c, ref) for c in calls)
        rows.append({"scorable": True, "exact": exact, "loose": loose, "n_calls": len(calls)})
    scored = [r for r in rows if r["scorable"]]
    metrics = [proportion_metric(name, sum(r[name] for r in scored), len(scored)) for name in ("exact", "loose")]
    return rows, metrics


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    return [ex.messages() for ex in load_examples(ctx.cfg.function_data, limit=ctx.cfg.limit)]


def run(ctx: SuiteContext) -> SuiteResult:
    examples = load_examples(ctx.cfg.function_data, limit=ctx.cfg.limit)
    replies = ctx.generate([ex.messages() for ex in examples])
    scored, metrics = score_function(replies, [ex.response for ex in examples])
    rows = [{"id": ex.id, "prompt": ex.prompt, "output": reply, "reference": ex.response} | s
            for ex, reply, s in zip(examples, replies, scored)]
    return SuiteResult(metrics, rows)
