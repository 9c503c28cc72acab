"""The knowledge suite's data (the built-in layout and ARC's), its answer margins, and flips against the
seed model: pure counting on constructed predictions, then whole runs on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdft.core.config import EvalConfig, ModelSpec
from sdft.core.errors import InputError
from sdft.core.io import read_jsonl
from sdft.data.example import DataError
from sdft.engine.likelihood import ResponseScore
from sdft.evaluate.suite_knowledge import count_flips, load_questions, same_questions, score_questions
from sdft.evaluate.suites import run_suites

BOGUS = ModelSpec("no-such/model-for-tests")  # loading it would fail: every run gets its model passed in


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def arc_row(row_id: str, question: str, texts: list[str], labels: list[str], key: str) -> dict:
    return {"id": row_id, "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


# ---------------------------------------------------------------- reading


def test_arc_layout_with_letter_and_digit_labels(tmp_path):
    data = write_jsonl(tmp_path / "arc.jsonl", [
        arc_row("q1", "Which is a gas?", ["rock", "steam", "ice", "wood"], ["A", "B", "C", "D"], "B"),
        arc_row("q2", "How many legs has an insect?", ["4", "6", "8", "10"], ["1", "2", "3", "4"], "2"),
        arc_row("q3", "What melts ice?", ["heat", "cold", "dark"], ["A", "B", "C"], "A"),
        arc_row("q4", "Which is alive?", ["a stone", "a cloud", "a spoon", "a bee", "a cup"],
                ["A", "B", "C", "D", "E"], "D"),
    ])
    items = load_questions(str(data))
    assert [(i["id"], i["answer"], len(i["choices"])) for i in items] == [
        ("q1", 1, 4), ("q2", 1, 4), ("q3", 0, 3), ("q4", 3, 5)]
    assert items[1]["choices"][items[1]["answer"]] == "6"  # label "2" is the second choice, not index 2
    assert [i["id"] for i in load_questions(str(data), limit=2)] == ["q1", "q2"]


def test_builtin_layout_still_reads():
    items = load_questions(None)
    assert len(items) == 60 and items[0]["choices"][items[0]["answer"]] == "H2O"
    assert len(load_questions(None, limit=5)) == 5


@pytest.mark.parametrize("row, field", [
    (arc_row("x", "Q?", ["a", "b"], ["A", "B"], "C"), "answerKey"),
    (arc_row("x", "Q?", ["a", "b"], ["1", "2"], "A"), "answerKey"),
    (arc_row("x", "Q?", [], [], "A"), "choices.text"),
    (arc_row("x", "Q?", ["a", ""], ["A", "B"], "A"), "choices.text"),
    (arc_row("x", "Q?", ["a", "b"], ["A"], "A"), "choices.label"),
    ({"id": "x", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}, "question"),
    ({"id": "x", "question": "  ", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"},
     "question"),
    ({"id": "x", "question": "Q?", "choices": "a or b", "answerKey": "A"}, "choices"),
    ({"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": 2}, "answer"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, row, field):
    good = arc_row("ok", "Fine?", ["yes", "no"], ["A", "B"], "A")
    data = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError) as e:
        load_questions(str(data))
    (problem,) = e.value.problems
    assert (problem.file, problem.row, problem.field) == (str(data), 2, field)
    assert f"bad.jsonl, row 2, field '{field}'" in str(e.value)


def test_every_bad_row_is_reported_even_past_the_limit_and_duplicate_ids_are_refused(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [
        arc_row("a", "Q?", ["x", "y"], ["A", "B"], "A"),
        arc_row("b", "Q?", ["x", "y"], ["A", "B"], "Z"),
        arc_row("a", "Q?", ["x", "y"], ["A", "B"], "B"),
    ])
    with pytest.raises(DataError) as e:
        load_questions(str(data), limit=1)
    assert [(p.row, p.field) for p in e.value.problems] == [(2, "answerKey"), (3, "id")]


# ---------------------------------------------------------------- scoring and flips


def test_margin_is_the_right_answer_against_the_best_wrong_one():
    items = [{"id": "a", "question": "?", "choices": ["x", "y", "z"], "answer": 1},
             {"id": "b", "question": "?", "choices": ["x", "y", "z"], "answer": 2}]
    scores = [[ResponseScore(-3.0, 1), ResponseScore(-1.0, 1), ResponseScore(-2.5, 1)],
              [ResponseScore(-1.0, 1), ResponseScore(-4.0, 1), ResponseScore(-1.5, 1)]]
    rows, _ = score_questions(items, scores)
    assert [(r["correct"], r["margin"]) for r in rows] == [(True, 1.5), (False, -0.5)]


def constructed(correct: list[bool]) -> list[dict]:
    return [{"id": f"q{i}", "question": f"Q{i}?", "choices": ["x", "y"], "answer": 0, "correct": c}
            for i, c in enumerate(correct)]


def test_flips_are_counted_item_by_item_by_id():
    seed = constructed([True, True, False, False, True, False])
    model = constructed([True, False, True, False, False, False])
    model.reverse()  # matched by id, not by position
    items = [{k: r[k] for k in ("id", "question", "choices", "answer")} for r in model]
    metrics = {m.name: (m.value, m.n) for m in count_flips(model, same_questions(items, seed, Path("seed.jsonl")))}
    assert metrics == {"right_to_wrong": (2 / 6, 6), "wrong_to_right": (1 / 6, 6)}
    flips = {r["id"]: r["flip"] for r in model}
    assert flips == {"q0": None, "q1": "right_to_wrong", "q2": "wrong_to_right", "q3": None,
                     "q4": "right_to_wrong", "q5": None}
    assert [r["id"] for r in model if r["right_to_wrong"]] == ["q4", "q1"]


def test_a_seed_scored_on_other_questions_is_refused():
    seed = constructed([True, False, True])
    items = [{k: r[k] for k in ("id", "question", "choices", "answer")} for r in constructed([True] * 3)]
    with pytest.raises(InputError, match="seed was scored on 3 questions, this model on 2"):
        same_questions(items[:2], seed, Path("seed.jsonl"))
    changed = [dict(items[0], question="Another?")] + items[1:]
    with pytest.raises(DataError, match="seed.jsonl, row 1, field 'question': question 'q0' differs"):
        same_questions(changed, seed, Path("seed.jsonl"))


# ---------------------------------------------------------------- whole runs


def knowledge_cfg(data: Path | None, limit: int) -> EvalConfig:
    return EvalConfig(suites=["knowledge"], limit=limit, batch_size=8,
                      knowledge_data=str(data) if data else None)


def random_lora(base, tmp_path: Path):
    """`base` with a LoRA adapter of random weights, saved as an adapter folder too; scaled up (alpha/r = 128)
    so that it moves a tiny model's answers at all."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=512, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False)).eval()
    model.save_pretrained(tmp_path / "adapter")
    return model, str(tmp_path / "adapter")


def test_flips_on_eight_arc_questions(make_tiny_llama, shared_data, tmp_path):
    arc = shared_data / "arc" / "ARC-Easy-Test.jsonl"
    if not arc.is_file():
        pytest.skip(f"{arc} is not present")
    # Random weights large enough (0.3) that choices are told apart by more than their token counts.
    seed_model, tok = make_tiny_llama(0.3)
    run_suites(BOGUS, None, knowledge_cfg(arc, 8), tmp_path / "seed", model=seed_model, tokenizer=tok,
               progress=False)
    seed_metrics = json.loads((tmp_path / "seed" / "knowledge" / "metrics.json").read_text())
    assert {m["name"]: m["value"] for m in seed_metrics if m["value"] is None} == {"right_to_wrong": None,
                                                                                 "wrong_to_right": None}
    seed_rows = read_jsonl(tmp_path / "seed" / "knowledge" / "predictions.jsonl")
    assert len(seed_rows) == 8 and all(r["flip"] is None for r in seed_rows)
    assert all((r["margin"] > 0) == r["correct"] for r in seed_rows)

    tuned, adapter = random_lora(make_tiny_llama(0.3)[0], tmp_path)
    metrics = run_suites(BOGUS, adapter, knowledge_cfg(arc, 8), tmp_path / "tuned", model=tuned, tokenizer=tok,
                         seed_dir=tmp_path / "seed", progress=False)["knowledge"]
    rows = read_jsonl(tmp_path / "tuned" / "knowledge" / "predictions.jsonl")
    seed_correct = {r["id"]: r["correct"] for r in seed_rows}
    differ = sum(r["correct"] != seed_correct[r["id"]] for r in rows)
    assert differ > 0  # the adapter changed some answers, so the counts below are not trivially 0
    value = {m["name"]: m["value"] for m in metrics}
    assert round(8 * (value["right_to_wrong"] + value["wrong_to_right"])) == differ
    assert sum(r["flip"] is not None for r in rows) == differ
    assert value["accuracy"] - next(m["value"] for m in seed_metrics if m["name"] == "accuracy") == pytest.approx(
        value["wrong_to_right"] - value["right_to_wrong"])

    with pytest.raises(InputError, match="seed was scored on 8 questions, this model on 4"):
        run_suites(BOGUS, adapter, knowledge_cfg(arc, 4), tmp_path / "fewer", model=tuned, tokenizer=tok,
                   seed_dir=tmp_path / "seed", progress=False)


def test_a_fine_tuned_model_without_the_seed_folder_gets_a_note(tiny, tmp_path):
    model, tok = tiny
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # never loaded: the model is passed in
    metrics = run_suites(BOGUS, str(adapter), knowledge_cfg(None, 3), tmp_path / "eval", model=model, tokenizer=tok,
                         progress=False)["knowledge"]
    notes = {m["name"]: m["note"] for m in metrics if m["value"] is None}
    assert set(notes) == {"right_to_wrong", "wrong_to_right"} and "--seed-dir" in notes["right_to_wrong"]
    with pytest.raises(InputError, match="evaluate the seed model on the knowledge suite"):
        run_suites(BOGUS, None, knowledge_cfg(None, 3), tmp_path / "other", model=model, tokenizer=tok,
                   seed_dir=tmp_path / "no-seed-here", progress=False)
