"""The distillation stage: the seed model rewrites every reference response, the rewrite is checked,
and each row keeps either the rewrite or the original, with its provenance.

Replies are written batch by batch into `<out>.parts/` (see sdft.core.runstate), so a killed run resumes
where it stopped; the final JSONL appears only when every batch is done (written aside, renamed).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from sdft.core.allocator import freed_memory_kept
from sdft.core.config import DistillConfig
from sdft.core.errors import InputError
from sdft.core.io import atomic_write, write_json
from sdft.core.layout import parts_dir, summary_path
from sdft.core.models import resolve_model
from sdft.core.runstate import StaleStateError, finish, fingerprint, holds, process_state
from sdft.data.example import Example
from sdft.distill.candidates import add_candidates, hit_token_limit, self_answer_prompts, spread
from sdft.distill.templates import DistillTemplate, get_template, render_distill_prompt
from sdft.engine.decode import DecodeConfig, tokenize_prompts
from sdft.engine.resumable import generate_resumable
from sdft.engine.vllm import generate_vllm
from sdft.grading.verify import status


def build_rows(examples: list[Example], replies: list[str | None], task: str, template: DistillTemplate,
               too_long: set[int], truncated: set[int] = frozenset()) -> list[dict]:
    """One row per example; `truncated` holds the indices of replies cut off at max_new_tokens."""
    rows = []
    for i, (ex, reply) in enumerate(zip(examples, replies)):
        if i in too_long:
            state, reason = "rejected", "too_long"
        else:
            state, reason = status(task, reply or "", ex.response, truncated=i in truncated)
        row = {
            "id": ex.id,
            "row": ex.row,
            "prompt": ex.prompt,
            "instruction": ex.instruction,
            "input": ex.input,
            "original": ex.response,
            "distilled": reply,
            "response": ex.response if reason else reply,
            "accepted": reason is None,  # also true for accepted_unverified: the rewrite is used
            "reject_reason": reason,
            "status": state,
            "kept_kind": "original" if reason else "greedy",  # with candidates: also sample, self_answer
            "template": template.name,
        }
        if ex.system:
            row["system"] = ex.system
        if ex.history:
            row["history"] = ex.history
        rows.append(row)
    return rows


def summarize(rows: list[dict], task: str) -> dict:
    reasons = Counter(r["reject_reason"] for r in rows if r["reject_reason"])
    accepted = sum(r["accepted"] for r in rows)
    return {
        "task": task,
        "rows": len(rows),
        "accepted": accepted,  # every kept rewrite, accepted_unverified included
        "accepted_pct": round(100.0 * accepted / max(len(rows), 1), 2),
        # of those, kept without a check against the reference (it held no answer or call to compare)
        "accepted_unverified": sum(r.get("status") == "accepted_unverified" for r in rows),
        "reject_reasons": dict(reasons.most_common()),
        "kept_kinds": dict(Counter(r.get("kept_kind") for r in rows if r.get("kept_kind")).most_common()),
    }


def unverified_note(summary: dict) -> str:
    """'; 3 of them unverified' when some kept rewrites could not be checked against their reference."""
    n = summary.get("accepted_unverified") or 0
    return f"; {n} of them unverified (the reference has no answer to compare)" if n else ""


def context_limit(model, tokenizer, max_context: int | None = None) -> int:
    """Tokens a prompt plus its reply may take: `max_context`, else the tokenizer's or the model's limit."""
    if max_context:
        return max_context
    limits = [getattr(tokenizer, "model_max_length", None),
              getattr(getattr(model, "config", None), "max_position_embeddings", None)]
    # Tokenizers without a limit report a huge sentinel (1e30); ignore it.
    return min((n for n in limits if isinstance(n, int) and 0 < n < 10**9), default=10**9)


def distill_key(model_name: str, task: str, template: DistillTemplate, cfg: DistillConfig, prompts: list[str],
                examples: list[Example], limit: int | None = None, dtype: str | None = None) -> str:
    """What the distilled file depends on. `limit`: which rows are too long, and so which prompts are
    generated, depends on it; `dtype`: bf16 and fp32 greedy replies differ at near-ties."""
    return fingerprint("distill", model_name, task, asdict(template), asdict(cfg), dtype, limit,
                       [[p, ex.response] for p, ex in zip(prompts, examples)])


@holds("out")
def distill(model, tokenizer, model_name: str, examples: list[Example], task: str, out: str | Path,
            cfg: DistillConfig, force: bool = False, progress: bool = True, revision: str | None = None) -> dict:
    """Run (or resume) distillation into `out` (JSONL); returns the summary. `revision` is the model's hub
    revision: the vLLM backend loads it, and it keys the saved state (the transformers model comes loaded)."""
    state = process_state()
    out = Path(out)
    template = get_template(cfg.template, task)
    prompts = [render_distill_prompt(tokenizer, template, ex) for ex in examples]
    limit = context_limit(model, tokenizer, cfg.max_context)
    # The dtype the model runs in is part of the key: bf16 and fp32 greedy replies differ at near-ties.
    dtype = str(next(model.parameters()).dtype) if model is not None else "vllm"
    key = distill_key(model_name if revision is None else f"{model_name}@{revision}", task, template, cfg, prompts,
                      examples, limit, dtype)
    summary_file = summary_path(out)
    if out.is_file() and summary_file.is_file() and not force:
        summary = json.loads(summary_file.read_text())
        if summary.get("fingerprint") == key:
            finish(parts_dir(out))  # parts left by a kill after the summary was written
            return summary
        raise StaleStateError(f"{out} exists from a run with other inputs or settings; use --force to redo it")

    # Rows beyond the model's context are not sent to the model: they keep the original response.
    lengths = [len(p) for p in tokenize_prompts(tokenizer, prompts)]
    too_long = {i for i, n in enumerate(lengths) if n + cfg.max_new_tokens > limit}
    live = [i for i in range(len(examples)) if i not in too_long]
    gen = DecodeConfig(cfg.max_new_tokens, cfg.batch_size, cfg.max_batch_tokens, max_rows=cfg.max_rows,
                           workers=cfg.workers)
    self_answers = None
    if cfg.backend == "vllm":
        # vLLM schedules the whole set itself; a killed vLLM run restarts this stage from the beginning.

        texts = generate_vllm(resolve_model(model_name), [prompts[i] for i in live], gen,
                              tensor_parallel_size=cfg.tensor_parallel, data_parallel_size=cfg.data_parallel,
                              **({"revision": revision} if revision else {}))
    elif cfg.backend == "transformers":
        # The seed's answers to the plain instructions decode in the same call as the rewrites: one
        # batch of both is faster than two after another. Their own key: parts saved without them differ.
        own = self_answer_prompts(tokenizer, examples, live) if cfg.self_answer else []
        with freed_memory_kept():  # fewer page faults in a long decode (sdft.core.allocator)
            texts = generate_resumable(model, tokenizer, [prompts[i] for i in live] + own, gen, parts_dir(out),
                                       key + ("/with-self-answers" if own else ""), force=force,
                                       desc="distill" + (" (rewrites, self-answers)" if own else ""),
                                       progress=progress)
        self_answers = spread(texts[len(live):], live, len(examples)) if own else None
        texts = texts[: len(live)]
    else:
        raise InputError(f"unknown backend '{cfg.backend}'; use transformers or vllm")
    replies = spread(texts, live, len(examples))

    rows = build_rows(examples, replies, task, template, too_long,
                      truncated=hit_token_limit(tokenizer, replies, cfg.max_new_tokens))
    if cfg.candidates > 1 or cfg.self_answer:  # more candidates per row; the most likely passing one is kept

        add_candidates(model, tokenizer, examples, rows, prompts, live, task, cfg, gen, parts_dir(out), key,
                       self_answers, force=force, progress=progress)
    summary = summarize(rows, task) | {"model": model_name, "template": template.name,
                                       "config": asdict(cfg), "fingerprint": key, "output": out.name}
    if state.is_main_process:
        with atomic_write(out) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_json(summary_file, summary)  # written last: its presence marks the stage done
    finish(parts_dir(out))
    return summary
