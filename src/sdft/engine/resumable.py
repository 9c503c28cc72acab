"""Generation that survives being killed.

Replies are written batch by batch (each batch file written aside, synced, renamed) into a parts
folder with a manifest naming the inputs and settings. A rerun skips the batches on disk, so it ends
with exactly what an uninterrupted run gives: the batch plan is a pure function of prompts and settings.
Under `accelerate launch`, batches are dealt round-robin across processes and merged in input order.

A kill can land anywhere: a batch is on disk whole or not at all (temp files of a batch cut short are
ignored), and the parts folder is renamed away before it is deleted, so a half-deleted folder is never
mistaken for progress. Parts saved for other inputs or settings are refused, never mixed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdft.core.io import atomic_write, write_json
from sdft.core.runstate import StaleStateError, process_state, remove_tree
from sdft.engine.decode import DecodeConfig, iter_generate, plan_generation, tokenize_prompts


def generate_resumable(model, tokenizer, prompts: list[str], gen: DecodeConfig, parts: Path, key: str,
                       force: bool = False, desc: str = "generate", progress: bool = True,
                       drop_stale: bool = False) -> list[str]:
    """Replies to `prompts` in input order, every process returning the full list.

    Parts saved for other inputs or settings are refused (StaleStateError), or with `drop_stale` deleted:
    for a parts folder that only this code writes and whose inputs change from run to run."""
    state = process_state()
    parts = Path(parts)
    manifest = parts / "manifest.json"
    ids = tokenize_prompts(tokenizer, prompts)
    n_batches = len(plan_generation(ids, gen))
    if state.is_main_process:
        if force:
            remove_tree(parts)
        if manifest.is_file():
            stale = json.loads(manifest.read_text()).get("fingerprint") != key
        else:  # batches without a manifest: of unknown origin, so not to be trusted
            stale = any(parts.glob("batch-*.jsonl"))
        if stale and drop_stale:
            remove_tree(parts)
        elif stale:
            raise StaleStateError(
                f"{parts} holds partial results for other inputs or settings; use --force to start over"
            )
        parts.mkdir(parents=True, exist_ok=True)
        write_json(manifest, {"fingerprint": key, "batches": n_batches, "rows": len(prompts)})
    state.wait_for_everyone()

    done = {int(f.stem.split("-")[1]) for f in parts.glob("batch-*.jsonl")}
    mine = {b for b in range(n_batches) if b % state.num_processes == state.process_index}
    skip = frozenset(set(range(n_batches)) - (mine - done))
    for number, batch, texts in iter_generate(model, tokenizer, prompts, gen, skip=skip, desc=desc,
                                              progress=progress and state.is_main_process):
        with atomic_write(parts / f"batch-{number:06d}.jsonl") as f:
            for i, text in zip(batch, texts):
                f.write(json.dumps({"index": i, "text": text}, ensure_ascii=False) + "\n")
    state.wait_for_everyone()

    replies: list[str | None] = [None] * len(prompts)
    for f in sorted(parts.glob("batch-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            replies[rec["index"]] = rec["text"]
    missing = sum(r is None for r in replies)
    if missing:
        raise RuntimeError(f"{missing} prompts have no reply in {parts}; rerun to finish them")
    return replies  # type: ignore[return-value]
