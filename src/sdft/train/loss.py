"""Cross-entropy over the response positions' logits, a block of positions at a time.

`F.cross_entropy(logits.float(), targets)` builds several (positions x vocabulary) float32 tensors
per step: the float copy, the log-softmax, a zero-filled gradient and its cast back. At SmolLM2's
49k words and ~400 response positions each is ~80 MB, freshly allocated and written in full: on a
CPU together they took ~25% of a bf16 training step of 8 demo sequences.
Here the float32 work happens in blocks that the allocator reuses (4 MB on a CPU, where that measured
fastest: 51 against 289 ms for forward and backward of 400 x 49k bf16 logits; 64 MB on a GPU, where
fewer, larger kernels pay); the only full-size tensor is the gradient, in the logits' own dtype. The
result is the same loss and gradient.
"""

from __future__ import annotations

import torch

BLOCK_VALUES = {"cpu": 1 << 20}  # float32 values per block, by device type
BLOCK_VALUES_ELSEWHERE = 1 << 24


def _block_buffer(logits: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Rows per block, and the float32 buffer every block is worked on in."""
    values = BLOCK_VALUES.get(logits.device.type, BLOCK_VALUES_ELSEWHERE)
    rows = max(1, values // max(logits.shape[-1], 1))
    buf = torch.empty(min(rows, logits.shape[0]), logits.shape[1], dtype=torch.float32, device=logits.device)
    return rows, buf


class _SummedCrossEntropy(torch.autograd.Function):
    # Each block is copied into one float32 buffer and worked on in place: with a new tensor from every
    # out-of-place op, the block copies took ~2x as long inside a training step (5 vs 2.1 ms a block).
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows, buf = _block_buffer(logits)
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            block = buf[: min(rows, logits.shape[0] - start)]
            block.copy_(logits[start:start + rows])
            top = block.amax(dim=-1, keepdim=True)
            lse[start:start + rows] = block.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(1))
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        rows, buf = _block_buffer(logits)
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            end = min(start + rows, logits.shape[0])
            block = buf[: end - start]
            # softmax - one_hot(target): the gradient of -log softmax[target]
            block.copy_(logits[start:end]).sub_(lse[start:end, None]).exp_()
            block[torch.arange(end - start, device=block.device), targets[start:end]] -= 1
            grad[start:end] = block.mul_(grad_out)
        return grad, None


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i -log softmax(logits[i])[targets[i]], computed in float32; logits (positions, vocab)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (n, vocab) and targets (n,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    return _SummedCrossEntropy.apply(logits, targets)
