"""Response-only targets: exact label positions, packing boundaries, and the packed loss."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdft.data.example import Example
from sdft.engine.attention import supports_segments
from sdft.train.attention import causal_attention, register, segment_attention
from sdft.train.data import IGNORE, PackedCollator, tokenize_example
from sdft.train.trainer import _trainer_class


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_labels_cover_exactly_the_response(tok):
    ex = Example(id="1", instruction="Say hi.", response="Hi there!")
    t = tokenize_example(tok, ex, ex.response, max_length=512)
    prompt = tok("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                 "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    n = len(prompt)
    assert t.input_ids[:n] == prompt
    assert t.labels[:n] == [IGNORE] * n
    assert t.labels[n:] == t.input_ids[n:]
    assert tok.decode(t.input_ids[n:]) == "Hi there!<|im_end|>\n"


def test_long_response_is_cut_and_long_prompt_skipped(tok):
    ex = Example(id="1", instruction="Count.", response=" ".join(str(i) for i in range(400)))
    t = tokenize_example(tok, ex, ex.response, max_length=64)
    assert len(t.input_ids) == len(t.labels) == 64
    long_prompt = Example(id="2", instruction="word " * 200, response="ok")
    assert tokenize_example(tok, long_prompt, "ok", max_length=64) is None


def test_packing_restarts_positions_and_shifts_targets():
    batch = PackedCollator()([
        {"input_ids": [10, 11, 12], "labels": [IGNORE, 11, 12]},
        {"input_ids": [20, 21], "labels": [IGNORE, 21]},
    ])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["segments"] == [0, 3, 5]
    # position t predicts token t+1 of its own sequence; nothing crosses the boundary
    assert batch["targets"].tolist() == [[11, 12, IGNORE, 21, IGNORE]]


@pytest.mark.parametrize("attention", ["sdpa", "segments"])
def test_packed_loss_equals_padded_loss(tiny_model, tok, attention):
    """The packed, response-only loss must equal the usual padded loss over the same response tokens,
    with the block-diagonal mask (sdpa) and with per-sequence attention."""
    impl = register() if attention == "segments" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=impl).eval()
    examples = [Example(id=str(i), instruction=q, response=r) for i, (q, r) in enumerate([
        ("What is 2+2?", "It is 4."), ("Name a fruit.", "An apple is a fruit, and so is a pear."),
        ("Hello", "Hi! How can I help you today?")])]
    feats = [vars(tokenize_example(tok, ex, ex.response, 512)) for ex in examples]
    feats = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in feats]

    packed = PackedCollator()(feats)
    trainer = object.__new__(_trainer_class())  # compute_loss needs no Trainer state
    with torch.no_grad():
        packed_loss = trainer.compute_loss(model, dict(packed)).item()

    width = max(len(f["input_ids"]) for f in feats)
    ids = torch.full((len(feats), width), tok.pad_token_id)
    labels = torch.full((len(feats), width), IGNORE)
    mask = torch.zeros((len(feats), width), dtype=torch.long)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    padded_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                  ignore_index=IGNORE).item()
    assert packed_loss == pytest.approx(padded_loss, rel=1e-4)


def test_segment_attention_keeps_sequences_apart(tiny_model):
    """Changing the first sequence of a packed row leaves the second one's logits and gradients alone.
    Positions run on through the row here, so the mask alone would not separate the sequences: only
    the segments do (rotary attention depends on relative positions, so the shift itself is harmless)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=register())
    second = [7, 8, 9, 10, 11]

    def run(first):
        model.zero_grad()
        batch = PackedCollator()([{"input_ids": first, "labels": first}, {"input_ids": second, "labels": second}])
        logits = model(input_ids=batch["input_ids"], segments=batch["segments"]).logits[0, len(first):]
        logits.sum().backward()
        return logits.detach(), model.model.embed_tokens.weight.grad[second].clone()

    logits_a, grad_a = run([3, 4, 5])
    logits_b, grad_b = run([30, 40, 50, 60, 70, 80])
    assert torch.allclose(logits_a, logits_b, rtol=1e-4, atol=1e-5)
    # summed logits give gradients in the thousands: compare relative to their size
    assert (grad_a - grad_b).norm() / grad_a.norm() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_short_piece_attention_is_the_fused_kernels_attention(dtype):
    """The bf16 CPU path for short pieces: same outputs and gradients as causal SDPA (3 query heads per
    key/value head, so a wrong head grouping or a missing causal mask would show)."""
    torch.manual_seed(0)
    q0, k0, v0 = torch.randn(1, 6, 40, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)

    def run(fn):
        q, k, v = (t.to(dtype).requires_grad_(True) for t in (q0, k0, v0))
        out = fn(q, k, v)
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return out.float(), [t.grad.float() for t in (q, k, v)]

    fused = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3,  # noqa: E731
                                                           enable_gqa=True).transpose(1, 2)
    out, grads = run(lambda q, k, v: causal_attention(q, k, v, 0.3))
    ref, ref_grads = run(fused)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (out - ref).abs().max() < tol * ref.abs().max()
    for g, r in zip(grads, ref_grads):
        assert (g - r).norm() < tol * r.norm()


def test_bf16_segments_take_the_short_piece_path_and_agree_with_sdpa(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    attn = model.model.layers[0].self_attn
    torch.manual_seed(0)
    heads, kv_heads, d = model.config.num_attention_heads, model.config.num_key_value_heads, attn.head_dim
    q, k, v = torch.randn(1, heads, 30, d), torch.randn(1, kv_heads, 30, d), torch.randn(1, kv_heads, 30, d)
    q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    out, _ = segment_attention(attn, q, k, v, None, segments=[0, 12, 30], scaling=attn.scaling, dropout=0.0)
    ref = torch.cat([F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], is_causal=True,
                                                    scale=attn.scaling, enable_gqa=True).transpose(1, 2)
                     for a, b in [(0, 12), (12, 30)]], dim=1)
    assert out.shape == ref.shape
    assert (out.float() - ref.float()).abs().max() < 2e-2 * ref.float().abs().max()


def test_segment_attention_only_where_attention_is_plain_causal(tiny_model):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model)
    assert supports_segments(config)
    config.sliding_window = 64
    assert not supports_segments(config)


def test_history_column_is_read_and_checked(tmp_path):
    """A prompt/response file (e.g. a distilled one) brings its rows' chat history to training; a
    malformed history is bad input, named by row and field."""
    from sdft.data.example import DataError
    from sdft.data.load import load_examples

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Say hi.", "response": "Hi there!", "history": turns}) + "\n"
                    + json.dumps({"prompt": "Again.", "response": "Hi.", "history": []}) + "\n")
    first, second = load_examples(str(good))
    assert first.history == turns and second.history == []
    assert first.messages()[:2] == turns
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Say hi.", "response": "Hi there!", "history": turns[:1]}) + "\n"
                   + json.dumps({"prompt": "Say hi.", "response": "Hi there!",
                                 "history": [{"role": "system", "content": "S"}] + turns}) + "\n")
    with pytest.raises(DataError) as err:
        load_examples(str(bad))
    problems = [(p.row, p.field) for p in err.value.problems]
    assert problems == [(1, "history"), (2, "history[0].role")]
