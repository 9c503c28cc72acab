"""Distillation throughput: our batched greedy engine against transformers `generate` at batch 1.

The prompts are real distillation prompts (GSM8K from ../shared/data when present, else the built-in
arithmetic set) rendered with the math distillation template. Both sides decode greedily with the same
max new tokens and stop at the same end-of-reply ids.

  A  `model.generate`, one prompt at a time, as the paper's reference implementation generated.
     At batch 1 its tokens/s hardly depends on how many prompts it sees, so it runs on an evenly
     spaced subset of the prompts (--reference-prompts; 0: all of them).
  B  sdft.generation on all --prompts, the way the distillation stage runs it.

Rounds alternate A and B so both see the same background load; medians over rounds are reported,
and the fraction of A's prompts whose replies B reproduces token for token.

  python benchmarks/distill_throughput.py                    # ~6 minutes on 2 CPU cores
  python benchmarks/distill_throughput.py --data builtin:arithmetic --prompts 256 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from bench_data import describe, resolve_source  # noqa: E402

from sdft.data.load import load_examples  # noqa: E402
from sdft.distill.templates import get_template, render_distill_prompt  # noqa: E402
from sdft.generation import GenerationConfig, greedy_token_ids, plan_generation, stop_token_ids, tokenize_prompts  # noqa: E402
from sdft.models import ModelSpec, load_model  # noqa: E402

TARGET_RATIO = 15.0
TARGET_MATCH = 0.95


def reference(model, tok, prompt_ids: list[list[int]], max_new: int, eos: list[int]) -> tuple[list[list[int]], float]:
    """A: transformers generate, batch 1, greedy. Returns replies (end-of-reply id dropped) and seconds."""
    replies = []
    start = time.perf_counter()
    with torch.inference_mode():
        for ids in prompt_ids:
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
            new = out[0, len(ids):].tolist()
            replies.append(new[:-1] if new and new[-1] in eos else new)
    return replies, time.perf_counter() - start


def engine(model, tok, prompt_ids: list[list[int]], cfg: GenerationConfig) -> tuple[list[list[int]], float]:
    """B: the engine batch by batch, exactly as iter_generate drives it (minus turning ids into text)."""
    replies: list[list[int]] = [[] for _ in prompt_ids]
    start = time.perf_counter()
    for batch in plan_generation(prompt_ids, cfg):
        for i, ids in zip(batch, greedy_token_ids(model, tok, [prompt_ids[i] for i in batch], cfg)):
            replies[i] = ids
    return replies, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--data", default="auto", help="auto: GSM8K train if ../shared/data has it, else builtin:arithmetic")
    p.add_argument("--prompts", type=int, default=128, help="prompts B generates for")
    p.add_argument("--reference-prompts", type=int, default=6, help="evenly spaced prompts A generates for (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="B: prompts per planned (resumable) batch")
    p.add_argument("--max-rows", type=int, default=GenerationConfig.max_rows, help="B: rows decoded at once")
    p.add_argument("--max-batch-tokens", type=int, default=1 << 20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    source = resolve_source(args.data, args.prompts)
    examples = load_examples(source, limit=args.prompts)
    model, tok = load_model(ModelSpec(args.model, device="cpu"))
    template = get_template(None, "math")
    prompt_ids = tokenize_prompts(tok, [render_distill_prompt(tok, template, ex) for ex in examples])
    k = len(prompt_ids) if args.reference_prompts <= 0 else min(args.reference_prompts, len(prompt_ids))
    ref_idx = [round(j * len(prompt_ids) / k) for j in range(k)]
    eos = sorted(stop_token_ids(model, tok))
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           max_batch_tokens=args.max_batch_tokens, max_rows=args.max_rows)

    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, {model.dtype}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    label = describe(source)
    print(f"data {label}: {len(prompt_ids)} prompts, {sum(map(len, prompt_ids)) / len(prompt_ids):.0f} tokens "
          f"on average; A on {k} of them; max new tokens {args.max_new_tokens}; "
          f"B: max_rows {cfg.max_rows}, batch_size {cfg.batch_size}")

    a_rates, b_rates, ratios = [], [], []
    first_a = first_b = None
    for r in range(args.rounds):
        a_out, a_s = reference(model, tok, [prompt_ids[i] for i in ref_idx], args.max_new_tokens, eos)
        b_out, b_s = engine(model, tok, prompt_ids, cfg)
        a_tok, b_tok = sum(map(len, a_out)), sum(map(len, b_out))
        a_rates.append(a_tok / a_s)
        b_rates.append(b_tok / b_s)
        ratios.append(b_rates[-1] / a_rates[-1])
        print(f"round {r + 1}: A {a_tok} tokens in {a_s:.1f}s = {a_rates[-1]:.1f} tok/s | "
              f"B {b_tok} tokens in {b_s:.1f}s = {b_rates[-1]:.1f} tok/s | B/A {ratios[-1]:.1f}", flush=True)
        if first_a is None:
            first_a, first_b = a_out, b_out
        elif a_out != first_a or b_out != first_b:
            print("warning: a rerun gave different tokens")

    same = sum(first_a[j] == first_b[i] for j, i in enumerate(ref_idx)) / k
    a_med, b_med = statistics.median(a_rates), statistics.median(b_rates)
    ratio = b_med / a_med
    prompt_tokens = sum(map(len, prompt_ids))
    new_tokens = sum(map(len, first_b))
    print()
    print("| | tokens/s (median) | |")
    print("|---|---|---|")
    print(f"| A: transformers generate, batch 1 | {a_med:.1f} | {k} prompts |")
    print(f"| B: sdft.generation | {b_med:.1f} | {len(prompt_ids)} prompts |")
    print(f"| B/A | {ratio:.1f} | per round: {', '.join(f'{x:.1f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.1f}) |")
    print(f"| same tokens as A | {same:.0%} | {round(same * k)}/{k} prompts |")
    print()
    print(f"B processed {prompt_tokens / max(new_tokens, 1):.2f} prompt tokens per new token "
          f"(mean reply {new_tokens / len(prompt_ids):.0f} tokens)")
    print(f"peak resident memory of this process (model, A and B): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    ok_ratio, ok_match = ratio >= TARGET_RATIO, same >= TARGET_MATCH
    print(f"target B/A >= {TARGET_RATIO:.0f}: {'met' if ok_ratio else 'MISSED'} ({ratio:.1f})")
    print(f"target same tokens on >= {TARGET_MATCH:.0%} of prompts: {'met' if ok_match else 'MISSED'} ({same:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
