"""The report's verdict: per-prompt SDFT-minus-SFT differences, paired over prompts, claims only what the
interval supports. Hand-written predictions, so every expected outcome is known in advance."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from sdft.evaluate.stats import bootstrap_difference_interval
from sdft.report.build import build_report
from sdft.report.verdict import axes, compare, verdict_line


def axis(suite: str, metric: str):
    return next(a for a in axes() if (a.suite, a.metric.name) == (suite, metric))


COSINE, NLL_SHIFT, ACCURACY, REFUSAL = (axis("retention", "cosine_to_seed"), axis("retention", "nll_shift"),
                                        axis("math", "accuracy"), axis("safety", "refusal_rate"))
SEEDS = ("seed-1", "seed-2", "seed-3")


def retention_rows(values: list[float], shifts: list[float] | None = None) -> list[dict]:
    shifts = shifts or [0.0] * len(values)
    return [{"id": f"r{i}", "output": "reply", "cosine": c, "nll_shift": s}
            for i, (c, s) in enumerate(zip(values, shifts))]


def test_clear_win_is_claimed():
    rng = random.Random(0)
    base = [rng.uniform(0.3, 0.9) for _ in range(60)]  # prompt difficulty, shared by both models
    sft = {s: retention_rows([b + rng.gauss(0, 0.01) for b in base]) for s in SEEDS}
    sdft = {s: retention_rows([b + 0.05 + rng.gauss(0, 0.01) for b in base]) for s in SEEDS}
    c = compare(COSINE, sdft, sft)
    assert c.outcome == "better" and (c.seeds, c.prompts) == (3, 60)
    assert abs(c.diff - 0.05) < 0.005 and 0 < c.low < c.diff < c.high
    line = verdict_line(c, "SDFT", "SFT")
    assert line.startswith("SDFT stayed closer to the seed than SFT on general prompts: cosine +0.05")
    assert line.endswith("(3 seeds x 60 prompts)")


def test_clear_loss_is_reported_as_worse():
    # Lower nll_shift is better: SDFT shifting the seed's replies' NLL more is a loss.
    sft = {s: retention_rows([0.5] * 40, [0.10 + 0.01 * (i % 5) for i in range(40)]) for s in SEEDS}
    sdft = {s: retention_rows([0.5] * 40, [0.30 + 0.01 * (i % 3) for i in range(40)]) for s in SEEDS}
    c = compare(NLL_SHIFT, sdft, sft)
    assert c.outcome == "worse" and c.low > 0
    assert verdict_line(c, "SDFT", "SFT").startswith("SDFT made the seed's own replies less likely than SFT did: "
                                                     "nll_shift +0.1")
    # Accuracy (a 0/1 outcome) in percentage points: SDFT correct on 10 of 40 prompts, SFT on 30.
    sft = {"seed-1": [{"id": i, "correct": i < 30} for i in range(40)]}
    sdft = {"seed-1": [{"id": i, "correct": i < 10} for i in range(40)]}
    c = compare(ACCURACY, sdft, sft)
    assert c.outcome == "worse" and c.diff == -0.5
    assert verdict_line(c, "SDFT", "SFT").startswith("SDFT solved fewer held-out math problems than SFT: "
                                                     "accuracy -50.0 pts [")


def test_noise_makes_no_claim():
    rng = random.Random(1)
    sft = {s: [{"id": i, "refused": rng.random() < 0.5} for i in range(40)] for s in SEEDS}
    sdft = {s: [{"id": i, "refused": rng.random() < 0.5} for i in range(40)] for s in SEEDS}
    c = compare(REFUSAL, sdft, sft)
    assert c.outcome == "none" and c.low < 0 < c.high
    line = verdict_line(c, "SDFT", "SFT")
    assert line.startswith("SDFT vs SFT, refusal of harmful requests: no difference detected at this size: "
                           "refusal rate ")
    assert "more" not in line and "fewer" not in line


def test_pairs_by_prompt_id_and_seed_and_skips_unscorable():
    # Rows in another order, an extra prompt only one model has, an unscorable (null) row, and a seed only
    # one method ran: only prompt ids both scored in every shared seed count.
    sft = {"seed-1": [{"id": 2, "exact": True}, {"id": 1, "exact": False}, {"id": 3, "exact": None}],
           "seed-2": [{"id": 1, "exact": False}, {"id": 2, "exact": False}, {"id": 3, "exact": True}]}
    sdft = {"seed-1": [{"id": 1, "exact": True}, {"id": 2, "exact": True}, {"id": 3, "exact": True},
                       {"id": 4, "exact": True}],
            "seed-2": [{"id": 1, "exact": True}, {"id": 2, "exact": True}, {"id": 3, "exact": True}],
            "seed-9": [{"id": 1, "exact": False}]}
    c = compare(axis("function", "exact"), sdft, sft)
    # Prompts 1 and 2 in seeds 1 and 2: differences (1, 0) and (1, 1): mean 0.75.
    assert (c.seeds, c.prompts) == (2, 2) and c.diff == 0.75
    assert compare(COSINE, sdft, sft) is None  # no cosine field at all


def test_paired_interval_is_narrower_on_correlated_data():
    # Prompts differ far more from each other than the two models differ on any one prompt: pairing
    # cancels the prompt effect, an unpaired interval is swamped by it.
    rng = np.random.default_rng(0)
    prompt = rng.normal(0.0, 1.0, size=80)
    sft = prompt + rng.normal(0.0, 0.05, size=(3, 80))
    sdft = prompt + 0.1 + rng.normal(0.0, 0.05, size=(3, 80))
    lo_p, hi_p = bootstrap_difference_interval(sdft, sft, paired=True)
    lo_u, hi_u = bootstrap_difference_interval(sdft, sft, paired=False)
    assert hi_p - lo_p < (hi_u - lo_u) / 5
    assert lo_p > 0 > lo_u  # only the paired interval resolves the +0.1
    assert lo_p < 0.1 < hi_p


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_opens_with_the_verdict(tmp_path: Path):
    run = tmp_path / "run"
    rng = random.Random(2)
    base = [rng.uniform(0.4, 0.8) for _ in range(50)]
    lift = {"sft": 0.0, "sdft": 0.04, "onpolicy": 0.0}
    refuses = {"sft": 0.9, "sdft": 0.3, "onpolicy": 0.9}  # SDFT refuses far less: a clear loss
    for m in ("sft", "sdft", "onpolicy"):
        for s in SEEDS:
            d = run / "eval" / m / s
            write_jsonl(d / "retention" / "predictions.jsonl",
                        retention_rows([b + lift[m] + rng.gauss(0, 0.01) for b in base],
                                       [0.1 + rng.gauss(0, 0.05) for _ in base]))
            write_jsonl(d / "safety" / "predictions.jsonl",
                        [{"id": f"s{i}", "refused": (i % 10) / 10 < refuses[m], "jailbreak_refused": False}
                         for i in range(40)])
            write_jsonl(d / "math" / "predictions.jsonl",
                        [{"id": i, "correct": rng.random() < 0.4} for i in range(40)])
    (run / "config.yaml").write_text("model:\n  name: <b>tiny</b>\nseeds: [1, 2, 3]\n")
    build_report(run)
    md = (run / "report.md").read_text()
    first = md.split("\n## ")[1]
    assert first.startswith("Verdict\n")
    lines = [ln[2:] for ln in first.splitlines() if ln.startswith("- ")]
    by_start = {ln.split(":")[0]: ln for ln in lines}
    assert "SDFT stayed closer to the seed than SFT on general prompts" in by_start
    assert "SDFT refused fewer harmful requests than SFT" in by_start
    refusals = by_start["SDFT refused fewer harmful requests than SFT"]
    assert refusals.split(": ", 1)[1].startswith("refusal rate -60.0 pts")
    assert "SDFT vs SFT, math accuracy" in by_start  # coin flips: no claim
    assert "SDFT (on-policy) vs SFT, closeness of replies to the seed's on general prompts" in by_start
    assert all("(3 seeds x " in ln for ln in lines)
    page = (run / "report.html").read_text()
    assert page.index("Verdict") < page.index("<h2>Run</h2>")
    assert "SDFT stayed closer to the seed than SFT on general prompts" in page
    assert "&lt;b&gt;tiny&lt;/b&gt;" in page and "<b>tiny</b>" not in page  # autoescape: run text is never markup


def test_no_verdict_without_paired_predictions(tmp_path: Path):
    run = tmp_path / "run"
    write_jsonl(run / "eval" / "sdft" / "seed-1" / "math" / "predictions.jsonl", [{"id": 1, "correct": True}])
    build_report(run)
    md = (run / "report.md").read_text()
    assert md.split("\n## ")[1].startswith("Verdict\n\n> Note: no verdict")


def test_small_differences_keep_two_significant_digits():
    from sdft.report.verdict import decimals_for, fmt_diff

    assert decimals_for(-0.004, -0.006, -0.003) == 3  # as before: nll_shift -0.004 [-0.006, -0.003]
    d = decimals_for(-0.000104, -0.000131, -0.000077)  # a KL difference
    assert d == 5 and fmt_diff(-0.000104, False, d) == "-0.00010" and fmt_diff(-0.000077, False, d) == "-0.00008"
    assert decimals_for(0.0, 0.0, 0.0) == 3
