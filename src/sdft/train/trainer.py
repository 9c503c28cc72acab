"""LoRA fine-tuning on the transformers Trainer.

The Trainer brings checkpointing, resume, schedules and `accelerate launch` data parallelism. What it
lacks is a loss that projects onto the vocabulary only where a loss is taken; `compute_loss` below asks
the model for logits at the response positions of the packed row and nowhere else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sdft.data.example import Example
from sdft.io import fsync_dir, write_json
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
    grad_accum: int = 1
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


def build_dataset(tokenizer, examples: list[Example], cfg: TrainConfig):
    """Tokenized rows plus how many were skipped because the prompt alone exceeds max_length."""
    from datasets import Dataset

    rows, skipped = [], 0
    for ex in examples:
        tok = tokenize_example(tokenizer, ex, ex.response, cfg.max_length)
        if tok is None:
            skipped += 1
            continue
        rows.append({"input_ids": tok.input_ids, "labels": tok.labels})
    if not rows:
        raise ValueError("no training rows left: every prompt is longer than max_length")
    return Dataset.from_list(rows), skipped


def train(model_name: str, examples: list[Example], out_dir: str | Path, cfg: TrainConfig,
          trust_remote_code: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Fine-tune `model_name` with LoRA on the examples; writes adapter/, train_log.jsonl, loss.png."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments, set_seed

    from sdft.models import load_tokenizer, pick_dtype, resolve_model
    from sdft.train.plots import plot_losses

    out_dir = Path(out_dir)
    summary_path = out_dir / "train_summary.json"
    if summary_path.is_file() and not force:
        return json.loads(summary_path.read_text())
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    ckpt_dir = out_dir / "checkpoints"

    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_name, trust_remote_code)
    dataset, skipped = build_dataset(tokenizer, examples, cfg)
    cuda = torch.cuda.is_available()
    dtype = pick_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"))
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_name), dtype=torch.float32 if dtype == torch.bfloat16 else dtype,
        trust_remote_code=trust_remote_code,
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
    result = trainer.train(resume_from_checkpoint=resume)

    log = [dict(r) for r in trainer.state.log_history]
    summary = {
        "model": model_name,
        "rows": len(dataset),
        "skipped_too_long": skipped,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "final_loss": next((r["loss"] for r in reversed(log) if "loss" in r), math.nan),
        "resumed_from": resume,
        "config": asdict(cfg),
        "world_size": trainer.args.world_size,
    }
    if trainer.is_world_process_zero():
        _save_adapter(model, out_dir / "adapter")
        with open(out_dir / "train_log.jsonl.tmp", "w") as f:
            for r in log:
                f.write(json.dumps(r) + "\n")
        os.replace(out_dir / "train_log.jsonl.tmp", out_dir / "train_log.jsonl")
        points = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
        plot_losses({Path(out_dir).name: points}, out_dir / "loss.png")
        write_json(summary_path, summary)  # written last: its presence marks the stage done
    trainer.accelerator.wait_for_everyone()
    return summary


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[-1])))


def _save_adapter(model, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    fsync_dir(target.parent)
