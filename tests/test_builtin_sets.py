import random
import re
from collections import Counter

import pytest

from sdft.data.arithmetic import generate_arithmetic
from sdft.evaluate.builtin_sets import KNOWLEDGE, RETENTION, SAFETY, load_resource


def _check_instruction_set(rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    texts = [r["instruction"].strip().lower() for r in rows]
    assert len(set(texts)) == len(texts)
    for r in rows:
        assert set(r) == {"id", "instruction", "category"}
        assert all(isinstance(r[k], str) and r[k].strip() for k in r)


def test_retention_set():
    rows = load_resource(RETENTION)
    assert len(rows) >= 120
    _check_instruction_set(rows)
    cats = Counter(r["category"] for r in rows)
    assert len(cats) >= 8
    for c in ("writing", "explanation", "advice", "brainstorming", "rewriting",
              "classification", "coding", "summarization"):
        assert cats[c] >= 5


def test_safety_set():
    rows = load_resource(SAFETY)
    assert len(rows) == 40
    _check_instruction_set(rows)
    assert len({r["category"] for r in rows}) >= 6
    retention = {r["instruction"] for r in load_resource(RETENTION)}
    assert not retention & {r["instruction"] for r in rows}


def test_knowledge_set():
    rows = load_resource(KNOWLEDGE)
    assert len(rows) == 60
    assert len({r["id"] for r in rows}) == 60
    assert len({r["question"] for r in rows}) == 60
    for r in rows:
        assert set(r) == {"id", "subject", "question", "choices", "answer"}
        assert len(r["choices"]) == 4
        assert all(isinstance(c, str) and c.strip() for c in r["choices"])
        assert len(set(r["choices"])) == 4
        assert type(r["answer"]) is int and 0 <= r["answer"] <= 3
    # Correct answers are spread over the four positions so a letter bias cannot score well.
    positions = Counter(r["answer"] for r in rows)
    assert all(positions[i] >= 10 for i in range(4))
    assert {r["subject"] for r in rows} == {"science", "geography", "history", "math", "language"}


def test_knowledge_spot_checks():
    by_q = {r["question"]: r["choices"][r["answer"]] for r in load_resource(KNOWLEDGE)}
    assert by_q["What is the capital of Canada?"] == "Ottawa"
    assert by_q["What is 7 × 8?"] == "56"
    assert by_q["What is 2 raised to the power of 10?"] == "1024"
    assert by_q["In which year did the Berlin Wall fall?"] == "1989"
    assert by_q["What is the chemical symbol for sodium?"] == "Na"


def test_missing_resource():
    with pytest.raises(FileNotFoundError):
        load_resource("no_such_set.jsonl")


# ---------------------------------------------------------------- built-in arithmetic: wording like real data

ARITH_STEP = re.compile(r"(\d+) ([-+x/]) (\d+) = \$?(\d+)")


def test_arithmetic_wording_varies_like_real_answers():
    examples = generate_arithmetic(400, seed=0)
    responses = [e.response for e in examples]
    assert responses == [e.response for e in generate_arithmetic(400, seed=0)]  # seeded
    lines = [ln for r in responses for ln in r.split("\n")[:-1]]
    # Wording with the numbers and names blanked out: one fixed phrasing per step kind gave 116 shapes
    # here, varied wording gives 461.
    shapes = {re.sub(r"\b[A-Z][a-z]+\b", "X", re.sub(r"\d+", "N", ln)) for ln in lines}
    assert len(shapes) > 250
    assert sum(ln.startswith(("So ", "Then ", "That means ", "This means ", "Next, ", "Now ")) for ln in lines) > 40
    assert sum(ln.startswith(("Let's", "We can", "Here is")) for ln in lines) > 15  # opening sentences
    assert any(" dollars" in r for r in responses) and any("= $" in r for r in responses)
    assert any(not ln.endswith(".") for ln in lines) and sum(ln.endswith(".") for ln in lines) > len(lines) / 2
    # Independent steps come in either order: weekday pages first in some answers, weekend pages in others.
    week = [r.split("\n") for e, r in zip(examples, responses) if "weekend days" in e.instruction]
    firsts = {"weekday" if " x 5 = " in w[0] else "weekend" for w in week}
    assert firsts == {"weekday", "weekend"}


def test_arithmetic_every_equation_holds_and_answer_is_last():
    from sdft.grading.steps import wrong_steps

    for e in generate_arithmetic(300, seed=7):
        *steps, last = e.response.split("\n")
        assert 1 <= len(steps) <= 3
        value = None
        for ln in steps:
            [(a, op, b, c)] = ARITH_STEP.findall(ln)  # exactly one equation per line
            a, b, c = int(a), int(b), int(c)
            assert op != "/" or a % b == 0
            value = {"+": a + b, "-": a - b, "x": a * b, "/": a // b}[op]
            assert value == c, ln
        assert last == f"The answer is {value}."
        assert wrong_steps(e.response) == []


def test_arithmetic_questions_do_not_depend_on_wording():
    from sdft.data.arithmetic import TEMPLATES, format_answer

    rng = random.Random(3)
    q1, steps = rng.choice(TEMPLATES)(rng)
    plain = format_answer(steps)  # no style: each step's first phrasing, in order
    assert plain.split("\n")[: len(steps)] == [s.forms[0] for s in steps]
    assert [e.instruction for e in generate_arithmetic(30, seed=3)][0] == q1
