"""On-policy self-distillation (Shenfeld et al. 2026, arXiv 2601.19897) on TRL's SDFTTrainer.

The student samples its own answers to the task prompts; the loss pulls its next-token distributions on
those answers towards the same model reading our distillation prompt: the task plus the reference
answer, rendered through the model's chat template exactly as `sdft distill` renders it. Offline SDFT
(distill once, then fine-tune) and this method therefore differ only in when the reference-conditioned
model speaks: once, as rewritten targets, or at every step, as the teacher of the student's own samples.

TRL does the sampling, the teacher and student forwards, the loss, LoRA (through peft_config),
checkpoints and resume. What it cannot do the way we need, and what is done here instead:

- Teacher prompt. TRL builds it from one format string over the last user turn's text; our templates
  have their own system turn and an assistant prefix. So the teacher prompt is rendered whole by
  sdft.distill.templates and handed to TRL as the row's privileged context (`_RenderedTeacherPrompt`).
- Special tokens. TRL tokenizes plain-text prompts with the tokenizer's special tokens; a rendered chat
  prompt already holds any BOS its template wants, so none is added (as in sdft.engine.decode).
- Long prompts. TRL cuts prompts from the left, which would drop the system turn or the instruction;
  rows whose prompts leave no room for max_completion_length within max_length are skipped and counted.
- No packing and no per-sequence attention: TRL pads every batch (left for prompts, right for samples).

Outputs are those of sdft.train.trainer.train (adapter/, train_log.jsonl, loss.png, train_summary.json,
checkpoints/), so eval, report and resume work unchanged. The logged loss is TRL's distillation loss (a
divergence between student and teacher on the student's samples), not a cross-entropy on references.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from sdft.core.chat import render_chat
from sdft.core.config import OnPolicyConfig
from sdft.core.errors import InputError
from sdft.core.models import load_tokenizer, pick_dtype, resolve_model
from sdft.core.runstate import fingerprint, holds
from sdft.data.example import Example
from sdft.distill.templates import DistillTemplate, get_template, render_distill_prompt
from sdft.train.lora import lora_config, quantization_args
from sdft.train.snapshots import snapshot_callback
from sdft.train.session import finished_run, is_final, latest_checkpoint, run_to_end, trainer_arguments

def build_rows(tokenizer, examples: list[Example], template: DistillTemplate, max_prompt: int) -> tuple[list[dict], int]:
    """One row per example: the student's prompt (the task only) and, as TRL's privileged context, the
    teacher's prompt (the distillation prompt with the reference). Returns the rows and how many were
    skipped because a prompt is longer than max_prompt tokens."""
    rows, skipped = [], 0
    for ex in examples:
        student = render_chat(tokenizer, ex.messages())
        teacher = render_distill_prompt(tokenizer, template, ex)
        if max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in (student, teacher)) > max_prompt:
            skipped += 1
            continue
        rows.append({"prompt": student, "privileged_context": teacher})
    if not rows:
        raise InputError(f"no training rows left: every prompt is longer than {max_prompt} tokens "
                         "(train.max_length minus onpolicy.max_completion_length)")
    return rows, skipped


def run_fingerprint(model_name: str, examples: list[Example], cfg, ocfg: OnPolicyConfig,
                    template: DistillTemplate) -> str:
    """What the adapter depends on: model, data, settings and the teacher's template (not where the
    progress is reported: report_to is left out, so adding a tracker resumes the same run)."""
    settings = asdict(cfg) | {"save_steps": None, "logging_steps": None, "gradient_checkpointing": None}
    for name in ("report_to", "curve_steps"):
        settings.pop(name, None)
    return fingerprint("onpolicy", model_name, settings, asdict(ocfg), asdict(template),
                       [[ex.messages(), ex.response, ex.instruction, ex.input] for ex in examples])


def _trainer_class():
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    class _RenderedTeacherPrompt(DemonstrationTeacherContextBuilder):
        def _compose_teacher_prompt(self, prompt, privileged_context):
            return privileged_context  # already the whole teacher prompt, rendered by build_rows

    class _Trainer(SDFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher_context_builder = _RenderedTeacherPrompt(self)

        def _tokenize_prompts(self, prompts):
            return [self._tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    return _Trainer


@holds("out_dir")
def train_onpolicy(model_name: str, examples: list[Example], out_dir: str | Path, cfg, ocfg: OnPolicyConfig,
                   task: str, template: str | None = None, trust_remote_code: bool = False, force: bool = False,
                   progress: bool = True, callbacks: list | None = None, revision: str | None = None) -> dict:
    """LoRA on-policy self-distillation of `model_name` on the examples' prompts, with their responses as
    the teacher's reference. `task` and `template` pick the distillation template as `sdft distill` does.
    Writes what sdft.train.trainer.train writes; `callbacks` go to the TRL trainer."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoModelForCausalLM, set_seed
    from trl.experimental.sdft import SDFTConfig

    ocfg.check_with(cfg)
    tmpl = get_template(template, task)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    key = run_fingerprint(model_name, examples, cfg, ocfg, tmpl)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    done = finished_run(out_dir, key)
    if done is not None:
        return done
    latest = latest_checkpoint(ckpt_dir)
    if ocfg.teacher == "ema" and latest and not is_final(Path(latest)):
        # TRL adds its EMA teacher adapter at the start of training, after the checkpoint has restored
        # one of that name, and fails; starting it afresh would give another run than the one resumed.
        raise InputError(f"{ckpt_dir}: TRL cannot resume a run with onpolicy.teacher=ema; use --force to "
                         "start over")

    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_name, trust_remote_code, revision)
    dataset, skipped = build_rows(tokenizer, examples, tmpl, cfg.max_length - ocfg.max_completion_length)
    cuda = torch.cuda.is_available()
    dtype = pick_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"), model_name)
    # Loaded as sdft train loads it (base weights in the training dtype, QLoRA if asked), but with plain
    # SDPA: TRL pads its batches, so the packed per-sequence attention of sdft train does not apply.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_name), dtype=dtype, trust_remote_code=trust_remote_code, revision=revision,
        attn_implementation="sdpa", **quantization_args(cfg, dtype),
    )
    lora = lora_config(cfg)
    # per_device_train_batch_size counts samples (prompt x generation) per micro-batch; an epoch samples
    # num_generations answers to every prompt once.
    args = SDFTConfig(
        **trainer_arguments(cfg, ckpt_dir, dtype, progress),  # with train.report_to: TRL logs where Trainer does
        trust_remote_code=trust_remote_code,
        max_prompt_length=None,  # long rows were skipped above; TRL would cut them from the left
        num_generations=ocfg.num_generations,
        max_completion_length=ocfg.max_completion_length,
        temperature=ocfg.temperature,
        distillation_topk=ocfg.topk,
        teacher_model_kind=ocfg.teacher,
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               peft_config=lora, callbacks=[*(callbacks or []), snapshot_callback(out_dir, cfg.curve_steps)])
    return run_to_end(trainer, trainer.model, out_dir, key, {
        "method": "onpolicy",
        "model": model_name,
        "rows": len(dataset),
        "skipped_too_long": skipped,
        "config": asdict(cfg),
        "onpolicy": asdict(ocfg),
        "template": tmpl.name,
    })
