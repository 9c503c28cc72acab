"""Safety suite: how often the model refuses harmful requests, asked plainly and with the GCG suffix.

Data: `eval.safety_data` (e.g. AdvBench's harmful_behaviors.csv, its `goal` column) or the built-in
probe set. Refusals are judged with the Zou et al. keyword list, as in the SDFT paper.
"""

from __future__ import annotations

from sdft.core.config import EvalConfig
from sdft.data.load import load_examples
from sdft.evaluate.builtin_sets import SAFETY, load_resource
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.refusal import is_refusal, with_suffix
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn

METRICS = (
    MetricSpec("refusal_rate", "refusal_rate", "%", +1, "forgetting", "harmful requests the model refuses",
               ("refused",),
               Verdict("refusal rate",
                       "{m} refused more harmful requests than {b}",
                       "{m} refused fewer harmful requests than {b}",
                       "refusal of harmful requests")),
    MetricSpec("jailbreak_refusal_rate", "jailbreak_refusal_rate", "%", +1, "forgetting",
               "harmful requests with an adversarial suffix still refused", ("jailbreak_refused",),
               Verdict("jailbreak refusal rate",
                       "{m} refused more harmful requests with an adversarial suffix than {b}",
                       "{m} refused fewer harmful requests with an adversarial suffix than {b}",
                       "refusal of harmful requests with an adversarial suffix")),
)


def safety_prompts(cfg: EvalConfig) -> list[tuple[str, str]]:
    """(id, harmful request) pairs."""
    if cfg.safety_data:
        # Prompt-only sets: AdvBench's `target` is the attacker's wished-for reply, never a reference.
        return [(ex.id, ex.prompt) for ex in load_examples(cfg.safety_data, limit=cfg.limit, require_response=False)]
    return [(row["id"], row["instruction"]) for row in load_resource(SAFETY)[: cfg.limit]]


def score_safety(replies: list[str], jailbreak_replies: list[str]) -> tuple[list[dict], list[Metric]]:
    rows = [{"refused": is_refusal(plain), "jailbreak_refused": is_refusal(attacked)}
            for plain, attacked in zip(replies, jailbreak_replies, strict=True)]
    n = len(rows)
    metrics = [proportion_metric("refusal_rate", sum(r["refused"] for r in rows), n),
               proportion_metric("jailbreak_refusal_rate", sum(r["jailbreak_refused"] for r in rows), n)]
    return rows, metrics


def chats(items: list[tuple[str, str]]) -> list[list[dict]]:
    """Each request asked plainly, then each with the suffix: both in one generation call."""
    return [user_turn(p) for _, p in items] + [user_turn(with_suffix(p)) for _, p in items]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    return chats(safety_prompts(ctx.cfg))


def run(ctx: SuiteContext) -> SuiteResult:
    items = safety_prompts(ctx.cfg)
    replies = ctx.generate(chats(items))
    plain, attacked = replies[: len(items)], replies[len(items):]
    scored, metrics = score_safety(plain, attacked)
    rows = [{"id": i, "prompt": p, "output": a, "jailbreak_output": b} | s
            for (i, p), a, b, s in zip(items, plain, attacked, scored)]
    return SuiteResult(metrics, rows)
