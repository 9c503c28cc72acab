"""How much memory a LoRA training run needs, from the model's config alone (no weights are read).

The model is built on the meta device (shapes without storage), so parameter counts are exact for any
architecture transformers knows, and peft itself says which layers get adapters ("all-linear"
included). Activations and logits follow the per-token formulas in docs/PERFORMANCE.md ("Memory
estimate"); keep the two in step.

Terms (bytes):
  weights      frozen base: params x dtype bytes; 4-bit: linear layers at 0.5 byte + NF4 double-quant
               constants, the rest (embeddings, norms, lm_head) in the compute dtype
  lora         adapter params in fp32: weight + gradient + AdamW's two moments = 16 bytes each
  activations  saved for backward, per layer per token, x the tokens of one step (batch_size x max_length,
               or with the data at hand its batch_size longest rows); with gradient
               checkpointing only each layer's input is kept, plus one layer's worth while it is recomputed;
               without autocast the adapters' tensors are fp32
  logits       at response tokens (every token of the step, or with the data at hand the most response
               tokens batch_size rows hold): the logits and their gradient in the model dtype; under
               autocast accelerate's fp32 copy and its fp32 gradient instead of one of them
  runtime      the framework, CUDA context, kernel workspaces, allocator slack (a fixed 1 GiB; 0.8 GiB
               measured outside PyTorch's pool on an H200, with expandable segments: sdft.core.allocator)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace

import torch

from sdft.core.errors import InputError, SetupError
from sdft.core.models import resolve_model
from sdft.train.data import IGNORE
from sdft.train.lora import lora_config, uses_autocast

GIB = 1024**3
RUNTIME_BYTES = 1 * GIB
# NF4 with double quantisation (the QLoRA defaults): 4 bits per weight, one 8-bit absmax per block of 64
# weights, and one fp32 constant per 256 of those absmax values.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
ADAM_LORA_BYTES_PER_PARAM = 16  # fp32 weight, gradient, exp_avg, exp_avg_sq


class MemoryBudgetError(InputError):
    """The run's settings need more memory than the device has; the message says what to change."""


@dataclass
class ModelShape:
    """What the estimate needs to know about a model, read from its config and a meta-device build."""

    params: int  # all parameters
    quantizable: int  # parameters of the linear layers bitsandbytes would quantise (all but lm_head)
    layers: int
    hidden: int
    kv_dim: int  # key/value width (smaller than hidden with grouped-query attention)
    intermediate: int
    vocab: int
    lora_params: int
    lora_inputs: int  # sum of in_features over the adapted linear layers of one decoder layer
    lora_modules: int  # adapted linear layers in one decoder layer


@dataclass
class MemoryEstimate:
    shape: ModelShape
    tokens: int  # in one step per process: batch_size x max_length, or the data's batch_size longest rows
    response_tokens: int | None  # where logits are computed, from the data; None: every token
    weight_desc: str
    weights: float
    lora: float
    activations: float
    logits: float
    runtime: float = RUNTIME_BYTES

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.activations + self.logits + self.runtime

    def render(self) -> str:
        s = self.shape
        rows = [
            (f"weights ({self.weight_desc}, {s.params / 1e9:.2f}B params)", self.weights),
            (f"LoRA params+grads+AdamW (fp32, {s.lora_params / 1e6:.2f}M params)", self.lora),
            (f"activations ({self.tokens} tokens x {s.layers} layers)", self.activations),
            ("logits (response tokens, at most all)" if self.response_tokens is None else
             f"logits ({self.response_tokens} response tokens)", self.logits),
            ("runtime (framework, CUDA context, allocator slack)", self.runtime),
            ("total", self.total),
        ]
        return "\n".join(f"  {name:<58} {value / GIB:8.2f} GiB" for name, value in rows)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_shape(config, cfg, trust_remote_code: bool = False) -> ModelShape:
    """Parameter counts from a meta-device build of `config` with `cfg`'s LoRA adapters attached."""
    from accelerate import init_empty_weights
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecation notes from peft/transformers internals
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    out = model.get_output_embeddings()
    quantizable = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                      for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not out)
    lora = lora_config(cfg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora)
    except ValueError as e:  # peft: a target module that the model does not have
        raise InputError(f"train.target_modules {cfg.target_modules!r}: {e}") from None
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = _text_config(config)
    layers = int(text.num_hidden_layers)
    hidden = int(text.hidden_size)
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    adapted = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "in_features")]
    return ModelShape(params=params, quantizable=quantizable, layers=layers, hidden=hidden,
                      kv_dim=kv_heads * head_dim, intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
                      vocab=int(text.vocab_size), lora_params=lora_params,
                      lora_inputs=sum(m.in_features for m in adapted) // max(layers, 1),
                      lora_modules=len(adapted) // max(layers, 1))


def activation_bytes_per_token_layer(shape: ModelShape, act: int, lora_r: int, lora_dropout: float,
                                     mask: int = 1, adapter_act: int | None = None) -> float:
    """Bytes one decoder layer keeps for backward per token (no checkpointing), `act` bytes per element.

    A frozen linear layer keeps no input (its backward needs only its weight). What is kept: the fp32
    input of both RMSNorms (4 x hidden each); fused SDPA's q, k, v and output (no score matrix); the
    MLP's gate output, up output and SiLU output (3 x intermediate); and per adapted layer its adapter's
    input and lora_A's output (`adapter_act` bytes per element, `act` unless given: 4 without autocast,
    where PEFT computes the float32 adapters in float32), plus the dropout mask (`mask` bytes per element:
    bool on CUDA, float on CPU).
    """
    h, kv, inter = shape.hidden, shape.kv_dim, shape.intermediate
    base = 2 * 4 * h + act * (2 * h + 2 * kv) + act * 3 * inter
    adapters = (adapter_act or act) * (shape.lora_inputs + lora_r * shape.lora_modules)
    return base + adapters + (mask * shape.lora_inputs if lora_dropout > 0 else 0)


def step_tokens(rows: list[dict], batch_size: int) -> tuple[int, int]:
    """The most tokens, and the most response tokens, that one step of `batch_size` of these tokenized
    rows (input_ids, labels) can hold."""
    lengths = sorted((len(r["input_ids"]) for r in rows), reverse=True)
    responses = sorted((sum(t != IGNORE for t in r["labels"]) for r in rows), reverse=True)
    return sum(lengths[:batch_size]), sum(responses[:batch_size])


def estimate(shape: ModelShape, cfg, dtype: torch.dtype, device_type: str = "cuda",
             rows: list[dict] | None = None) -> MemoryEstimate:
    """The estimate for TrainConfig `cfg` training in `dtype` (the base weights' dtype unless 4-bit);
    with the tokenized training `rows`, for their longest steps instead of every row at max_length."""
    act = torch.empty((), dtype=dtype).element_size()
    tokens, response = (cfg.batch_size * cfg.max_length, None) if rows is None else step_tokens(rows, cfg.batch_size)
    if cfg.load_in_4bit:
        weights = shape.quantizable * NF4_BYTES_PER_PARAM + (shape.params - shape.quantizable) * act
        desc = "NF4 4-bit"
    else:
        weights = shape.params * act
        desc = str(dtype).removeprefix("torch.")
    autocast = uses_autocast(cfg, dtype)
    mask = 1 if device_type == "cuda" else 4
    per_layer = activation_bytes_per_token_layer(shape, act, cfg.lora_r, cfg.lora_dropout, mask,
                                                 adapter_act=act if autocast else 4)
    if cfg.gradient_checkpointing:
        # Each layer's input is kept; during backward one layer at a time is recomputed in full.
        activations = tokens * (shape.layers * act * shape.hidden + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    logits = (tokens if response is None else response) * shape.vocab * (act + 8 if autocast else 2 * act)
    return MemoryEstimate(shape=shape, tokens=tokens, response_tokens=response, weight_desc=desc, weights=weights,
                          lora=shape.lora_params * ADAM_LORA_BYTES_PER_PARAM, activations=activations, logits=logits,
                          runtime=RUNTIME_BYTES)


def load_config(model_name: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model(model_name), trust_remote_code=trust_remote_code,
                                      revision=revision)


def available_bytes(device: torch.device) -> int:
    """Free memory on `device`: the GPU's free memory, or this process's share of available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    # CPU processes launched together share the machine's RAM.
    return psutil.virtual_memory().available // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def check_4bit(device: torch.device) -> None:
    """QLoRA's 4-bit base needs bitsandbytes and a CUDA GPU."""
    if device.type != "cuda":
        raise SetupError("train.load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); "
                         "set load_in_4bit: false to train on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SetupError("train.load_in_4bit needs bitsandbytes: pip install 'sdft[qlora]'") from None


def check_fits(est: MemoryEstimate, cfg, dtype: torch.dtype, device: torch.device, available: int,
               rows: list[dict] | None = None) -> None:
    """Raise MemoryBudgetError, with settings that need less, when `est` exceeds `available` bytes."""
    if est.total <= available:
        return
    # Each step adds to the ones before it, cheapest in speed or quality first.
    steps, changed = [], cfg
    if not changed.gradient_checkpointing:
        changed = replace(changed, gradient_checkpointing=True)
        steps.append(("gradient_checkpointing: true", changed))
    if not changed.load_in_4bit and device.type == "cuda":
        changed = replace(changed, load_in_4bit=True)
        steps.append(("load_in_4bit: true (pip install 'sdft[qlora]')", changed))
    if changed.batch_size > 1:
        changed = replace(changed, batch_size=max(changed.batch_size // 4, 1), grad_accum=changed.grad_accum * 4)
        steps.append((f"batch_size: {changed.batch_size}, grad_accum: {changed.grad_accum} "
                      "(fewer sequences at once, same per step)", changed))
    if changed.max_length > 512:
        changed = replace(changed, max_length=512)
        steps.append(("max_length: 512 (longer rows are cut)", changed))
    # rows were cut at the current max_length: a shorter one is estimated as every row at that length
    advice = [f"  + {text}: "
              f"{estimate(est.shape, c, dtype, device.type, rows if c.max_length == cfg.max_length else None).total / GIB:.1f} GiB"
              for text, c in steps]
    raise MemoryBudgetError(
        f"training needs about {est.total / GIB:.1f} GiB (estimate above) but {device} has {available / GIB:.1f} "
        "GiB free.\nWhat these train settings would need, each line adding to the ones above "
        "(set them in the config's train section, or with --set KEY=VALUE):\n" + "\n".join(advice))


def estimate_for_model(model_name: str, cfg, dtype: torch.dtype, device: torch.device,
                       trust_remote_code: bool = False, revision: str | None = None,
                       rows: list[dict] | None = None) -> MemoryEstimate:
    """The estimate for training `model_name` (its config only) with TrainConfig `cfg` on `device`,
    on the tokenized `rows` where given."""
    config = load_config(model_name, trust_remote_code, revision)
    return estimate(model_shape(config, cfg, trust_remote_code), cfg, dtype, device.type, rows)


def preflight(model_name: str, cfg, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False,
              revision: str | None = None, show: bool = True, rows: list[dict] | None = None) -> MemoryEstimate:
    """Before any weights load: print the estimate (for the tokenized `rows` where given), then stop if
    4-bit cannot run here or the run cannot fit."""
    est = estimate_for_model(model_name, cfg, dtype, device, trust_remote_code, revision, rows)
    available = available_bytes(device)
    if show:
        print(f"memory estimate per process ({device}, {available / GIB:.1f} GiB free):\n{est.render()}", flush=True)
    if cfg.load_in_4bit:
        check_4bit(device)
    check_fits(est, cfg, dtype, device, available, rows)
    return est
