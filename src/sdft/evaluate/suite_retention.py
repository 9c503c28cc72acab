"""Retention suite: how far a fine-tuned model drifts from the seed model on everyday instructions.

Evaluating the seed (no seed_dir): its greedy replies become the reference, saved with the seed's own
per-token NLL of each. Evaluating a fine-tuned model against them:
  nll_shift        this model's NLL of the seed's reply minus the seed's own (0 = unchanged)
  nll_seed_reply   this model's NLL of the seed's reply (for the seed: of its own replies)
  kl_from_seed     KL(seed || this model) per token along the seed's replies, over the seed's top-k next
                   tokens plus one bucket for the rest (the forgetting measure of "RL's Razor", Shenfeld
                   et al. 2025; nll_shift is its one-sample estimate at the token the seed actually chose)
  cosine_to_seed, rouge_l_to_seed, bleu4_to_seed
                   similarity of this model's own greedy reply to the seed's
Per-row values go to predictions.jsonl for histograms. The seed's run also saves its top-k next tokens at
every position of its replies in seed_topk.safetensors, which kl_from_seed reads; a seed folder made
before that file existed gets a "not computed" note instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdft.core.config import EvalConfig
from sdft.core.errors import InputError
from sdft.evaluate.builtin_sets import RETENTION, load_resource
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, finite_or_none, mean_of_finite, note, user_turn
from sdft.core.io import atomic_write, read_jsonl

# How many of the seed's most likely next tokens are kept per reply position for kl_from_seed: for a chat
# model's greedy replies they hold nearly all the probability at most positions, and 128 replies of a few
# hundred tokens take a few MB.
SEED_TOPK = 32
TOPK_FILE = "seed_topk.safetensors"

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
    MetricSpec("kl_from_seed", "kl_from_seed", "nats/token", -1, "forgetting",
               f"KL(seed || model) per token along the seed's own replies, over the seed's top-{SEED_TOPK} tokens "
               "plus the rest as one bucket (a lower bound of the full KL; 0 = unchanged)",
               ("kl",),
               Verdict("KL from the seed",
                       "{m} stayed closer to the seed's next-token distributions than {b}",
                       "{m} moved further from the seed's next-token distributions than {b}",
                       "the KL from the seed on its own replies to general prompts")),
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


def seed_topk_path(seed_dir: str | Path) -> Path:
    return Path(seed_dir) / "retention" / TOPK_FILE


def save_topk(path: Path, row_ids: list[str], tops: list) -> None:
    """The rows' TopKs concatenated (positions x k), with offsets[i]:offsets[i+1] the positions of row i."""
    import torch
    from safetensors.torch import save

    from sdft.engine.likelihood import TopK

    if not tops:  # nothing was evaluated: an empty file still says the seed saved its top-k
        tops = [TopK(torch.zeros((0, SEED_TOPK), dtype=torch.long), torch.zeros((0, SEED_TOPK)), torch.zeros(0))]
        row_ids = []
    offsets = [0]
    for top in tops:
        offsets.append(offsets[-1] + top.ids.shape[0])
    tensors = {"ids": torch.cat([t.ids for t in tops]).to(torch.int32),
               "logprobs": torch.cat([t.logprobs for t in tops]).float(),
               "tail": torch.cat([t.tail for t in tops]).float(),
               "offsets": torch.tensor(offsets, dtype=torch.int64)}
    # One metadata entry, its keys sorted: the file's bytes then depend on its contents only.
    rows = json.dumps({"k": SEED_TOPK, "row_ids": row_ids}, sort_keys=True)
    with atomic_write(path, "wb") as f:
        f.write(save(tensors, metadata={"rows": rows}))


def load_topk(path: Path) -> dict:
    """{row id: TopK} from a file written by save_topk."""
    from safetensors import safe_open

    from sdft.engine.likelihood import TopK

    with safe_open(str(path), "pt") as f:
        row_ids = json.loads(f.metadata()["rows"])["row_ids"]
        t = {name: f.get_tensor(name) for name in f.keys()}
    o = t["offsets"].tolist()
    return {rid: TopK(t["ids"][o[i]:o[i + 1]].long(), t["logprobs"][o[i]:o[i + 1]], t["tail"][o[i]:o[i + 1]])
            for i, rid in enumerate(row_ids)}


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
    from sdft.engine.likelihood import score_with_topk

    items = retention_items(ctx.cfg.limit, None)
    prompts = chats(items)
    replies = ctx.generate(prompts)
    scored = score_with_topk(ctx.model, ctx.tokenizer, prompts, replies, SEED_TOPK, ctx.cfg.batch_size)
    nll = [score.nll for score, _ in scored]
    save_topk(ctx.suite_dir / TOPK_FILE, [str(item["id"]) for item in items], [top for _, top in scored])
    rows = [{"id": item["id"], "instruction": item["instruction"], "output": reply, "nll": finite_or_none(v)}
            for item, reply, v in zip(items, replies, nll)]
    metric = mean_of_finite("nll_seed_reply", nll)
    return SuiteResult([metric] if metric else [], rows)


def run_against_seed(ctx: SuiteContext) -> SuiteResult:
    from sdft.evaluate.similarity import SentenceEncoder, bleu4, rouge_l

    seed = seed_rows(ctx.seed_dir)
    items = retention_items(ctx.cfg.limit, seed)
    prompts = chats(items)
    seed_replies = [seed[str(item["id"])]["output"] for item in items]
    replies = ctx.generate(prompts)
    nll, kl = score_seed_replies(ctx, items, prompts, seed_replies)
    cosine = SentenceEncoder().cosine(replies, seed_replies) if items else []
    rows = []
    for i, (item, reply, theirs, v, cos) in enumerate(zip(items, replies, seed_replies, nll, cosine)):
        seed_nll = seed[str(item["id"])].get("nll")
        shift = v - seed_nll if seed_nll is not None else None
        rows.append({"id": item["id"], "instruction": item["instruction"], "output": reply, "seed_output": theirs,
                     "nll": finite_or_none(v), "seed_nll": seed_nll, "nll_shift": finite_or_none(shift),
                     "kl": kl[i] if kl is not None else None,
                     "cosine": cos, "rouge_l": rouge_l(reply, theirs), "bleu4": bleu4(reply, theirs)})
    metrics = [
        mean_of_finite("nll_shift", [r["nll_shift"] for r in rows]),
        mean_of_finite("nll_seed_reply", [r["nll"] for r in rows]),
        mean_of_finite("kl_from_seed", [r["kl"] for r in rows]) if kl is not None else None,
        mean_of_finite("cosine_to_seed", [r["cosine"] for r in rows]),
        mean_of_finite("rouge_l_to_seed", [r["rouge_l"] for r in rows]),
        mean_of_finite("bleu4_to_seed", [r["bleu4"] for r in rows]),
    ]
    no_topk = (f"skipped: the seed's retention folder has no {TOPK_FILE} (made by an older sdft); "
               "re-evaluate the seed with --force")
    notes = [] if kl is not None else [note("kl_from_seed", no_topk)]
    return SuiteResult([m for m in metrics if m is not None], rows, notes)


def score_seed_replies(ctx: SuiteContext, items: list[dict], prompts: list,
                       seed_replies: list[str]) -> tuple[list[float], list | None]:
    """This model's per-token NLL of each seed reply and, where the seed saved its top-k, each row's mean
    per-token KL(seed || this model) along it (None where it cannot be computed: an empty reply, or positions
    that do not line up with the seed's), both from one forward pass; KL None for all when the seed saved
    no top-k."""
    from sdft.engine.likelihood import bucket_kl, logprobs_at, response_nll

    path = seed_topk_path(ctx.seed_dir)
    if not path.is_file():
        return response_nll(ctx.model, ctx.tokenizer, prompts, seed_replies, ctx.cfg.batch_size), None
    seed_top = load_topk(path)
    # Rows the seed saved no top-k for (none, unless the files were mixed by hand) keep kl None.
    tops = [seed_top.get(str(item["id"])) for item in items]
    scored = logprobs_at(ctx.model, ctx.tokenizer, prompts, seed_replies,
                         [top.ids if top is not None else None for top in tops], ctx.cfg.batch_size)
    kl = [finite_or_none(float(bucket_kl(p, q).mean())) if p is not None and q is not None and q.ids.shape[0] > 0
          else None for p, (_, q) in zip(tops, scored)]
    return [score.nll for score, _ in scored], kl
