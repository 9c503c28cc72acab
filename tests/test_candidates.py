"""Distillation candidates: sampled rewrites and the seed's own answer, checked, scored by the seed's NLL
under the training prompt, the most likely passing one kept; sampling reproducible and resumable."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdft.core.chat import render_chat
from sdft.cli import main
from sdft.core.config import EvalConfig
from sdft.data.example import Example
from sdft.distill.candidates import Candidate, judge
from sdft.distill.candidates import hit_token_limit
from sdft.distill.stage import distill
from sdft.core.config import DistillConfig
from sdft.grading.verify import status
from sdft.core.errors import InputError
from sdft.evaluate.stats import wilson_interval
from sdft.evaluate.suites import run_suites
from sdft.engine.decode import DecodeConfig, _greedy_padded, _Picker, generate, tokenize_prompts
from sdft.core.io import read_jsonl
from sdft.core.config import ModelSpec

PAPER = {"temperature": 0.95, "top_p": 0.7, "top_k": 50}


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def ending(tiny):
    """The tiny model with a bias towards end-of-turn: sampled replies end after a few tokens, so some
    candidates are short, finished replies that pass the checks, while the greedy one ends at once."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.get_output_embeddings().weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 11.0  # the argmax, but only ~1 draw in 5 under sampling
    model.lm_head = head
    return model, tok


def direct_nll(model, tok, messages, response) -> float:
    """Per-token NLL by hand: one unpadded forward pass over the rendered prompt + the response."""
    prompt_ids = tok(render_chat(tok, messages), add_special_tokens=False)["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0].float().log_softmax(-1)
    start = len(prompt_ids)
    return -sum(float(logp[start - 1 + k, t]) for k, t in enumerate(response_ids)) / len(response_ids)


def test_keeps_the_most_likely_passing_candidate(tiny):
    model, tok = tiny
    examples = [Example(id="a", instruction="What is 3 + 4?", response="3 + 4 = 7. The answer is 7."),
                Example(id="b", instruction="What is 2 + 2?", response="The answer is 4.", system="Be brief.")]
    texts = [
        ["3 + 4 = 7. The answer is 7.", "The answer is 8.", "Adding them gives 7. The answer is 7.",
         "3 + 4 = 8, so the answer is 7.", "7", "We add: 3 + 4 = 7. The answer is 7."],
        ["The answer is 5.", "2 + 2 = 5. The answer is 4.", ""],
    ]
    kinds = ["greedy", "sample", "sample", "sample", "self_answer", "sample"]
    per_row = [[Candidate(k, t) for k, t in zip(kinds, row)] for row in texts]
    per_row[0][5].truncated = True  # a reply cut off at the token limit fails whatever it says
    kept = judge(model, tok, "math", examples, per_row)

    reasons = [[c.reject_reason for c in row] for row in per_row]
    assert reasons == [[None, "answer_mismatch", None, "wrong_step", None, "truncated"],
                       ["answer_mismatch", "wrong_step", "empty"]]
    passing = [j for j, r in enumerate(reasons[0]) if r is None]
    nlls = [[direct_nll(model, tok, ex.messages(), t) if t else None for t in row] for ex, row in zip(examples, texts)]
    # Only candidates with a choice to make are scored: the passing ones of row a; row b has none.
    assert [c.nll is not None for c in per_row[0]] == [j in passing for j in range(6)]
    assert all(c.nll is None for c in per_row[1])
    for j in passing:
        assert per_row[0][j].nll == pytest.approx(nlls[0][j], abs=1e-4)
    best = min(passing, key=lambda j: nlls[0][j])
    assert kept == [best, None]
    # The choice is not just the most likely candidate overall: a failing one is more likely here.
    assert min(range(6), key=lambda j: nlls[0][j]) not in passing


def test_a_single_passing_candidate_is_kept_without_scoring(tiny):
    model, tok = tiny
    ex = Example(id="a", instruction="What is 3 + 4?", response="3 + 4 = 7. The answer is 7.")
    # the same passing text twice is still one choice; the failing one is never scored
    row = [Candidate("greedy", "The answer is 8."), Candidate("sample", "So 3 + 4 = 7. The answer is 7."),
           Candidate("self_answer", "So 3 + 4 = 7. The answer is 7.")]
    assert judge(model, tok, "math", [ex], [row]) == [1]
    assert [c.reject_reason for c in row] == ["answer_mismatch", None, None]
    assert all(c.nll is None for c in row)


def test_sampling_is_reproducible_and_independent_of_batching(tiny):
    model, tok = tiny
    prompts = [render_chat(tok, [{"role": "user", "content": f"Question {i}: " + "more " * (i % 4)}])
               for i in range(6)]
    run = lambda **kw: generate(model, tok, prompts, DecodeConfig(max_new_tokens=8, **kw), progress=False)  # noqa: E731
    sampled = run(batch_size=3, seed=5, **PAPER)
    assert run(batch_size=6, max_rows=2, seed=5, **PAPER) == sampled  # other batches, other rows beside
    other = run(batch_size=3, seed=6, **PAPER)
    assert sum(a != b for a, b in zip(sampled, other)) >= 5
    greedy = run(batch_size=3)
    assert sum(a != b for a, b in zip(sampled, greedy)) >= 5
    assert run(batch_size=3, seed=5, temperature=1.0, top_k=1) == greedy  # top-1 sampling is greedy
    # The padded path (models with special caches) draws the same tokens as the refilling one.
    ids = tokenize_prompts(tok, prompts)
    cfg = DecodeConfig(max_new_tokens=8, seed=5, **PAPER)
    with torch.inference_mode():
        padded = [tok.decode(t, skip_special_tokens=True).strip() for t in _greedy_padded(model, tok, ids, cfg)]
    assert padded == sampled


@pytest.mark.parametrize("settings", [PAPER, {"temperature": 1.0, "top_p": 1.0, "top_k": 0},
                                      {"temperature": 0.7, "top_p": 0.9, "top_k": 0},
                                      {"temperature": 1.3, "top_p": 1.0, "top_k": 20}])
def test_sampling_filters_as_transformers_generate(settings):
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(0)
    logits = torch.randn(4, 500) * 3
    warp = LogitsProcessorList([TemperatureLogitsWarper(settings["temperature"])]
                               + ([TopKLogitsWarper(settings["top_k"])] if settings["top_k"] else [])
                               + ([TopPLogitsWarper(settings["top_p"])] if settings["top_p"] < 1 else []))
    expected = warp(None, logits.clone()).softmax(-1)
    picker = _Picker(DecodeConfig(**settings), [[1]] * 4)
    probs, ids = picker.filtered(logits)
    full = torch.zeros_like(logits)
    full.scatter_(-1, ids if ids is not None else torch.arange(500).expand(4, -1), probs)
    assert torch.allclose(full / full.sum(-1, keepdim=True), expected, atol=1e-6)
    # Draws land only on tokens the filter keeps, and follow their probabilities.
    draws = torch.stack([picker(logits, [0, 1, 2, 3]) for _ in range(1500)])
    assert bool((expected.gather(-1, draws.T) > 0).all())
    top = expected[0].argmax()
    assert (draws[:, 0] == top).float().mean() == pytest.approx(float(expected[0, top]), abs=0.05)


def _distill_examples(n: int) -> list[Example]:
    return [Example(id=str(i), instruction=f"Write something about {w}.", response=f"Something about {w}.", row=i + 1)
            for i, w in enumerate(["apples", "rivers", "trains", "clouds", "music", "stone"][:n])]


def test_distill_keeps_the_best_candidate_with_self_answer(ending, tmp_path):
    model, tok = ending
    examples = _distill_examples(5)
    cfg = DistillConfig(batch_size=2, max_new_tokens=12, candidates=3, self_answer=True, seed=1)
    summary = distill(model, tok, "tiny", examples, "general", tmp_path / "d.jsonl", cfg, progress=False)
    rows = read_jsonl(tmp_path / "d.jsonl")
    self_answers = generate(model, tok, [render_chat(tok, ex.messages()) for ex in examples],
                            DecodeConfig(max_new_tokens=12), progress=False)
    choices = 0
    for ex, row, own in zip(examples, rows, self_answers):
        cands = row["candidates"]
        assert [c["kind"] for c in cands] == ["greedy", "sample", "sample", "self_answer"]
        assert cands[3]["text"] == own
        cut = hit_token_limit(tok, [c["text"] for c in cands], 12)
        for j, c in enumerate(cands):
            assert c["reject_reason"] == status("general", c["text"] or "", ex.response, truncated=j in cut)[1]
        passing = [j for j, c in enumerate(cands) if c["reject_reason"] is None]
        choice = len({cands[j]["text"] for j in passing}) > 1  # only then are candidates scored
        choices += choice
        for j, c in enumerate(cands):
            if choice and j in passing:
                assert c["nll"] == pytest.approx(direct_nll(model, tok, ex.messages(), c["text"]), abs=1e-4)
            else:
                assert c["nll"] is None
        if passing:
            best = min(passing, key=lambda j: cands[j]["nll"]) if choice else passing[0]
            assert (row["kept_candidate"], row["kept_kind"]) == (best, cands[best]["kind"])
            assert row["response"] == row["distilled"] == cands[best]["text"] and row["accepted"]
        else:
            assert (row["kept_candidate"], row["kept_kind"], row["response"]) == (None, "original", ex.response)
    assert choices  # some row chose by likelihood
    kinds = [r["kept_kind"] for r in rows]
    assert "sample" in kinds  # the greedy reply ends at once (empty): only samples can pass
    assert summary["kept_kinds"] == {k: kinds.count(k) for k in set(kinds)}

    # Other batching gives the same candidates (another seed gives other samples: see the sampling test).
    again = distill(model, tok, "tiny", examples, "general", tmp_path / "e.jsonl",
                    DistillConfig(batch_size=5, max_rows=3, max_new_tokens=12, candidates=3, self_answer=True, seed=1),
                    progress=False)
    assert read_jsonl(tmp_path / "e.jsonl") == rows and again["kept_kinds"] == summary["kept_kinds"]


def test_resumed_candidate_run_equals_an_uninterrupted_one(tiny_model, tmp_path, interrupt_generation, capsys):
    out, clean = tmp_path / "d.jsonl", tmp_path / "clean" / "d.jsonl"

    def distill_cli(to, *extra):
        return main(["distill", "--model", tiny_model, "--task", "math", "--data", "builtin:arithmetic?n=4",
                     "--out", str(to), "--batch-size", "2", "--max-new-tokens", "6", "--candidates", "3",
                     "--self-answer", "--sampling", "paper", *extra])

    interrupts = 0
    # Rewrites and self-answers decode together (4 batches), then two sample sets of 2 batches; each run
    # stops one batch into a decode: 3 stops in the first, one in each sample set.
    interrupt_generation(1)
    while (code := distill_cli(out)) == 130:
        interrupts += 1
        if interrupts == 1:  # partial state is for these settings only: others are refused
            assert distill_cli(out, "--top-k", "40") == 2
            assert "--force" in capsys.readouterr().err
    assert code == 0 and interrupts == 5
    interrupt_generation(None)
    assert distill_cli(clean) == 0
    assert out.read_bytes() == clean.read_bytes()
    summary = json.loads(out.with_name("d.jsonl.summary.json").read_text())
    assert summary == json.loads(clean.with_name("d.jsonl.summary.json").read_text())
    assert (summary["config"]["candidates"], summary["config"]["top_p"]) == (3, 0.7)
    rows = read_jsonl(out)
    assert all([c["kind"] for c in r["candidates"]] == ["greedy", "sample", "sample", "self_answer"] for r in rows)
    assert not out.with_name("d.jsonl.parts").exists()
    assert "kept (most likely passing candidate)" in capsys.readouterr().out


def test_bad_candidate_settings_are_refused(tiny_model, tmp_path, capsys):
    base = ["distill", "--model", tiny_model, "--task", "math", "--data", "builtin:arithmetic?n=2",
            "--out", str(tmp_path / "d.jsonl")]
    for extra in (["--candidates", "0"], ["--candidates", "2", "--temperature", "0"], ["--candidates", "2",
                  "--top-p", "1.5"], ["--candidates", "2", "--backend", "vllm"]):
        assert main(base + extra) == 2, extra
        assert "distill" in capsys.readouterr().err
    with pytest.raises(InputError, match="top_k"):
        DistillConfig(candidates=2, top_k=-1)
    assert not (tmp_path / "d.jsonl").exists()


def test_gap_reports_how_often_the_rewrite_is_more_likely(tiny, tmp_path):
    model, tok = tiny
    rows = [
        {"id": "a", "prompt": "What is 3 + 4?", "original": "3 + 4 = 7.", "response": "Seven: 3 + 4 = 7.", "accepted": True},
        {"id": "b", "prompt": "What is 5 - 2?", "original": "5 - 2 = 3.", "response": "5 - 2 = 3.", "accepted": False},
        {"id": "c", "prompt": "Name a fruit.", "original": "Apple.", "response": "An apple.", "accepted": True,
         "kept_kind": "sample"},
        {"id": "d", "prompt": "Name a colour.", "original": "Blue, like the sky.", "response": "Blue.", "accepted": True},
        {"id": "e", "prompt": "Say hello.", "original": "Hello there!", "response": "Hi.", "accepted": True},
    ]
    data = tmp_path / "distilled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(suites=["gap"], batch_size=4)
    metrics = run_suites(ModelSpec("no-such/model-for-tests"), None, cfg, tmp_path / "eval", model=model,
                         tokenizer=tok, progress=False, train_data=str(data))["gap"]
    metrics = {m["name"]: m for m in metrics}
    more = sum(direct_nll(model, tok, [{"role": "user", "content": r["prompt"]}], r["original"])
               > direct_nll(model, tok, [{"role": "user", "content": r["prompt"]}], r["response"])
               for r in rows if r["accepted"])
    m = metrics["rewrite_more_likely"]
    assert (m["value"], m["n"]) == (pytest.approx(more / 4), 4)
    assert (m["low"], m["high"]) == pytest.approx(wilson_interval(more, 4))
    gap = metrics["nll_gap"]
    assert gap["n"] == 4 and gap["low"] <= gap["value"] <= gap["high"] and gap["low"] < gap["high"]
    preds = read_jsonl(tmp_path / "eval" / "gap" / "predictions.jsonl")
    assert [p.get("kept_kind") for p in preds] == [None, None, "sample", None, None]
    assert math.isfinite(metrics["nll_original"]["value"])
