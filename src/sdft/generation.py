"""Batched greedy generation that keeps the cores busy.

Prompts are sorted by length into batches (so little padding is computed), left-padded, run with a
KV cache, and rows that finish are dropped from the batch so later steps only pay for live rows.
The batch plan depends only on the prompts and the settings, which is what lets a stage resume at a
batch boundary and still produce exactly the output of an uninterrupted run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from tqdm.auto import tqdm


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    batch_size: int = 32
    max_batch_tokens: int = 32768  # caps batch rows x (prompt + new tokens): bounds KV-cache memory
    stop: tuple[str, ...] = field(default_factory=tuple)


def plan_batches(lengths: list[int], batch_size: int, max_new_tokens: int, max_batch_tokens: int) -> list[list[int]]:
    """Group prompt indices into batches of similar length, longest first (memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + max_new_tokens
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a reply: the tokenizer's EOS and the model's generation config EOS list."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


def _cut_at_stop(text: str, stop: Iterable[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.inference_mode()
def greedy_token_ids(model, tokenizer, prompt_ids: list[list[int]], cfg: GenerationConfig) -> list[list[int]]:
    """Greedy-decode one batch; returns each row's new token ids (end-of-reply token excluded)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos_ids = stop_token_ids(model, tokenizer)
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)

    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    next_tokens = out.logits[:, -1].argmax(-1)
    last_pos = positions[:, -1]
    alive = list(range(len(prompt_ids)))  # batch row -> prompt index
    generated: list[list[int]] = [[] for _ in prompt_ids]
    tail = max((len(s) for s in cfg.stop), default=0) + 2
    for step in range(cfg.max_new_tokens):
        keep = []
        for j, row in enumerate(alive):
            tok = int(next_tokens[j])
            if tok in eos_ids:
                continue
            generated[row].append(tok)
            if cfg.stop and any(s in tokenizer.decode(generated[row][-tail:]) for s in cfg.stop):
                continue
            keep.append(j)
        if not keep or step == cfg.max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention, next_tokens, last_pos = attention[index], next_tokens[index], last_pos[index]
            alive = [alive[j] for j in keep]
        attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=1)
        last_pos = last_pos + 1
        out = model(input_ids=next_tokens[:, None], attention_mask=attention, position_ids=last_pos[:, None],
                    past_key_values=cache, use_cache=True)
        next_tokens = out.logits[:, -1].argmax(-1)
    return generated


def generate_batch(model, tokenizer, prompt_ids: list[list[int]], cfg: GenerationConfig) -> tuple[list[str], int]:
    """Greedy-decode one batch; returns the replies (special tokens removed) and new-token count."""
    generated = greedy_token_ids(model, tokenizer, prompt_ids, cfg)
    n_new = sum(len(ids) for ids in generated)
    texts = []
    for ids in generated:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        texts.append(_cut_at_stop(text, cfg.stop)[0].strip())
    return texts, n_new


def tokenize_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    # Rendered chat prompts already hold any BOS the template wants; don't add another.
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def iter_generate(model, tokenizer, prompts: list[str], cfg: GenerationConfig, skip: frozenset[int] = frozenset(),
                  desc: str = "generate", progress: bool = True) -> Iterator[tuple[int, list[int], list[str]]]:
    """Yield (batch number, prompt indices, replies) batch by batch; batches in `skip` are not run."""
    prompt_ids = tokenize_prompts(tokenizer, prompts)
    batches = plan_batches([len(p) for p in prompt_ids], cfg.batch_size, cfg.max_new_tokens, cfg.max_batch_tokens)
    todo = sum(len(b) for n, b in enumerate(batches) if n not in skip)
    bar = tqdm(total=todo, desc=desc, unit="prompt", disable=not progress, dynamic_ncols=True)
    started, tokens = time.perf_counter(), 0
    try:
        for number, batch in enumerate(batches):
            if number in skip:
                continue
            texts, n_new = generate_batch(model, tokenizer, [prompt_ids[i] for i in batch], cfg)
            tokens += n_new
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - started, 1e-9):.0f}")
            yield number, batch, texts
    finally:
        bar.close()


def generate(model, tokenizer, prompts: list[str], cfg: GenerationConfig, desc: str = "generate",
             progress: bool = True) -> list[str]:
    """Replies to rendered prompts, in input order."""
    replies: list[str] = [""] * len(prompts)
    for _, batch, texts in iter_generate(model, tokenizer, prompts, cfg, desc=desc, progress=progress):
        for i, text in zip(batch, texts):
            replies[i] = text
    return replies
