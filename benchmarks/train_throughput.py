"""Training throughput: sdft's packed LoRA trainer against a plain padded transformers + peft loop.

Same rows, same LoRA settings, same optimizer settings (AdamW, cosine schedule, gradient clipping at
1.0 as the Trainer does), same number of steps and sequences per step:

  A  a plain loop: each step's sequences right-padded to the longest, `model(..., labels=...)`, which
     projects every position onto the vocabulary and takes the standard shifted loss (float32).
  B  sdft.train.trainer.train: the transformers Trainer with padding-free packing and logits only at
     response positions, in float32 and in bfloat16 (base weights in bf16, LoRA weights in float32;
     fast where the CPU has native bf16: AVX-512 BF16 or AMX).

Beside the ratios: the machine, the dtype `dtype: auto` picks here, and each side's model FLOPs
utilisation for a training step (forward + backward through the frozen base to the LoRA weights,
against this machine's matmul rate at the model's shapes and the step's token count;
benchmarks/efficiency.py). Every side does the same model FLOPs; padding and full-vocabulary logits are
A's extra work, not counted.

Each run is a fresh subprocess, so its peak resident memory is its own; rounds alternate A and B and
medians are reported. "Final loss" is measured the same way for both: the mean response-token loss of
the trained adapter over all rows (dropout off, on the float32 base model), next to the loss before training.

  python benchmarks/train_throughput.py                    # the demo's data; a few minutes on 2 CPU cores
  python benchmarks/train_throughput.py --quick            # smoke test: 8 rows, 2 steps, 1 round
  python benchmarks/train_throughput.py --data auto --rows 64 --steps 16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_data import describe, resolve_source  # noqa: E402

TARGET_RATIO = 1.5  # float32 B against A
TARGET_BF16_RATIO = 1.8  # bf16 B against float32 B
TARGET_LOSS_GAP = 0.02  # final losses: B against A, bf16 B against float32 B
TARGET_DEMO_RSS_MB = 3 * 1024


def load_rows(args):
    """(examples, tokenized rows) exactly as sdft.train builds them."""
    from sdft.data.load import load_examples
    from sdft.core.models import load_tokenizer
    from sdft.train.data import tokenize_example

    source = resolve_source(args.data, args.rows)
    examples = load_examples(source, limit=args.rows)
    tok = load_tokenizer(args.model)
    rows = [tokenize_example(tok, ex, ex.response, args.max_length) for ex in examples]
    keep = [(ex, r) for ex, r in zip(examples, rows) if r is not None]
    return [ex for ex, _ in keep], [r for _, r in keep], tok, source


@torch.no_grad()
def response_loss(model, rows) -> float:
    """Mean next-token loss over response tokens, one unpadded row at a time."""
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    for r in rows:
        ids = torch.tensor([r.input_ids])
        labels = torch.tensor(r.labels[1:])
        logits = model(input_ids=ids).logits[0, :-1]
        keep = labels != -100
        total += F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum").item()
        count += int(keep.sum())
    return total / max(count, 1)


def lora_config():
    from peft import LoraConfig

    from sdft.core.config import TrainConfig

    d = TrainConfig()
    return LoraConfig(r=d.lora_r, lora_alpha=d.lora_alpha, lora_dropout=d.lora_dropout,
                      target_modules=list(d.target_modules), task_type="CAUSAL_LM")


def run_plain(args, rows, tok) -> dict:
    """A: right padding, full logits, the model's own loss."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler, set_seed

    from sdft.core.models import resolve_model

    set_seed(args.seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32),
                           lora_config())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = get_scheduler("cosine", opt, num_warmup_steps=0, num_training_steps=args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    order: list[int] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    losses = []
    model.train()
    start = time.perf_counter()
    for _ in range(args.steps):
        batch = []
        for _ in range(args.batch_size):
            if not order:
                order = torch.randperm(len(rows), generator=gen).tolist()
            batch.append(rows[order.pop()])
        width = max(len(r.input_ids) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r.input_ids)
            ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(r.input_ids), 1, torch.tensor(r.labels)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "last_step_loss": losses[-1], "peak_rss_mb": rss,
            "final_loss": response_loss(model, rows)}


def run_sdft(args, examples, rows, out: Path, dtype: str) -> dict:
    """B: sdft.train.trainer.train as the pipeline calls it (checkpointing pushed past the last step)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sdft.core.models import resolve_model
    from sdft.train.trainer import train
    from sdft.core.config import TrainConfig

    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                      max_length=args.max_length, seed=args.seed, save_steps=10**9, dtype=dtype)
    run = out / f"run-{dtype}"
    summary = train(args.model, examples, run, cfg, force=True, progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    seconds = next(r["train_runtime"] for r in log if "train_runtime" in r)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(run / "adapter"))
    return {"seconds": seconds, "last_step_loss": summary["final_loss"], "peak_rss_mb": rss,
            "final_loss": response_loss(model, rows)}


def child(args) -> None:
    examples, rows, tok, _ = load_rows(args)
    out = Path(args.json).parent
    if args.child == "A":
        from sdft.core.allocator import freed_memory_kept

        with freed_memory_kept():  # as sdft's training does (sdft.train.session)
            result = run_plain(args, rows, tok)
    else:
        result = run_sdft(args, examples, rows, out, "bfloat16" if args.child == "B16" else "float32")
    Path(args.json).write_text(json.dumps(result))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--data", default="builtin:arithmetic",
                   help="builtin:arithmetic (the demo's data), a file, or auto: GSM8K train if ../shared/data has it")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a smoke test: 8 rows, 2 steps of 4, 1 round")
    p.add_argument("--child", choices=["A", "B", "B16"], help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.rows, args.steps, args.batch_size, args.rounds = 8, 2, 4, 1
    if args.child:
        child(args)
        return 0

    from sdft.core.models import resolve_model

    examples, rows, tok, source = load_rows(args)
    per_epoch = len(rows) / args.batch_size
    seqs = args.steps * args.batch_size
    # every row is seen equally often when the steps cover whole epochs: then both sides process the same tokens
    response_tokens = sum(sum(t != -100 for t in r.labels) for r in rows) * seqs / len(rows)
    if seqs % len(rows):
        print(f"note: {args.steps} steps x {args.batch_size} is not a whole number of epochs over {len(rows)} rows; "
              "response token counts are averages")
    from transformers import AutoModelForCausalLM

    initial = response_loss(AutoModelForCausalLM.from_pretrained(resolve_model(args.model)), rows)
    label = describe(source)
    lengths = [len(r.input_ids) for r in rows]
    from efficiency import Dims, auto_dtype, machine_line, matmul_rate, mfu_line
    from transformers import AutoConfig

    auto, decision = auto_dtype(args.model)
    print(machine_line() + f", {os.cpu_count()} CPUs")
    print(f"dtype auto picks {auto} here (bf16 matmuls {decision['bf16_speedup']:.2f}x float32's at the model's "
          f"shapes; bf16 needs > {decision['margin']}x)")
    # Model FLOPs of a run: every row as often as the steps take it; a token at position p attends to p + 1.
    dims = Dims.of(AutoConfig.from_pretrained(resolve_model(args.model)))
    scored = [sum(t != -100 for t in r.labels) for r in rows]
    run_flops = sum(dims.train_flops(n, s, (n + 1) / 2) for n, s in zip(lengths, scored)) * seqs / len(rows)
    step_rows = round(sum(lengths) / len(rows) * args.batch_size)  # tokens per step: the matmuls' rows
    ceiling = {dt: matmul_rate(dims, step_rows, getattr(torch, dt)) for dt in ("float32", "bfloat16")}
    print(f"data {label}: {len(rows)} rows, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(rows):.0f}), "
          f"{args.steps} steps x {args.batch_size} sequences ({args.steps / per_epoch:.1f} epochs), "
          f"{response_tokens:.0f} response tokens per run; loss before training {initial:.4f}")

    results: dict[str, list[dict]] = {"A": [], "B": [], "B16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in results:
                out = Path(tmp) / f"{side}{r}.json"
                cmd = [sys.executable, __file__, "--child", side, "--json", str(out), "--model", args.model,
                       "--data", args.data, "--rows", str(args.rows), "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                       "--max-length", str(args.max_length), "--seed", str(args.seed)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                res = json.loads(out.read_text())
                res["tok_s"] = response_tokens / res["seconds"]
                results[side].append(res)
                print(f"round {r + 1} {side}: {res['seconds']:.1f}s = {res['tok_s']:.1f} response tok/s, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB, final loss {res['final_loss']:.4f}", flush=True)

    def med(side: str, key: str) -> float:
        return statistics.median(x[key] for x in results[side])

    a, b = med("A", "tok_s"), med("B", "tok_s")
    ratio = b / a
    la, lb = med("A", "final_loss"), med("B", "final_loss")
    gap = abs(lb - la) / la
    print()
    b16 = med("B16", "tok_s")
    ratio16 = b16 / b
    l16 = med("B16", "final_loss")
    gap16 = abs(l16 - lb) / lb
    side_dtype = {"A": "float32", "B": "float32", "B16": "bfloat16"}
    mfu = {side: run_flops / med(side, "seconds") / ceiling[dt] for side, dt in side_dtype.items()}
    print("| | response tok/s (median) | MFU | peak RSS | final loss | last step loss |")
    print("|---|---|---|---|---|---|")
    for side, name in (("A", "A: padded transformers + peft loop, float32"), ("B", "B: sdft.train (packed), float32"),
                       ("B16", "B: sdft.train (packed), bfloat16")):
        name += " (auto)" if side != "A" and side_dtype[side] == auto else ""
        print(f"| {name} | {med(side, 'tok_s'):.1f} | {mfu[side]:.1%} | {med(side, 'peak_rss_mb'):.0f} MB | "
              f"{med(side, 'final_loss'):.4f} | {med(side, 'last_step_loss'):.4f} |")
    print(f"| B/A (float32) | {ratio:.2f} | | gap {gap:.2%} | |")
    print(f"| bf16 B / float32 B | {ratio16:.2f} | | gap {gap16:.2%} | |")
    print()
    for side in ("B", "B16"):
        print(mfu_line(f"training step, B {side_dtype[side]}", run_flops / med(side, "seconds"),
                       ceiling[side_dtype[side]], step_rows))
    print(f"model FLOPs of a run: {run_flops / 1e12:.2f} TFLOP ({seqs} sequences)")
    print(f"target B/A >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'not met'} ({ratio:.2f})")
    print(f"target final losses within {TARGET_LOSS_GAP:.0%}: {'met' if gap <= TARGET_LOSS_GAP else 'not met'} "
          f"({gap:.2%}; loss before training {initial:.4f})")
    print(f"target bf16 B / float32 B >= {TARGET_BF16_RATIO}: {'met' if ratio16 >= TARGET_BF16_RATIO else 'not met'} "
          f"({ratio16:.2f})")
    print(f"target bf16 final loss within {TARGET_LOSS_GAP:.0%} of float32's: "
          f"{'met' if gap16 <= TARGET_LOSS_GAP else 'not met'} ({gap16:.2%})")
    if args.quick:
        print("(--quick: a smoke test; too few steps for figures)")
    peak_b = med("B", "peak_rss_mb")
    print(f"memory: the whole demo pipeline is meant to stay under {TARGET_DEMO_RSS_MB / 1024:.0f} GB; "
          f"B's training process peaks at {peak_b:.0f} MB on this data "
          f"({'under' if peak_b < TARGET_DEMO_RSS_MB else 'OVER'})")
    if not math.isfinite(ratio):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
