"""GPU check: bf16 LoRA training and greedy generation with a randomly initialised ~0.5B model.

Nothing is downloaded: the model is a random Llama-shaped network (24 layers, hidden 1024, ~0.49B
parameters) and the tokenizer a word-level one built here, with a ChatML chat template. The data are
random word sequences, so losses mean nothing; speed and memory do. Prints:

  training    sdft.train.trainer.train (packed rows, per-sequence attention, bf16 on the GPU), without
              and with gradient checkpointing: response tokens/s, peak GPU memory, and the dtypes of
              the base and LoRA weights (bf16 and fp32 expected) and whether autocast ran (no)
  generation  (A) transformers generate at batch 1 on a few prompts, (B) sdft.generation on all of
              them: new tokens/s, B/A, how many of A's prompts B answers with the same tokens, and
              peak GPU memory
  launch      with 2+ GPUs: `accelerate launch` of `sdft distill` on 2 processes, each on its own GPU,
              merged file identical to a 1-process run
  vllm        when vLLM is installed: the vLLM backend on B's prompts, tok/s and tokens-same share

About 3 minutes on one H100. `--tiny` runs the same code on a 2-layer model (a CPU is fine); the
tests do that so this script keeps working.

  python benchmarks/gpu_check.py             # on a GPU machine
  python benchmarks/gpu_check.py --tiny      # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SIZES = {  # name: (layers, hidden, intermediate, heads, kv heads, vocab words)
    "0.5b": (24, 1024, 4864, 16, 4, 32000),
    "tiny": (2, 64, 128, 4, 2, 2000),
}


def build_model(root: Path, size: str) -> Path:
    """A random Llama and a word-level tokenizer saved like any model folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    layers, hidden, inter, heads, kv_heads, words = SIZES[size]
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + ["system", "user", "assistant"] +
                                        [f"w{i}" for i in range(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  eos_token="<|im_end|>", bos_token="<|im_start|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root, safe_serialization=True)
    tok.save_pretrained(root)
    return root


def words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(vocab)}" for _ in range(n))


def check_training(model_dir: Path, out: Path, args, vocab: int, gradient_checkpointing: bool = False) -> dict:
    from sdft.data.example import Example
    from sdft.train.trainer import TrainConfig, train

    rng = random.Random(0)
    examples = [Example(id=str(i), instruction=words(rng, rng.randint(*args.prompt_words), vocab),
                        response=words(rng, rng.randint(*args.response_words), vocab))
                for i in range(args.rows)]
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, max_length=1024, save_steps=10**9,
                      gradient_checkpointing=gradient_checkpointing)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = out / ("train-gc" if gradient_checkpointing else "train")
    summary = train(str(model_dir), examples, run_dir, cfg, force=True, progress=False)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    seconds = next(r["train_runtime"] for r in log if "train_runtime" in r)
    # every row is seen equally often over whole epochs; otherwise this is an average
    mean_response = statistics.fmean(len(ex.response.split()) + 2 for ex in examples)  # + <|im_end|> \n
    tokens = args.steps * args.batch_size * mean_response
    return {"steps": summary["steps"], "seconds": seconds, "response_tok_s": tokens / seconds,
            "final_loss": summary["final_loss"], "peak_gpu_gb": _peak_gpu_gb(),
            "gradient_checkpointing": gradient_checkpointing,
            "base_dtype": summary.get("weights_dtype"), "lora_dtype": summary.get("adapter_dtype"),
            "autocast": summary.get("autocast"),  # False expected: bf16 weights train without it
            "dtype": "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"}


def check_launch(model_dir: Path, out: Path, args, vocab: int) -> dict | None:
    """`accelerate launch` of sdft distill on 2 GPUs vs 1 process: same file, one device per process."""
    import subprocess

    if torch.cuda.device_count() < 2:
        return None
    rng = random.Random(2)
    data = out / "launch.jsonl"
    data.write_text("".join(json.dumps({"prompt": words(rng, 20, vocab), "response": words(rng, 10, vocab)}) + "\n"
                            for _ in range(64)))
    common = ["distill", "--model", str(model_dir), "--data", str(data), "--task", "general",
              "--max-new-tokens", "32", "--batch-size", "8"]
    one = subprocess.run([sys.executable, "-m", "sdft.cli", *common, "--out", str(out / "one.jsonl")],
                         capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
                          "--num_processes", "2", "-m", "sdft.cli", *common, "--out", str(out / "two.jsonl")],
                         capture_output=True, text=True)
    same = (one.returncode == two.returncode == 0
            and (out / "one.jsonl").read_bytes() == (out / "two.jsonl").read_bytes())
    devices = sorted({line.strip() for line in two.stdout.splitlines() + two.stderr.splitlines()
                      if "cuda:" in line and "model" in line})
    return {"returncodes": [one.returncode, two.returncode], "identical": same, "device_lines": devices,
            "stderr_tail": two.stderr[-800:] if two.returncode else ""}


def check_vllm(model_dir: Path, args, vocab: int) -> dict | None:
    """The vLLM backend on the same prompts as B: tok/s and how many replies equal sdft.generation's."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        return None
    from sdft.chat import render_chat
    from sdft.generation import GenerationConfig, greedy_token_ids, tokenize_prompts
    from sdft.models import ModelSpec, load_model
    from sdft.vllm_backend import generate_vllm

    model, tok = load_model(ModelSpec(str(model_dir)))
    rng = random.Random(1)
    prompts = [render_chat(tok, [{"role": "user", "content": words(rng, rng.randint(*args.prompt_words), vocab)}])
               for _ in range(args.prompts)]
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=len(prompts), max_rows=args.max_rows,
                           max_batch_tokens=1 << 24)
    ours = [tok.decode(ids, skip_special_tokens=True) for ids in greedy_token_ids(model, tok, tokenize_prompts(tok, prompts), cfg)]
    del model
    torch.cuda.empty_cache()
    start = time.perf_counter()
    theirs = generate_vllm(str(model_dir), prompts, cfg)
    seconds = time.perf_counter() - start
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in theirs)
    same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
    return {"tok_s": tokens / seconds, "same_text": f"{same}/{len(prompts)}"}


def check_generation(model_dir: Path, args, vocab: int) -> dict:
    from sdft.chat import render_chat
    from sdft.generation import GenerationConfig, greedy_token_ids, stop_token_ids, tokenize_prompts
    from sdft.models import ModelSpec, load_model

    model, tok = load_model(ModelSpec(str(model_dir)))
    rng = random.Random(1)
    prompts = [render_chat(tok, [{"role": "user", "content": words(rng, rng.randint(*args.prompt_words), vocab)}])
               for _ in range(args.prompts)]
    ids = tokenize_prompts(tok, prompts)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=len(ids), max_rows=args.max_rows,
                           max_batch_tokens=1 << 24)
    eos = sorted(stop_token_ids(model, tok))
    reference = ids[:: max(1, len(ids) // args.reference_prompts)][: args.reference_prompts]

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    greedy_token_ids(model, tok, ids[:2], cfg)  # warm-up (kernels, allocator)
    a_tokens, a_out = 0, []
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for p in reference:
            x = torch.tensor([p], device=model.device)
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)
            new = out[0, len(p):].tolist()
            new = new[: next((i for i, t in enumerate(new) if t in eos), len(new))]
            a_out.append(new)
            a_tokens += len(new)
    sync()
    a_seconds = time.perf_counter() - start

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    b_out = greedy_token_ids(model, tok, ids, cfg)
    sync()
    b_seconds = time.perf_counter() - start
    b_tokens = sum(len(x) for x in b_out)
    by_prompt = {tuple(p): o for p, o in zip(ids, b_out)}
    same = sum(by_prompt[tuple(p)] == a for p, a in zip(reference, a_out))
    a_rate, b_rate = a_tokens / a_seconds, b_tokens / b_seconds
    return {"prompts": len(ids), "reference_prompts": len(reference), "a_tok_s": a_rate, "b_tok_s": b_rate,
            "b_over_a": b_rate / a_rate, "same_tokens": f"{same}/{len(reference)}", "peak_gpu_gb": _peak_gpu_gb(),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def _peak_gpu_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 2-layer model and a few rows: checks the script runs")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    size = "tiny" if args.tiny else "0.5b"
    settings = {"tiny": dict(rows=8, steps=2, batch_size=4, prompts=8, reference_prompts=2, max_new_tokens=8,
                             max_rows=4, prompt_words=(5, 20), response_words=(3, 10)),
                "0.5b": dict(rows=512, steps=40, batch_size=32, prompts=512, reference_prompts=4,
                             max_new_tokens=256, max_rows=256, prompt_words=(100, 400), response_words=(50, 300))}
    for k, v in settings[size].items():
        setattr(args, k, v)
    vocab = SIZES[size][5]

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no GPU)"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model", size)
        n_params = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
        print(f"device {device}; torch {torch.__version__}; model {n_params / 1e9:.2f}B parameters ({size})",
              flush=True)
        training = check_training(model_dir, Path(tmp), args, vocab)
        checkpointed = check_training(model_dir, Path(tmp), args, vocab, gradient_checkpointing=True)
        for t in (training, checkpointed):
            print(f"training{' (gradient checkpointing)' if t['gradient_checkpointing'] else ''}: {t['steps']} steps x "
                  f"{args.batch_size} sequences in {t['seconds']:.1f} s = {t['response_tok_s']:.0f} response tok/s "
                  f"({t['dtype']}; base weights {t['base_dtype']}, LoRA {t['lora_dtype']}, autocast {t['autocast']}), "
                  f"peak GPU memory {t['peak_gpu_gb'] or 0:.2f} GB", flush=True)
        generation = check_generation(model_dir, args, vocab)
        print(f"generation ({generation['dtype']}): A batch-1 generate {generation['a_tok_s']:.0f} tok/s on "
              f"{generation['reference_prompts']} prompts; B sdft.generation {generation['b_tok_s']:.0f} tok/s on "
              f"{generation['prompts']} prompts (max_rows {args.max_rows}); B/A {generation['b_over_a']:.1f}; "
              f"same tokens {generation['same_tokens']}; peak GPU memory {generation['peak_gpu_gb'] or 0:.1f} GB")
        launch = check_launch(model_dir, Path(tmp), args, vocab)
        print("launch: fewer than 2 GPUs, skipped" if launch is None else
              f"launch: 2-process distill identical to 1 process: {launch['identical']}; "
              f"exit codes {launch['returncodes']}; {launch['device_lines']} {launch['stderr_tail']}", flush=True)
        vllm = check_vllm(model_dir, args, vocab)
        print("vllm: not installed, skipped" if vllm is None else
              f"vllm: {vllm['tok_s']:.0f} tok/s; same text as sdft.generation {vllm['same_text']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "parameters": n_params, "training": training,
                                               "training_checkpointed": checkpointed, "generation": generation,
                                               "launch": launch, "vllm": vllm}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
