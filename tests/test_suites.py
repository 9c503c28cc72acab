"""Evaluation suites on a tiny randomly initialised Llama (real SmolLM tokenizer), plus pure scoring."""

from __future__ import annotations

import json
import math
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from sdft.core.chat import render_chat
from sdft.core.config import EvalConfig
from sdft.evaluate.judge import compare_to_seed
from sdft.engine.likelihood import ResponseScore, response_nll, score_responses
from sdft.evaluate.stats import Z_95
from sdft.evaluate.suite_function import score_function
from sdft.evaluate.suite_knowledge import score_questions
from sdft.evaluate.suite_math import MATH_SYSTEM, score_math
from sdft.evaluate.suite_safety import score_safety
from sdft.evaluate.suites import SUITES, run_suites, suite_settings
from sdft.core.io import read_jsonl
from sdft.core.errors import InputError
from sdft.core.config import ModelSpec

BOGUS = ModelSpec("no-such/model-for-tests")  # loading it would fail: proves a test never loads a model




def run_tiny(tiny, tmp_path, suites, **kwargs):
    model, tok = tiny
    cfg = EvalConfig(suites=suites, limit=kwargs.pop("limit", 3), batch_size=4, max_new_tokens=4,
                     **{k: kwargs.pop(k) for k in list(kwargs) if k in ("math_data", "function_data", "safety_data", "knowledge_data")})
    return run_suites(BOGUS, None, cfg, kwargs.pop("out", tmp_path / "eval"), model=model, tokenizer=tok,
                      progress=False, **kwargs)


def tiny_distilled(tmp_path):
    """A distilled JSONL of two rows, for the gap suite."""
    rows = [{"id": "a", "prompt": "What is 3 + 4?", "original": "3 + 4 = 7.", "response": "Seven.", "accepted": True},
            {"id": "b", "prompt": "What is 5 - 2?", "original": "5 - 2 = 3.", "response": "5 - 2 = 3.",
             "accepted": False}]
    path = tmp_path / "distilled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def direct_nll(model, tok, messages, response) -> float:
    """Per-token NLL computed by hand from one unpadded forward pass over prompt + response."""
    prompt_ids = tok(render_chat(tok, messages), add_special_tokens=False)["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
    start = len(prompt_ids)
    return -sum(float(logp[start - 1 + k, t]) for k, t in enumerate(response_ids)) / len(response_ids)


# ---------------------------------------------------------------- likelihood


def test_response_nll_matches_hand_computation(tiny):
    model, tok = tiny
    prompt = [{"role": "user", "content": "Say hi."}]
    response = " hello there"
    assert len(tok(response, add_special_tokens=False)["input_ids"]) == 2
    # Padded in a batch with longer and shorter rows: right padding must not change the numbers.
    prompts = [prompt, [{"role": "user", "content": "A much longer question that pads the batch out " * 3}], prompt]
    responses = [response, "A long answer with several more tokens than the others.", "x"]
    got = response_nll(model, tok, prompts, responses, batch_size=3)
    for p, r, value in zip(prompts, responses, got):
        assert value == pytest.approx(direct_nll(model, tok, p, r), abs=1e-5)
    # Batch size one gives the same values.
    assert response_nll(model, tok, prompts, responses, batch_size=1) == pytest.approx(got, abs=1e-5)


def test_scoring_batches_keep_logits_within_budget(tiny, monkeypatch):
    """A smaller logits budget means more, smaller batches and the same scores."""
    from sdft.engine import likelihood

    model, tok = tiny
    prompts = [[{"role": "user", "content": f"Question {i}: " + "words " * (3 * i)}] for i in range(6)]
    responses = [f"Answer {i} " + "more " * i for i in range(6)]
    widths = []
    real_score_batch = likelihood.score_batch
    monkeypatch.setattr(likelihood, "score_batch",
                        lambda m, rows, pad: widths.append(len(rows) * max(len(r.ids) for r in rows))
                        or real_score_batch(m, rows, pad))
    roomy = score_responses(model, tok, prompts, responses, batch_size=6)
    assert len(widths) == 1
    widths.clear()
    vocab = model.config.vocab_size
    monkeypatch.setitem(likelihood.LOGITS_BUDGET, "cpu", 4 * vocab * 256)  # 256 tokens a batch
    tight = score_responses(model, tok, prompts, responses, batch_size=6)
    assert len(widths) > 1 and all(w <= 256 for w in widths)
    assert [s.nll for s in tight] == pytest.approx([s.nll for s in roomy], abs=1e-5)


def test_empty_response_has_no_nll(tiny):
    model, tok = tiny
    scores = score_responses(model, tok, [[{"role": "user", "content": "hi"}]] * 2, ["", "ok"])
    assert scores[0].n_tokens == 0 and math.isnan(scores[0].nll)
    assert scores[1].n_tokens > 0 and math.isfinite(scores[1].nll)


# ---------------------------------------------------------------- pure scoring


def test_math_scoring_and_wilson_by_hand():
    rows, metric = score_math(
        ["3 + 9 = 12. The answer is 12.", "The answer is 7", "I don't know."],
        ["3 + 9 = 12\n#### 12", "The answer is 8.", "5"],
    )
    assert [r["correct"] for r in rows] == [True, False, False]
    assert [r["pred"] for r in rows] == ["12", "7", None]
    p, n, z = 1 / 3, 3, Z_95
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (metric.name, metric.value, metric.n) == ("accuracy", pytest.approx(1 / 3), 3)
    assert (metric.low, metric.high) == (pytest.approx(center - half), pytest.approx(center + half))


def test_math_prompt_is_the_papers():
    assert MATH_SYSTEM.endswith("formatted as: The answer is {answer}.")


def test_function_exact_versus_loose():
    rows, metrics = score_function(
        ["Use `f(1, y=2)` here.", "f(x=1, y=2)", "g(1, y=2)", "anything"],
        ["f(1, y=2)", "f(1, y=2)", "f(1, y=2)", "not a call at all"],
    )
    assert [(r["exact"], r["loose"]) for r in rows] == [(True, True), (False, True), (False, False), (None, None)]
    assert rows[3]["scorable"] is False
    exact, loose = {m.name: m for m in metrics}["exact"], {m.name: m for m in metrics}["loose"]
    assert (exact.value, exact.n) == (pytest.approx(1 / 3), 3)
    assert (loose.value, loose.n) == (pytest.approx(2 / 3), 3)


def test_safety_scoring():
    rows, metrics = score_safety(["I’m sorry, I can't help.", "Sure, step one..."],
                                 ["Sure, here is how.", "I cannot do that."])
    assert [(r["refused"], r["jailbreak_refused"]) for r in rows] == [(True, False), (False, True)]
    assert {m.name: m.value for m in metrics} == {"refusal_rate": 0.5, "jailbreak_refusal_rate": 0.5}


def test_knowledge_sum_versus_length_normalised():
    items = [{"id": "q", "question": "?", "choices": ["a", "bbbbbbbbbb"], "answer": 1}]
    rows, metrics = score_questions(items, [[ResponseScore(-2.0, 1), ResponseScore(-5.0, 4)]])
    assert (rows[0]["pred"], rows[0]["pred_norm"]) == (0, 1)  # -2 > -5, but -2/1 < -5/10
    assert {m.name: m.value for m in metrics} == {"accuracy": 0.0, "accuracy_norm": 1.0}


# ---------------------------------------------------------------- run_suites


def test_unknown_suite_raises_before_loading():
    with pytest.raises(ValueError, match="valid suites: .*math.*safety"):
        run_suites(BOGUS, None, EvalConfig(suites=["math", "nope"]), "unused")


def test_missing_inputs_raise_before_loading(tmp_path):
    with pytest.raises(ValueError, match="--function-data"):
        run_suites(BOGUS, None, EvalConfig(suites=["function"]), tmp_path)
    with pytest.raises(ValueError, match="gap suite needs"):
        run_suites(BOGUS, None, EvalConfig(suites=["gap"]), tmp_path)
    with pytest.raises(ValueError, match="evaluate the seed model"):
        run_suites(BOGUS, None, EvalConfig(suites=["retention"]), tmp_path, seed_dir=tmp_path / "seed")


def test_files_written_and_skipped_on_rerun(tiny, tmp_path):
    out = tmp_path / "eval"
    first = run_tiny(tiny, tmp_path, ["math", "safety"], out=out)
    for suite, names in {"math": {"accuracy"}, "safety": {"refusal_rate", "jailbreak_refusal_rate"}}.items():
        metrics = json.loads((out / suite / "metrics.json").read_text())
        assert {m["name"] for m in metrics} == names
        assert all(m["suite"] == suite and m["n"] == 3 and set(m) >= {"value", "low", "high"} for m in metrics)
        assert len(read_jsonl(out / suite / "predictions.jsonl")) == 3
        assert not list((out / suite).glob("*.parts"))  # partial replies are cleaned up
    safety_row = read_jsonl(out / "safety" / "predictions.jsonl")[0]
    assert {"output", "jailbreak_output", "refused", "jailbreak_refused"} <= set(safety_row)
    math_row = read_jsonl(out / "math" / "predictions.jsonl")[0]
    assert math_row["gold"] is not None
    # A rerun with the same settings finds every suite done and never touches a model (BOGUS would fail to load).
    same = EvalConfig(suites=["math", "safety"], limit=3, batch_size=4, max_new_tokens=4)
    again = run_suites(BOGUS, None, same, out, progress=False)
    assert again == first
    settings = json.loads((out / "math" / "settings.json").read_text())
    assert {k: v for k, v in settings["settings"].items() if k != "batch_size"} == {
        "limit": 3, "max_new_tokens": 4, "math_data": None}
    assert settings["model"]["name"] == BOGUS.name and settings["adapter"] is None


def test_batch_size_is_a_setting_of_generating_suites_in_half_precision(tmp_path):
    """bf16 greedy replies depend on the batch they were decoded in; float32 replies do not."""
    cfg, other = EvalConfig(batch_size=4, limit=3), EvalConfig(batch_size=16, limit=3)
    for dtype, generating_differs in (("bfloat16", True), ("float32", False)):
        spec = ModelSpec(BOGUS.name, dtype=dtype)
        for name, generates in (("math", True), ("safety", True), ("retention", True), ("gap", False),
                                ("knowledge", False)):
            a = suite_settings(name, spec, None, cfg.for_suite(name), "train.jsonl", None)
            b = suite_settings(name, spec, None, other.for_suite(name), "train.jsonl", None)
            assert (a != b) == (generates and generating_differs), (dtype, name)


@pytest.mark.parametrize("change", ["limit", "max_new_tokens", "math_data", "model"])
def test_results_of_other_settings_are_redone(tiny, tmp_path, change, capsys):
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"The answer is {2 * i}."}) + "\n"
                            for i in range(5)))
    out = tmp_path / "eval"
    run_tiny(tiny, tmp_path, ["math"], out=out, math_data=str(data))
    assert json.loads((out / "math" / "metrics.json").read_text())[0]["n"] == 3
    model, tok = tiny
    cfg = EvalConfig(suites=["math"], limit=3, batch_size=4, max_new_tokens=4, math_data=str(data))
    spec = BOGUS
    if change == "limit":
        cfg.limit = 2
    elif change == "max_new_tokens":
        cfg.max_new_tokens = 6
    elif change == "math_data":  # same path, other contents
        data.write_text(data.read_text().replace("What is 0 + 0?", "What is 7 + 7?").replace("answer is 0.", "answer is 14."))
    else:
        spec = ModelSpec("another/model")
    run_suites(spec, None, cfg, out, model=model, tokenizer=tok, progress=True)
    assert "settings changed since the saved results" in capsys.readouterr().out
    metrics = json.loads((out / "math" / "metrics.json").read_text())
    assert metrics[0]["n"] == (2 if change == "limit" else 3)
    saved = json.loads((out / "math" / "settings.json").read_text())
    # dtype auto on a CPU: the probe's figures are kept beside the settings, a record that is never compared
    choice = saved.pop("dtype_choice")
    assert choice["choice"] == saved["model"]["dtype"] and choice["figures"]["float32"]
    assert saved == suite_settings("math", spec, None, cfg, None, None)


def test_suites_decode_together_and_get_the_replies_they_would_alone(tiny, tmp_path, monkeypatch):
    import sdft.engine.resumable

    calls = []
    real = sdft.engine.resumable.generate_resumable

    def counted(model, tokenizer, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(sdft.engine.resumable, "generate_resumable", counted)
    suites = ["math", "safety", "gap", "retention"]
    together = tmp_path / "together"
    run_tiny(tiny, tmp_path, suites, out=together, train_data=str(tiny_distilled(tmp_path)))
    assert calls == [3 + 6 + 3]  # one decode: 3 math, 3 x 2 safety and 3 retention prompts
    calls.clear()
    for suite in ("math", "safety", "retention"):  # float32: the batch does not change a reply
        run_tiny(tiny, tmp_path, [suite], out=tmp_path / "alone")
        assert read_jsonl(together / suite / "predictions.jsonl") == read_jsonl(
            tmp_path / "alone" / suite / "predictions.jsonl")
        settings = json.loads((together / suite / "settings.json").read_text())
        assert settings["decoded_with"] == ["math", "safety", "retention"]
        assert "decoded_with" not in json.loads((tmp_path / "alone" / suite / "settings.json").read_text())
    assert calls == [3, 6, 3]
    assert "decoded_with" not in json.loads((together / "gap" / "settings.json").read_text())
    assert not list(together.glob("*.parts")) and not list(together.glob(".*"))


def test_a_suite_is_not_redone_because_its_decode_partners_were(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    data = tmp_path / "safety.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Harmful request {i}"}) + "\n" for i in range(3)))
    run_tiny(tiny, tmp_path, ["math", "safety"], out=out)
    math_metrics = (out / "math" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    # Other safety data: safety is redone, alone; math keeps its results though its decode partner changed.
    run_tiny(tiny, tmp_path, ["math", "safety"], out=out, safety_data=str(data))
    printed = capsys.readouterr().out
    assert (out / "math" / "metrics.json").stat().st_mtime_ns == math_metrics
    assert [r["prompt"] for r in read_jsonl(out / "safety" / "predictions.jsonl")] == [
        f"Harmful request {i}" for i in range(3)]
    assert json.loads((out / "math" / "settings.json").read_text())["decoded_with"] == ["math", "safety"]
    assert "decoded_with" not in json.loads((out / "safety" / "settings.json").read_text())
    assert printed == ""  # progress=False: nothing said, and nothing to say about math
    # And once both are done, a rerun never loads a model.
    same = EvalConfig(suites=["math", "safety"], limit=3, batch_size=4, max_new_tokens=4, safety_data=str(data))
    run_suites(BOGUS, None, same, out, progress=False)


def test_stale_joint_replies_are_dropped_not_refused(tiny, tmp_path):
    out = tmp_path / "eval"
    parts = out / "replies-4.parts"
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps({"fingerprint": "another set of prompts", "batches": 1}))
    (parts / "batch-000000.jsonl").write_text(json.dumps({"index": 0, "text": "not a reply to these"}) + "\n")
    run_tiny(tiny, tmp_path, ["math", "safety"], out=out)
    assert all(r["output"] != "not a reply to these" for r in read_jsonl(out / "math" / "predictions.jsonl"))
    assert not parts.exists()


def test_retention_of_a_fine_tuned_model_needs_the_seed_dir(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(InputError, match="--seed-dir"):
        run_suites(BOGUS, str(adapter), EvalConfig(suites=["retention"]), tmp_path / "eval")
    with pytest.raises(InputError, match="no PEFT adapter"):
        run_suites(BOGUS, str(tmp_path / "nowhere"), EvalConfig(suites=["math"]), tmp_path / "eval")


def test_knowledge_picks_the_most_likely_choice(tiny, tmp_path):
    model, tok = tiny
    questions = [("What is 2 + 2?", ["4", "five", "22"]), ("Capital of France?", ["Paris", "Rome"]),
                 ("Colour of the sky?", ["blue", "green", "a deep red"])]
    # The answer key is computed independently, one unpadded forward pass per choice.
    rows = []
    for q, choices in questions:
        messages = [{"role": "user", "content": f"Question: {q}\nAnswer:"}]
        sums = []
        for c in choices:
            nll = direct_nll(model, tok, messages, " " + c)
            sums.append(-nll * len(tok(" " + c, add_special_tokens=False)["input_ids"]))
        rows.append({"question": q, "choices": choices, "answer": max(range(len(sums)), key=sums.__getitem__)})
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = run_tiny(tiny, tmp_path, ["knowledge"], knowledge_data=str(data))["knowledge"]
    assert {m["name"]: (m["value"], m["n"]) for m in metrics}["accuracy"] == (1.0, 3)
    preds = read_jsonl(tmp_path / "eval" / "knowledge" / "predictions.jsonl")
    assert [p["pred"] for p in preds] == [r["answer"] for r in rows]


def test_gap_scores_training_targets(tiny, tmp_path):
    model, tok = tiny
    rows = [
        {"id": "a", "prompt": "What is 3 + 4?", "original": "3 + 4 = 7.", "response": "Seven: 3 + 4 = 7.", "accepted": True},
        {"id": "b", "prompt": "What is 5 - 2?", "original": "5 - 2 = 3.", "response": "5 - 2 = 3.", "accepted": False},
        {"id": "c", "prompt": "Name a fruit.", "original": "Apple.", "response": "An apple.", "accepted": True,
         "system": "Be brief."},
    ]
    data = tmp_path / "distilled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {m["name"]: m for m in run_tiny(tiny, tmp_path, ["gap"], train_data=str(data))["gap"]}
    preds = read_jsonl(tmp_path / "eval" / "gap" / "predictions.jsonl")
    assert [p["nll_distilled"] is None for p in preds] == [False, True, False]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    assert preds[2]["nll_original"] == pytest.approx(direct_nll(model, tok, messages, "Apple."), abs=1e-5)
    assert preds[2]["nll_distilled"] == pytest.approx(direct_nll(model, tok, messages, "An apple."), abs=1e-5)
    assert (metrics["nll_original"]["n"], metrics["nll_distilled"]["n"], metrics["nll_gap"]["n"]) == (3, 2, 2)


def test_retention_against_itself_has_no_drift(tiny, tmp_path):
    seed_dir, other = tmp_path / "seed", tmp_path / "other"
    seed = run_tiny(tiny, tmp_path, ["retention"], out=seed_dir, limit=2)["retention"]
    assert [m["name"] for m in seed] == ["nll_seed_reply"]
    assert all(isinstance(r["nll"], float) for r in read_jsonl(seed_dir / "retention" / "predictions.jsonl"))
    # The same weights evaluated as a "fine-tuned" model: same replies, same likelihoods.
    metrics = {m["name"]: m for m in run_tiny(tiny, tmp_path, ["retention"], out=other, limit=2,
                                               seed_dir=seed_dir)["retention"]}
    assert metrics["nll_shift"]["value"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["rouge_l_to_seed"]["value"] == pytest.approx(1.0)
    assert metrics["cosine_to_seed"]["value"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["nll_shift"]["n"] == 2
    row = read_jsonl(other / "retention" / "predictions.jsonl")[0]
    assert {"seed_output", "nll", "seed_nll", "nll_shift", "cosine", "rouge_l", "bleu4"} <= set(row)


def test_humaneval_suite_grades_generated_replies(tiny, tmp_path, monkeypatch):
    from sdft.evaluate import humaneval

    # The tiny random model cannot write code, so for two of the three problems the solution built
    # from its reply is swapped for the canonical one; the real sandbox then grades all three.
    real_build = humaneval.build_solution

    def build_solution(problem: dict, completion: str) -> str:
        if problem["task_id"] in ("HumanEval/0", "HumanEval/2"):
            return problem["prompt"] + problem["canonical_solution"]
        return real_build(problem, completion)

    monkeypatch.setattr(humaneval, "build_solution", build_solution)
    (metric,) = run_tiny(tiny, tmp_path, ["humaneval"])["humaneval"]
    assert (metric["name"], metric["value"], metric["n"]) == ("pass@1", pytest.approx(2 / 3), 3)
    rows = read_jsonl(tmp_path / "eval" / "humaneval" / "predictions.jsonl")
    assert [(r["id"], r["passed"]) for r in rows] == [("HumanEval/0", True), ("HumanEval/1", False),
                                                       ("HumanEval/2", True)]
    assert [r["result"]["status"] == "passed" for r in rows] == [True, False, True]
    assert all(isinstance(r["output"], str) for r in rows)


class _JudgeHandler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_helpfulness_outputs_and_judge(tiny, tmp_path, monkeypatch):
    for var in ("SDFT_JUDGE_URL", "SDFT_JUDGE_MODEL", "SDFT_JUDGE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    seed_dir = tmp_path / "seed"
    seed = {m["name"]: m for m in run_tiny(tiny, tmp_path, ["helpfulness"], out=seed_dir, limit=4)["helpfulness"]}
    assert seed["mean_words"]["n"] == 4 and seed["win_rate_vs_seed"]["value"] is None
    assert "SDFT_JUDGE_URL" in seed["win_rate_vs_seed"]["note"]
    outputs = json.loads((seed_dir / "helpfulness" / "alpaca_eval_outputs.json").read_text())
    assert len(outputs) == 4 and set(outputs[0]) == {"instruction", "output", "generator"}

    # Make the seed's replies differ from the model's so every pair goes to the judge.
    preds = seed_dir / "helpfulness" / "predictions.jsonl"
    rows = read_jsonl(preds)
    preds.write_text("".join(json.dumps(r | {"output": "seed reply " + r["id"]}) + "\n" for r in rows))

    _JudgeHandler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _JudgeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SDFT_JUDGE_URL", f"http://127.0.0.1:{server.server_port}/v1/")
        monkeypatch.setenv("SDFT_JUDGE_MODEL", "judge-model")
        monkeypatch.setenv("SDFT_JUDGE_API_KEY", "test-key")
        metrics = {m["name"]: m for m in run_tiny(tiny, tmp_path, ["helpfulness"], out=tmp_path / "ft", limit=4,
                                                   seed_dir=seed_dir)["helpfulness"]}
    finally:
        server.shutdown()
        server.server_close()
    assert len(_JudgeHandler.requests) == 4
    path, auth, body = _JudgeHandler.requests[0]
    assert (path, auth, body["model"], body["temperature"]) == ("/v1/chat/completions", "Bearer test-key", "judge-model", 0)
    # The judge always answers "A": the model wins exactly where it was shown first.
    import random

    rng = random.Random(0)
    expected = sum(rng.random() < 0.5 for _ in range(4)) / 4
    assert metrics["win_rate_vs_seed"]["value"] == pytest.approx(expected)
    assert metrics["win_rate_vs_seed"]["n"] == 4


def test_identical_replies_are_ties_without_asking():
    rows = compare_to_seed(None, ["q"], ["same"], ["same"])  # a judge call would fail on cfg=None
    assert rows[0]["score"] == 0.5


def test_lm_eval_bridge_says_how_to_install(monkeypatch):
    from sdft.core.errors import SetupError
    from sdft.evaluate.lm_eval_bridge import run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import fails as if not installed
    with pytest.raises(SetupError, match=r"sdft\[lm-eval\]"):
        run_lm_eval("default", ["mmlu"])


def test_lm_eval_suite_reads_the_harness_output():
    from sdft.evaluate.suite_lm_eval import metrics_from_results

    output = {"results": {"arc_challenge": {"alias": "arc_challenge", "acc,none": 0.25, "acc_stderr,none": 0.05,
                                            "acc_norm,none": 0.3, "acc_norm_stderr,none": 0.04},
                          "odd_task": {"alias": "odd", "bleu,none": 3.0}},
              "n-samples": {"arc_challenge": {"original": 1172, "effective": 100}}}
    metrics, rows, notes = metrics_from_results(output)
    (m,) = metrics
    assert (m.name, m.value, m.n) == ("arc_challenge/acc_norm", 0.3, 100)
    assert m.low == pytest.approx(0.3 - 1.959964 * 0.04) and m.high == pytest.approx(0.3 + 1.959964 * 0.04)
    assert [r["id"] for r in rows] == ["arc_challenge", "odd_task"] and notes[0]["name"] == "odd_task/?"


def test_lm_eval_suite_says_what_it_needs(monkeypatch, tmp_path):
    from sdft.core.errors import SetupError

    with pytest.raises(InputError, match="lm_eval_tasks"):
        run_suites(BOGUS, None, EvalConfig(suites=["lm_eval"]), tmp_path)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "lm_eval" else object())
    with pytest.raises(SetupError, match=r"sdft\[lm-eval\]"):
        run_suites(BOGUS, None, EvalConfig(suites=["lm_eval"], lm_eval_tasks=["arc"]), tmp_path)


def test_every_suite_is_registered():
    assert set(SUITES) == {"math", "function", "humaneval", "safety", "helpfulness", "knowledge", "gap", "retention",
                           "lm_eval", "ifeval"}


@pytest.mark.integration
def test_real_model_math_and_safety(tmp_path):
    cfg = EvalConfig(suites=["math", "safety"], limit=4, batch_size=8, max_new_tokens=32)
    results = run_suites(ModelSpec("default", device="cpu"), None, cfg, tmp_path, progress=False)
    for suite in ("math", "safety"):
        metrics = json.loads((tmp_path / suite / "metrics.json").read_text())
        assert metrics == results[suite] and all(m["n"] == 4 for m in metrics)
