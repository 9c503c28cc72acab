"""Run evaluation suites on one model and write each suite's predictions and metrics.

Layout, per suite: `<out_dir>/<suite>/settings.json` (what produced the results: model, adapter,
suite settings, digests of the data files), `predictions.jsonl` (one row per item) and `metrics.json` (a
list of {suite, name, value, n, low, high}; entries with value null carry a "note"). settings.json is
written when a suite starts and metrics.json last, so a rerun reuses a finished suite only when its
settings are the same now; otherwise it says what changed and redoes the suite (`force` always redoes).

The suites left to run that generate with the same settings have their prompts decoded together, in one
call (`<out_dir>/replies-<max_new_tokens>.parts` while it runs): one batch of 128 prompts decodes
faster than three of 32, 64 and 32. settings.json records the suites a reply was decoded with
(`decoded_with`): in half precision a greedy reply can depend on the prompts that share its batch.
That record is not compared on a rerun: a suite is not redone because others around it were. Nor is
`dtype_choice`, the CPU probe's figures behind `dtype: auto` (sdft.core.dtype_probe): the dtype itself is a
setting (model.dtype), the timings that chose it are a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sdft.core.runstate import holds
from sdft.core.config import EvalConfig
from sdft.core.errors import InputError
from sdft.evaluate import (
    suite_function,
    suite_gap,
    suite_helpfulness,
    suite_humaneval,
    suite_ifeval,
    suite_knowledge,
    suite_lm_eval,
    suite_math,
    suite_retention,
    suite_safety,
)
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.suite_context import SuiteContext, SuiteResult
from sdft.core.io import write_json, write_jsonl
from sdft.core.allocator import release_freed_memory
from sdft.core.config import ModelSpec


def _no_check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    pass


@dataclass(frozen=True)
class Suite:
    run: Callable[[SuiteContext], SuiteResult]
    # Raises InputError for missing inputs; called for every suite to run before the model is loaded.
    check: Callable[[EvalConfig, str | None, Path | None], None] = _no_check
    # The EvalConfig fields its results depend on. batch_size is one only for generating suites in bf16/fp16
    # (see suite_settings); in float32 it changes memory, not replies.
    settings: tuple[str, ...] = ("limit", "max_new_tokens")
    # The chats it generates replies to (see suite_context); None for suites that generate nothing.
    conversations: Callable[[SuiteContext], list[list[dict]]] | None = None
    uses_train_data: bool = False
    compares_with_seed: bool = False  # reads the seed model's results from seed_dir
    # False: this run needs no model in memory (scoring given predictions; lm-eval loads its own).
    needs_model: Callable[[EvalConfig], bool] = lambda cfg: True
    metrics: tuple[MetricSpec, ...] = ()  # what each number it reports means (the module's METRICS)


# The report shows suites in this order (its columns, its verdict lines): the task suites first.
SUITES: dict[str, Suite] = {
    "math": Suite(suite_math.run, settings=("limit", "max_new_tokens", "math_data"),
                  conversations=suite_math.conversations, metrics=suite_math.METRICS),
    "function": Suite(suite_function.run, suite_function.check, settings=("limit", "max_new_tokens", "function_data"),
                      conversations=suite_function.conversations, metrics=suite_function.METRICS),
    "humaneval": Suite(suite_humaneval.run, suite_humaneval.check,
                       settings=("limit", "max_new_tokens", "humaneval_predictions"),
                       conversations=suite_humaneval.conversations, needs_model=suite_humaneval.needs_model,
                       metrics=suite_humaneval.METRICS),
    "safety": Suite(suite_safety.run, settings=("limit", "max_new_tokens", "safety_data"),
                    conversations=suite_safety.conversations, metrics=suite_safety.METRICS),
    "helpfulness": Suite(suite_helpfulness.run, suite_helpfulness.check,
                         settings=("limit", "max_new_tokens", "helpfulness_data"),
                         conversations=suite_helpfulness.conversations, compares_with_seed=True,
                         metrics=suite_helpfulness.METRICS),
    "ifeval": Suite(suite_ifeval.run, suite_ifeval.check, settings=("limit", "max_new_tokens", "ifeval_data"),
                    conversations=suite_ifeval.conversations, metrics=suite_ifeval.METRICS),
    "knowledge": Suite(suite_knowledge.run, suite_knowledge.check, settings=("limit", "knowledge_data"),
                       compares_with_seed=True, metrics=suite_knowledge.METRICS),
    "gap": Suite(suite_gap.run, suite_gap.check, settings=("limit",), uses_train_data=True,
                 metrics=suite_gap.METRICS),
    "retention": Suite(suite_retention.run, suite_retention.check, conversations=suite_retention.conversations,
                       compares_with_seed=True, metrics=suite_retention.METRICS),
    "lm_eval": Suite(suite_lm_eval.run, suite_lm_eval.check, settings=("limit", "lm_eval_tasks"),
                     needs_model=lambda cfg: False, metrics=suite_lm_eval.METRICS),
}
SETTINGS_FILE = "settings.json"
DECODED_WITH = "decoded_with"  # a record in settings.json, not a setting (see the module docstring)
DTYPE_CHOICE = "dtype_choice"  # likewise
RECORDS = (DECODED_WITH, DTYPE_CHOICE)


def metric_spec(suite: str, name: str) -> MetricSpec | None:
    """The declaration of metric `name` as `suite` reports it in metrics.json; None when the suite
    declares no such metric (e.g. results written by another version of sdft)."""
    entry = SUITES.get(suite)
    return next((m for m in entry.metrics if m.matches(name)), None) if entry else None


def declared_metrics() -> list[tuple[str, MetricSpec]]:
    """(suite, declaration) of every declared metric, suites in registry order."""
    return [(name, m) for name, suite in SUITES.items() for m in suite.metrics]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digest(path: str | Path, contents: bool) -> str:
    """Digest of a folder's files: their bytes (`contents`, for adapters: megabytes) or, for model folders
    of many gigabytes, their names, sizes and modification times."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if contents:
            h.update(f"{rel}:{file_digest(f)}\n".encode())
        else:
            st = f.stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def source_digest(source: str | None) -> str | None:
    """A local data file's content digest; hub and built-in sources are identified by their name."""
    if source and os.path.isfile(source):
        return file_digest(source)
    return None


def suite_settings(name: str, spec: ModelSpec, adapter: str | None, cfg: EvalConfig, train_data: str | None,
                   seed_dir: Path | None) -> dict:
    """Everything that decides a suite's results; a saved result is reused only under equal settings."""
    from sdft.core.models import pick_device, pick_dtype

    suite = SUITES[name]
    model = {"name": spec.name, "revision": spec.revision,
             "dtype": str(pick_dtype(spec.dtype, pick_device(spec.device), spec.name)).removeprefix("torch.")}
    if os.path.isdir(spec.name):
        model["files"] = folder_digest(spec.name, contents=False)
    settings = {field: getattr(cfg, field, None) for field in suite.settings}
    if "max_new_tokens" in suite.settings and suite.needs_model(cfg) and model["dtype"] != "float32":
        # In half precision a greedy reply depends on the batch it was decoded in (another batch shape rounds
        # a near-tie the other way): of 128 eval replies in bf16, decoded in batches of 32 or all together,
        # only 34 were the same. So there the batch size decides the replies, like any other setting.
        settings["batch_size"] = cfg.batch_size
    files = {field: source_digest(settings[field]) for field in suite.settings
             if field.endswith(("_data", "_predictions"))}
    if suite.uses_train_data:
        settings["train_data"] = train_data
        files["train_data"] = source_digest(train_data)
    if suite.compares_with_seed:
        seed_file = Path(seed_dir) / name / "predictions.jsonl" if seed_dir is not None else None
        settings["seed_dir"] = str(seed_dir) if seed_dir is not None else None
        files["seed_predictions"] = source_digest(str(seed_file)) if seed_file else None
    if name == "retention" and seed_dir is not None:
        # A seed re-evaluated to add its top-k (kl_from_seed) redoes the results that lacked it.
        files["seed_topk"] = source_digest(str(suite_retention.seed_topk_path(seed_dir)))
    if name == "helpfulness":
        settings["judge_model"] = os.environ.get("SDFT_JUDGE_MODEL") or None
    return {
        "suite": name,
        "model": model,
        "adapter": {"path": str(adapter), "digest": folder_digest(adapter, contents=True)} if adapter else None,
        "settings": settings,
        "files": {k: v for k, v in files.items() if v is not None},
    }


def auto_dtype_record(spec: ModelSpec) -> dict | None:
    """The probe's decision behind `dtype: auto` on a CPU (choice, timings, machine); None otherwise."""
    from sdft.core.models import cpu_dtype_report, pick_device

    if spec.dtype != "auto" or pick_device(spec.device).type != "cpu":
        return None
    return cpu_dtype_report(spec.name)


def changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for each leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def read_settings(suite_dir: Path) -> dict | None:
    try:
        return json.loads((suite_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def metrics_path(out_dir: str | Path, suite: str) -> Path:
    return Path(out_dir) / suite / "metrics.json"


def clear_suite(suite_dir: Path) -> None:
    """Remove results and partial replies made under other settings (metrics.json first: the done marker)."""
    for name in ("metrics.json", SETTINGS_FILE):
        (suite_dir / name).unlink(missing_ok=True)
    for parts in suite_dir.glob("*.parts"):
        shutil.rmtree(parts, ignore_errors=True)


def write_suite(suite_dir: Path, suite: str, result: SuiteResult) -> list[dict]:
    """predictions.jsonl first, metrics.json last (the done marker); returns the metrics entries."""
    entries = [{"suite": suite} | m.to_dict() for m in result.metrics]
    entries += [{"suite": suite} | n for n in result.notes]
    write_jsonl(suite_dir / "predictions.jsonl", result.rows)
    write_json(suite_dir / "metrics.json", entries)
    return entries


@holds("out_dir")
def run_suites(spec: ModelSpec, adapter: str | None, cfg: EvalConfig, out_dir: str | Path,
               train_data: str | None = None, seed_dir: str | Path | None = None, force: bool = False,
               model=None, tokenizer=None, progress: bool = True) -> dict[str, list[dict]]:
    """Evaluate one model (the seed, or the seed plus `adapter`) on `cfg.suites`; returns {suite: metrics}.

    The model is loaded once, and only if some suite still has to run; pass `model`/`tokenizer` to reuse
    one already in memory. `seed_dir` is the seed model's own eval folder: retention and the helpfulness
    judge compare against it (None means this model is the seed). `train_data` is the distilled JSONL,
    needed by the gap suite.
    """
    unknown = [s for s in cfg.suites if s not in SUITES]
    if unknown:
        raise InputError(f"unknown eval suite(s): {', '.join(unknown)}; valid suites: {', '.join(SUITES)}")
    out_dir = Path(out_dir)
    seed_dir = Path(seed_dir) if seed_dir is not None else None
    names = list(dict.fromkeys(cfg.suites))
    results: dict[str, list[dict]] = {}
    todo = []
    if adapter and not Path(adapter, "adapter_config.json").is_file():
        raise InputError(f"--adapter {adapter}: no PEFT adapter there (adapter_config.json is missing)")
    if adapter and seed_dir is None and "retention" in names:
        raise InputError("the retention suite compares a fine-tuned model with the seed model's replies: pass "
                         "--seed-dir DIR, the seed's own eval folder (from `sdft eval` without --adapter)")
    settings: dict[str, dict] = {}
    for name in names:
        suite_dir = out_dir / name
        settings[name] = suite_settings(name, spec, adapter, cfg.for_suite(name), train_data, seed_dir)
        saved = read_settings(suite_dir)
        if saved is not None:
            for record in RECORDS:
                saved.pop(record, None)
        if metrics_path(out_dir, name).is_file() and saved == settings[name] and not force:
            results[name] = json.loads(metrics_path(out_dir, name).read_text(encoding="utf-8"))
            continue
        if saved is not None and saved != settings[name] and not force:
            what = "; ".join(changed_settings(saved, settings[name])) or "format"
            if progress:
                print(f"      eval {name}: settings changed since the saved results ({what}); redoing", flush=True)
            clear_suite(suite_dir)
        todo.append(name)
    # Fail on missing inputs now, not after loading a model and finishing half the suites.
    for name in todo:
        SUITES[name].check(cfg, train_data, seed_dir)
    need_model = any(SUITES[name].needs_model(cfg) for name in todo)
    if need_model and model is None:
        from sdft.core.models import load_model

        model, tokenizer = load_model(spec, adapter)
    elif need_model and tokenizer is None:
        from sdft.core.models import load_tokenizer

        tokenizer = load_tokenizer(spec.name, spec.trust_remote_code, spec.revision)

    contexts = {name: SuiteContext(name=name, model=model, tokenizer=tokenizer, cfg=cfg.for_suite(name), spec=spec,
                                   adapter=adapter, suite_dir=out_dir / name, train_data=train_data,
                                   seed_dir=seed_dir, force=force, progress=progress)
                for name in todo}
    joint = [contexts[name] for name in todo if SUITES[name].conversations and SUITES[name].needs_model(cfg)]
    started = time.perf_counter()
    decoded_with, joint_parts = decode_together(joint, out_dir)
    dtype_choice = auto_dtype_record(spec)
    for name in todo:
        write_json(contexts[name].suite_dir / SETTINGS_FILE,
                   settings[name] | ({DECODED_WITH: decoded_with[name]} if name in decoded_with else {})
                   | ({DTYPE_CHOICE: dtype_choice} if dtype_choice else {}))
    if decoded_with and progress:
        print(f"      eval {', '.join(decoded_with)} decoded together: {time.perf_counter() - started:.1f} s",
              flush=True)

    for name in todo:
        started = time.perf_counter()
        if progress:
            print(f"      eval {name}", flush=True)
        ctx = contexts[name]
        results[name] = write_suite(ctx.suite_dir, name, SUITES[name].run(ctx))
        ctx.cleanup()
        release_freed_memory()
        if progress:
            print(f"      eval {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if joint_parts:
        from sdft.core.runstate import finish

        for parts in joint_parts:
            finish(parts)
    return {name: results[name] for name in names}


def decode_together(contexts: list[SuiteContext], out_dir: Path) -> tuple[dict[str, list[str]], list[Path]]:
    """Decode in one call the prompts of the suites that generate with the same settings, and hand each
    suite its replies (`ctx.decoded`). Returns {suite: the suites it was decoded with} and the parts
    folders to delete once every suite is written. A suite alone in its group decodes in its own run."""
    from sdft.core.chat import render_chat
    from sdft.evaluate.replies import eval_generation, generation_key
    from sdft.engine.resumable import generate_resumable

    groups: dict[tuple[int, int], list[SuiteContext]] = defaultdict(list)
    for ctx in contexts:
        groups[(ctx.cfg.max_new_tokens, ctx.cfg.batch_size)].append(ctx)
    decoded_with, parts_folders = {}, []
    for (max_new_tokens, batch_size), group in groups.items():
        chats = {ctx.name: SUITES[ctx.name].conversations(ctx) for ctx in group}
        group = [ctx for ctx in group if chats[ctx.name]]
        if len(group) < 2:
            continue
        first, names = group[0], [ctx.name for ctx in group]
        prompts = list(dict.fromkeys(render_chat(first.tokenizer, chat) for name in names for chat in chats[name]))
        gen = eval_generation(max_new_tokens, batch_size)
        key = generation_key(first.spec, first.adapter, prompts, gen, first.model)
        parts = out_dir / f"replies-{max_new_tokens}.parts"
        # Its inputs change with the suites left to run: parts of another set are dropped, not refused.
        replies = generate_resumable(first.model, first.tokenizer, prompts, gen, parts, key, force=first.force,
                                     desc="+".join(names), progress=first.progress, drop_stale=True)
        decoded = dict(zip(prompts, replies))
        for ctx in group:
            ctx.decoded = decoded
            decoded_with[ctx.name] = names
        parts_folders.append(parts)
    return decoded_with, parts_folders
