"""`sdft` command line: a thin layer over the pipeline's functions.

Exit codes: 0 done, 1 failure, 2 bad input or usage (nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
                        max_batch_tokens=args.max_batch_tokens, max_rows=args.max_rows, backend=args.backend,
                        tensor_parallel=args.tensor_parallel, data_parallel=args.data_parallel)
    if args.backend == "vllm":  # vLLM loads the weights itself
        model, tok = None, load_tokenizer(args.model, args.trust_remote_code)
    else:
        model, tok = load_model(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code))
    summary = distill(model, tok, args.model, examples, args.task, args.out, cfg, force=args.force,
                      max_context=args.max_context)
    _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out) -> None:
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["reject_reasons"].items()) or "none"
    print(f"distilled {summary['rows']} rows -> {out}")
    print(f"accepted {summary['accepted']}/{summary['rows']} ({summary['accepted_pct']:.1f}%); "
          f"fell back to the original: {reasons}")


def cmd_train(args) -> int:
    from sdft.config import load_config
    from sdft.train.trainer import train

    cfg = load_config(args.config, [f"train.{s}" for s in args.set] if args.set else None).train
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    if args.seed is not None:
        cfg.seed = args.seed
    from sdft.recipes.sdft_run import distilled_columns

    columns = distilled_columns(args.target) if args.target else None
    if args.columns:
        from sdft.data.load import parse_columns

        columns = parse_columns(args.columns)
    from sdft.data.load import load_examples

    examples = load_examples(args.data, columns, args.limit)
    summary = train(args.model, examples, args.out, cfg, args.trust_remote_code, force=args.force)
    print(f"trained {summary['steps']} steps on {summary['rows']} rows; final loss {summary['final_loss']:.4f}"
          f" -> {Path(args.out) / 'adapter'}")
    return 0


def cmd_generate(args) -> int:
    from sdft.evaluate.generate import generate_file
    from sdft.models import ModelSpec

    examples = _examples(args.data, args.columns, args.limit, require_response=False)
    n = generate_file(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code), args.adapter,
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
                     knowledge_data=args.knowledge_data)
    metrics = run_suites(ModelSpec(args.model, args.dtype, args.device, args.trust_remote_code), args.adapter,
                         cfg, args.out, train_data=args.train_data, force=args.force)
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
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on capable GPUs), float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from the hub (off by default)")


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
                   help="rows decoding at once; finished rows take the next prompt (raise on a GPU)")
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                   help="vllm: GPU engine (pip install 'sdft[vllm]')")
    p.add_argument("--tensor-parallel", type=int, default=1, help="vllm: GPUs per model replica")
    p.add_argument("--data-parallel", type=int, default=1, help="vllm: model replicas sharing the prompts")
    p.add_argument("--max-context", type=int, help="tokens a prompt plus its reply may take (default: the "
                   "model's); longer rows keep their original response (reject_reason too_long)")
    p.add_argument("--force", action="store_true", help="redo from scratch")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train", help="LoRA fine-tune on a dataset (SFT) or a distilled file (SDFT)")
    p.add_argument("--model", default="default")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--data", required=True)
    p.add_argument("--target", choices=["response", "original"], help="with a distilled file: which response to train on")
    p.add_argument("--columns")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="YAML config whose train section is used")
    p.add_argument("--set", action="append", help="override a train setting, e.g. --set lora_r=16")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--force", action="store_true")
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
    p.add_argument("--suite", required=True, help="comma-separated: math,function,humaneval,safety,helpfulness,knowledge,gap,retention")
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--math-data")
    p.add_argument("--function-data")
    p.add_argument("--safety-data")
    p.add_argument("--knowledge-data")
    p.add_argument("--train-data", help="distilled JSONL, for the gap suite's NLL of training targets")
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
    from sdft.config import ConfigError
    from sdft.resume import StaleStateError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"sdft {args.command}: bad input:\n{e.render()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, StaleStateError, ValueError, FileNotFoundError, ImportError) as e:
        print(f"sdft {args.command}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # disk full, permissions, I/O: one line naming the file, not a traceback
        print(f"sdft {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsdft {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
