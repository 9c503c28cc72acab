"""Attention for packed training rows that works one sequence at a time.

A packed row holds several sequences back to back. With a block-diagonal mask over the whole row,
scaled-dot-product attention on CPU falls back to its math kernel: it scores every pair of tokens in
the row (most of them masked out) and keeps a row x row matrix per head and layer for the backward
pass. Cutting the row at the sequence boundaries and running causal attention on each piece does only
the work that counts, through the fused kernel, and keeps no such matrix.

The boundaries travel with the batch as `segments` (cumulative lengths, [0, n1, n1 + n2, ...]); calls
without them (or models whose attention needs more than plain causal attention) are plain sdpa.
"""

from __future__ import annotations

import torch

NAME = "sdft_segments"


def segment_attention(module, query, key, value, attention_mask, *, segments=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None or len(segments) <= 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    pieces = []
    for start, end in zip(segments[:-1], segments[1:]):
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end],
                                        value[:, :, start:end], None, is_causal=True, **kwargs)
        pieces.append(out)
    return torch.cat(pieces, dim=1), None  # (batch, row, heads, head_dim), as sdpa returns


def register() -> str:
    """Make NAME usable as `attn_implementation`; its masks are sdpa's, for calls without segments."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def supports_segments(config) -> bool:
    """Plain causal attention in every layer: no sliding windows, no logit soft-capping."""
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    layer_types = getattr(config, "layer_types", None) or []
    return (not sliding and "sliding_attention" not in layer_types
            and not getattr(config, "attn_logit_softcapping", None))
