"""Attention for packed training rows that works one sequence at a time.

A packed row holds several sequences back to back. With a block-diagonal mask over the whole row,
scaled-dot-product attention on CPU falls back to its math kernel: it scores every pair of tokens in
the row (most of them masked out) and keeps a row x row matrix per head and layer for the backward
pass. Cutting the row at the sequence boundaries and running causal attention on each piece does only
the work that counts, through the fused kernel, and keeps no such matrix.

The boundaries travel with the batch as `segments` (cumulative lengths, [0, n1, n1 + n2, ...]); calls
without them (or models whose attention needs more than plain causal attention) are plain sdpa.

In bf16/fp16 on a CPU, short pieces skip the fused kernel: its forward and backward cost ~1.8 ms a call
for a 60-token piece of SmolLM2's 9 heads where two multiplies around a float32 softmax cost ~0.85 ms
(~5 vs ~4.2 ms at 200 tokens; from ~300 tokens on the kernel is faster). Both are exact attention.
"""

from __future__ import annotations

import torch


NAME = "sdft_segments"


def segment_attention(module, query, key, value, attention_mask, *, segments=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None or len(segments) <= 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    small = (query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16)
             and not kwargs.get("dropout") and kwargs.get("scaling") is not None)
    pieces = []
    for start, end in zip(segments[:-1], segments[1:]):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if small and end - start <= SHORT_PIECE:
            pieces.append(causal_attention(q, k, v, kwargs["scaling"]))
            continue
        out, _ = sdpa_attention_forward(module, q, k, v, None, is_causal=True, **kwargs)
        pieces.append(out)
    return torch.cat(pieces, dim=1), None  # (batch, row, heads, head_dim), as sdpa returns


SHORT_PIECE = 256  # tokens: up to here `causal_attention` beats the fused kernel in bf16 on a CPU


def causal_attention(query, key, value, scaling: float):
    """Causal attention as two multiplies around a float32 softmax, the query heads that share a
    key/value head stacked together (no repeated keys); returns (batch, tokens, heads, head_dim)."""
    b, heads, n, d = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(b, kv_heads, groups * n, d), key.transpose(-1, -2))
    scores = scores.float().mul(scaling).view(b, kv_heads, groups, n, n)
    future = torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1).to(query.dtype)
    out = torch.matmul(probs.view(b, kv_heads, groups * n, n), value)
    return out.view(b, heads, n, d).transpose(1, 2)


def register() -> str:
    """Make NAME usable as `attn_implementation`; its masks are sdpa's, for calls without segments."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
