"""benchmarks/efficiency.py: model FLOPs per token agree with the weights a real model holds."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from efficiency import Dims, matmul_rate  # noqa: E402


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=320, hidden_size=48, intermediate_size=112, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def test_forward_flops_are_two_per_linear_weight_plus_attention():
    model = tiny_llama()
    dims = Dims.of(model.config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert dims.kv == 2 * (48 // 6)
    assert dims.decode_flops(0) == 2 * linear
    # attention: scores and weighted sum, 2 FLOPs per multiply-add, hidden wide, per layer and position attended
    assert dims.decode_flops(10) - dims.decode_flops(0) == 4 * 48 * 10 * 3


def test_training_counts_output_layer_only_where_scored():
    dims = Dims.of(tiny_llama().config)
    both = dims.train_flops(tokens=5, response_tokens=2, positions=3)
    assert both == 2 * (5 * dims.body_flops(3) + 2 * dims.output_flops())
    assert dims.train_flops(5, 0, 3) < both


def test_matmul_rate_is_a_rate():
    dims = Dims.of(tiny_llama().config)
    rate = matmul_rate(dims, rows=8, dtype=torch.float32)
    assert 1e6 < rate < 1e15  # FLOP/s: a CPU does more than a megaflop and less than a petaflop


def test_a_reply_costs_its_prefill_and_one_forward_per_later_token():
    dims = Dims.of(tiny_llama().config)
    prefill = dims.generation_flops(4, 1)
    assert prefill == 4 * dims.body_flops(2.5) + dims.output_flops()
    # each further token: one forward at its own position (attention cost linear in position, so the mean)
    assert dims.generation_flops(4, 3) == pytest.approx(prefill + dims.decode_flops(5) + dims.decode_flops(6))
