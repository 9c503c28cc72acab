"""The engine's CPU attention: the same numbers as transformers' sdpa, used only while decoding."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sdft.engine.attention as ga
from sdft.engine.decode import DecodeConfig, decode_token_ids, tokenize_prompts


class _Module(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("q_len", [1, 5])
def test_shared_heads_attention_equals_sdpa(dtype, tol, q_len):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    b, kv_heads, cols, d = 3, 2, 11, 8
    q = torch.randn(b, kv_heads * 3, q_len, d, dtype=dtype)
    k, v = (torch.randn(b, kv_heads, cols, d, dtype=dtype) for _ in range(2))
    mask = torch.ones(b, 1, q_len, cols, dtype=torch.bool).tril(cols - q_len)
    mask[1, :, :, :4] = False  # a left-padded row
    ours, _ = ga.gqa_attention(_Module(), q, k, v, mask, scaling=d ** -0.5)
    ref, _ = sdpa_attention_forward(_Module(), q, k, v, mask, scaling=d ** -0.5)
    assert ours.shape == ref.shape == (b, q_len, kv_heads * 3, d)
    assert torch.allclose(ours.float(), ref.float(), atol=tol, rtol=tol)
    # a mask is honoured: changing a masked key changes nothing, an unmasked one does
    k2 = k.clone()
    k2[1, :, 0] += 5
    assert torch.equal(ga.gqa_attention(_Module(), q, k2, v, mask, scaling=d ** -0.5)[0][1], ours[1])
    k2[1, :, 6] += 5
    assert not torch.equal(ga.gqa_attention(_Module(), q, k2, v, mask, scaling=d ** -0.5)[0][1], ours[1])


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


def test_engine_attends_through_it_and_restores_sdpa(model_tok, monkeypatch):
    model, tok = model_tok
    seen = []

    def spy(module, query, *args, **kwargs):
        seen.append((query.shape[2], model.config._attn_implementation))
        return real(module, query, *args, **kwargs)

    real = ga.gqa_attention
    monkeypatch.setattr(ga, "gqa_attention", spy)
    ids = tokenize_prompts(tok, ["one two three four five six", "seven eight", "nine ten eleven"])
    out = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=5, draft_budget=0))
    assert [len(r) for r in out] == [5, 5, 5]
    assert any(n > 1 for n, _ in seen) and any(n == 1 for n, _ in seen)  # prefill and decoding steps
    assert {name for _, name in seen} == {ga.NAME}
    assert model.config._attn_implementation == "sdpa"


def test_other_attention_is_left_alone(tiny_model):
    eager = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="eager").eval()
    with ga.generation_attention(eager):
        assert eager.config._attn_implementation == "eager"
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    with pytest.raises(RuntimeError):
        with ga.generation_attention(sdpa):
            assert sdpa.config._attn_implementation == ga.NAME
            raise RuntimeError("a failed generation")
    assert sdpa.config._attn_implementation == "sdpa"


def test_row_windows_cover_every_column_in_use_and_keep_the_replies(model_tok, monkeypatch):
    """Decoding steps attend per range of rows, each from the first column its rows use: through
    refills, finished rows swapped out and window shifts no row has a column in use before its
    range's start, ranges are cut where rows joined later, and the replies are those of one range."""
    import sdft.engine.decode as gen

    model, tok = model_tok
    ids = [tok(f"{i} " + "word " * (3 * i % 17), add_special_tokens=False)["input_ids"] for i in range(16)]
    cfg = DecodeConfig(max_new_tokens=20, max_rows=6, prefill_tokens=1, draft_budget=0, workers=1)
    cuts, windows = [], gen._Rows.windows

    def checked(self, parts):
        out = windows(self, parts)
        assert out[0][0] == 0 and out[-1][1] == self.n and all(x[1] == y[0] for x, y in zip(out, out[1:]))
        for a, b, col in out:
            assert not self.mask[a:b, :self.lo + col].any()  # nothing in use left of the range's start
        cuts.append(len(out))
        return out

    monkeypatch.setattr(gen._Rows, "windows", checked)
    ranged = decode_token_ids(model, tok, ids, cfg)
    assert max(cuts) > 1
    monkeypatch.setattr(ga, "WINDOW_PARTS", 1)
    assert decode_token_ids(model, tok, ids, cfg) == ranged
