"""Gap suite: how unlikely the training targets are under the evaluated model.

SDFT's premise is that the model's own rewrites sit closer to its distribution than the original
responses do, so fine-tuning on them moves the model less. This suite measures that directly: the
mean per-token NLL of the original responses ("nll_original") and of the kept distilled ones
("nll_distilled", accepted rows only), plus their paired difference ("nll_gap" = original - distilled,
on accepted rows, with its bootstrap interval), and the share of accepted rows whose kept rewrite is
the more likely target ("rewrite_more_likely": nll_gap > 0, with its Wilson interval): the mean can be
carried by a few rows, the share says how general the premise holds.

Per-token NLL rewards short, predictable text whatever the model would say itself: a terse reference
whose tokens are mostly forced (numbers copied from the question, "The answer is") can score lower than
the model's own wordier answer. So the same forward pass also gives the model's predictive entropy at
each position, and each target gets a "surprise excess": the mean over its tokens of the token's
surprise (-log p) minus the entropy there, the surprise the model expects of its own sample. It is 0 on
average for text sampled from the model itself, whatever its length or predictability, and above 0 for
text the model would not write ("surprise_excess_original", "surprise_excess_distilled" and the paired
"surprise_excess_gap"; docs/METHODS.md, "Reading the distribution gap"). Per-row values (and the row's
`kept_kind` when distilled with candidates) go to predictions.jsonl for histograms.
"""

from __future__ import annotations

from sdft.core.chat import chat_messages
from sdft.core.config import EvalConfig
from sdft.core.errors import InputError
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.stats import proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, finite_or_none, mean_of_finite
from sdft.core.io import read_jsonl

FIELDS = ("prompt", "original", "response", "accepted")

# These describe the training data as the evaluated model sees it, not a skill: "other", not task or
# forgetting. nll_gap has no better direction: SFT shrinks it by learning the originals, SDFT widens it
# by learning the rewrites, so calling either better would only restate what each model was trained on.
METRICS = (
    MetricSpec("nll_original", "nll_original", "nats/token", -1, "other",
               "per-token NLL of the original training responses under that row's model", ("nll_original",)),
    MetricSpec("nll_distilled", "nll_distilled", "nats/token", -1, "other",
               "per-token NLL of the distilled training responses under that row's model", ("nll_distilled",)),
    MetricSpec("nll_gap", "nll_gap", "nats/token", 0, "other",
               "mean per-row NLL of the original minus the distilled response, on accepted rows (above 0: the "
               "rewrites are the more likely targets)", ("nll_gap",)),
    MetricSpec("rewrite_more_likely", "rewrite_more_likely", "%", 0, "other",
               "accepted rows whose kept target the model finds more likely than the original"),
    # Surprise excess is descriptive too: 0 is "as the model itself would write", and below 0 (greedy text,
    # more predictable than the model's own samples) is no nearer than above.
    MetricSpec("surprise_excess_original", "surprise_excess_original", "nats/token", 0, "other",
               "mean per-token NLL minus the model's own entropy at each position, of the original training "
               "responses (0: as surprising as the model's own samples; above 0: text it would not write)",
               ("surprise_excess_original",)),
    MetricSpec("surprise_excess_distilled", "surprise_excess_distilled", "nats/token", 0, "other",
               "mean per-token NLL minus the model's own entropy at each position, of the kept "
               "distilled responses (accepted rows)", ("surprise_excess_distilled",)),
    MetricSpec("surprise_excess_gap", "surprise_excess_gap", "nats/token", 0, "other",
               "mean per-row surprise excess of the original minus the distilled response, on accepted rows "
               "(above 0: the rewrites are nearer what the model would write, length and predictability "
               "aside)", ("surprise_excess_gap",)),
)


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    if not train_data:
        raise InputError("the gap suite needs the distilled training data (train_data: a JSONL with "
                         f"fields {', '.join(FIELDS)}, as written by `sdft distill`)")


def prompt_messages(row: dict) -> list[dict]:
    """The chat prompt the row was trained with."""
    return chat_messages(row["prompt"], row.get("system"), row.get("history") or ())


def load_rows(path: str, limit: int | None) -> list[dict]:
    rows = read_jsonl(path)[:limit]
    for n, row in enumerate(rows, 1):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise InputError(f"{path} row {n}: missing {', '.join(missing)}; expected a distilled JSONL")
    return rows


def row_values(original, distilled) -> dict[str, float | None]:
    """One row's NLL and surprise excess of each target and their paired differences (original minus
    distilled); None where the row kept no rewrite or a target is empty. Takes EntropyScores."""
    values: dict[str, float | None] = {}
    for measure in ("nll", "surprise_excess"):
        o = getattr(original, measure)
        d = getattr(distilled, measure) if distilled is not None else None
        values[f"{measure}_original"] = finite_or_none(o)
        values[f"{measure}_distilled"] = finite_or_none(d)
        values[f"{measure}_gap"] = finite_or_none(o - d if d is not None else None)
    return values


def run(ctx: SuiteContext) -> SuiteResult:
    # Imported here: it loads torch, and the report imports this module for its METRICS only.
    from sdft.engine.likelihood import score_with_entropy

    rows = load_rows(ctx.train_data, ctx.cfg.limit)
    prompts = [prompt_messages(r) for r in rows]
    bs = ctx.cfg.batch_size
    # One forward pass per target gives both its NLL and the model's entropy along it.
    original = score_with_entropy(ctx.model, ctx.tokenizer, prompts, [r["original"] for r in rows], bs)
    kept = [i for i, r in enumerate(rows) if r["accepted"]]
    distilled_kept = score_with_entropy(ctx.model, ctx.tokenizer, [prompts[i] for i in kept],
                                        [rows[i]["response"] for i in kept], bs)
    distilled = [None] * len(rows)
    for i, score in zip(kept, distilled_kept):
        distilled[i] = score
    out = []
    for r, orig, dist in zip(rows, original, distilled):
        row = {"id": r.get("id"), "accepted": bool(r["accepted"]), **row_values(orig, dist)}
        if r.get("kept_kind"):
            row["kept_kind"] = r["kept_kind"]
        out.append(row)
    metrics = [mean_of_finite(name, [o[name] for o in out]) for name in ("nll_original", "nll_distilled", "nll_gap")]
    gaps = [o["nll_gap"] for o in out if o["nll_gap"] is not None]
    if gaps:
        metrics.append(proportion_metric("rewrite_more_likely", sum(g > 0 for g in gaps), len(gaps)))
    metrics += [mean_of_finite(name, [o[name] for o in out])
                for name in ("surprise_excess_original", "surprise_excess_distilled", "surprise_excess_gap")]
    return SuiteResult([m for m in metrics if m is not None], out)
