"""Distillation throughput: our batched greedy engine against transformers `generate`, in float32 and bf16.

The prompts are real distillation prompts (GSM8K from ../shared/data when present, else the built-in
arithmetic set) rendered with the math distillation template. Every side decodes greedily with the same
max new tokens and stops at the same end-of-reply ids.

  A  `model.generate`, one prompt at a time, float32: how the paper's reference implementation
     generated. At batch 1 its tokens/s hardly depends on how many prompts it sees, so it runs on an
     evenly spaced subset of the prompts (--reference-prompts; 0: all of them).
  C  `model.generate` on length-sorted, left-padded batches (--padded-batch prompts each), float32: the
     strongest plain alternative. A padded batch runs until its longest reply ends, so it runs on an
     evenly spaced subset too (--padded-prompts).
  B  sdft.engine.decode on all --prompts, the way the distillation stage runs it: in float32 and in
     bfloat16 (fast where the CPU has native bf16: AVX-512 BF16 or AMX).

Rounds alternate the sides so they see the same background load; medians over rounds are reported.
Beside the ratios (which move with the machine: A's speed differs twice over between CPUs we measured),
each side's model FLOPs utilisation against this machine's matmul rate at the model's shapes
(benchmarks/efficiency.py), the machine, and the dtype `dtype: auto` picks here; the targets are about
B in that dtype.
Also printed: the share of prompts whose replies B reproduces token for token (float32 B against A;
bf16 B against float32 B, and against bf16 batch-1 `generate`, which hands bf16 ties to the lowest token
id where the engine decides them in float32), and the distillation acceptance rate
(sdft.grading.verify.check on each reply against its reference) of the bf16 replies next to the float32
ones.

  python benchmarks/distill_throughput.py                    # ~6 minutes a round on 2 CPU cores (3 rounds)
  python benchmarks/distill_throughput.py --rounds 1         # one round: ~6 minutes with the checks
  python benchmarks/distill_throughput.py --quick            # smoke test, under 2 minutes
  python benchmarks/distill_throughput.py --data builtin:arithmetic --prompts 256 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from bench_data import describe, resolve_source  # noqa: E402

from sdft.data.load import load_examples  # noqa: E402
from sdft.distill.templates import get_template, render_distill_prompt  # noqa: E402
from sdft.grading.verify import check  # noqa: E402
from sdft.engine.decode import DecodeConfig, decode_token_ids, plan_generation, stop_token_ids, tokenize_prompts  # noqa: E402
from sdft.core.models import load_model  # noqa: E402
from sdft.core.config import ModelSpec  # noqa: E402
from efficiency import Dims, auto_dtype, machine_line, matmul_rate, mfu_line  # noqa: E402
from sdft.core.dtype_probe import DECODE_ROWS  # noqa: E402
from sdft.core.allocator import keep_freed_memory  # noqa: E402
from sdft.engine.workers import decode_workers  # noqa: E402

TARGET_VS_C = 2.0  # B in the dtype `auto` picks against C
TARGET_AUTO_LOSS = 0.05  # B in auto's dtype at most this much slower than B in the faster dtype
TARGET_MATCH = 0.95  # float32 B against A: same tokens
TARGET_ACCEPT_POINTS = 3.0  # bf16 acceptance within this many percentage points of float32's


def _cut(new: list[int], eos: list[int]) -> list[int]:
    """A reply's tokens up to (not including) its first end-of-reply id."""
    return next((new[:j] for j, t in enumerate(new) if t in eos), new)


def one_at_a_time(model, tok, prompt_ids: list[list[int]], max_new: int, eos: list[int]) -> tuple[list[list[int]], float]:
    """A: transformers generate, batch 1, greedy. Returns replies (end-of-reply id dropped) and seconds."""
    replies = []
    start = time.perf_counter()
    with torch.inference_mode():
        for ids in prompt_ids:
            x = torch.tensor([ids], device=model.device)
            out = model.generate(x, attention_mask=torch.ones_like(x),
                                 max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
            replies.append(_cut(out[0, len(ids):].tolist(), eos))
    return replies, time.perf_counter() - start


def padded_batches(model, tok, prompt_ids: list[list[int]], max_new: int, eos: list[int],
                   batch: int) -> tuple[list[list[int]], float]:
    """C: transformers generate on batches of similar length, left-padded, greedy."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    replies: list[list[int]] = [[] for _ in prompt_ids]
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            group = order[s:s + batch]
            width = max(len(prompt_ids[i]) for i in group)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for r, i in enumerate(group):
                ids[r, width - len(prompt_ids[i]):] = torch.tensor(prompt_ids[i])
                mask[r, width - len(prompt_ids[i]):] = 1
            out = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new,
                                 do_sample=False,
                                 eos_token_id=eos, pad_token_id=pad)
            for r, i in enumerate(group):
                replies[i] = _cut(out[r, width:].tolist(), eos)
    return replies, time.perf_counter() - start


def engine(model, tok, prompt_ids: list[list[int]], cfg: DecodeConfig) -> tuple[list[list[int]], float]:
    """B: the engine batch by batch, exactly as iter_generate drives it (minus turning ids into text)."""
    replies: list[list[int]] = [[] for _ in prompt_ids]
    start = time.perf_counter()
    for batch in plan_generation(prompt_ids, cfg):
        for i, ids in zip(batch, decode_token_ids(model, tok, [prompt_ids[i] for i in batch], cfg)):
            replies[i] = ids
    return replies, time.perf_counter() - start


def kept_rows(tok, examples, replies: list[list[int]], max_new: int) -> list[bool]:
    """Whether the distillation stage would keep each reply (math task), as the stage decodes them."""
    return [check("math", tok.decode(ids, skip_special_tokens=True).strip(), ex.response,
                  truncated=len(ids) >= max_new) is None for ex, ids in zip(examples, replies)]


def spaced(n: int, k: int) -> list[int]:
    k = n if k <= 0 else min(k, n)
    return [round(j * n / k) for j in range(k)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--data", default="auto", help="auto: GSM8K train if ../shared/data has it, else builtin:arithmetic")
    p.add_argument("--prompts", type=int, default=128, help="prompts B generates for")
    p.add_argument("--reference-prompts", type=int, default=6, help="evenly spaced prompts A generates for (0: all)")
    p.add_argument("--padded-prompts", type=int, default=64, help="evenly spaced prompts C generates for (0: all)")
    p.add_argument("--padded-batch", type=int, default=64, help="C: prompts per padded batch")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="B: prompts per planned (resumable) batch")
    p.add_argument("--max-rows", type=int, default=DecodeConfig.max_rows,
                   help="B: rows decoded at once in each worker")
    p.add_argument("--workers", type=int, default=DecodeConfig.workers,
                   help="B: decoding processes of one thread each (0: auto, as the distill stage does)")
    p.add_argument("--max-batch-tokens", type=int, default=1 << 20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 16 prompts, 32 new tokens, 1 round")
    args = p.parse_args()
    freed_kept = keep_freed_memory()  # as the distill stage does, for every side of the comparison
    if args.quick:
        args.prompts, args.reference_prompts, args.padded_prompts, args.padded_batch = 16, 2, 8, 8
        args.max_new_tokens, args.rounds = 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    source = resolve_source(args.data, args.prompts)
    examples = load_examples(source, limit=args.prompts)
    (m32, tok), (m16, _) = (load_model(ModelSpec(args.model, dt, device="cpu")) for dt in ("float32", "bfloat16"))
    template = get_template(None, "math")
    prompt_ids = tokenize_prompts(tok, [render_distill_prompt(tok, template, ex) for ex in examples])
    ref_idx = spaced(len(prompt_ids), args.reference_prompts)
    pad_idx = spaced(len(prompt_ids), args.padded_prompts)
    eos = sorted(stop_token_ids(m32, tok))
    cfg = DecodeConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           max_batch_tokens=args.max_batch_tokens, max_rows=args.max_rows, workers=args.workers)
    workers = decode_workers(m16, cfg.workers, min(len(prompt_ids), cfg.batch_size))

    auto, decision = auto_dtype(args.model)
    print(machine_line() + f", {os.cpu_count()} CPUs")
    print(f"dtype auto picks {auto} here (bf16 matmuls {decision['bf16_speedup']:.2f}x float32's at the model's "
          f"shapes; bf16 needs > {decision['margin']}x)")
    print(f"model {args.model} ({sum(p.numel() for p in m32.parameters()) / 1e6:.0f}M params), "
          f"freed memory kept (sdft.core.allocator): {'yes' if freed_kept else 'no'}")
    print(f"data {describe(source)}: {len(prompt_ids)} prompts, {sum(map(len, prompt_ids)) / len(prompt_ids):.0f} "
          f"tokens on average; A on {len(ref_idx)} of them, C on {len(pad_idx)} in batches of {args.padded_batch}; "
          f"max new tokens {args.max_new_tokens}; B: max_rows {cfg.max_rows} in each of "
          f"{workers} decoding process(es) of {'one thread' if workers > 1 else f'{torch.get_num_threads()} threads'}, "
          f"batch_size {cfg.batch_size}")

    for model in (m32, m16):  # first calls pay one-off setup (kernel selection, allocator growth)
        one_at_a_time(model, tok, prompt_ids[:1], 4, eos)
        engine(model, tok, prompt_ids[:2], DecodeConfig(max_new_tokens=4))
    rates: dict[str, list[float]] = {"A": [], "C": [], "B32": [], "B16": []}
    outs: dict[str, list[list[int]]] = {}
    for r in range(args.rounds):
        runs = {
            "A": lambda: one_at_a_time(m32, tok, [prompt_ids[i] for i in ref_idx], args.max_new_tokens, eos),
            "C": lambda: padded_batches(m32, tok, [prompt_ids[i] for i in pad_idx], args.max_new_tokens, eos,
                                        args.padded_batch),
            "B32": lambda: engine(m32, tok, prompt_ids, cfg),
            "B16": lambda: engine(m16, tok, prompt_ids, cfg),
        }
        line = []
        for side, run in runs.items():
            out, seconds = run()
            rates[side].append(sum(map(len, out)) / seconds)
            line.append(f"{side} {rates[side][-1]:.1f}")
            if side in outs and out != outs[side]:
                print(f"warning: a rerun of {side} gave different tokens")
            outs.setdefault(side, out)
        print(f"round {r + 1} tok/s: {' | '.join(line)} | B16/A {rates['B16'][-1] / rates['A'][-1]:.1f} "
              f"B16/C {rates['B16'][-1] / rates['C'][-1]:.2f}", flush=True)
    # bf16 batch-1 reference: what bf16 greedy decoding gives without batching (its speed for the record)
    a16_out, a16_s = one_at_a_time(m16, tok, [prompt_ids[i] for i in ref_idx], args.max_new_tokens, eos)
    a16 = sum(map(len, a16_out)) / a16_s

    med = {side: statistics.median(v) for side, v in rates.items()}
    k = len(ref_idx)
    same32 = sum(outs["A"][j] == outs["B32"][i] for j, i in enumerate(ref_idx)) / k
    same16 = sum(a16_out[j] == outs["B16"][i] for j, i in enumerate(ref_idx)) / k
    same_dtypes = sum(a == b for a, b in zip(outs["B32"], outs["B16"])) / len(prompt_ids)
    kept32 = kept_rows(tok, examples, outs["B32"], args.max_new_tokens)
    kept16 = kept_rows(tok, examples, outs["B16"], args.max_new_tokens)
    acc32, acc16 = 100.0 * sum(kept32) / len(kept32), 100.0 * sum(kept16) / len(kept16)
    # Model FLOPs per new token on each side's own prompts and replies: prefill and decoding together.
    dims = Dims.of(m32.config)

    def flops_per_token(idx: list[int], replies: list[list[int]]) -> float:
        flops = sum(dims.generation_flops(len(prompt_ids[i]), len(r)) for i, r in zip(idx, replies))
        return flops / max(1, sum(map(len, replies)))

    every = list(range(len(prompt_ids)))
    per_token = {"A": flops_per_token(ref_idx, outs["A"]), "C": flops_per_token(pad_idx, outs["C"]),
                 "B32": flops_per_token(every, outs["B32"]), "B16": flops_per_token(every, outs["B16"])}
    ceiling = {"float32": matmul_rate(dims, DECODE_ROWS, torch.float32),
               "bfloat16": matmul_rate(dims, DECODE_ROWS, torch.bfloat16)}
    side_dtype = {"A": "float32", "C": "float32", "B32": "float32", "B16": "bfloat16"}
    mfu = {side: med[side] * per_token[side] / ceiling[side_dtype[side]] for side in med}
    print()
    print("| | tokens/s (median) | B/A | B/C | MFU | same tokens |")
    print("|---|---|---|---|---|---|")
    print(f"| A: transformers generate, batch 1, float32 | {med['A']:.1f} | | | {mfu['A']:.1%} | |")
    print(f"| C: transformers generate, sorted padded batches of {args.padded_batch}, float32 | {med['C']:.1f} | | "
          f"| {mfu['C']:.1%} | |")
    for side, dt, same in (("B32", "float32", f"{same32:.0%} of {k} vs A"),
                           ("B16", "bfloat16", f"{same16:.0%} of {k} vs bf16 batch 1")):
        mark = "**" if dt == auto else ""
        print(f"| B: sdft.engine.decode, {dt}{' (auto)' if dt == auto else ''} | {mark}{med[side]:.1f}{mark} | "
              f"{med[side] / med['A']:.1f} | {mark}{med[side] / med['C']:.2f}{mark} | {mfu[side]:.1%} | {same} |")
    print(f"| (bf16 batch-1 generate) | {a16:.1f} | | | | |")
    print()
    for side, name in (("B32", "decoding, B float32"), ("B16", "decoding, B bfloat16")):
        print(mfu_line(name, med[side] * per_token[side], ceiling[side_dtype[side]], DECODE_ROWS))
    print(f"model FLOPs per new token, prefill included: {per_token['B32'] / 1e9:.3f} GFLOP (B's prompts and "
          "replies)")
    print(f"bf16 B gives the float32 replies token for token on {same_dtypes:.0%} of {len(prompt_ids)} prompts")
    print(f"acceptance (math check against the reference): float32 {acc32:.1f}%, bfloat16 {acc16:.1f}% "
          f"on the same {len(prompt_ids)} rows; rows kept in bf16 only: {sum(b and not a for a, b in zip(kept32, kept16))}, "
          f"in float32 only: {sum(a and not b for a, b in zip(kept32, kept16))}")
    print(f"peak resident memory of this process (both models, all sides): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; largest decoding worker "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB (sharing the parent's weights)")

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    b_auto = med["B16" if auto == "bfloat16" else "B32"]
    best = max(med["B16"], med["B32"])
    vs_c, gap = b_auto / med["C"], abs(acc16 - acc32)
    print(f"target dtype auto ({auto}) within {TARGET_AUTO_LOSS:.0%} of the faster dtype's B: "
          f"{verdict(b_auto >= (1 - TARGET_AUTO_LOSS) * best)} ({b_auto:.1f} against {best:.1f} tok/s)")
    print(f"target auto-B/C >= {TARGET_VS_C:.0f}: {verdict(vs_c >= TARGET_VS_C)} ({vs_c:.2f})")
    print(f"target bf16 acceptance within {TARGET_ACCEPT_POINTS:.0f} points of float32: "
          f"{verdict(gap <= TARGET_ACCEPT_POINTS)} ({gap:.1f} points)")
    print(f"target float32 B same tokens as A on >= {TARGET_MATCH:.0%} of prompts: "
          f"{verdict(same32 >= TARGET_MATCH)} ({same32:.0%})")
    if args.quick:
        print("(--quick: a smoke test; too few prompts and tokens for figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
