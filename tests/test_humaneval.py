"""HumanEval: problems load offline, and replies are turned into programs the sandbox grades correctly."""

import pytest

from sdft.evaluate.humaneval import build_program, chat_prompt, evaluate_completion, extract_code, load_humaneval

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


@pytest.mark.parametrize("problem", PROBLEMS[:10], ids=lambda p: p["task_id"])
def test_canonical_solution_passes(problem):
    r = evaluate_completion(problem, problem["canonical_solution"])
    assert r.status == "passed", r.stderr


@pytest.mark.parametrize("problem", PROBLEMS[:3], ids=lambda p: p["task_id"])
def test_wrong_completion_fails(problem):
    assert evaluate_completion(problem, "    return None\n").status == "failed"


# 0 needs the prompt's `from typing import List`; 10 and 38 need helper functions from the prompt.
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/38"])
def test_chat_reply_with_full_function_passes(task_id):
    problem = BY_ID[task_id]
    reply = f"Sure! Here is the function:\n\n```python\n{_function_only(problem)}```\n\nIt loops over the input once."
    r = evaluate_completion(problem, reply)
    assert r.status == "passed", r.stderr


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
    program = build_program(problem, "```python\nreturn number % 1.0\n```")
    assert "\n    return number % 1.0\n" in program
    assert program.rstrip().endswith("check(truncate_number)")
