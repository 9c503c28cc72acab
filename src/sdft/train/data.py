"""Turning (prompt, response) examples into token ids with response-only targets, and packing them.

Training is padding-free: the sequences of a step are concatenated into one row whose position ids
restart at each sequence, and whose sequence boundaries (`segments`) let attention run on each
sequence alone (sdft.train.attention). Targets are
stored already shifted (the token each position must predict), so the vocabulary projection can be
computed at exactly the positions that carry a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdft.core.chat import split_for_training
from sdft.data.example import Example

IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens, the token itself on response tokens


def tokenize_example(tokenizer, example: Example, response: str, max_length: int) -> Tokenized | None:
    """The example's chat (system prompt, history, user turn) as prompt, `response` as the only target.

    Rendering goes through sdft.core.chat, as for distillation and generation: a system prompt is folded into
    the first user turn where the template has no system role, and earlier assistant turns of the
    history are context (no loss). Returns None when the prompt alone leaves no room for a response
    within `max_length` (the row is skipped and counted); a response that doesn't fit is cut there.
    """
    prompt_text, completion_text = split_for_training(tokenizer, example.messages(), response)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length - 1:
        return None
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_length]
    return Tokenized(ids, labels)


class PackedCollator:
    """Concatenate a step's sequences into one row: no padding, no attention across sequences."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        segments = [0]
        for f in features:
            n = len(f["input_ids"])
            segments.append(segments[-1] + n)
            ids.extend(f["input_ids"])
            positions.extend(range(n))
            # position t predicts token t+1 of the same sequence; the last position predicts nothing
            targets.extend(f["labels"][1:] + [IGNORE])
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "targets": torch.tensor([targets], dtype=torch.long),
            "segments": segments,
        }
