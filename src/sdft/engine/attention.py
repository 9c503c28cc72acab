"""Attention for the generation engine's forward calls on a CPU.

transformers' sdpa attention repeats every key/value head for the query heads that share it whenever a
mask is given and more than one token is queried (prefill, draft verification): a copy of the cache,
three times over for SmolLM2's 9 query and 3 key/value heads, before a kernel that then reads it. On a
CPU, PyTorch's fused kernel takes the shared heads as they are (`enable_gqa`), mask and all: a prefill
call of 7 prompts x 288 tokens (bf16) took 12.1 ms against 17.8 ms. Single-token decoding steps keep
transformers' own path, which stacks the shared heads' queries instead (3-row tiles, no copies), but
per range of rows (`windowed_attention`): the engine's rows share one window of cache columns, as wide
as its oldest row needs, and the fused kernel's time grows with the columns it reads, masked or not.
Rows that joined later start further right, so cutting the rows into a few ranges, each over the
columns its own rows use, reads fewer of them (on 128 GSM8K distillation prompts: 88% of the columns
with 4 ranges; the rows themselves use 75%).

Used only while the engine decodes (`generation_attention`), only for models whose attention is plain
sdpa (no sliding windows, soft-capping or position biases: `supports_plain_attention`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "sdft_generation"


def gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                  is_causal=None, row_windows=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if row_windows and query.shape[2] == 1:
        return windowed_attention(module, query, key, value, attention_mask, row_windows, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if (attention_mask is None or query.shape[2] == 1 or groups == 1 or query.device.type != "cpu"
            or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None  # (batch, tokens, heads, head_dim), as sdpa returns


def windowed_attention(module, query, key, value, attention_mask, row_windows, **kwargs):
    """A decoding step's attention per range of rows, each over the columns its rows use:
    row_windows lists (first row, end row, first column) ranges that cover the batch in order."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pieces = []
    for a, b, col in row_windows:
        mask = None if attention_mask is None else attention_mask[a:b, ..., col:]
        out, _ = sdpa_attention_forward(module, query[a:b], key[a:b, :, col:], value[a:b, :, col:], mask, **kwargs)
        pieces.append(out)
    return torch.cat(pieces), None


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def supports_plain_attention(model) -> bool:
    """sdpa attention on a CPU, every layer plain causal attention over the whole cache."""
    config = model.config
    return (getattr(config, "_attn_implementation", None) == "sdpa" and model.device.type == "cpu"
            and supports_segments(config))


WINDOW_PARTS = 4  # row ranges a decoding step's attention is cut into (`windowed_attention`)


@contextmanager
def generation_attention(model):
    """While inside, `model` attends through `gqa_attention` where it supports it; restored after.
    Yields how many row ranges a decoding step may pass as `row_windows` (0: none, not supported)."""
    if not supports_plain_attention(model):
        yield 0
        return
    config = model.config
    config._attn_implementation = register()
    try:
        yield WINDOW_PARTS
    finally:
        config._attn_implementation = "sdpa"


def supports_segments(config) -> bool:
    """Plain causal attention in every layer: no sliding windows, no logit soft-capping (so a sequence can
    be attended to piece by piece, or a cache window by window)."""
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    layer_types = getattr(config, "layer_types", None) or []
    return (not sliding and "sliding_attention" not in layer_types
            and not getattr(config, "attn_logit_softcapping", None))
