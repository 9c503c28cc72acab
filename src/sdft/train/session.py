"""One training run as a transformers or TRL trainer drives it: the Trainer's arguments, resuming from
the latest complete checkpoint, and what a finished run leaves (adapter/, train_log.jsonl, loss.png,
train_summary.json as the done marker). Shared by sdft train and the on-policy method.

Experiment trackers (`train.report_to`) are transformers' own integrations. TensorBoard writes into
`<out>/tensorboard/` rather than transformers' default of a new time-stamped folder per session, so a
resumed run continues the same curve and `sdft run` can add the final metrics beside it
(sdft.recipes.tracking)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch

from sdft.core.allocator import freed_memory_kept
from sdft.core.config import TrainConfig
from sdft.core.errors import SetupError
from sdft.core.io import fsync_dir, write_json, write_jsonl
from sdft.core.runstate import StaleStateError

TENSORBOARD_DIR = "tensorboard"  # under a training run's folder: the loss, then the final metrics
# The package each tracker needs, where its name is not the package's (transformers checks the rest).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "trackio": ("trackio",), "comet_ml": ("comet_ml",), "clearml": ("clearml",)}


def trackers(report_to: list[str]) -> list[str]:
    """The trackers asked for, "none" dropped; a missing tracker package is one clear line, before any
    model loads (transformers would fail later, inside the Trainer)."""
    import importlib.util

    chosen = [t for t in report_to if t != "none"]
    for tracker in chosen:
        packages = TRACKER_PACKAGES.get(tracker, ())
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise SetupError(f"train.report_to {tracker} needs the {packages[0]} package: pip install {packages[0]}")
    return chosen


def tensorboard_dir(out_dir: str | Path) -> Path:
    """Where a training run's TensorBoard events go (loss curves, and the final metrics of `sdft run`)."""
    return Path(out_dir) / TENSORBOARD_DIR


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
        report_to=trackers(cfg.report_to),
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
    point_tensorboard_at(trainer, tensorboard_dir(out_dir))
    resume = latest_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        write_json(ckpt_dir / "run.json", {"fingerprint": key})
    resumed_at = checkpoint_step(Path(resume)) if resume else None
    if resume and is_final(Path(resume)):
        # Resumed from its last step, the Trainer would run one step more (it checks for the end only
        # after a step), so take the finished state from the checkpoint instead.
        state, session_loss = load_final(model, Path(resume)), math.nan
    else:
        with freed_memory_kept():  # the demo's 32 steps: 31 s, against 58 s with glibc's defaults
            session_loss = trainer.train(resume_from_checkpoint=resume).training_loss
        state = trainer.state

    log = [dict(r) for r in state.log_history]
    summary = fields | {
        "steps": state.global_step,
        "train_loss": mean_train_loss(log, resumed_at, state.global_step, session_loss),
        "final_loss": next((r["loss"] for r in reversed(log) if "loss" in r), math.nan),
        "resumed_from": resume,
        "world_size": trainer.args.world_size,
        "weights_dtype": parameter_dtypes(model, trainable=False),  # as trained: frozen base / LoRA weights
        "adapter_dtype": parameter_dtypes(model, trainable=True),
        "autocast": bool(trainer.args.bf16 or trainer.args.fp16),
        "fingerprint": key,
    }
    if trainer.is_world_process_zero():
        save_adapter(model, out_dir / "adapter")
        write_jsonl(out_dir / "train_log.jsonl", log)
        points = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
        plot_losses({out_dir.name: points}, out_dir / "loss.png")
        write_json(out_dir / "train_summary.json", summary)  # written last: its presence marks the stage done
    trainer.accelerator.wait_for_everyone()
    return summary


def point_tensorboard_at(trainer, folder: Path) -> None:
    """Have transformers' TensorBoard callback (if report_to has it) write into `folder`, unless the user
    chose a folder with TENSORBOARD_LOGGING_DIR."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(folder)


def parameter_dtypes(model, trainable: bool) -> str:
    """The dtype(s) of the model's trainable or frozen parameters, e.g. "bfloat16"."""
    found = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad == trainable})
    return ",".join(found)


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint written to the end. The Trainer writes trainer_state.json last, but not
    atomically: a kill can leave it missing or cut off, and resuming from that would fail every rerun."""
    if not ckpt_dir.is_dir():
        return None
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=checkpoint_step, reverse=True):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("global_step") == checkpoint_step(path):
            return str(path)
    return None


def is_final(checkpoint: Path) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]


def load_final(model, checkpoint: Path):
    """The adapter weights and TrainerState of a checkpoint written at the last step."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def mean_train_loss(log: list[dict], resumed_at: int | None, steps: int, session_loss: float) -> float:
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


def save_adapter(model, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    fsync_dir(target.parent)
