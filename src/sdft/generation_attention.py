"""Attention for the generation engine's forward calls on a CPU.

transformers' sdpa attention repeats every key/value head for the query heads that share it whenever a
mask is given and more than one token is queried (prefill, draft verification): a copy of the cache,
three times over for SmolLM2's 9 query and 3 key/value heads, before a kernel that then reads it. On a
CPU, PyTorch's fused kernel takes the shared heads as they are (`enable_gqa`), mask and all: a prefill
call of 7 prompts x 288 tokens (bf16) took 12.1 ms against 17.8 ms. Single-token decoding steps keep
transformers' own path, which stacks the shared heads' queries instead (3-row tiles, no copies).

Used only while the engine decodes (`generation_attention`), only for models whose attention is plain
sdpa (no sliding windows, soft-capping or position biases: `supports_plain_attention`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "sdft_generation"


def gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                  is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (attention_mask is None or query.shape[2] == 1 or groups == 1 or query.device.type != "cpu"
            or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None  # (batch, tokens, heads, head_dim), as sdpa returns


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def supports_plain_attention(model) -> bool:
    """sdpa attention on a CPU, every layer plain causal attention over the whole cache."""
    from sdft.train.attention import supports_segments

    config = model.config
    return (getattr(config, "_attn_implementation", None) == "sdpa" and model.device.type == "cpu"
            and supports_segments(config))


@contextmanager
def generation_attention(model):
    """While inside, `model` attends through `gqa_attention` where it supports it; restored after."""
    if not supports_plain_attention(model):
        yield
        return
    config = model.config
    config._attn_implementation = register()
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"
