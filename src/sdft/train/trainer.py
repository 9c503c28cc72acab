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

from sdft.data.example import Example
from sdft.errors import InputError
from sdft.io import fsync_dir, write_json, write_jsonl
from sdft.resume import StaleStateError
from sdft.train.data import IGNORE, PackedCollator, tokenize_example
from sdft.train.loss import summed_cross_entropy


@dataclass
class TrainConfig:
    # LoRA as in the paper's runs
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])  # or "all-linear"
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
    dtype: str = "auto"  # bf16 on GPUs and CPUs with native bf16, else fp32 (sdft.models.pick_dtype)
    # Keep only each layer's input and recompute the rest in backward: activations shrink ~10x for a
    # 7B model at ~30% more time. Results are the same, so a run may resume with it switched on.
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # QLoRA: NF4 base weights via bitsandbytes (CUDA only; pip install 'sdft[qlora]')



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

    from sdft.models import resolve_model
    from sdft.train import attention

    config = AutoConfig.from_pretrained(resolve_model(model_name), trust_remote_code=trust_remote_code,
                                        revision=revision)
    return attention.register() if attention.supports_segments(config) else "sdpa"


def lora_targets(cfg: TrainConfig) -> list[str] | str:
    """Module names to adapt, or "all-linear" (every linear layer but the output layer; peft resolves it)."""
    return cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)


def _quantization(cfg: TrainConfig, dtype: torch.dtype) -> dict:
    """from_pretrained arguments for QLoRA's 4-bit base (NF4, double quantisation, compute in `dtype`)."""
    if not cfg.load_in_4bit:
        return {}
    from transformers import BitsAndBytesConfig

    from sdft.resume import process_state

    device = process_state().device  # each process quantises its copy straight onto its own GPU
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype),
            "device_map": {"": index}}


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
    h = hashlib.sha256(json.dumps([model_name, settings], sort_keys=True, default=str).encode())
    for ex in examples:
        h.update(json.dumps([ex.messages(), ex.response], ensure_ascii=False).encode())
    return h.hexdigest()


def train(model_name: str, examples: list[Example], out_dir: str | Path, cfg: TrainConfig,
          trust_remote_code: bool = False, force: bool = False, progress: bool = True,
          revision: str | None = None) -> dict:
    """Fine-tune `model_name` with LoRA on the examples; writes adapter/, train_log.jsonl, loss.png.

    Before loading any weights it prints the memory estimate and stops if the run cannot fit
    (sdft.train.memory)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments, set_seed

    from sdft.models import load_tokenizer, pick_device, pick_dtype, resolve_model
    from sdft.resume import process_state
    from sdft.train.memory import preflight

    out_dir = Path(out_dir)
    summary_path = out_dir / "train_summary.json"
    ckpt_dir = out_dir / "checkpoints"
    key = run_fingerprint(model_name if revision is None else f"{model_name}@{revision}", examples, cfg)
    tokenizer = load_tokenizer(model_name, trust_remote_code, revision)
    dataset, skipped = build_dataset(tokenizer, examples, cfg)
    if force or not summary_path.is_file():
        # Checked before --force deletes anything: a run that cannot fit leaves the old one as it was.
        device = pick_device(None)
        preflight(model_name, cfg, pick_dtype(cfg.dtype, device), device, trust_remote_code, revision,
                  show=process_state().is_main_process, rows=dataset)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    done = finished_run(out_dir, key)
    if done is not None:
        return done

    set_seed(cfg.seed)
    cuda = torch.cuda.is_available()
    dtype = pick_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"))
    # The frozen base weights are stored in the training dtype (half the memory in bf16, and bf16 matmuls
    # on GPUs and on CPUs with native bf16); the LoRA weights stay float32 (get_peft_model below), and the
    # Trainer's bf16/fp16 autocast runs their matmuls in the training dtype.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_name), dtype=dtype,
        trust_remote_code=trust_remote_code, revision=revision,
        attn_implementation=attention_for(model_name, trust_remote_code, revision), **_quantization(cfg, dtype),
    )
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(cfg), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora, autocast_adapter_dtype=True)  # adapter weights in float32

    args = TrainingArguments(**trainer_arguments(cfg, ckpt_dir, dtype, progress, uses_autocast(cfg, dtype)),
                             remove_unused_columns=False)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=PackedCollator())
    return run_to_end(trainer, model, out_dir, key, {
        "model": model_name,
        "rows": len(dataset),
        "skipped_too_long": skipped,
        "config": asdict(cfg),
    })


def uses_autocast(cfg: TrainConfig, dtype: torch.dtype) -> bool:
    """Whether sdft train runs the Trainer's mixed precision (autocast) for this run.

    bf16 base weights need none: PEFT runs the float32 adapters in float32 and casts their output back,
    and summed_cross_entropy works in float32 from bf16 logits. Under autocast, accelerate would also
    convert the logits to float32 (a full-vocabulary copy forward and backward, ~10% of a CPU step here)
    and every adapter input would be cast twice. QLoRA (bf16 compute over 4-bit weights) and fp16
    (which needs loss scaling) keep it."""
    return dtype == torch.float16 or (dtype == torch.bfloat16 and cfg.load_in_4bit)


def trainer_arguments(cfg: TrainConfig, ckpt_dir: Path, dtype: torch.dtype, progress: bool,
                      autocast: bool = True) -> dict:
    """The Trainer settings sdft train and the on-policy method share (transformers' TrainingArguments,
    which TRL's configs extend), taken from one TrainConfig so both methods train alike. `autocast`
    False trains bf16/fp16 weights as they are, without the Trainer's mixed precision."""
    return dict(
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
        bf16=autocast and dtype == torch.bfloat16,  # said outright: TRL would default to bf16 even on CPU
        fp16=autocast and dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=not progress,
        save_only_model=False,
        gradient_checkpointing=cfg.gradient_checkpointing,  # said outright: TRL's default is on
        # Non-reentrant checkpointing needs no input that requires grad (the frozen embeddings give none).
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
    )


def finished_run(out_dir: Path, key: str) -> dict | None:
    """The summary of a finished run with fingerprint `key` (None if there is none yet); refuses a finished
    run or checkpoints of other data or settings."""
    summary_path, run_file = out_dir / "train_summary.json", out_dir / "checkpoints" / "run.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("fingerprint", key) != key:
            raise StaleStateError(f"{out_dir} holds a model trained on other data or settings; "
                                  "use --force to train again")
        return summary
    if run_file.is_file() and json.loads(run_file.read_text()).get("fingerprint") != key:
        raise StaleStateError(f"{run_file.parent} holds checkpoints of a run on other data or settings; "
                              "use --force to start over")
    return None


def run_to_end(trainer, model, out_dir: Path, key: str, fields: dict) -> dict:
    """Train with a transformers/TRL trainer, resuming from the latest complete checkpoint, then write
    adapter/, train_log.jsonl, loss.png and train_summary.json (`fields` plus the run's figures; last,
    as the done marker). Shared by sdft train and the on-policy method."""
    from sdft.train.plots import plot_losses

    ckpt_dir = out_dir / "checkpoints"
    resume = _latest_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        write_json(ckpt_dir / "run.json", {"fingerprint": key})
    resumed_at = _checkpoint_step(Path(resume)) if resume else None
    if resume and _is_final(Path(resume)):
        # Resumed from its last step, the Trainer would run one step more (it checks for the end only
        # after a step), so take the finished state from the checkpoint instead.
        state, session_loss = _load_final(model, Path(resume)), math.nan
    else:
        session_loss = trainer.train(resume_from_checkpoint=resume).training_loss
        state = trainer.state

    log = [dict(r) for r in state.log_history]
    summary = fields | {
        "steps": state.global_step,
        "train_loss": _mean_train_loss(log, resumed_at, state.global_step, session_loss),
        "final_loss": next((r["loss"] for r in reversed(log) if "loss" in r), math.nan),
        "resumed_from": resume,
        "world_size": trainer.args.world_size,
        "weights_dtype": _dtypes(model, trainable=False),  # as trained: frozen base / LoRA weights
        "adapter_dtype": _dtypes(model, trainable=True),
        "autocast": bool(trainer.args.bf16 or trainer.args.fp16),
        "fingerprint": key,
    }
    if trainer.is_world_process_zero():
        _save_adapter(model, out_dir / "adapter")
        write_jsonl(out_dir / "train_log.jsonl", log)
        points = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
        plot_losses({out_dir.name: points}, out_dir / "loss.png")
        write_json(out_dir / "train_summary.json", summary)  # written last: its presence marks the stage done
    trainer.accelerator.wait_for_everyone()
    return summary


def _dtypes(model, trainable: bool) -> str:
    """The dtype(s) of the model's trainable or frozen parameters, e.g. "bfloat16"."""
    found = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad == trainable})
    return ",".join(found)


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
