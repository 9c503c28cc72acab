"""The distillation stage: the seed model rewrites every reference response, the rewrite is checked,
and each row keeps either the rewrite or the original, with its provenance.

Replies are written batch by batch into `<out>.parts/` (see sdft.resume), so a killed run resumes
where it stopped; the final JSONL appears only when every batch is done (written aside, renamed).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from sdft.data.example import Example
from sdft.distill.templates import DistillTemplate, get_template, render_distill_prompt
from sdft.distill.verify import check
from sdft.generation import GenerationConfig, tokenize_prompts
from sdft.io import atomic_write, write_json
from sdft.resume import StaleStateError, finish, generate_resumable, process_state


@dataclass
class DistillConfig:
    template: str | None = None  # built-in name or file; None: the task's default
    # Prompts per batch (the unit that is resumed and shared out across processes); within a batch at
    # most max_rows rows decode at once, and a finished row takes the next waiting prompt.
    batch_size: int = 256
    max_new_tokens: int = 512
    max_batch_tokens: int = 32768  # rows at once x (prompt + max_new_tokens): bounds KV-cache memory
    max_rows: int = 64  # 64 suits 2-4 CPU cores; raise it on a GPU
    backend: str = "transformers"  # or "vllm" (GPU only; see sdft.vllm_backend)
    tensor_parallel: int = 1  # vllm: GPUs per model replica
    data_parallel: int = 1  # vllm: model replicas, each on a shard of the prompts


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def build_rows(examples: list[Example], replies: list[str | None], task: str, template: DistillTemplate,
               too_long: set[int]) -> list[dict]:
    rows = []
    for i, (ex, reply) in enumerate(zip(examples, replies)):
        reason = "too_long" if i in too_long else check(task, reply or "", ex.response)
        row = {
            "id": ex.id,
            "row": ex.row,
            "prompt": ex.prompt,
            "instruction": ex.instruction,
            "input": ex.input,
            "original": ex.response,
            "distilled": reply,
            "response": ex.response if reason else reply,
            "accepted": reason is None,
            "reject_reason": reason,
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
        "accepted": accepted,
        "accepted_pct": round(100.0 * accepted / max(len(rows), 1), 2),
        "reject_reasons": dict(reasons.most_common()),
    }


def context_limit(model, tokenizer, max_context: int | None = None) -> int:
    """Tokens a prompt plus its reply may take: `max_context`, else the tokenizer's or the model's limit."""
    if max_context:
        return max_context
    limits = [getattr(tokenizer, "model_max_length", None),
              getattr(getattr(model, "config", None), "max_position_embeddings", None)]
    # Tokenizers without a limit report a huge sentinel (1e30); ignore it.
    return min((n for n in limits if isinstance(n, int) and 0 < n < 10**9), default=10**9)


def fingerprint(model_name: str, task: str, template: DistillTemplate, cfg: DistillConfig, prompts: list[str],
                examples: list[Example], limit: int | None = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model_name, task, asdict(template), asdict(cfg)], sort_keys=True).encode())
    if limit is not None:  # which rows are too long, and so which prompts are generated, depends on it
        h.update(f"limit={limit}".encode())
    for p, ex in zip(prompts, examples):
        h.update(p.encode())
        h.update(ex.response.encode())
    return h.hexdigest()


def distill(model, tokenizer, model_name: str, examples: list[Example], task: str, out: str | Path,
            cfg: DistillConfig, force: bool = False, max_context: int | None = None,
            progress: bool = True) -> dict:
    """Run (or resume) distillation into `out` (JSONL); returns the summary."""
    state = process_state()
    out = Path(out)
    template = get_template(cfg.template, task)
    prompts = [render_distill_prompt(tokenizer, template, ex) for ex in examples]
    limit = context_limit(model, tokenizer, max_context)
    key = fingerprint(model_name, task, template, cfg, prompts, examples, limit)
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
    gen = GenerationConfig(cfg.max_new_tokens, cfg.batch_size, cfg.max_batch_tokens, max_rows=cfg.max_rows)
    if cfg.backend == "vllm":
        # vLLM schedules the whole set itself; a killed vLLM run restarts this stage from the beginning.
        from sdft.models import resolve_model
        from sdft.vllm_backend import generate_vllm

        texts = generate_vllm(resolve_model(model_name), [prompts[i] for i in live], gen,
                              tensor_parallel_size=cfg.tensor_parallel, data_parallel_size=cfg.data_parallel)
    elif cfg.backend == "transformers":
        texts = generate_resumable(model, tokenizer, [prompts[i] for i in live], gen, parts_dir(out), key,
                                   force=force, desc="distill", progress=progress)
    else:
        raise ValueError(f"unknown backend '{cfg.backend}'; use transformers or vllm")
    replies: list[str | None] = [None] * len(examples)
    for i, text in zip(live, texts):
        replies[i] = text

    rows = build_rows(examples, replies, task, template, too_long)
    summary = summarize(rows, task) | {"model": model_name, "template": template.name,
                                       "config": asdict(cfg), "fingerprint": key, "output": out.name}
    if state.is_main_process:
        with atomic_write(out) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_json(summary_file, summary)  # written last: its presence marks the stage done
    finish(parts_dir(out))
    return summary
