"""Retention suite: how far a fine-tuned model drifts from the seed model on everyday instructions.

Evaluating the seed (no seed_dir): its greedy replies become the reference, saved with the seed's own
per-token NLL of each. Evaluating a fine-tuned model against them:
  nll_shift        this model's NLL of the seed's reply minus the seed's own (0 = unchanged)
  nll_seed_reply   this model's NLL of the seed's reply (for the seed: of its own replies)
  cosine_to_seed, rouge_l_to_seed, bleu4_to_seed
                   similarity of this model's own greedy reply to the seed's
Per-row values go to predictions.jsonl for histograms.
"""

from __future__ import annotations

from pathlib import Path

from sdft.core.config import EvalConfig
from sdft.core.errors import InputError
from sdft.evaluate.builtin_sets import RETENTION, load_resource
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, finite_or_none, mean_of_finite, user_turn
from sdft.core.io import read_jsonl

METRICS = (
    MetricSpec("nll_shift", "nll_shift", "nats/token", -1, "forgetting",
               "change in per-token NLL of the seed's own replies after fine-tuning (how far the model drifted)",
               ("nll_shift",),
               Verdict("nll_shift",
                       "{m} kept the seed's own replies more likely than {b} did",
                       "{m} made the seed's own replies less likely than {b} did",
                       "how likely the seed's own replies stay")),
    MetricSpec("nll_seed_reply", "nll_seed_reply", "nats/token", -1, "forgetting",
               "per-token NLL of the seed's replies under that row's model (for the seed: of its own replies)",
               ("nll",)),
    MetricSpec("cosine_to_seed", "cosine_to_seed", None, +1, "forgetting",
               "embedding cosine similarity of replies to the seed's replies", ("cosine", "cosine_to_seed"),
               Verdict("cosine",
                       "{m} stayed closer to the seed than {b} on general prompts",
                       "{m} moved further from the seed than {b} on general prompts",
                       "closeness of replies to the seed's on general prompts")),
    MetricSpec("rouge_l_to_seed", "rouge_l_to_seed", None, +1, "forgetting",
               "ROUGE-L F1 of replies against the seed's replies", ("rouge_l",)),
    MetricSpec("bleu4_to_seed", "bleu4_to_seed", "0-100", +1, "forgetting",
               "sentence BLEU-4 (0-100) of replies against the seed's replies", ("bleu4",)),
)


def seed_predictions(seed_dir: str | Path) -> Path:
    return Path(seed_dir) / "retention" / "predictions.jsonl"


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    if seed_dir is not None and not seed_predictions(seed_dir).is_file():
        raise InputError(f"retention compares with the seed model's replies, but {seed_predictions(seed_dir)} "
                         "does not exist: evaluate the seed model (without seed_dir) first")


def seed_rows(seed_dir: str | Path) -> dict[str, dict]:
    return {str(row["id"]): row for row in read_jsonl(seed_predictions(seed_dir))}


def retention_items(limit: int | None, seed: dict[str, dict] | None) -> list[dict]:
    """The instructions to evaluate; against the seed's replies (`seed_rows`), only those it has: the seed
    may have been run with another limit."""
    items = load_resource(RETENTION)[:limit]
    return items if seed is None else [item for item in items if str(item["id"]) in seed]


def chats(items: list[dict]) -> list[list[dict]]:
    return [user_turn(item["instruction"]) for item in items]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    seed = seed_rows(ctx.seed_dir) if ctx.seed_dir is not None else None
    return chats(retention_items(ctx.cfg.limit, seed))


def run(ctx: SuiteContext) -> SuiteResult:
    return run_seed(ctx) if ctx.seed_dir is None else run_against_seed(ctx)


def run_seed(ctx: SuiteContext) -> SuiteResult:
    # Imported here: it loads torch, and the report imports this module for its METRICS only.
    from sdft.engine.likelihood import response_nll

    items = retention_items(ctx.cfg.limit, None)
    prompts = chats(items)
    replies = ctx.generate(prompts)
    nll = response_nll(ctx.model, ctx.tokenizer, prompts, replies, ctx.cfg.batch_size)
    rows = [{"id": item["id"], "instruction": item["instruction"], "output": reply, "nll": finite_or_none(v)}
            for item, reply, v in zip(items, replies, nll)]
    metric = mean_of_finite("nll_seed_reply", nll)
    return SuiteResult([metric] if metric else [], rows)


def run_against_seed(ctx: SuiteContext) -> SuiteResult:
    from sdft.engine.likelihood import response_nll
    from sdft.evaluate.similarity import SentenceEncoder, bleu4, rouge_l

    seed = seed_rows(ctx.seed_dir)
    items = retention_items(ctx.cfg.limit, seed)
    prompts = chats(items)
    seed_replies = [seed[str(item["id"])]["output"] for item in items]
    replies = ctx.generate(prompts)
    nll = response_nll(ctx.model, ctx.tokenizer, prompts, seed_replies, ctx.cfg.batch_size)
    cosine = SentenceEncoder().cosine(replies, seed_replies) if items else []
    rows = []
    for item, reply, theirs, v, cos in zip(items, replies, seed_replies, nll, cosine):
        seed_nll = seed[str(item["id"])].get("nll")
        shift = v - seed_nll if seed_nll is not None else None
        rows.append({"id": item["id"], "instruction": item["instruction"], "output": reply, "seed_output": theirs,
                     "nll": finite_or_none(v), "seed_nll": seed_nll, "nll_shift": finite_or_none(shift),
                     "cosine": cos, "rouge_l": rouge_l(reply, theirs), "bleu4": bleu4(reply, theirs)})
    metrics = [
        mean_of_finite("nll_shift", [r["nll_shift"] for r in rows]),
        mean_of_finite("nll_seed_reply", [r["nll"] for r in rows]),
        mean_of_finite("cosine_to_seed", [r["cosine"] for r in rows]),
        mean_of_finite("rouge_l_to_seed", [r["rouge_l"] for r in rows]),
        mean_of_finite("bleu4_to_seed", [r["bleu4"] for r in rows]),
    ]
    return SuiteResult([m for m in metrics if m is not None], rows)
