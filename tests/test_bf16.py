"""bfloat16 training: base weights in bf16, LoRA weights in fp32, less memory, about the same loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sdft.data.example import Example
from sdft.core.errors import InputError
from sdft.core.models import cpu_dtype_report, pick_dtype
from sdft.train.trainer import train
from sdft.core.config import TrainConfig


@pytest.fixture(scope="module")
def weighty_model(tmp_path_factory, tiny_model) -> str:
    """A random Llama whose weights (14M parameters, 55 MB in fp32) outweigh its training activations, so
    that what bf16 saves shows in the peak; the tiny model's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("weighty-llama")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def _examples() -> list[Example]:
    return [Example(id=str(i), instruction=f"What is {i} plus {i + 3}?", response=f"{2 * i + 3}.", row=i)
            for i in range(8)]


def _peak_bytes(prof) -> int:
    """Peak of live CPU tensor memory over a profiled run: every allocation and free, in time order (the
    raw records; prof.events() folds those made inside an operator into the operator)."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def _run(model: str, out: Path, dtype: str) -> tuple[dict, int]:
    cfg = TrainConfig(dtype=dtype, max_steps=4, batch_size=4, learning_rate=1e-3, save_steps=10**6,
                      lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        summary = train(model, _examples(), out, cfg, force=True, progress=False)
    return summary, _peak_bytes(prof)


def test_bf16_training_keeps_base_bf16_lora_fp32_and_uses_less_memory(weighty_model, tmp_path):
    fp32, fp32_peak = _run(weighty_model, tmp_path / "fp32", "float32")
    bf16, bf16_peak = _run(weighty_model, tmp_path / "bf16", "bfloat16")

    assert (fp32["weights_dtype"], fp32["adapter_dtype"]) == ("float32", "float32")
    assert (bf16["weights_dtype"], bf16["adapter_dtype"]) == ("bfloat16", "float32")
    assert (fp32["autocast"], bf16["autocast"]) == (False, False)  # bf16 weights train as they are
    with safe_open(str(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    # the base weights alone are 27 MB smaller in bf16; activations are small next to them
    assert fp32_peak > 55e6
    assert bf16_peak < 0.85 * fp32_peak, (bf16_peak, fp32_peak)  # 55 vs 71 MB when written
    assert bf16["steps"] == fp32["steps"] == 4
    assert abs(bf16["train_loss"] - fp32["train_loss"]) / fp32["train_loss"] < 0.03
    assert abs(bf16["final_loss"] - fp32["final_loss"]) / fp32["final_loss"] < 0.03
    assert fp32["final_loss"] < fp32["train_loss"]  # it did learn, so the comparison means something
    log = [json.loads(x) for x in (tmp_path / "bf16" / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in log) == 4


def test_pick_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("SDFT_CACHE", str(tmp_path))
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InputError, match="unknown dtype 'bf8'"):
        pick_dtype("bf8", torch.device("cpu"))
    assert pick_dtype("float32", torch.device("cpu")) == torch.float32
    auto = pick_dtype("auto", torch.device("cpu"))
    assert auto == getattr(torch, cpu_dtype_report()["choice"])  # measured, not read off the CPU's flags
