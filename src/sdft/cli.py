"""`sdft` command line: a thin layer over the pipeline's functions.

Every setting is a field of the config dataclasses (sdft.core.config). Each subcommand reads a config
file (`--config`), then its flags, then `--set key=value` overrides, in that order; its flags are made
from the fields of the sections it uses (FLAGS), with the dataclass defaults in `--help`. Every value
is converted to its field's type before any model loads.

Exit codes: 0 done; 2 bad input or usage (a file, row, field, flag or config key; nothing written);
1 anything else (a missing extra or device in one line, an internal error with its traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import typing
from pathlib import Path

from sdft.core.allocator import expandable_cuda_segments
from sdft.core.config import (
    METHODS,
    SAMPLING,
    ConfigError,
    RunConfig,
    apply_override,
    build,
    preset_path,
    read_yaml,
)
from sdft.core.errors import InputError, SetupError
from sdft.core.runstate import RunLockedError, StaleStateError, hold
from sdft.data.example import DataError

EXIT_BAD_INPUT = 2

# command -> (section, fields or None for all, flag style); the first section's fields and the model and
# data fields are bare flags (--batch-size, --model, --data); the rest are --section.field.
FLAGS: dict[str, list[tuple[str, tuple[str, ...] | None, str]]] = {
    "distill": [("distill", None, "bare"), ("model", None, "bare"), ("data", None, "bare")],
    "train": [("train", None, "bare"), ("model", ("name", "trust_remote_code", "revision"), "bare"),
              ("data", None, "bare"), ("distill", ("template",), "bare"), ("onpolicy", None, "dotted")],
    "generate": [("generate", None, "bare"), ("model", None, "bare"), ("data", ("source", "columns", "limit"), "bare")],
    "eval": [("eval", None, "bare"), ("model", None, "bare")],
    "run": [("model", None, "bare"), ("data", None, "bare"), ("", ("seeds", "methods"), "bare")],
}
# Flags named otherwise than their field
NAMES = {("model", "name"): "--model", ("data", "source"): "--data", ("eval", "suites"): "--suite",
         ("eval", "humaneval_predictions"): "--predictions"}


def flag_name(section: str, name: str, style: str) -> str:
    if (section, name) in NAMES:
        return NAMES[(section, name)]
    dashed = name.replace("_", "-")
    return f"--{dashed}" if style == "bare" else f"--{section}.{dashed}"


def section_class(section: str):
    return RunConfig if not section else typing.get_type_hints(RunConfig)[section]


def default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return "unset" if value is None else str(value)


def add_setting_flags(p: argparse.ArgumentParser, command: str) -> None:
    """One flag per field of the command's sections, its help the field's, with the default."""
    group = p.add_argument_group("settings (also in a --config file, or --set section.key=value)")
    for section, names, style in FLAGS[command]:
        cls = section_class(section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (names is not None and f.name not in names) or dataclasses.is_dataclass(hints[f.name]):
                continue
            key = f"{section}.{f.name}" if section else f.name
            help_text = f"{f.metadata.get('help', '')} (default: {default_text(f)})".replace("%", "%%")
            if hints[f.name] is bool:
                group.add_argument(flag_name(section, f.name, style), dest=key, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                group.add_argument(flag_name(section, f.name, style), dest=key, default=argparse.SUPPRESS,
                                   metavar=f.name.upper(), help=help_text)
    p.add_argument("--config", help="YAML config file; flags and --set override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set train.learning_rate=1e-3 (a key without a section is "
                   f"the {FLAGS[command][0][0] or 'run'} section's)")


def resolve(args, command: str, config: str | Path | None = None, first: list[str] = (),
            required: tuple[str, ...] = (), fallback: dict[str, str] | None = None) -> RunConfig:
    """The RunConfig of this invocation: config file, then `first` overrides, then flags, then --set.
    Keys in `required` must be given by one of them; keys in `fallback` get that value where none did."""
    values = read_yaml(config) if config else {}
    for item in first:
        apply_override(values, item)
    for key, value in vars(args).items():
        if "." in key or key in ("seeds", "methods"):
            node = values
            *path, name = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[name] = value
    primary = FLAGS[command][0][0]
    for item in args.set:
        key = item.partition("=")[0]
        apply_override(values, item if "." in key or not primary else f"{primary}.{item}")
    for key in required:
        section, name = key.split(".")
        if name not in values.get(section, {}):
            raise InputError(f"{flag_name(section, name, 'bare')} is required (or {key} in --config or --set)")
    for key, value in (fallback or {}).items():
        section, name = key.split(".")
        values.setdefault(section, {}).setdefault(name, value)
    try:
        return build(RunConfig, values, "")
    except ConfigError as e:
        raise (ConfigError(f"{config}: {e}") if config else e) from None


def cmd_distill(args) -> int:
    from sdft.core.models import load_model, load_tokenizer
    from sdft.data.load import load_examples
    from sdft.distill.stage import distill
    from sdft.distill.templates import get_template

    # A --sampling preset comes before the flags, so an explicit --temperature wins over it
    preset = [f"distill.{k}={v}" for k, v in SAMPLING[args.sampling].items()] if args.sampling else []
    cfg = resolve(args, "distill", args.config, preset, required=("data.task",))
    get_template(cfg.distill.template, cfg.data.task)  # a bad template fails before the model loads
    examples = load_examples(cfg.data.source, cfg.data.columns, cfg.data.limit)
    with hold(args.out):  # before the model loads: a second process on the same output stops at once
        if cfg.distill.backend == "vllm":  # vLLM loads the weights itself
            model, tok = None, load_tokenizer(cfg.model.name, cfg.model.trust_remote_code, cfg.model.revision)
        else:
            model, tok = load_model(cfg.model)
        summary = distill(model, tok, cfg.model.name, examples, cfg.data.task, args.out, cfg.distill,
                          force=args.force, revision=cfg.model.revision)
    _print_summary(summary, args.out)
    return 0


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
    from sdft.data.load import load_examples
    from sdft.core.layout import distilled_columns
    from sdft.train.trainer import train

    # The on-policy teacher reads a distillation template; without a task, the general one
    cfg = resolve(args, "train", args.config, fallback={"data.task": "general"} if args.method == "onpolicy" else None)
    target = args.target or ("response" if args.method == "sdft" else None)
    columns = distilled_columns(target) if target else cfg.data.columns
    if args.method == "onpolicy":
        cfg.onpolicy.check_with(cfg.train)
    if args.dry_run:
        return _train_dry_run(cfg, load_examples(cfg.data.source, columns, cfg.data.limit) if args.data_given else None)
    if not args.data_given or not args.out:
        raise InputError("--data and --out are required (only --dry-run goes without them)")
    examples = load_examples(cfg.data.source, columns, cfg.data.limit)
    if args.method == "onpolicy":
        from sdft.train.onpolicy import train_onpolicy

        summary = train_onpolicy(cfg.model.name, examples, args.out, cfg.train, cfg.onpolicy, cfg.data.task,
                                 cfg.distill.template, cfg.model.trust_remote_code, force=args.force,
                                 revision=cfg.model.revision)
    else:
        summary = train(cfg.model.name, examples, args.out, cfg.train, cfg.model.trust_remote_code, force=args.force,
                        revision=cfg.model.revision)
    print(f"trained {summary['steps']} steps on {summary['rows']} rows; final loss {summary['final_loss']:.4f}"
          f" -> {Path(args.out) / 'adapter'}")
    return 0


def _train_dry_run(cfg: RunConfig, examples=None) -> int:
    """Print the memory estimate (from the model's config: no weights read) and whether it fits: for
    every row at max_length, or with --data for the longest steps of that data (tokenized only)."""
    from sdft.core.models import load_tokenizer, pick_device, pick_dtype
    from sdft.train.memory_estimate import preflight
    from sdft.train.trainer import build_dataset

    m = cfg.model
    rows = None
    if examples is not None:
        rows, _ = build_dataset(load_tokenizer(m.name, m.trust_remote_code, m.revision), examples, cfg.train)
    device = pick_device(None)
    preflight(m.name, cfg.train, pick_dtype(cfg.train.dtype, device, m.name), device, m.trust_remote_code, m.revision,
              rows=rows)
    print("fits: the same command without --dry-run trains")
    return 0


def cmd_generate(args) -> int:
    from sdft.data.load import load_examples
    from sdft.evaluate.replies import generate_file

    cfg = resolve(args, "generate", args.config)
    examples = load_examples(cfg.data.source, cfg.data.columns, cfg.data.limit, require_response=False)
    g = cfg.generate
    n = generate_file(cfg.model, args.adapter, examples, args.out, g.batch_size, g.max_new_tokens, system=g.system,
                      force=args.force)
    print(f"wrote {n} replies -> {args.out}")
    return 0


def cmd_eval(args) -> int:
    from sdft.evaluate.suites import run_suites

    cfg = resolve(args, "eval", args.config)
    metrics = run_suites(cfg.model, args.adapter, cfg.eval, args.out, train_data=args.train_data,
                         seed_dir=args.seed_dir, force=args.force)
    for suite, rows in metrics.items():
        for m in rows:
            print(f"{suite:>10}  {m['name']:<28} {m['value']:.4f}  [{m['low']:.4f}, {m['high']:.4f}]  n={m['n']}")
    return 0


def cmd_report(args) -> int:
    from sdft.report.build import build_report

    for p in build_report(args.run_dir):
        print(f"wrote {p}")
    return 0


def cmd_run(args) -> int:
    from sdft.recipes.sdft_run import run

    if bool(args.config) == bool(args.preset):
        raise InputError("give either CONFIG.yaml or --preset NAME")
    path = args.config or preset_path(args.preset)
    cfg = resolve(args, "run", path)
    run(cfg, args.out or f"runs/{Path(path).stem}", force=args.force, skip_eval=args.skip_eval)
    return 0


def cmd_push(args) -> int:
    from sdft.recipes.push import push

    push(args.run_dir, args.repo, method=args.method, seed=args.seed, private=args.private, dry_run=args.dry_run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdft", description="Self-Distillation Fine-Tuning for chat models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="rewrite a task dataset with the seed model itself")
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--sampling", choices=list(SAMPLING), help="candidates' sampling preset: paper (temperature "
                   "0.95, top_p 0.7, top_k 50, as the SDFT paper's code) or model (1, 1, 0); explicit flags win")
    p.add_argument("--force", action="store_true", help="redo from scratch")
    add_setting_flags(p, "distill")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train", help="LoRA fine-tune on a dataset (SFT), a distilled file (SDFT), or by "
                       "on-policy self-distillation (--method onpolicy)")
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    p.add_argument("--method", choices=list(METHODS), help="sft/sdft: fine-tune on the data's responses (sdft: "
                   "a distilled file's `response` unless --target says otherwise); onpolicy: on-policy "
                   "self-distillation, the responses are the teacher's reference (docs/METHODS.md)")
    p.add_argument("--target", choices=["response", "original"], help="with a distilled file: which response "
                   "to train on (onpolicy: original, the reference the distillation prompt shows)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the memory estimate (weights, LoRA state, "
                   "activations, logits; from the model's config, no weights loaded; with --data for that "
                   "data's longest steps) and whether it fits, then exit")
    add_setting_flags(p, "train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="batched greedy replies to a dataset's prompts")
    p.add_argument("--adapter", help="PEFT adapter folder")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    add_setting_flags(p, "generate")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="run evaluation suites on a model (optionally with an adapter)")
    p.add_argument("--adapter", help="PEFT adapter folder")
    p.add_argument("--out", required=True)
    p.add_argument("--train-data", help="distilled JSONL, for the gap suite's NLL of training targets")
    p.add_argument("--seed-dir", help="the seed model's eval folder (from `sdft eval` without --adapter): "
                   "retention and the helpfulness judge compare this model with it")
    p.add_argument("--force", action="store_true")
    add_setting_flags(p, "eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write report.md and report.html for a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="the whole flow: distill, train SFT and SDFT, evaluate, report")
    p.add_argument("run_config", nargs="?", metavar="CONFIG.yaml")
    p.add_argument("--preset", help="a built-in config, e.g. demo")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--force", action="store_true", help="redo every stage")
    add_setting_flags(p, "run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("push", help="upload a run's adapter to the Hugging Face Hub with a model card and the report")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--repo", required=True, help="hub model repository, owner/name (created if missing)")
    p.add_argument("--method", choices=list(METHODS), default="sdft", help="which trained model (default: sdft)")
    p.add_argument("--seed", type=int, help="its training seed (default: the only one trained)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="build the folder and the card under RUN_DIR/push/ "
                   "and upload nothing")
    p.set_defaults(func=cmd_push)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command == "run":  # the positional config of `sdft run` is its --config
        if args.run_config and args.config:
            raise InputError("give the config once: CONFIG.yaml or --config")
        args.config = args.run_config or args.config
    if args.command == "train":
        args.data_given = "data.source" in vars(args) or any(s.startswith("data.source=") for s in args.set)
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "sdft")
    expandable_cuda_segments()  # less of the GPU held back by fragmentation (sdft.core.allocator)
    try:
        args = parse(argv)
        return args.func(args)
    except DataError as e:
        print(f"sdft {command}: bad input:\n{e.render()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (InputError, StaleStateError, RunLockedError) as e:  # the user's files, flags or config, or a
        print(f"sdft {command}: {e}", file=sys.stderr)  # run another process holds: nothing was written
        return EXIT_BAD_INPUT
    except SetupError as e:
        print(f"sdft {command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions, I/O: one line naming the file, not a traceback
        print(f"sdft {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsdft {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception:  # a bug in sdft or a library, not the user's input: keep the whole traceback
        traceback.print_exc()
        print(f"sdft {command}: internal error (the traceback above says where); please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
