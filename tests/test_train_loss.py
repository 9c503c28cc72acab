import pytest
import torch
import torch.nn.functional as F

from sdft.train import loss as loss_module
from sdft.train.loss import summed_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_values", [1 << 20, 3 * 50])  # one block; blocks of 3 rows with a ragged last one
def test_matches_float32_cross_entropy_in_loss_and_gradient(monkeypatch, dtype, block_values):
    monkeypatch.setitem(loss_module.BLOCK_VALUES, "cpu", block_values)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(11, 50, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, 50, (11,), generator=gen)

    ours = logits.clone().requires_grad_()
    got = summed_cross_entropy(ours, targets)
    (got * 0.5).backward()
    ref = logits.clone().requires_grad_()
    want = F.cross_entropy(ref.float(), targets, reduction="sum")
    (want * 0.5).backward()

    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-5)
    assert ours.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    assert torch.allclose(ours.grad.float(), ref.grad.float(), atol=tol)


def test_leaves_float32_logits_untouched():
    logits = torch.randn(5, 7)
    before = logits.clone()
    x = logits.requires_grad_()
    summed_cross_entropy(x, torch.tensor([0, 1, 2, 3, 6])).backward()
    assert torch.equal(logits.detach(), before)


def test_no_positions_gives_zero_loss_and_an_empty_gradient():
    logits = torch.randn(0, 9, requires_grad=True)
    got = summed_cross_entropy(logits, torch.zeros(0, dtype=torch.long))
    got.backward()
    assert got.item() == 0.0 and logits.grad.shape == (0, 9)


def test_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        summed_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="expected logits"):
        summed_cross_entropy(torch.randn(2, 4), torch.zeros(3, dtype=torch.long))
