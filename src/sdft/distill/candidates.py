"""Several candidate targets per row, and the one the seed finds most likely.

SDFT's premise is that the seed's rewrite of a reference sits closer to the seed's own distribution
than the reference does. A single greedy rewrite need not: a small model reading the reference often
writes something it would never say unprompted. So, besides the greedy rewrite, a row can get
`candidates - 1` sampled rewrites (the paper's code sampled its rewrites) and, with `self_answer`, the
seed's own greedy answer to the plain instruction, without the reference. Every candidate goes through
the same checks as the greedy rewrite (sdft.grading.verify); of those that pass, the row keeps the one
with the lowest mean per-token NLL under the training prompt, scored exactly as the gap suite scores
training targets (sdft.engine.likelihood.response_nll). Each row records every candidate with its
verdict and NLL, and which kind it kept (`kept_kind`: greedy, sample, self_answer, or original when
none passed).

Sampled rows are seeded from the distill seed, the candidate number and the prompt's tokens
(sdft.engine.decode.row_seed), so the candidates do not depend on batching, on the processes sharing the
work, or on where an interrupted run resumed; rows with identical prompts get identical samples.
Each sampled candidate set is generated resumably in its own folder inside the stage's parts folder;
the self-answers decode together with the greedy rewrites (sdft.distill.stage).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

from sdft.core.chat import render_chat
from sdft.data.example import Example
from sdft.engine.decode import DecodeConfig, tokenize_prompts
from sdft.engine.likelihood import response_nll
from sdft.engine.resumable import generate_resumable
from sdft.grading.verify import status

# Named sampling settings for `--sampling`. "paper": what the SDFT authors' code sampled rewrites with;
# "model": the seed's distribution as it is.



@dataclass
class Candidate:
    kind: str  # greedy | sample | self_answer
    text: str | None  # None: not generated (the row's prompt did not fit the context)
    truncated: bool = False  # ran into max_new_tokens
    reject_reason: str | None = None
    status: str | None = None
    nll: float | None = None  # mean per-token NLL under the training prompt; None for an empty text

    def record(self) -> dict:
        return {"kind": self.kind, "text": self.text, "reject_reason": self.reject_reason, "nll": self.nll}


def hit_token_limit(tokenizer, replies: list[str | None], max_new_tokens: int) -> set[int]:
    """Indices of replies that ran into max_new_tokens instead of ending (rejected as truncated).

    Generation returns text only (the engines differ), so the reply is re-encoded. Re-encoding can
    merge a few tokens the model produced separately, hence the small allowance: a reply that ends
    on its own that close to the limit is rare, and a rejected row just keeps its reference.
    """
    slack = max(1, max_new_tokens // 50)
    texts = [(i, r) for i, r in enumerate(replies) if r]
    if not texts:
        return set()
    ids = tokenize_prompts(tokenizer, [r for _, r in texts])
    return {i for (i, _), n in zip(texts, map(len, ids)) if n >= max_new_tokens - slack}


def spread(texts: list[str], live: list[int], n: int) -> list[str | None]:
    """Replies to the `live` rows placed at their rows among `n`; the others get None."""
    out: list[str | None] = [None] * n
    for i, text in zip(live, texts, strict=True):
        out[i] = text
    return out


def candidate_seed(seed: int, k: int) -> int:
    """The generation seed of the k-th sampled candidate set (each row then mixes in its prompt)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/sample-{k}".encode()).digest()[:8], "little") & (2**63 - 1)


def self_answer_prompts(tokenizer, examples: list[Example], live: list[int]) -> list[str]:
    """The training prompt of each live row: the plain instruction, no reference, no distill template."""
    return [render_chat(tokenizer, examples[i].messages()) for i in live]


def sample_candidates(model, tokenizer, examples: list[Example], prompts: list[str], live: list[int], cfg,
                      gen: DecodeConfig, parts: Path, key: str, force: bool = False,
                      progress: bool = True) -> list[tuple[str, list[str | None]]]:
    """("sample", reply per example) for each sampled rewrite set; rows not in `live` get None. Each set
    resumes from its own folder under `parts`."""

    out = []
    for k in range(1, cfg.candidates):
        sampled = replace(gen, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          seed=candidate_seed(cfg.seed, k))
        texts = generate_resumable(model, tokenizer, [prompts[i] for i in live], sampled, Path(parts) / f"sample-{k}",
                                   f"{key}/sample-{k}", force=force, desc=f"distill sample-{k}", progress=progress)
        out.append(("sample", spread(texts, live, len(examples))))
    return out


def judge(model, tokenizer, task: str, examples: list[Example], per_row: list[list[Candidate]],
          batch_size: int = 16) -> list[int | None]:
    """Check every candidate, and score in place those that pass in rows with a choice to make; returns
    per row the index of the candidate to keep: the passing one with the lowest NLL (the first of
    equals), None when none passes. A row with one passing text keeps it unscored (nll None): scoring
    every candidate took a quarter of a distillation for choices that were never in doubt."""

    for ex, cands in zip(examples, per_row):
        for c in cands:
            c.status, c.reject_reason = status(task, c.text or "", ex.response, truncated=c.truncated)
    passing_texts = [{c.text for c in cands if c.reject_reason is None and c.text} for cands in per_row]
    # One score per distinct (row, text): samples often repeat the greedy rewrite.
    pairs = sorted((i, text) for i, texts in enumerate(passing_texts) if len(texts) > 1 for text in texts)
    nlls = response_nll(model, tokenizer, [examples[i].messages() for i, _ in pairs], [t for _, t in pairs],
                        batch_size)
    score = {pair: nll for pair, nll in zip(pairs, nlls)}
    kept = []
    for i, cands in enumerate(per_row):
        for c in cands:
            nll = score.get((i, c.text))
            c.nll = nll if nll is not None and math.isfinite(nll) else None
        passing = [j for j, c in enumerate(cands) if c.reject_reason is None and c.text]
        if len(passing_texts[i]) > 1:  # a choice: the most likely scored one
            scored = [j for j in passing if cands[j].nll is not None]
            passing = [min(scored, key=lambda j: cands[j].nll)] if scored else []
        kept.append(passing[0] if passing else None)
    return kept


def add_candidates(model, tokenizer, examples: list[Example], rows: list[dict], prompts: list[str], live: list[int],
                   task: str, cfg, gen: DecodeConfig, parts: Path, key: str,
                   self_answers: list[str | None] | None = None, force: bool = False, progress: bool = True) -> None:
    """Sample the extra rewrites and let each row in `live` keep the best passing candidate (rows as
    `build_rows` made them, with the greedy rewrite as `distilled`; updated in place). `self_answers`
    (per example, decoded with the rewrites) join as candidates when given."""
    sets = [("greedy", [r["distilled"] for r in rows])]
    sets += sample_candidates(model, tokenizer, examples, prompts, live, cfg, gen, parts, key, force, progress)
    if self_answers is not None:
        sets.append(("self_answer", self_answers))
    cut = [hit_token_limit(tokenizer, replies, cfg.max_new_tokens) for _, replies in sets]
    per_row = [[Candidate(kind, replies[i], truncated=i in trunc) for (kind, replies), trunc in zip(sets, cut)]
               for i in live]
    kept = judge(model, tokenizer, task, [examples[i] for i in live], per_row)
    for row in rows:  # rows that were not generated (too long) have no candidates
        row.update(candidates=[], kept_candidate=None)
    for i, cands, k in zip(live, per_row, kept):
        row = rows[i]
        row["candidates"] = [c.record() for c in cands]
        row["kept_candidate"] = k  # index into candidates; None: the original response is kept
        if k is None:
            row["kept_kind"] = "original"  # distilled, status and reject_reason stay the greedy rewrite's
            continue
        c = cands[k]
        row.update(distilled=c.text, response=c.text, accepted=True, reject_reason=None, status=c.status,
                   kept_kind=c.kind)
