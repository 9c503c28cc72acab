"""The gap suite's surprise excess: per token, the model's NLL of the token minus its own predictive entropy
at that position (sdft.engine.likelihood.score_with_entropy), averaged per target.

Per-token NLL rewards short, predictable targets whatever the model would write itself; the surprise
excess is 0 on average for the model's own samples, so it can rank a terse reference and the model's own
wordier text the other way round. Checked here on a random tiny Llama (its own samples vs fixed English
text) and on a tiny Llama built with a known next-token table (a terse target vs the model's own text).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

from sdft.core.chat import render_chat
from sdft.core.config import EvalConfig, ModelSpec
from sdft.core.io import read_jsonl
from sdft.engine.likelihood import (Encoded, entropy_per_position, response_nll, score_batch, score_entropy_batch,
                                    score_responses, score_with_entropy)
from sdft.evaluate.suite_gap import METRICS, row_values
from sdft.evaluate.suites import run_suites

BOGUS = ModelSpec("no-such/model-for-tests")  # every run below gets its model passed in

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Tell me about rivers."}],
           [{"role": "user", "content": "What is 2 + 2?"}]]
# Plain English: text a random model has no reason to favour.
FIXED = ["Blue, like the sky on a clear day.", "Rivers carry water from the hills down to the sea.",
         "2 + 2 = 4. The answer is 4."]


@pytest.fixture(scope="module")
def peaked(make_tiny_llama):
    # Peaked next-token distributions (entropy well below log(vocabulary)): with a near-uniform model
    # every text is about as surprising as its entropy, and nothing could be told apart.
    return make_tiny_llama(initializer_range=0.3)


def sample_ids(model, prompt_ids: list[int], n: int, length: int, seed: int) -> torch.Tensor:
    """n continuations of `length` tokens drawn from the model's full next-token distributions
    (temperature 1, no top-k or top-p, no stop token): exactly the model's own text."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt_ids] * n)
    with torch.no_grad():
        for _ in range(length):
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=generator)], 1)
    return ids


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    x = torch.tensor(values, dtype=torch.float64)
    return float(x.mean()), float(x.std() / math.sqrt(len(values)))


# ---------------------------------------------------------------- the entropy itself


def test_entropy_per_position_by_hand():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1], [0.25] * 4])
    got = entropy_per_position(probs.log())  # log 0 = -inf must add 0, not NaN
    want = [math.log(2), -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)), math.log(4)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_entropy_and_nll_match_an_unpadded_hand_computation(peaked):
    model, tok = peaked
    prompts = PROMPTS + [[{"role": "user", "content": "A much longer question that pads the batch out " * 3}]]
    responses = FIXED + ["x"]
    scores = score_with_entropy(model, tok, prompts, responses, batch_size=4)  # one right-padded batch
    for messages, response, score in zip(prompts, responses, scores):
        prompt_ids = tok(render_chat(tok, messages), add_special_tokens=False)["input_ids"]
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0].float().log_softmax(-1)
        at = logp[len(prompt_ids) - 1: -1]  # position t predicts token t + 1
        probs = at.double().exp()
        assert score.n_tokens == len(response_ids)
        assert score.entropy == pytest.approx(float(-(probs * at.double()).sum()), rel=1e-5)
        assert score.logprob == pytest.approx(float(at[torch.arange(len(response_ids)), response_ids].sum()), abs=1e-4)
    # The NLL is the one score_responses gives, to the bit: same forward pass, same batching.
    assert [s.logprob for s in scores] == [s.logprob for s in score_responses(model, tok, prompts, responses, 4)]
    assert math.isnan(score_with_entropy(model, tok, PROMPTS[:1], [""])[0].surprise_excess)


# ---------------------------------------------------------------- own samples vs fixed text


def test_own_samples_average_zero_excess_and_fixed_text_does_not(peaked):
    model, tok = peaked
    prompt_ids = tok(render_chat(tok, PROMPTS[1]), add_special_tokens=False)["input_ids"]
    n, length = 48, 12
    ids = sample_ids(model, prompt_ids, n, length, seed=1)
    # Scored as token ids: decoding and re-encoding random tokens need not give the same tokens back.
    rows = [Encoded(r.tolist(), len(prompt_ids)) for r in ids]
    own = score_entropy_batch(model, rows, tok.pad_token_id)
    assert [s.logprob for s in own] == [s.logprob for s in score_batch(model, rows, tok.pad_token_id)]
    assert all(s.n_tokens == length for s in own)
    # At every position the expected surprise of a sampled token is the entropy there, so each sample's
    # mean excess has expectation 0 (fixed length: no stopping rule to bias it), and the 48 samples are
    # independent: their average lies within 4 standard errors of 0 but for a chance of about 1 in 15,000.
    mean, se = mean_and_standard_error([s.surprise_excess for s in own])
    assert abs(mean) < 4 * se
    assert se < 0.1  # a bound tight enough to mean something (the fixed text below sits ~3 nats above)
    # Near 0, and not because the samples are predictable: each of their tokens costs several nats.
    assert sum(s.nll for s in own) / n > 5.0
    fixed = score_with_entropy(model, tok, PROMPTS, FIXED)
    assert all(s.surprise_excess > 1.0 for s in fixed)
    assert min(s.surprise_excess for s in fixed) > mean + 10 * se


# ---------------------------------------------------------------- the terse reference


# A model built with a known next-token table (a bigram model in a Llama's shell). After the prompt it
# writes its own style, a run of words each chosen among four (unevenly, so that its samples vary in how
# surprising they are), and starts the terse answer only 5% of the time; once started, the terse answer
# is forced token by token, as a reference's copied numbers and "The answer is" are. Token ids:
PAD, QUESTION, START = 0, 1, 2  # prompt: QUESTION START
WORDS = [3, 4, 5, 6]
WORD_PROBS = [0.4, 0.3, 0.2, 0.1]
TERSE = [7, 8, 9, 10, 11, 12]
END = 13
VOCAB, HIDDEN = 16, 32
TERSE_START_PROB = 0.05
IMPOSSIBLE = -30.0  # the logit of a token the table does not allow: e^-30 adds nothing measurable


def next_token_table() -> dict[int, dict[int, float]]:
    table = {START: {w: (1 - TERSE_START_PROB) * p for w, p in zip(WORDS, WORD_PROBS)} | {TERSE[0]: TERSE_START_PROB}}
    table |= {w: dict(zip(WORDS, WORD_PROBS)) for w in WORDS}
    table |= {a: {b: 1.0} for a, b in zip(TERSE, TERSE[1:] + [END])}
    table |= {t: {END: 1.0} for t in (PAD, QUESTION, END)}
    return table


def built_bigram_llama(table: dict[int, dict[int, float]]) -> transformers.LlamaForCausalLM:
    """A 2-layer Llama whose next-token distribution after token t is table[t], whatever came before.

    The attention and MLP outputs are zeroed, so the last hidden state is token t's embedding; that is
    the t-th unit vector, which the final RMSNorm scales to sqrt(HIDDEN) times itself, so the logits are
    sqrt(HIDDEN) x column t of the output layer: the column holds table[t]'s log-probabilities over that.
    """
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD,
                                      tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    logits = torch.full((VOCAB, VOCAB), IMPOSSIBLE)  # [next, current]
    for current, nexts in table.items():
        for token, p in nexts.items():
            logits[token, current] = math.log(p)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(VOCAB, HIDDEN))
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, :VOCAB] = logits / math.sqrt(HIDDEN)
    return model


def test_terse_target_wins_on_nll_but_the_models_own_text_wins_on_surprise_excess():
    table = next_token_table()
    model = built_bigram_llama(table)
    prompt = [QUESTION, START]
    # The model is the table (up to the RMSNorm's epsilon): what follows rests on these distributions.
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([prompt + WORDS[:1] + TERSE])).logits[0].softmax(-1)
    for position, token in enumerate(prompt[1:] + WORDS[:1] + TERSE):
        for nxt, p in table[token].items():
            assert float(probs[position + 1, nxt]) == pytest.approx(p, abs=1e-4)

    n, length = 128, 16
    ids = sample_ids(model, prompt, n, length, seed=0)
    own = score_entropy_batch(model, [Encoded(r.tolist(), len(prompt)) for r in ids], PAD)
    terse = score_entropy_batch(model, [Encoded(prompt + TERSE, len(prompt))], PAD)[0]
    own_nll = sum(s.nll for s in own) / n
    own_excess, se = mean_and_standard_error([s.surprise_excess for s in own])

    # Per-token NLL calls the terse target closer: one surprising token (-log 0.05 = 3.0 nats) spread
    # over six, against 1.28 nats on average (the entropy of WORD_PROBS) for each of the model's own
    # freely chosen words.
    assert terse.nll == pytest.approx(-math.log(TERSE_START_PROB) / len(TERSE), abs=0.01)
    assert own_nll > 1.0
    assert terse.nll < own_nll - 0.5
    # The entropy-aware figure ranks them the other way: the model's own text sits at 0 (within 4
    # standard errors of its 128 samples, about 0.01 each), the terse target well above; its first token
    # carries the excess (3.0 nats of surprise where the model expected 1.4), the forced ones add none.
    first_entropy = -sum(p * math.log(p) for p in table[START].values())
    assert terse.surprise_excess == pytest.approx((-math.log(TERSE_START_PROB) - first_entropy) / len(TERSE),
                                                  abs=0.01)
    assert abs(own_excess) < 4 * se
    assert terse.surprise_excess > own_excess + 0.2
    # What the suite would report over rows with the terse original and one of the model's samples kept:
    # a negative nll_gap (the originals look closer), a positive surprise_excess_gap (they are not).
    rows = [row_values(terse, s) for s in own]
    assert sum(r["nll_gap"] for r in rows) / n < -0.5
    assert sum(r["surprise_excess_gap"] for r in rows) / n > 0.2


# ---------------------------------------------------------------- the suite


def test_gap_suite_reports_surprise_excess_beside_an_unchanged_nll(peaked, tmp_path):
    model, tok = peaked
    rows = [
        {"id": "a", "prompt": "Name a colour.", "original": FIXED[0], "response": "Red.", "accepted": True},
        {"id": "b", "prompt": "Tell me about rivers.", "original": FIXED[1], "response": FIXED[1], "accepted": False},
        {"id": "c", "prompt": "What is 2 + 2?", "original": FIXED[2], "response": "Four.", "accepted": True,
         "kept_kind": "sample"},
    ]
    data = tmp_path / "distilled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(suites=["gap"], limit=3, batch_size=4, max_new_tokens=4)
    metrics = {m["name"]: m for m in run_suites(BOGUS, None, cfg, tmp_path / "eval", train_data=str(data),
                                                model=model, tokenizer=tok, progress=False)["gap"]}
    preds = read_jsonl(tmp_path / "eval" / "gap" / "predictions.jsonl")

    # The NLL columns are what response_nll gives, as before.
    assert [p["nll_original"] for p in preds] == pytest.approx(response_nll(model, tok, PROMPTS, FIXED, 4), abs=1e-6)
    kept = [0, 2]
    distilled = response_nll(model, tok, [PROMPTS[i] for i in kept], [rows[i]["response"] for i in kept], 4)
    assert [preds[i]["nll_distilled"] for i in kept] == pytest.approx(distilled, abs=1e-6)
    assert preds[1]["nll_distilled"] is None and preds[1]["surprise_excess_distilled"] is None
    assert preds[2]["kept_kind"] == "sample"

    # The surprise excess columns, per row and paired.
    original = score_with_entropy(model, tok, PROMPTS, FIXED)
    assert [p["surprise_excess_original"] for p in preds] == pytest.approx([s.surprise_excess for s in original],
                                                                          abs=1e-5)
    for i in kept:
        p = preds[i]
        assert p["surprise_excess_gap"] == pytest.approx(p["surprise_excess_original"] - p["surprise_excess_distilled"])
    # Reported with their intervals, over the rows that have them, and declared for the report.
    assert {k: metrics[k]["n"] for k in ("surprise_excess_original", "surprise_excess_distilled",
                                         "surprise_excess_gap", "nll_original", "nll_gap")} == {
        "surprise_excess_original": 3, "surprise_excess_distilled": 2, "surprise_excess_gap": 2,
        "nll_original": 3, "nll_gap": 2}
    m = metrics["surprise_excess_original"]
    assert m["value"] == pytest.approx(sum(s.surprise_excess for s in original) / 3, abs=1e-5)
    assert m["low"] <= m["value"] <= m["high"] and m["low"] < m["high"]
    declared = {spec.name: spec for spec in METRICS}
    assert set(metrics) <= set(declared)
    assert all(declared[name].role == "other" and declared[name].per_prompt == (name,)
               for name in ("surprise_excess_original", "surprise_excess_distilled", "surprise_excess_gap"))
