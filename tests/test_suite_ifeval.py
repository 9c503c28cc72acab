"""The ifeval suite: lm-eval's IFEval checkers score hand-written replies as expected, bad rows are refused
by file, row and field, the punkt-dependent prompts are named before any model loads, and a run on a
tiny random model writes its predictions and metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the ifeval suite needs pip install 'lm-eval[ifeval]'")

from sdft.core.config import EvalConfig, ModelSpec  # noqa: E402
from sdft.core.errors import InputError, SetupError  # noqa: E402
from sdft.core.io import read_jsonl  # noqa: E402
from sdft.evaluate.suite_ifeval import (  # noqa: E402
    NEEDS_PUNKT, IFEvalItem, check, load_checkers, load_items, score_ifeval,
)
from sdft.evaluate.suites import SUITES, run_suites  # noqa: E402

BOGUS = ModelSpec("no-such/model-for-tests")  # loading it would fail: every run below gets its model passed in
END_PHRASE = "Is there anything else I can help with?"
LOWERCASE_REPLY = ("the river runs past the old mill and the children walk along its bank every morning "
                   "before school starts in the village")

# (instruction id, its arguments, a reply that follows it, a reply that does not)
CASES = [
    ("punctuation:no_comma", {}, "I like apples and pears.", "I like apples, and pears."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3},
     "Three things:\n* bread\n* milk\n* eggs", "Two things:\n* bread\n* milk"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 8},
     "one two three four five six seven eight nine", "one two three four five"),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 8},
     "one two three four five", "one two three four five six seven eight nine"),
    ("change_case:english_lowercase", {}, LOWERCASE_REPLY, LOWERCASE_REPLY.replace("the river", "The River")),
    ("startend:end_checker", {"end_phrase": END_PHRASE}, f"Here is the plan.\n{END_PHRASE}",
     f"{END_PHRASE}\nHere is the plan."),
    ("keywords:existence", {"keywords": ["banana", "river"]}, "A banana floated down the river.",
     "An apple floated down the stream."),
    ("detectable_format:json_format", {}, '{"name": "Ada", "age": 36}', "name: Ada, age: 36"),
]


def item(key: str, *instructions: tuple[str, dict], prompt: str = "Answer the question.") -> IFEvalItem:
    return IFEvalItem(id=key, prompt=prompt, instruction_ids=[i for i, _ in instructions],
                      kwargs=[k for _, k in instructions], row=1)


def lm_eval_results(it: IFEvalItem, reply: str) -> dict:
    """The harness's own per-document results for this reply."""
    _, utils = load_checkers()
    doc = {"key": it.id, "prompt": it.prompt, "instruction_id_list": it.instruction_ids, "kwargs": it.kwargs}
    return utils.process_results(doc, [reply])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def without_punkt(monkeypatch):
    """nltk sees no data folder, as on a machine where punkt_tab was never downloaded."""
    import nltk
    import nltk.tokenize

    load_checkers()
    from lm_eval.tasks.ifeval import instructions_util

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    for cached in (instructions_util._get_sentence_tokenizer, nltk.tokenize._get_punkt_tokenizer):
        cached.cache_clear()  # a tokenizer loaded earlier would hide the missing data
    yield
    for cached in (instructions_util._get_sentence_tokenizer, nltk.tokenize._get_punkt_tokenizer):
        cached.cache_clear()


# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize("instruction, kwargs, follows, breaks", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_lm_eval_checkers_pass_a_reply_that_follows_and_fail_one_that_does_not(instruction, kwargs, follows, breaks):
    it = item("p", (instruction, kwargs))
    rows, metrics = score_ifeval([it, it], [follows, breaks])
    assert [r["prompt_strict"] for r in rows] == [True, False]
    assert [r["follow_strict"] for r in rows] == [[True], [False]]
    assert [r["inst_strict"] for r in rows] == [1.0, 0.0]
    for row, reply in zip(rows, [follows, breaks]):  # the harness itself agrees, loose variant included
        harness = lm_eval_results(it, reply)
        assert row["prompt_strict"] == harness["prompt_level_strict_acc"]
        assert row["follow_loose"] == harness["inst_level_loose_acc"]
        assert row["prompt_loose"] == harness["prompt_level_loose_acc"]
    assert {m.name: (m.value, m.n) for m in metrics}["prompt_strict"] == (0.5, 2)


def test_prompt_level_needs_every_instruction_and_instruction_level_counts_each():
    two = item("two", ("punctuation:no_comma", {}), ("keywords:existence", {"keywords": ["banana"]}))
    one = item("one", ("punctuation:no_comma", {}))
    rows, metrics = score_ifeval([two, one], ["No commas here but no fruit either.", "No commas at all."])
    assert rows[0]["follow_strict"] == [True, False]
    assert rows[0]["prompt_strict"] is False and rows[0]["inst_strict"] == 0.5
    assert rows[1]["prompt_strict"] is True and rows[1]["inst_strict"] == 1.0
    by_name = {m.name: m for m in metrics}
    assert (by_name["prompt_strict"].value, by_name["prompt_strict"].n) == (0.5, 2)  # 1 of 2 prompts
    assert by_name["inst_strict"].value == pytest.approx(2 / 3) and by_name["inst_strict"].n == 3  # 2 of 3
    assert by_name["inst_strict"].low < 2 / 3 < by_name["inst_strict"].high


def test_loose_forgives_a_closing_line_that_strict_does_not():
    it = item("p", ("startend:end_checker", {"end_phrase": END_PHRASE}))
    rows, metrics = score_ifeval([it], [f"Here is the plan.\n{END_PHRASE}\nHope this helps!"])
    assert rows[0]["prompt_strict"] is False and rows[0]["prompt_loose"] is True
    by_name = {m.name: m.value for m in metrics}
    assert (by_name["inst_strict"], by_name["inst_loose"]) == (0.0, 1.0)


def test_an_empty_reply_follows_nothing():
    rows, _ = score_ifeval([item("p", ("punctuation:no_comma", {}))], ["   "])
    assert rows[0]["follow_strict"] == [False] and rows[0]["follow_loose"] == [False]


# ---------------------------------------------------------------- input rows


def test_bad_rows_are_refused_naming_file_row_and_field(tmp_path):
    good = {"key": 1, "prompt": "Write a haiku.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        good,
        {"key": 2, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 3, "prompt": "Hi.", "instruction_id_list": ["punctuation:no_comma"]},
        {"key": 4, "prompt": "Hi.", "instruction_id_list": ["punctuation:no_semicolons"], "kwargs": [{}]},
        {"key": 5, "prompt": "Hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]},
        {"key": 6, "prompt": "Hi.", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "at least", "num_words": 5, "colour": "red"}]},
        {"key": 7, "kwargs": [{}], "prompt": "Hi."},
        good,
    ])
    with pytest.raises(InputError) as err:
        load_items(str(path))
    text = str(err.value)
    assert f"{path}, row 2, field 'prompt': missing" in text
    assert f"{path}, row 3, field 'kwargs': missing" in text
    assert f"{path}, row 4, field 'instruction_id_list'" in text and "no_semicolons" in text
    assert f"{path}, row 5, field 'kwargs'" in text
    assert f"{path}, row 6, field 'kwargs'" in text and "colour" in text
    assert f"{path}, row 7, field 'instruction_id_list': missing" in text
    assert f"{path}, row 8, field 'key': duplicate key '1' (first in row 1)" in text
    assert "row 1," not in text  # the good row is not blamed


def test_a_bad_file_stops_the_run_before_any_model_loads(tmp_path, no_model):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"key": 1, "prompt": "Hi.", "kwargs": [{}]}])
    cfg = EvalConfig(suites=["ifeval"], limit=1, ifeval_data=str(path))
    with pytest.raises(InputError, match="row 1, field 'instruction_id_list': missing"):
        run_suites(BOGUS, None, cfg, tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval" / "ifeval" / "metrics.json").exists()


# ---------------------------------------------------------------- nltk's punkt data


def test_exactly_the_declared_instructions_need_punkt(without_punkt):
    registry, _ = load_checkers()
    random.seed(0)  # instructions built without arguments draw them at random
    needs = set()
    for instruction_id, cls in registry.INSTRUCTION_DICT.items():
        instruction = cls(instruction_id)
        extra = {"prompt_to_repeat": "Say hello."} if instruction_id == "combination:repeat_prompt" else {}
        instruction.build_description(**extra)
        try:
            instruction.check_following("Hello World. This is A test! Another sentence follows here.")
        except LookupError:
            needs.add(instruction_id)
    assert needs == NEEDS_PUNKT


def test_prompts_needing_punkt_are_refused_up_front_and_the_rest_run_offline(tmp_path, without_punkt):
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"key": 1, "prompt": "Hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "Two sentences.", "instruction_id_list": ["length_constraints:number_sentences"],
         "kwargs": [{"relation": "less than", "num_sentences": 3}]},
    ])
    with pytest.raises(SetupError, match=r"1 of the 2 .*row 2 .*nltk\.downloader punkt_tab"):
        check(EvalConfig(ifeval_data=str(path)), None, None)
    check(EvalConfig(ifeval_data=str(path), limit=1), None, None)  # the first prompt alone needs no data


# ---------------------------------------------------------------- a whole run


def test_end_to_end_on_three_real_prompts(tiny, tmp_path, shared_data):
    source = shared_data / "ifeval" / "input_data.jsonl"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    model, tok = tiny
    cfg = EvalConfig(suites=["ifeval", "safety"], limit=3, batch_size=4, max_new_tokens=8, ifeval_data=str(source))
    results = run_suites(BOGUS, None, cfg, tmp_path / "eval", model=model, tokenizer=tok, progress=False)

    folder = tmp_path / "eval" / "ifeval"
    first = [json.loads(line) for line in source.read_text().splitlines()[:3]]
    rows = read_jsonl(folder / "predictions.jsonl")
    assert [r["id"] for r in rows] == [str(r["key"]) for r in first]
    assert [r["instruction_id_list"] for r in rows] == [r["instruction_id_list"] for r in first]
    for row in rows:
        assert isinstance(row["output"], str)
        assert len(row["follow_strict"]) == len(row["instruction_id_list"]) == len(row["follow_loose"])
        assert row["inst_strict"] == sum(row["follow_strict"]) / len(row["follow_strict"])
        assert row["prompt_strict"] == all(row["follow_strict"])
        # What was written is what lm-eval's checkers say of the reply.
        harness = lm_eval_results(item(row["id"], *zip(row["instruction_id_list"], row["kwargs"]),
                                       prompt=row["prompt"]), row["output"])
        assert row["follow_strict"] == harness["inst_level_strict_acc"]

    metrics = {m["name"]: m for m in json.loads((folder / "metrics.json").read_text())}
    assert metrics == {m["name"]: m for m in results["ifeval"]}
    assert set(metrics) == {spec.name for spec in SUITES["ifeval"].metrics}
    n_instructions = sum(len(r["instruction_id_list"]) for r in first)
    for name, n in (("prompt_strict", 3), ("prompt_loose", 3), ("inst_strict", n_instructions),
                    ("inst_loose", n_instructions)):
        assert metrics[name]["n"] == n and metrics[name]["low"] <= metrics[name]["value"] <= metrics[name]["high"]
    assert metrics["prompt_strict"]["value"] == pytest.approx(sum(r["prompt_strict"] for r in rows) / 3)
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["settings"]["ifeval_data"] == str(source) and "ifeval_data" in settings["files"]
    assert settings["decoded_with"] == ["ifeval", "safety"]  # its prompts joined the other suite's decode
