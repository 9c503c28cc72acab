"""LoRA fine-tuning on the transformers Trainer.

The Trainer brings checkpointing, resume, schedules and `accelerate launch` data parallelism. What it
lacks is a loss that projects onto the vocabulary only where a loss is taken; `compute_loss` below asks
the model for logits at the response positions of the packed row and nowhere else.

A killed run resumes from its latest complete checkpoint (model, optimizer, scheduler, RNG state, data
position), so it logs the same per-step losses as an uninterrupted run. A checkpoint cut short by the
kill is passed over, and checkpoints of other data or settings are refused (use force to start over).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sdft.data.example import Example
from sdft.io import fsync_dir, write_json, write_jsonl
from sdft.resume import StaleStateError
from sdft.train.data import IGNORE, PackedCollator, tokenize_example


@dataclass
class TrainConfig:
    # LoRA as in the paper's runs
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_steps: float = 0  # int: steps; a float below 1: fraction of all steps
    epochs: float = 2.0
    max_steps: int = -1  # >0 overrides epochs
    batch_size: int = 8  # sequences per step and process
    grad_accum: int = 1  # micro-batches per optimizer step; the step averages their per-token mean losses
    max_length: int = 1024
    weight_decay: float = 0.0
    seed: int = 42
    save_steps: int = 50  # checkpoint every N steps; a rerun resumes from the latest
    logging_steps: int = 1
    dtype: str = "auto"  # fp32 on CPU, bf16 on GPUs that support it



def _trainer_class():
    from transformers import Trainer

    class _Trainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("targets")
            keep = targets != IGNORE
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
            logits = out.logits.reshape(-1, out.logits.shape[-1])  # (response positions, vocab)
            loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum") / keep.sum().clamp(min=1)
            return (loss, out) if return_outputs else loss

    return _Trainer


def attention_for(model_name: str, trust_remote_code: bool = False) -> str:
    """Per-sequence attention over packed rows where the model's attention is plain causal, else sdpa."""
    from transformers import AutoConfig

    from sdft.models import resolve_model
    from sdft.train import attention

    config = AutoConfig.from_pretrained(resolve_model(model_name), trust_remote_code=trust_remote_code)
    return attention.register() if attention.supports_segments(config) else "sdpa"


def build_dataset(tokenizer, examples: list[Example], cfg: TrainConfig) -> tuple[list[dict], int]:
    """Tokenized rows (a list is all the Trainer's data loader needs) plus how many were skipped
    because the prompt alone exceeds max_length."""
    rows, skipped = [], 0
    for ex in examples:
        tok = tokenize_example(tokenizer, ex, ex.response, cfg.max_length)
        if tok is None:
            skipped += 1
            continue
        rows.append({"input_ids": tok.input_ids, "labels": tok.labels})
    if not rows:
        raise ValueError("no training rows left: every prompt is longer than max_length")
    return rows, skipped


def run_fingerprint(model_name: str, examples: list[Example], cfg: TrainConfig) -> str:
    """What the trained adapter depends on: model, data and settings (not how often progress is saved)."""
    settings = asdict(cfg) | {"save_steps": None, "logging_steps": None}
    h = hashlib.sha256(json.dumps([model_name, settings], sort_keys=True, default=str).encode())
    for ex in examples:
        h.update(json.dumps([ex.messages(), ex.response], ensure_ascii=False).encode())
    return h.hexdigest()


def train(model_name: str, examples: list[Example], out_dir: str | Path, cfg: TrainConfig,
          trust_remote_code: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Fine-tune `model_name` with LoRA on the examples; writes adapter/, train_log.jsonl, loss.png."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments, set_seed

    from sdft.models import load_tokenizer, pick_dtype, resolve_model
    from sdft.train.plots import plot_losses

    out_dir = Path(out_dir)
    summary_path = out_dir / "train_summary.json"
    ckpt_dir = out_dir / "checkpoints"
    run_file = ckpt_dir / "run.json"
    key = run_fingerprint(model_name, examples, cfg)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("fingerprint", key) != key:
            raise StaleStateError(f"{out_dir} holds a model trained on other data or settings; "
                                  "use --force to train again")
        return summary
    if run_file.is_file() and json.loads(run_file.read_text()).get("fingerprint") != key:
        raise StaleStateError(f"{ckpt_dir} holds checkpoints of a run on other data or settings; "
                              "use --force to start over")

    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_name, trust_remote_code)
    dataset, skipped = build_dataset(tokenizer, examples, cfg)
    cuda = torch.cuda.is_available()
    dtype = pick_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"))
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_name), dtype=torch.float32 if dtype == torch.bfloat16 else dtype,
        trust_remote_code=trust_remote_code, attn_implementation=attention_for(model_name, trust_remote_code),
    )
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not cuda,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=not progress,
        save_only_model=False,
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=PackedCollator())
    resume = _latest_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        write_json(run_file, {"fingerprint": key})
    resumed_at = _checkpoint_step(Path(resume)) if resume else None
    if resume and _is_final(Path(resume)):
        # Resumed from its last step, the Trainer would run one step more (it checks for the end only
        # after a step), so take the finished state from the checkpoint instead.
        state, session_loss = _load_final(model, Path(resume)), math.nan
    else:
        session_loss = trainer.train(resume_from_checkpoint=resume).training_loss
        state = trainer.state

    log = [dict(r) for r in state.log_history]
    summary = {
        "model": model_name,
        "rows": len(dataset),
        "skipped_too_long": skipped,
        "steps": state.global_step,
        "train_loss": _mean_train_loss(log, resumed_at, state.global_step, session_loss),
        "final_loss": next((r["loss"] for r in reversed(log) if "loss" in r), math.nan),
        "resumed_from": resume,
        "config": asdict(cfg),
        "world_size": trainer.args.world_size,
        "fingerprint": key,
    }
    if trainer.is_world_process_zero():
        _save_adapter(model, out_dir / "adapter")
        write_jsonl(out_dir / "train_log.jsonl", log)
        points = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
        plot_losses({Path(out_dir).name: points}, out_dir / "loss.png")
        write_json(summary_path, summary)  # written last: its presence marks the stage done
    trainer.accelerator.wait_for_everyone()
    return summary


def _checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint written to the end. The Trainer writes trainer_state.json last, but not
    atomically: a kill can leave it missing or cut off, and resuming from that would fail every rerun."""
    if not ckpt_dir.is_dir():
        return None
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=_checkpoint_step, reverse=True):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("global_step") == _checkpoint_step(path):
            return str(path)
    return None


def _is_final(checkpoint: Path) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]


def _load_final(model, checkpoint: Path):
    """The adapter weights and TrainerState of a checkpoint written at the last step."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def _mean_train_loss(log: list[dict], resumed_at: int | None, steps: int, session_loss: float) -> float:
    """Mean loss over all steps. After a resume the Trainer averages only the steps of this session;
    the steps before come from the checkpoint's log (exact when save_steps is a multiple of logging_steps)."""
    if not resumed_at:
        return session_loss
    total, covered, last = 0.0, 0, 0
    for r in log:
        if "loss" in r and "step" in r and r["step"] <= resumed_at:
            total += r["loss"] * (r["step"] - last)
            covered, last = r["step"], r["step"]
    ran = steps - resumed_at
    return (total + (session_loss * ran if ran else 0.0)) / max(covered + ran, 1)


def _save_adapter(model, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    fsync_dir(target.parent)
