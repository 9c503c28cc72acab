"""kl_from_seed: KL(seed || model) per token along the seed's replies, over the seed's top-k tokens plus a
tail bucket (sdft.engine.likelihood.bucket_kl), and the retention suite that saves and reads the top-k."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from sdft.core.config import EvalConfig, ModelSpec
from sdft.core.io import read_jsonl
from sdft.engine.likelihood import (TopK, bucket_kl, logprobs_at, remaining_log_mass, score_with_topk,
                                    tail_from_topk)
from sdft.evaluate.suite_retention import TOPK_FILE
from sdft.evaluate.suites import run_suites

BOGUS = ModelSpec("no-such/model-for-tests")  # every run below gets its model passed in

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Say hello to Ann."}],
           [{"role": "user", "content": "What is 2 + 2?"}]]
REPLIES = ["Blue, like the sky.", "Hello, Ann! Nice to meet you.", "4"]


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    return make_tiny_llama(initializer_range=0.3)  # peaked enough that the top-k matters


def scaled(model, factor: float):
    """A copy whose output layer's weights are multiplied by `factor` (a sharper or flatter next-token
    distribution at every position)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(factor)
    return other


def kl_per_row(seed, model, tok, k: int = 32) -> list[float]:
    """Mean per-token bucketed KL(seed || model) of each reply in REPLIES."""
    tops = [top for _, top in score_with_topk(seed, tok, PROMPTS, REPLIES, k, batch_size=2)]
    mine = [top for _, top in logprobs_at(model, tok, PROMPTS, REPLIES, [t.ids for t in tops], batch_size=3)]
    return [float(bucket_kl(p, q).mean()) for p, q in zip(tops, mine)]


def test_topk_positions_line_up_with_the_scored_tokens(tiny):
    model, tok = tiny
    for score, top in score_with_topk(model, tok, PROMPTS, REPLIES, 8):
        assert top.ids.shape == top.logprobs.shape == (score.n_tokens, 8)
        assert top.tail.shape == (score.n_tokens,)
        # Most likely first, and the k tokens plus the tail hold all the probability.
        assert bool((top.logprobs[:, :-1] >= top.logprobs[:, 1:]).all())
        total = top.logprobs.double().exp().sum(-1) + top.tail.double().exp()
        assert total.tolist() == pytest.approx([1.0] * score.n_tokens, abs=1e-5)


def test_kl_of_a_model_with_itself_is_zero(tiny):
    model, tok = tiny
    kl = kl_per_row(model, model, tok)
    assert len(kl) == 3 and all(abs(v) < 1e-6 for v in kl)


def test_kl_grows_with_the_shift(tiny):
    model, tok = tiny
    means = [sum(kl_per_row(model, scaled(model, f), tok)) / 3 for f in (1.25, 1.5, 2.0, 3.0)]
    assert means[0] > 0
    assert means == sorted(means) and len(set(means)) == len(means)


def hand_topk(probs: list[float], ids: list[int]) -> TopK:
    logprobs = torch.tensor([probs], dtype=torch.float64).log()
    at = torch.tensor([ids])
    return TopK(at, logprobs.gather(-1, at), remaining_log_mass(logprobs, at))


def test_bucket_formula_matches_a_hand_computation():
    p = [0.5, 0.2, 0.15, 0.1, 0.05]
    q = [0.3, 0.3, 0.2, 0.1, 0.1]
    # k = 2: tokens 0 and 1 as they are, tokens 2-4 as one bucket (0.3 under p, 0.4 under q).
    by_hand = 0.5 * math.log(0.5 / 0.3) + 0.2 * math.log(0.2 / 0.3) + 0.3 * math.log(0.3 / 0.4)
    got = bucket_kl(hand_topk(p, [0, 1]), hand_topk(q, [0, 1]))
    assert float(got[0]) == pytest.approx(by_hand, abs=1e-12)
    # The seed's tail as 1 - (its top-k's mass) is the same bucket.
    seed = hand_topk(p, [0, 1])
    assert float(tail_from_topk(seed.logprobs)[0]) == pytest.approx(math.log(0.3), abs=1e-12)
    # k = vocabulary size: no tail left, and the bucketed KL is the exact KL.
    exact = sum(a * math.log(a / b) for a, b in zip(p, q))
    everything = [0, 1, 2, 3, 4]
    assert float(bucket_kl(hand_topk(p, everything), hand_topk(q, everything))[0]) == pytest.approx(exact, abs=1e-12)
    assert by_hand < exact  # merging tokens loses divergence: a lower bound


def evaluate(model, tok, out, seed_dir=None) -> dict[str, dict]:
    cfg = EvalConfig(suites=["retention"], limit=2, batch_size=4, max_new_tokens=4)
    metrics = run_suites(BOGUS, None, cfg, out, model=model, tokenizer=tok, progress=False, seed_dir=seed_dir)
    return {m["name"]: m for m in metrics["retention"]}


def test_retention_reports_kl_from_seed_and_notes_an_old_seed_folder(tiny, tmp_path):
    model, tok = tiny
    seed_dir = tmp_path / "seed"
    assert "kl_from_seed" not in evaluate(model, tok, seed_dir)  # the seed itself: nothing to compare with
    topk = seed_dir / "retention" / TOPK_FILE
    assert topk.is_file()
    evaluate(model, tok, tmp_path / "seed-again")  # the same seed again writes the same bytes
    assert (tmp_path / "seed-again" / "retention" / TOPK_FILE).read_bytes() == topk.read_bytes()

    same = evaluate(model, tok, tmp_path / "same", seed_dir)["kl_from_seed"]
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and same["n"] == 2

    tuned = evaluate(scaled(model, 1.5), tok, tmp_path / "tuned", seed_dir)
    assert tuned["kl_from_seed"]["value"] > 1e-3 and tuned["kl_from_seed"]["n"] == 2
    assert tuned["kl_from_seed"]["low"] is not None  # an interval, like nll_shift
    rows = read_jsonl(tmp_path / "tuned" / "retention" / "predictions.jsonl")
    assert all(isinstance(r["kl"], float) and r["kl"] > 0 for r in rows)

    topk.unlink()  # a seed folder from before the top-k file existed
    old = evaluate(scaled(model, 1.5), tok, tmp_path / "against-old", seed_dir)
    assert old["kl_from_seed"]["value"] is None and "no " + TOPK_FILE in old["kl_from_seed"]["note"]
    assert "nll_shift" in old  # the rest of the suite is unaffected
    saved = json.loads((tmp_path / "against-old" / "retention" / "metrics.json").read_text())
    assert any(e["name"] == "kl_from_seed" and e["value"] is None for e in saved)
