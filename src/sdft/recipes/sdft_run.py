"""The whole flow behind `sdft run`: distill, train SFT and SDFT with identical settings, evaluate the
seed, SFT and SDFT models side by side, and write the report.

Each stage leaves a marker file when it is done (a summary or metrics file, written last), so a rerun
skips finished stages and resumes unfinished ones; `force` redoes everything.

The run folder's layout is sdft.core.layout's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

import yaml

from sdft.core.allocator import release_freed_memory
from sdft.core.config import METHODS, RunConfig
from sdft.core.io import atomic_write, write_json
from sdft.core.layout import SEED_ROW, distilled_columns, distilled_path, eval_dir, train_dir
from sdft.core.models import load_model
from sdft.core.runstate import holds
from sdft.data.load import load_examples
from sdft.distill.stage import distill, unverified_note
from sdft.evaluate.curve import TRAINING_SOURCE, curve_prompts, measure_curves, measures_curve
from sdft.evaluate.suites import run_suites
from sdft.recipes.tracking import log_final_metrics
from sdft.report.build import build_report
from sdft.train.onpolicy import train_onpolicy
from sdft.train.trainer import train



def environment(model: str | None = None) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("sdft", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "math-verify"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import torch

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
           "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    if not env["cuda"]:  # what dtype "auto" chose on this CPU, and the matmul figures it chose by
        from sdft.core.models import cpu_dtype_report

        env["cpu_dtype"] = cpu_dtype_report(model)
    return env


class StageLog:
    """Wall time and the process's peak resident memory so far, per stage, kept in stages.json.

    Peak memory only grows, so a stage's figure is the highest of it and every stage before: the
    stage where the figure jumps is the one that needed the memory. After each stage the memory it
    freed is handed back to the system, so that the next stage starts from the same footprint."""

    def __init__(self, path: Path):
        self.path, self.stages = path, []

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        release_freed_memory()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        # Child processes (CPU decoding workers, sandboxed programs) on top: the largest one so far.
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        self.stages.append({"stage": name, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb),
                            "peak_child_rss_mb": round(child_mb)})
        write_json(self.path, self.stages)
        children = f" (largest child process {child_mb / 1024:.2f} GB)" if child_mb else ""
        print(f"      {name}: {seconds:.0f} s, peak memory so far {peak_mb / 1024:.2f} GB{children}", flush=True)


@holds("out")
def run(cfg: RunConfig, out: str | Path, force: bool = False, skip_eval: bool = False) -> None:

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    write_json(out / "environment.json", environment(cfg.model.name) | {"seeds": cfg.seeds})
    stage = StageLog(out / "stages.json")

    # Validate every row and setting before any model is loaded.
    examples = load_examples(cfg.data.source, cfg.data.columns, cfg.data.limit)
    trained_prompts = frozenset(ex.prompt for ex in examples)  # kept out of the curve's task score
    if cfg.eval.curve_task_data == TRAINING_SOURCE:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, curve_task_data=cfg.data.source))
    if measures_curve(cfg) and not skip_eval:
        curve_prompts(cfg.eval, cfg.data.task, trained_prompts)  # their errors now, not after training
    print(f"[1/4] distill: {len(examples)} examples from {cfg.data.source} (task {cfg.data.task})", flush=True)
    distilled = distilled_path(out)
    with stage("distill"):
        model, tok = load_model(cfg.model)
        summary = distill(model, tok, cfg.model.name, examples, cfg.data.task, distilled, cfg.distill, force=force,
                          revision=cfg.model.revision)
        del model
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["reject_reasons"].items()) or "none"
    print(f"      accepted {summary['accepted']}/{summary['rows']} distilled responses "
          f"({summary['accepted_pct']:.1f}%{unverified_note(summary)}); fell back to the original: {reasons}",
          flush=True)

    print(f"[2/4] train: {', '.join(cfg.methods)} (same LoRA settings, seeds and prompts)", flush=True)
    for seed in cfg.seeds:
        for method in cfg.methods:
            rows = load_examples(str(distilled), distilled_columns(METHODS[method]))
            tcfg = dataclasses.replace(cfg.train, seed=seed)
            with stage(f"train {method} seed {seed}"):
                if method == "onpolicy":  # the teacher reads the same distillation template as distill
                    s = train_onpolicy(cfg.model.name, rows, train_dir(out, method, seed), tcfg, cfg.onpolicy,
                                       cfg.data.task, cfg.distill.template, cfg.model.trust_remote_code, force=force,
                                       revision=cfg.model.revision)
                else:
                    s = train(cfg.model.name, rows, train_dir(out, method, seed), tcfg, cfg.model.trust_remote_code,
                              force=force, revision=cfg.model.revision)
            print(f"      {method} seed {seed}: {s['steps']} steps, final loss {s['final_loss']:.4f}", flush=True)
    plot_all_losses(out, cfg.seeds)

    if skip_eval:
        return

    print(f"[3/4] evaluate seed, {', '.join(cfg.methods)} on: {', '.join(cfg.eval.suites)}", flush=True)
    seed_dir = eval_dir(out, SEED_ROW)
    with stage("evaluate seed"):
        run_suites(cfg.model, None, cfg.eval, seed_dir, train_data=str(distilled), force=force)
    for seed in cfg.seeds:
        for method in cfg.methods:
            with stage(f"evaluate {method} seed {seed}"):
                run_suites(cfg.model, str(train_dir(out, method, seed) / "adapter"), cfg.eval,
                           eval_dir(out, method, seed), train_data=str(distilled), seed_dir=seed_dir, force=force)

    if measures_curve(cfg):
        print(f"      learning against forgetting: {cfg.eval.curve_limit} prompts per metric at each kept step",
              flush=True)
        with stage("curve"):
            measure_curves(cfg.model, cfg.eval, cfg.data.task, seed_dir,
                           [(train_dir(out, m, s), eval_dir(out, m, s)) for s in cfg.seeds for m in cfg.methods],
                           force=force, exclude=trained_prompts)

    print("[4/4] report", flush=True)
    for path in build_report(out):
        print(f"      wrote {path}", flush=True)
    log_final_metrics(out, cfg.train.report_to)


def plot_all_losses(out: Path, seeds: list[int]) -> None:
    from sdft.train.plots import plot_losses

    curves = {}
    for method in METHODS:
        for seed in seeds:
            log = train_dir(out, method, seed) / "train_log.jsonl"
            if log.is_file():
                rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                name = method.upper() if len(seeds) == 1 else f"{method.upper()} seed {seed}"
                curves[name] = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    plot_losses(curves, out / "loss_curves.png", title="training loss by method")
