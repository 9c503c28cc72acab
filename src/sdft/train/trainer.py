"""LoRA fine-tuning on the transformers Trainer.

The Trainer brings checkpointing, resume, schedules and `accelerate launch` data parallelism. What it
lacks is a loss that projects onto the vocabulary only where a loss is taken; `compute_loss` below asks
the model for logits at the response positions of the packed row and nowhere else.

A killed run resumes from its latest complete checkpoint (model, optimizer, scheduler, RNG state, data
position), so it logs the same per-step losses as an uninterrupted run. A checkpoint cut short by the
kill is passed over, and checkpoints of other data or settings are refused (use force to start over).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from sdft.core.config import TrainConfig
from sdft.core.errors import InputError
from sdft.core.models import load_tokenizer, pick_device, pick_dtype, resolve_model
from sdft.core.runstate import fingerprint, holds, process_state
from sdft.data.example import Example
from sdft.engine.attention import supports_segments
from sdft.train import attention
from sdft.train.data import IGNORE, PackedCollator, tokenize_example
from sdft.train.lora import lora_config, quantization_args, uses_autocast
from sdft.train.loss import summed_cross_entropy
from sdft.train.memory_estimate import preflight
from sdft.train.session import finished_run, run_to_end, trainer_arguments
from sdft.train.snapshots import snapshot_callback




def _trainer_class():
    from transformers import Trainer

    class _Trainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("targets")
            keep = targets != IGNORE
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
            logits = out.logits.reshape(-1, out.logits.shape[-1])  # (response positions, vocab)
            loss = summed_cross_entropy(logits, targets[keep]) / keep.sum().clamp(min=1)
            return (loss, out) if return_outputs else loss

    return _Trainer


def attention_for(model_name: str, trust_remote_code: bool = False, revision: str | None = None) -> str:
    """Per-sequence attention over packed rows where the model's attention is plain causal, else sdpa."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model(model_name), trust_remote_code=trust_remote_code,
                                        revision=revision)
    return attention.register() if supports_segments(config) else "sdpa"


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
        raise InputError("no training rows left: every prompt is longer than max_length")
    return rows, skipped


def run_fingerprint(model_name: str, examples: list[Example], cfg: TrainConfig) -> str:
    """What the trained adapter depends on: model, data and settings (not how often progress is saved)."""
    settings = asdict(cfg) | {"save_steps": None, "logging_steps": None, "gradient_checkpointing": None}
    for name in ("curve_steps", "report_to"):  # where progress goes; a run's key stays what it was before them
        settings.pop(name)
    return fingerprint("train", model_name, settings, [[ex.messages(), ex.response] for ex in examples])


@holds("out_dir")
def train(model_name: str, examples: list[Example], out_dir: str | Path, cfg: TrainConfig,
          trust_remote_code: bool = False, force: bool = False, progress: bool = True,
          revision: str | None = None) -> dict:
    """Fine-tune `model_name` with LoRA on the examples; writes adapter/, train_log.jsonl, loss.png.

    Before loading any weights it prints the memory estimate and stops if the run cannot fit
    (sdft.train.memory_estimate)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments, set_seed

    out_dir = Path(out_dir)
    summary_path = out_dir / "train_summary.json"
    ckpt_dir = out_dir / "checkpoints"
    key = run_fingerprint(model_name if revision is None else f"{model_name}@{revision}", examples, cfg)
    tokenizer = load_tokenizer(model_name, trust_remote_code, revision)
    dataset, skipped = build_dataset(tokenizer, examples, cfg)
    if force or not summary_path.is_file():
        # Checked before --force deletes anything: a run that cannot fit leaves the old one as it was.
        device = pick_device(None)
        preflight(model_name, cfg, pick_dtype(cfg.dtype, device, model_name), device, trust_remote_code, revision,
                  show=process_state().is_main_process, rows=dataset)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    done = finished_run(out_dir, key)
    if done is not None:
        return done

    set_seed(cfg.seed)
    cuda = torch.cuda.is_available()
    dtype = pick_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"), model_name)
    # The frozen base weights are stored in the training dtype (half the memory in bf16, and bf16 matmuls
    # on GPUs and on CPUs with native bf16); the LoRA weights stay float32 (get_peft_model below), and the
    # Trainer's bf16/fp16 autocast runs their matmuls in the training dtype.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_name), dtype=dtype,
        trust_remote_code=trust_remote_code, revision=revision,
        attn_implementation=attention_for(model_name, trust_remote_code, revision), **quantization_args(cfg, dtype),
    )
    model = get_peft_model(model, lora_config(cfg), autocast_adapter_dtype=True)  # adapter weights in float32

    args = TrainingArguments(**trainer_arguments(cfg, ckpt_dir, dtype, progress, uses_autocast(cfg, dtype)),
                             remove_unused_columns=False)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=PackedCollator(),
                               callbacks=[snapshot_callback(out_dir, cfg.curve_steps)])
    return run_to_end(trainer, model, out_dir, key, {
        "model": model_name,
        "rows": len(dataset),
        "skipped_too_long": skipped,
        "config": asdict(cfg),
    })


