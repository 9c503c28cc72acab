"""Learning against forgetting, measured along training: one point per kept adapter of a run.

At each point (the seed is step 0; then each snapshot of sdft.train.snapshots; then the final adapter):
  task         the task score on held-out task prompts, per prompt (math: the final number is right;
               function: the call matches the reference exactly), from greedy replies
  forgetting   KL(seed || model) per token on general instructions (the built-in retention set), taken
               along replies the seed *sampled* at temperature 1: an average over the seed's own
               distribution, so the mean is an unbiased estimate of the per-token forward KL (over the
               seed's top-k tokens plus one bucket for the rest, a lower bound; sdft.engine.likelihood)
  kl_task      the same KL on the task prompts (the forgetting predictor of "RL's Razor", Shenfeld et al. 2025)
The seed's sampled replies and their top-k log-probabilities are made once, in eval/seed/curve/; every
point reads them, so a point costs one short greedy decode and two teacher-forced passes.

Rows go to curve.jsonl (sdft.core.layout.curve_path) in the layout sdft.report.curve reads: every file of a
run has the same prompts in the same order, so per-prompt values pair across models and steps. Each row
carries the key of what produced it (model, prompts, settings, the adapter's bytes); a rerun keeps the rows
whose key still holds and measures the rest, so an interrupted curve resumes at the next point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sdft.core.allocator import release_freed_memory
from sdft.core.chat import render_chat
from sdft.core.config import EvalConfig, ModelSpec
from sdft.core.errors import InputError
from sdft.core.io import atomic_write, read_jsonl, write_json
from sdft.core.layout import curve_path, snapshot_dir, snapshot_steps
from sdft.core.runstate import fingerprint
from sdft.data.load import load_examples
from sdft.evaluate.builtin_sets import RETENTION, load_resource
from sdft.evaluate.suite_context import user_turn
from sdft.evaluate.suite_retention import SEED_TOPK, load_topk, save_topk

REFERENCE_DIR = "curve"  # under the seed's eval folder: the seed's sampled replies and their top-k
SAMPLE_SEED = 0
CURVE_TASKS = ("math", "function")  # tasks with a checkable answer, so a score per prompt
TRAINING_SOURCE = "training"  # eval.curve_task_data's name for the run's own data.source (its held-out rows)
# Replies scored per forward pass (within the engine's logits budget): on the demo 16 took 4.0 s where 64
# (the eval batch) took 5.2 s for the same 64 replies, and the curve stage's peak fell from 3.2 to 2.4 GB.
SCORE_BATCH = 16


@dataclass
class Prompts:
    """The prompts a curve is measured on, in their fixed order."""

    task_chats: list[list[dict]]  # the task score's prompts
    task_references: list[str]
    general_chats: list[list[dict]]
    task_source: str
    knowledge: list[dict] = field(default_factory=list)  # multiple-choice items (sdft.evaluate.suite_knowledge)
    kl_task_count: int = 0  # the task prompts the KL on task prompts is measured on: the first this many

    @property
    def kl_task_chats(self) -> list[list[dict]]:
        return self.task_chats[:self.kl_task_count]


def task_prompts(cfg: EvalConfig, task: str, exclude: frozenset[str] = frozenset()
                 ) -> tuple[list[list[dict]], list[str], str]:
    """The task score's held-out prompts (the task suite's chat form and system prompt) and references:
    from eval.curve_task_data, else the task suite's data; rows whose prompt is in `exclude` (the training
    rows') are left out, and so is a prompt seen before in the same file."""
    from sdft.evaluate import suite_math

    limit = cfg.curve_task_limit or cfg.curve_limit
    if task == "math":
        source = cfg.curve_task_data or suite_math.math_source(cfg)
        examples = _held_out(load_examples(source), exclude)[:limit]
        return suite_math.chats(examples), [ex.response for ex in examples], source
    if task == "function":
        source = cfg.curve_task_data or cfg.function_data
        if not source:
            raise InputError("the curve's task score for task 'function' needs eval.function_data "
                             "(or eval.curve_task_data)")
        from sdft.grading.verify import parse_call

        # Rows whose reference is not a call cannot be scored; they are left out so every prompt has a value.
        examples = [ex for ex in _held_out(load_examples(source), exclude) if parse_call(ex.response) is not None]
        examples = examples[:limit]
        return [ex.messages() for ex in examples], [ex.response for ex in examples], source
    raise InputError(f"the curve needs a task with a checkable answer ({', '.join(CURVE_TASKS)}); got '{task}'")


def _held_out(examples: list, exclude: frozenset[str]) -> list:
    seen, out = set(exclude), []
    for ex in examples:
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def measures_curve(cfg) -> bool:
    """Whether `sdft run` with this RunConfig measures the curve: on, and a task with a checkable answer."""
    return cfg.eval.curve_limit > 0 and cfg.data.task in CURVE_TASKS


def curve_prompts(cfg: EvalConfig, task: str, exclude: frozenset[str] = frozenset()) -> Prompts:
    """Every prompt set of the curve; `exclude`: the training rows' prompts, kept out of the task score.
    Knowledge questions (eval.knowledge_data, else the built-in set) only where the run's suites have
    knowledge: the cheap multiple-choice pass along training, the suite's flips at the end."""
    chats, references, source = task_prompts(cfg, task, exclude)
    if not chats:
        raise InputError(f"curve: no held-out task prompts left in {source} (every row's prompt is a training row's)")
    general = [user_turn(item["instruction"]) for item in load_resource(RETENTION)[:cfg.curve_limit]]
    knowledge = []
    if "knowledge" in cfg.suites:
        from sdft.evaluate.suite_knowledge import load_questions

        knowledge = load_questions(cfg.knowledge_data, cfg.curve_limit)
    return Prompts(chats, references, general, source, knowledge, min(len(chats), cfg.curve_limit))


def task_scores(task: str, replies: list[str], references: list[str]) -> tuple[str, list[float]]:
    """(metric name, 0/1 per prompt)."""
    if task == "math":
        from sdft.evaluate.suite_math import score_math

        rows, _ = score_math(replies, references)
        return "accuracy", [float(r["correct"]) for r in rows]
    from sdft.evaluate.suite_function import score_function

    rows, _ = score_function(replies, references)
    return "exact", [float(bool(r["exact"])) for r in rows]


def _decode(model, tokenizer, chats: list[list[dict]], max_new_tokens: int, batch_size: int, sample: bool,
            desc: str) -> list[str]:
    from dataclasses import replace

    from sdft.engine.decode import generate
    from sdft.evaluate.replies import eval_generation

    prompts = [render_chat(tokenizer, c) for c in chats]
    gen = replace(eval_generation(max_new_tokens, batch_size), temperature=1.0 if sample else 0.0, seed=SAMPLE_SEED)
    return generate(model, tokenizer, prompts, gen, desc=desc)


@dataclass
class SeedReference:
    """The seed's sampled replies to the general and the task prompts, and its top-k at every position."""

    key: str
    general: list[str]
    task: list[str]
    general_topk: list
    task_topk: list


def reference_key(spec: ModelSpec, dtype: str, prompts: Prompts, cfg: EvalConfig) -> str:
    return fingerprint("curve-reference", spec.name, spec.revision, dtype, prompts.general_chats, prompts.kl_task_chats,
                       cfg.curve_max_new_tokens, cfg.batch_size, SEED_TOPK, SAMPLE_SEED)


def seed_reference(model, tokenizer, spec: ModelSpec, prompts: Prompts, cfg: EvalConfig, folder: Path,
                   force: bool = False) -> SeedReference:
    """Read the seed's reference from `folder`, or make it (sampled replies, then their top-k) and save it."""
    from sdft.engine.likelihood import score_with_topk

    key = reference_key(spec, str(next(model.parameters()).dtype), prompts, cfg)
    meta = folder / "reference.json"
    if not force and meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("key") == key:
        saved = json.loads(meta.read_text(encoding="utf-8"))
        general_top, task_top = load_topk(folder / "general_topk.safetensors"), load_topk(folder / "task_topk.safetensors")
        return SeedReference(key, saved["general"], saved["task"],
                             [general_top[str(i)] for i in range(len(saved["general"]))],
                             [task_top[str(i)] for i in range(len(saved["task"]))])
    folder.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # first: a rebuild killed halfway must not pair old replies with new top-k
    replies = {}
    tops = {}
    for name, chats in (("general", prompts.general_chats), ("task", prompts.kl_task_chats)):
        replies[name] = _decode(model, tokenizer, chats, cfg.curve_max_new_tokens, cfg.batch_size, sample=True,
                                desc=f"curve: seed samples ({name})")
        scored = score_with_topk(model, tokenizer, chats, replies[name], SEED_TOPK, SCORE_BATCH)
        tops[name] = [top for _, top in scored]
        save_topk(folder / f"{name}_topk.safetensors", [str(i) for i in range(len(chats))], tops[name])
    write_json(meta, {"key": key, "general": replies["general"], "task": replies["task"]})  # last: the done marker
    return SeedReference(key, replies["general"], replies["task"], tops["general"], tops["task"])


def kl_per_prompt(model, tokenizer, chats: list[list[dict]], replies: list[str], tops: list,
                  batch_size: int) -> list[float]:
    """Mean per-token KL(seed || model) along each seed reply (0 for an empty reply: nothing to diverge on)."""
    from sdft.engine.likelihood import bucket_kl, logprobs_at

    scored = logprobs_at(model, tokenizer, chats, replies, [t.ids for t in tops], batch_size)
    out = []
    for i, (p, (_, q)) in enumerate(zip(tops, scored)):
        if p.ids.shape[0] == 0:
            out.append(0.0)
        elif q is None:  # the positions do not line up with the seed's: the reference is not this model's
            raise InputError(f"curve: the seed's reply {i} and its saved top-k do not line up (another tokenizer "
                             "or a damaged reference); remeasure with --force")
        else:
            out.append(float(bucket_kl(p, q).mean()))
    return out


def measure_point(model, tokenizer, task: str, prompts: Prompts, reference: SeedReference, cfg: EvalConfig,
                  step: int, is_seed: bool) -> dict:
    replies = _decode(model, tokenizer, prompts.task_chats, cfg.curve_max_new_tokens, cfg.batch_size, sample=False,
                      desc=f"curve: task replies, step {step}")
    metric, task_values = task_scores(task, replies, prompts.task_references)
    if is_seed:  # KL of the seed from itself is 0 at every position
        general, on_task = [0.0] * len(reference.general), [0.0] * len(reference.task)
    else:
        general = kl_per_prompt(model, tokenizer, prompts.general_chats, reference.general, reference.general_topk,
                                SCORE_BATCH)
        on_task = kl_per_prompt(model, tokenizer, prompts.kl_task_chats, reference.task, reference.task_topk,
                                SCORE_BATCH)
    row = {"step": step, "task_metric": metric, "task_direction": 1, "task": _mean(task_values),
           "task_values": task_values, "forgetting_metric": "kl_from_seed", "forgetting": _mean(general),
           "forgetting_values": general, "metrics": {"kl_task": _mean(on_task)}, "kl_task_values": on_task}
    if prompts.knowledge:
        row["knowledge_values"] = knowledge_correct(model, tokenizer, prompts.knowledge)
        row["metrics"]["knowledge"] = _mean(row["knowledge_values"])
    return row


def knowledge_correct(model, tokenizer, items: list[dict]) -> list[float]:
    """1/0 per multiple-choice item: the right choice is the most likely one (the knowledge suite's scoring)."""
    from sdft.evaluate.suite_knowledge import choice_scores, score_questions

    rows, _ = score_questions(items, choice_scores(model, tokenizer, items, SCORE_BATCH))
    return [float(r["correct"]) for r in rows]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _digest(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in sorted([*folder.glob("adapter_model.*"), folder / "adapter_config.json"]):
        h.update(path.read_bytes())
    return h.hexdigest()


def points(train_folder: Path) -> list[tuple[int, Path]]:
    """(step, adapter folder) of a training run: its snapshots, then the final adapter."""
    summary = json.loads((train_folder / "train_summary.json").read_text(encoding="utf-8"))
    found = [(s, snapshot_dir(train_folder, s)) for s in snapshot_steps(train_folder) if s < summary["steps"]]
    return found + [(summary["steps"], train_folder / "adapter")]


def _kept_rows(path: Path, keys: dict[int, str]) -> dict[int, dict]:
    if not path.is_file():
        return {}
    return {r["step"]: r for r in read_jsonl(path) if keys.get(r["step"]) == r.get("key")}


def _write(path: Path, rows: dict[int, dict]) -> None:
    with atomic_write(path) as f:
        for step in sorted(rows):
            f.write(json.dumps(rows[step], ensure_ascii=False) + "\n")


def merge_adapter(model, adapter: Path, base_weights: dict):
    """`model` with the LoRA adapter merged into its weights, in place, as sdft.core.models.load_model merges
    one; the weights it changes are first kept in `base_weights` (once) so restore_weights can undo it.

    One copy of the model serves every point: loading a merged copy per point measured the same numbers
    and left the process a few hundred MB larger after each."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    wrapped = PeftModel.from_pretrained(model, str(adapter))
    for name, module in wrapped.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and name not in base_weights:
            base_weights[name] = module.get_base_layer().weight.detach().clone()
    merged = wrapped.merge_and_unload()
    merged.requires_grad_(True)  # as load_model leaves it (the faster generation path on CPUs; see there)
    return merged.eval()


def restore_weights(model, base_weights: dict) -> None:
    import torch

    with torch.no_grad():
        for name, weight in base_weights.items():
            model.get_submodule(name).weight.copy_(weight)


def measure_curves(spec: ModelSpec, cfg: EvalConfig, task: str, seed_eval: Path,
                   runs: list[tuple[Path, Path]], force: bool = False, exclude: frozenset[str] = frozenset()) -> None:
    """The seed's point (eval/seed/curve.jsonl) and each (training folder, eval folder) run's points."""
    from sdft.core.models import load_model

    prompts = curve_prompts(cfg, task, exclude)
    model, tokenizer = load_model(spec)
    dtype = str(next(model.parameters()).dtype)
    reference = seed_reference(model, tokenizer, spec, prompts, cfg, seed_eval / REFERENCE_DIR, force)
    # The reference's own replies, not only its settings: samples made again elsewhere are another reference.
    sample = fingerprint(reference.key, reference.general, reference.task)
    settings = (task, prompts.task_chats, prompts.task_references, cfg.curve_max_new_tokens, cfg.batch_size,
                sample, prompts.knowledge)

    def key(adapter: Path | None) -> str:
        return fingerprint("curve-point", spec.name, spec.revision, dtype, settings,
                           _digest(adapter) if adapter is not None else None)

    seed_rows = {} if force else _kept_rows(curve_path(seed_eval), {0: key(None)})
    if 0 not in seed_rows:
        seed_rows[0] = measure_point(model, tokenizer, task, prompts, reference, cfg, 0, is_seed=True) | {
            "key": key(None), "reference": sample}
        _write(curve_path(seed_eval), seed_rows)
    base_weights: dict = {}  # the seed's own weights of the layers an adapter changes
    for train_folder, eval_folder in runs:
        todo = points(train_folder)
        keys = {step: key(adapter) for step, adapter in todo}
        rows = {} if force else _kept_rows(curve_path(eval_folder), keys)
        for step, adapter in todo:
            if step in rows:
                continue
            model = merge_adapter(model, adapter, base_weights)
            rows[step] = measure_point(model, tokenizer, task, prompts, reference, cfg, step, is_seed=False) | {
                "key": keys[step], "reference": sample}
            restore_weights(model, base_weights)
            release_freed_memory()
            eval_folder.mkdir(parents=True, exist_ok=True)
            _write(curve_path(eval_folder), rows)  # after each point: a killed run resumes at the next
        # Rows of steps this run no longer has (e.g. retrained with other steps) are dropped.
        if set(rows) - set(keys):
            _write(curve_path(eval_folder), {s: r for s, r in rows.items() if s in keys})
