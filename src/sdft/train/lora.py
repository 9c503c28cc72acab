"""The LoRA adapters and the base model's precision: what sdft train, the on-policy method and the
memory estimate all build the same way."""

from __future__ import annotations

import torch

from sdft.core.config import TrainConfig
from sdft.core.runstate import process_state


def lora_targets(cfg: TrainConfig) -> list[str] | str:
    """Module names to adapt, or "all-linear" (every linear layer but the output layer; peft resolves it)."""
    return cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)


def lora_config(cfg: TrainConfig):
    """peft's LoraConfig for these settings (causal LM)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(cfg), task_type="CAUSAL_LM")


def quantization_args(cfg: TrainConfig, dtype: torch.dtype) -> dict:
    """from_pretrained arguments for QLoRA's 4-bit base (NF4, double quantisation, compute in `dtype`)."""
    if not cfg.load_in_4bit:
        return {}
    from transformers import BitsAndBytesConfig

    device = process_state().device  # each process quantises its copy straight onto its own GPU
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype),
            "device_map": {"": index}}


def uses_autocast(cfg: TrainConfig, dtype: torch.dtype) -> bool:
    """Whether sdft train runs the Trainer's mixed precision (autocast) for this run.

    bf16 base weights need none: PEFT runs the float32 adapters in float32 and casts their output back,
    and summed_cross_entropy works in float32 from bf16 logits. Under autocast, accelerate would also
    convert the logits to float32 (a full-vocabulary copy forward and backward, ~10% of a CPU step here)
    and every adapter input would be cast twice. QLoRA (bf16 compute over 4-bit weights) and fp16
    (which needs loss scaling) keep it."""
    return dtype == torch.float16 or (dtype == torch.bfloat16 and cfg.load_in_4bit)
