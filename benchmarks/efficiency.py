"""What the throughput benchmarks print beside their ratios: the machine, the dtype `auto` picks here, and
model FLOPs utilisation (MFU).

Ratios against another program move with the machine; MFU stays comparable across machines. It is the
model's FLOPs per token times the tokens per second achieved, over the rate this machine's matmuls reach
at the model's own shapes (timed here with sdft.core.dtype_probe.time_matmul, in the same dtype, with the
same threads). Only the work the model needs counts (no padding, no recomputation):

  forward, per token   2 x (every linear layer's weights, the output layer included) + attention's
                       4 x layers x hidden x positions attended (scores and the weighted sum)
  generation           the prompt's forward (prefill: every prompt token through the body, the output
                       layer at its last position only) and each new token's forward
  training, per token  forward + backward through the frozen base to the LoRA weights: 2 x the forward
                       of the body (no weight gradients for frozen weights); the output layer only at
                       response positions, where the loss is taken
The matmul rate is a matmul-only ceiling: attention's FLOPs are counted as achieved work but run at
other shapes, so MFU slightly flatters long contexts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdft.core import dtype_probe


@dataclass(frozen=True)
class Dims:
    """The sizes of a Llama-style decoder that set its FLOPs."""

    layers: int
    hidden: int
    kv: int  # key/value width: kv heads x head size
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> "Dims":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, config.hidden_size, kv_heads * head_dim, config.intermediate_size,
                   config.vocab_size)

    def layer_linears(self) -> dict[str, tuple[int, int, int]]:
        """(inputs, outputs, count per layer) of each linear shape in one decoder layer."""
        h, kv, i = self.hidden, self.kv, self.intermediate
        return {"q,o": (h, h, 2), "k,v": (h, kv, 2), "gate,up": (h, i, 2), "down": (i, h, 1)}

    def body_flops(self, positions: float) -> float:
        """Forward FLOPs of one token through the decoder layers, attending to `positions` tokens."""
        weights = sum(n_in * n_out * count for n_in, n_out, count in self.layer_linears().values())
        return self.layers * (2 * weights + 4 * self.hidden * positions)

    def output_flops(self) -> float:
        return 2 * self.hidden * self.vocab

    def decode_flops(self, positions: float) -> float:
        """Forward FLOPs of one decoded token."""
        return self.body_flops(positions) + self.output_flops()

    def generation_flops(self, prompt_tokens: int, new_tokens: int) -> float:
        """FLOPs of one greedy reply: the prompt's prefill, then each new token at its position (the last
        new token is not fed back, so `new_tokens` forwards in all: the prefill's gives the first)."""
        prefill = prompt_tokens * self.body_flops((prompt_tokens + 1) / 2) + self.output_flops()
        steps = max(new_tokens - 1, 0)
        return prefill + steps * self.decode_flops(prompt_tokens + 1 + (steps - 1) / 2)  # mean position attended

    def train_flops(self, tokens: int, response_tokens: int, positions: float) -> float:
        """FLOPs of a LoRA training step over `tokens` tokens, `response_tokens` of them scored."""
        return 2 * (tokens * self.body_flops(positions) + response_tokens * self.output_flops())


def matmul_rate(dims: Dims, rows: int, dtype: torch.dtype) -> float:
    """FLOP/s of the model's linear layers at `rows` rows, weighted as one token's forward pass weighs them
    (the output layer cut to dtype_probe's size limit: its speed per FLOP shows in a slice)."""
    shapes = [(n_in, n_out, count * dims.layers) for n_in, n_out, count in dims.layer_linears().values()]
    cut = max(dtype_probe.MIN_COLUMNS, int(dtype_probe.MAX_MATMUL_FLOP / (2 * rows * dims.hidden)))
    out_cols = min(dims.vocab, cut)
    flops = seconds = 0.0
    for n_in, n_out, count in shapes:
        flops += count * 2 * rows * n_in * n_out
        seconds += count * dtype_probe.time_matmul(rows, n_in, n_out, dtype)
    # the whole output layer's FLOPs at the slice's speed
    out_seconds = dtype_probe.time_matmul(rows, dims.hidden, out_cols, dtype) * dims.vocab / out_cols
    return (flops + 2 * rows * dims.hidden * dims.vocab) / (seconds + out_seconds)


def machine_line() -> str:
    key = dtype_probe.machine_key()
    flags = ", ".join(key["flags"]) or "none"
    return f"machine: {key['cpu']}; bf16-related flags: {flags}; torch {key['torch']}, {key['threads']} threads"


def auto_dtype(model: str) -> tuple[str, dict]:
    """The dtype `dtype: auto` picks for `model` on this CPU, and the probe's decision behind it."""
    from sdft.core.models import cpu_dtype_report

    decision = cpu_dtype_report(model)
    return decision["choice"], decision


def mfu_line(what: str, flops_per_s: float, rate: float, rows: int) -> str:
    return (f"MFU {what}: {flops_per_s / 1e9:.1f} GFLOP/s of model FLOPs against {rate / 1e9:.1f} GFLOP/s "
            f"from this machine's matmuls at the model's shapes ({rows} rows) = {flops_per_s / rate:.1%}")
