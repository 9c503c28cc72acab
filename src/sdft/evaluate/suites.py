"""Run evaluation suites on one model and write each suite's predictions and metrics.

Layout, per suite: `<out_dir>/<suite>/predictions.jsonl` (one row per item) and `metrics.json` (a
list of {suite, name, value, n, low, high}; entries with value null carry a "note"). metrics.json is
written last, so its presence marks a finished suite: a rerun skips it unless `force`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sdft.config import EvalConfig
from sdft.evaluate import (
    suite_function,
    suite_gap,
    suite_helpfulness,
    suite_humaneval,
    suite_knowledge,
    suite_math,
    suite_retention,
    suite_safety,
)
from sdft.evaluate.suite_context import SuiteContext, SuiteResult
from sdft.io import write_json, write_jsonl
from sdft.memory import release_freed_memory
from sdft.models import ModelSpec


def _no_check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    pass


@dataclass(frozen=True)
class Suite:
    run: Callable[[SuiteContext], SuiteResult]
    # Raises ValueError for missing inputs; called for every suite to run before the model is loaded.
    check: Callable[[EvalConfig, str | None, Path | None], None] = _no_check


SUITES: dict[str, Suite] = {
    "math": Suite(suite_math.run),
    "function": Suite(suite_function.run, suite_function.check),
    "humaneval": Suite(suite_humaneval.run),
    "safety": Suite(suite_safety.run),
    "helpfulness": Suite(suite_helpfulness.run),
    "knowledge": Suite(suite_knowledge.run),
    "gap": Suite(suite_gap.run, suite_gap.check),
    "retention": Suite(suite_retention.run, suite_retention.check),
}


def metrics_path(out_dir: str | Path, suite: str) -> Path:
    return Path(out_dir) / suite / "metrics.json"


def write_suite(suite_dir: Path, suite: str, result: SuiteResult) -> list[dict]:
    """predictions.jsonl first, metrics.json last (the done marker); returns the metrics entries."""
    entries = [{"suite": suite} | m.to_dict() for m in result.metrics]
    entries += [{"suite": suite} | n for n in result.notes]
    write_jsonl(suite_dir / "predictions.jsonl", result.rows)
    write_json(suite_dir / "metrics.json", entries)
    return entries


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
        raise ValueError(f"unknown eval suite(s): {', '.join(unknown)}; valid suites: {', '.join(SUITES)}")
    out_dir = Path(out_dir)
    seed_dir = Path(seed_dir) if seed_dir is not None else None
    names = list(dict.fromkeys(cfg.suites))
    results: dict[str, list[dict]] = {}
    todo = []
    for name in names:
        done = metrics_path(out_dir, name)
        if done.is_file() and not force:
            results[name] = json.loads(done.read_text(encoding="utf-8"))
        else:
            todo.append(name)
    # Fail on missing inputs now, not after loading a model and finishing half the suites.
    for name in todo:
        SUITES[name].check(cfg, train_data, seed_dir)
    if todo and model is None:
        from sdft.models import load_model

        model, tokenizer = load_model(spec, adapter)
    elif todo and tokenizer is None:
        from sdft.models import load_tokenizer

        tokenizer = load_tokenizer(spec.name, spec.trust_remote_code, spec.revision)

    for name in todo:
        if progress:
            print(f"      eval {name}", flush=True)
        ctx = SuiteContext(name=name, model=model, tokenizer=tokenizer, cfg=cfg, spec=spec, adapter=adapter,
                           suite_dir=out_dir / name, train_data=train_data, seed_dir=seed_dir, force=force,
                           progress=progress)
        results[name] = write_suite(ctx.suite_dir, name, SUITES[name].run(ctx))
        ctx.cleanup()
        release_freed_memory()
    return {name: results[name] for name in names}
