from collections import Counter

import pytest

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
