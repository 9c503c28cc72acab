"""sdft as a library: the distilled dataset and the evaluation metrics as Python values.

    import sdft
    ds = sdft.distill("default", "builtin:arithmetic?n=4", task="math")   # a datasets.Dataset
    metrics = sdft.evaluate("default", suites=["math"], limit=16)         # {suite: {metric: entry}}

Both run the code the `sdft distill` and `sdft eval` commands run: the same validation of every row
and setting before a model loads (bad input raises sdft.data.example.DataError or
sdft.core.config.ConfigError), the same resumable stages and output files. The output goes to `out`
when given, else to a folder in sdft's cache (`$SDFT_CACHE`, default ~/.cache/sdft) named after the
inputs and settings, so calling again with the same arguments resumes an interrupted call or returns
the finished result without recomputing it.

Settings are the config fields, by name: for distill those of `distill` (candidates=4, max_new_tokens=256,
template="refer" ...), `model` (dtype, device, revision, trust_remote_code) and `data` (columns, limit);
for evaluate those of `eval` (limit, batch_size, math_data ...) and `model`. Values are converted to the
field's type as the command line converts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from sdft.core.config import (
    DEFAULT_MODEL,
    ConfigError,
    DataConfig,
    DistillConfig,
    EvalConfig,
    ModelSpec,
    RunConfig,
    build,
)

SECTIONS = {"distill": DistillConfig, "model": ModelSpec, "data": DataConfig, "eval": EvalConfig}


def settings_to_config(fixed: dict[str, dict], settings: dict, sections: tuple[str, ...]) -> RunConfig:
    """A RunConfig from `fixed` section values plus keyword settings, each key placed in the one of
    `sections` that has a field of that name; an unknown key is a ConfigError naming the known ones."""
    values = {section: dict(v) for section, v in fixed.items()}
    fields = {section: {f.name for f in dataclasses.fields(SECTIONS[section])} for section in sections}
    for key, value in settings.items():
        section = next((s for s in sections if key in fields[s]), None)
        if section is None:
            known = sorted(set().union(*fields.values()))
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(known)}")
        values.setdefault(section, {})[key] = value
    return build(RunConfig, values, "")


def cache_folder(kind: str, *parts) -> Path:
    """A folder in sdft's cache named after what it holds: the same inputs and settings, the same folder."""
    from sdft.core.models import cache_dir

    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "api" / kind / key


def source_state(source: str) -> list:
    """A local data file's size and modification time (an edited file gets another cache folder)."""
    if os.path.isfile(source):
        st = os.stat(source)
        return [os.path.abspath(source), st.st_size, st.st_mtime_ns]
    return [source]


def rows_to_dataset(rows: list[dict]):
    """A datasets.Dataset of the rows, with every column any row has (missing values are None)."""
    from datasets import Dataset

    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_dict({c: [row.get(c) for row in rows] for c in columns})


def distill_file(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Distill `cfg.data` with `cfg.model` into the JSONL `out` (resuming a partial run there), as `sdft
    distill` does; returns the summary. Every row and setting is checked before the model loads."""
    from sdft.core.models import load_model, load_tokenizer
    from sdft.core.runstate import hold
    from sdft.data.load import load_examples
    from sdft.distill.stage import distill as distill_stage
    from sdft.distill.templates import get_template

    get_template(cfg.distill.template, cfg.data.task)  # a bad template fails before the model loads
    examples = load_examples(cfg.data.source, cfg.data.columns, cfg.data.limit)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with hold(out):  # before the model loads: a second process on the same output stops at once
        if cfg.distill.backend == "vllm":  # vLLM loads the weights itself
            model, tok = None, load_tokenizer(cfg.model.name, cfg.model.trust_remote_code, cfg.model.revision)
        else:
            model, tok = load_model(cfg.model)
        return distill_stage(model, tok, cfg.model.name, examples, cfg.data.task, out, cfg.distill, force=force,
                             progress=progress, revision=cfg.model.revision)


def distill(model: str = DEFAULT_MODEL, data: str = "builtin:arithmetic", task: str = "math",
            out: str | Path | None = None, force: bool = False, progress: bool = True, **settings):
    """Distill `data` with the seed `model` (a hub id, a local folder or "default") and return the
    distilled set as a datasets.Dataset: one row per example, with the kept `response` and its
    provenance (`original`, `distilled`, `accepted`, `status`, `reject_reason`, `kept_kind`, `template`,
    and `candidates` when there are several).

    `out`: the JSONL to write (default: a folder in sdft's cache named after the arguments). `force`:
    redo it from scratch. `settings`: distill, model and data config fields by name, e.g.
    `candidates=4, sampling presets as temperature=0.95, top_p=0.7, top_k=50`, `limit=100`."""
    from sdft.core.io import read_jsonl

    cfg = settings_to_config({"model": {"name": model}, "data": {"source": data, "task": task}}, settings,
                             ("distill", "model", "data"))
    if out is None:
        out = cache_folder("distill", dataclasses.asdict(cfg.model), dataclasses.asdict(cfg.data),
                           dataclasses.asdict(cfg.distill), source_state(cfg.data.source)) / "distilled.jsonl"
    distill_file(cfg, out, force=force, progress=progress)
    return rows_to_dataset(read_jsonl(out))


def evaluate(model: str = DEFAULT_MODEL, suites: str | list[str] = ("math",), adapter: str | None = None,
             out: str | Path | None = None, seed_dir: str | Path | None = None, train_data: str | None = None,
             force: bool = False, progress: bool = True, **settings) -> dict[str, dict[str, dict]]:
    """Evaluate `model` (with `adapter`, a PEFT folder, if given) on `suites`, as `sdft eval` does, and
    return {suite: {metric name: {value, low, high, n, ...}}}. Each suite's predictions.jsonl and
    metrics.json are written under `out` (default: a folder in sdft's cache named after the arguments).

    `seed_dir`: the seed model's eval folder, for the suites that compare with it (retention,
    helpfulness's judge); `train_data`: a distilled JSONL, for the gap suite. `settings`: eval and model
    config fields by name, e.g. `limit=64, max_new_tokens=256, math_data="test.jsonl"`."""
    from sdft.evaluate.suites import run_suites

    suites = [suites] if isinstance(suites, str) else list(suites)
    cfg = settings_to_config({"model": {"name": model}, "eval": {"suites": suites}}, settings, ("eval", "model"))
    if out is None:
        adapter_state = source_state(str(Path(adapter) / "adapter_model.safetensors")) if adapter else None
        out = cache_folder("eval", dataclasses.asdict(cfg.model), dataclasses.asdict(cfg.eval), adapter,
                           adapter_state, str(seed_dir) if seed_dir else None, train_data)
    results = run_suites(cfg.model, adapter, cfg.eval, out, train_data=train_data, seed_dir=seed_dir, force=force,
                         progress=progress)
    return {suite: {entry["name"]: entry for entry in entries} for suite, entries in results.items()}
