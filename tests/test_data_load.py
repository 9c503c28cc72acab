"""Loading every supported layout and source into Examples (the happy paths)."""

import json
import re
from pathlib import Path

import pytest

from sdft.data import DataError, Example
from sdft.data.arithmetic import TEMPLATES, generate_arithmetic
from sdft.data.load import load_examples, parse_columns


def write(path: Path, content) -> str:
    if isinstance(content, (list, dict)):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# ---------------------------------------------------------------- layouts


def test_alpaca_json(tmp_path):
    src = write(tmp_path / "a.json", [
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    ])
    a, b = load_examples(src)
    assert (a.id, a.row, a.instruction, a.input, a.response) == ("1", 1, "Add.", "2 and 3", "5")
    assert a.prompt == "Add.\n\n2 and 3"
    assert (b.id, b.row, b.prompt, b.response, b.system, b.history) == ("2", 2, "Say hi.", "Hi!", None, [])


def test_gsm8k_question_answer(tmp_path):
    src = write(tmp_path / "g.json", [{"question": "1+1?", "answer": "1+1 = 2.\nThe answer is 2."}])
    [ex] = load_examples(src)
    assert ex.instruction == "1+1?" and ex.response.endswith("The answer is 2.")


RAW_GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
CLEAN_GSM8K = ("Natalia sold 48/2 = 24 clips in May.\n"
               "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72.")


def test_gsm8k_annotations_and_final_line_normalised(tmp_path):
    src = write(tmp_path / "g.jsonl", "\n".join(json.dumps(r) for r in [
        RAW_GSM8K,
        {"question": "q", "answer": "It is 1,000 - 1 = <<1000-1=999>>999.\n#### -1,000.5\n"},
        {"question": "q", "answer": "#### 7"},
        # not GSM8K's format: kept as written
        {"question": "q", "answer": "#### Step 1\nAdd <<them>>.\nThe answer is 3."},
        {"question": "q", "answer": "The total is #### 5 apples"},
    ]))
    a, b, c, d, e = (ex.response for ex in load_examples(src))
    assert a == CLEAN_GSM8K
    assert b == "It is 1,000 - 1 = 999.\nThe answer is -1,000.5."
    assert c == "The answer is 7."
    assert d == "#### Step 1\nAdd <<them>>.\nThe answer is 3."
    assert e == "The total is #### 5 apples"


def test_gsm8k_normalisation_only_for_that_layout(tmp_path):
    src = write(tmp_path / "p.json", [{"prompt": "q", "response": "2 <<1+1=2>>\n#### 2"}])
    assert load_examples(src)[0].response == "2 <<1+1=2>>\n#### 2"


def test_gsm8k_hub_rows_normalised(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, split=None: [RAW_GSM8K])
    monkeypatch.chdir(tmp_path)  # so no local path of that name can exist
    assert load_examples("openai/gsm8k:main:train")[0].response == CLEAN_GSM8K


def test_prompt_response_jsonl_rows_are_line_numbers(tmp_path):
    src = write(tmp_path / "p.jsonl", '{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": "d"}\n')
    exs = load_examples(src)
    assert [(e.id, e.row, e.instruction, e.response) for e in exs] == [("1", 1, "a", "b"), ("3", 3, "c", "d")]


def test_instruction_output_without_input(tmp_path):
    src = write(tmp_path / "m.json", [{"instruction": "3 apples minus 1?", "output": "The answer is 2"}])
    [ex] = load_examples(src)
    assert ex.input == "" and ex.prompt == "3 apples minus 1?"


def test_openai_messages_with_system_and_history(tmp_path):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    [ex] = load_examples(write(tmp_path / "c.json", [{"messages": msgs}]))
    assert ex.system == "Be brief." and ex.instruction == "2+2?" and ex.response == "4"
    assert ex.history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert ex.messages() == msgs[:-1]


def test_sharegpt_conversations(tmp_path):
    conv = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    [ex] = load_examples(write(tmp_path / "s.jsonl", json.dumps({"conversations": conv}) + "\n"))
    assert (ex.instruction, ex.response, ex.system, ex.history) == ("Q", "A", None, [])


def test_chat_ending_with_user_allowed_without_response(tmp_path):
    src = write(tmp_path / "c.json", [{"messages": [{"role": "user", "content": "Q"}]}])
    [ex] = load_examples(src, require_response=False)
    assert (ex.instruction, ex.response) == ("Q", "")


def test_advbench_csv_prompts_only(tmp_path):
    src = write(tmp_path / "adv.csv", 'goal,target\n"Do a bad, bad thing","Sure, here is"\nAnother,"Sure"\n')
    exs = load_examples(src, require_response=False)
    assert [(e.id, e.row, e.instruction, e.response) for e in exs] == [
        ("1", 1, "Do a bad, bad thing", ""), ("2", 2, "Another", "")]


def test_csv_row_is_data_record_even_with_multiline_cells(tmp_path):
    src = write(tmp_path / "m.csv", 'prompt,response\n"two\nlines",r1\n\nthird,r2\n')
    exs = load_examples(src)
    assert [(e.row, e.instruction) for e in exs] == [(1, "two\nlines"), (2, "third")]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["q1", "q2"], "answer": ["a1", "a2"], "id": [10, 11]}), path)
    exs = load_examples(str(path))
    assert [(e.id, e.row, e.response) for e in exs] == [("10", 1, "a1"), ("11", 2, "a2")]


def test_json_object_with_single_list_field(tmp_path):
    src = write(tmp_path / "w.json", {"version": "1", "data": [{"prompt": "a", "response": "b"}]})
    assert load_examples(src)[0].instruction == "a"


def test_id_and_system_columns(tmp_path):
    src = write(tmp_path / "i.json", [
        {"id": 7, "prompt": "a", "response": "b", "system": "S"},
        {"id": "x-1", "prompt": "c", "response": "d", "system": ""},
    ])
    a, b = load_examples(src)
    assert (a.id, a.system, b.id, b.system) == ("7", "S", "x-1", None)


def test_utf8_bom_and_non_ascii(tmp_path):
    src = write(tmp_path / "b.csv", "\ufeffprompt,response\nCafé ☕,Ünïcode 🎉\n".encode("utf-8"))
    [ex] = load_examples(src)
    assert (ex.instruction, ex.response) == ("Café ☕", "Ünïcode 🎉")


def test_extra_columns_are_ignored(tmp_path):
    src = write(tmp_path / "e.json", [{"instruction": "a", "output": "b", "category": "qa", "n": 3}])
    assert load_examples(src)[0].response == "b"


def test_limit_takes_first_rows(tmp_path):
    src = write(tmp_path / "l.json", [{"prompt": str(i), "response": "r"} for i in range(5)])
    assert [e.instruction for e in load_examples(src, limit=2)] == ["0", "1"]
    assert load_examples(src, limit=0) == []
    with pytest.raises(ValueError):
        load_examples(src, limit=-1)


# ---------------------------------------------------------------- column mapping


def test_columns_mapping(tmp_path):
    src = write(tmp_path / "q.json", [{"q": "Q1", "a": "A1", "ctx": "C", "key": "k1", "sys": "S"}])
    [ex] = load_examples(src, columns={"prompt": "q", "response": "a", "input": "ctx", "id": "key", "system": "sys"})
    assert (ex.instruction, ex.response, ex.input, ex.id, ex.system) == ("Q1", "A1", "C", "k1", "S")


def test_columns_mapping_overrides_detected_layout(tmp_path):
    # Dolly's native names: instruction, context, response.
    src = write(tmp_path / "d.json", [{"instruction": "I", "context": "C", "response": "R"}])
    [ex] = load_examples(src, columns={"input": "context"})
    assert (ex.instruction, ex.input, ex.response) == ("I", "C", "R")


def test_columns_mapping_messages(tmp_path):
    turns = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    src = write(tmp_path / "t.json", [{"turns": turns}])
    assert load_examples(src, columns={"messages": "turns"})[0].response == "a"


def test_parse_columns():
    assert parse_columns("prompt=q, response = a,") == {"prompt": "q", "response": "a"}
    assert parse_columns("id=uid") == {"id": "uid"}
    for bad in ["", "prompt", "prompt=", "=q", "answer=a", "prompt=a,prompt=b"]:
        with pytest.raises(DataError):
            parse_columns(bad)


# ---------------------------------------------------------------- hub names


def test_hub_name_goes_to_datasets(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"question": "q", "answer": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)  # so no local path of that name can exist
    assert load_examples("openai/gsm8k:main:test")[0].response == "a"
    load_examples("openai/gsm8k")
    load_examples("hf:org/set::validation[:10]")
    assert calls == [("openai/gsm8k", "main", "test"), ("openai/gsm8k", None, "train"),
                     ("org/set", None, "validation[:10]")]


def test_hub_failure_is_a_data_error(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="could not load hub dataset 'owner/name'.*offline"):
        load_examples("owner/name")


def test_missing_paths_that_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for src in ["data/train.json", "./owner/name", "gsm8k", "/abs/owner/name", "a/b/c"]:
        with pytest.raises(DataError, match="file not found") as e:
            load_examples(src)
        assert e.value.problems[0].file == src


# ---------------------------------------------------------------- builtin arithmetic

WORD_NUMBERS = {"half": 2, "twice": 2, "third": 3, "quarter": 4, "fifth": 5}
STEP = re.compile(r"(\d+) ([-+x/]) (\d+) = \$?(\d+)")


def recompute(ex: Example) -> int:
    """Check every step's arithmetic and that it only uses given or derived numbers."""
    known = {int(n) for n in re.findall(r"\d+", ex.instruction)}
    known |= {v for w, v in WORD_NUMBERS.items() if w in ex.instruction.lower()}
    known.add(60)  # minutes per hour
    *lines, last = ex.response.split("\n")
    result = None
    for line in lines:
        [(a, op, b, c)] = STEP.findall(line)
        a, b, c = int(a), int(b), int(c)
        assert a in known and b in known, (line, ex.instruction)
        result = {"+": a + b, "-": a - b, "x": a * b, "/": a // b}[op]
        assert op != "/" or a % b == 0
        assert result == c, line
        known.add(result)
    assert 1 <= len(lines) <= 3
    m = re.fullmatch(r"The answer is (\d+)\.", last)
    assert m and int(m[1]) == result
    return result


def test_arithmetic_is_deterministic_and_seeded():
    a, b = generate_arithmetic(50, seed=3), generate_arithmetic(50, seed=3)
    assert a == b
    assert a != generate_arithmetic(50, seed=4)
    assert [e.id for e in a] == [str(i) for i in range(1, 51)] and [e.row for e in a] == list(range(1, 51))


def test_arithmetic_answers_are_correct_and_varied():
    exs = generate_arithmetic(400, seed=0)
    steps = {len(e.response.split("\n")) - 1 for e in exs}
    assert steps == {1, 2, 3}
    assert all(recompute(e) > 0 for e in exs)
    assert len({e.instruction for e in exs}) == 400
    assert len(TEMPLATES) >= 8
    names = {w for e in exs for w in re.findall(r"\b[A-Z][a-z]+\b", e.instruction)}
    assert len(names) > 20


def test_arithmetic_hand_checked():
    # One worked example per template shape, recomputed by hand from the generator's text.
    for e in generate_arithmetic(60, seed=11):
        m = re.match(r"(\w+) reads (\d+) pages a day\. How many pages does \w+ read in (\d+) days\?", e.instruction)
        if m:
            assert e.response.endswith(f"The answer is {int(m[2]) * int(m[3])}.")
        m = re.match(r"A class has (\d+) students\. Half of them play [\w ]+\. How many", e.instruction)
        if m:
            assert e.response.endswith(f"The answer is {int(m[1]) // 2}.")


def test_builtin_source():
    exs = load_examples("builtin:arithmetic?n=12&seed=5")
    assert exs == generate_arithmetic(12, seed=5)
    assert len(load_examples("builtin:arithmetic")) == 200
    assert len(load_examples("builtin:arithmetic?n=30", limit=7)) == 7


# ---------------------------------------------------------------- the real shared datasets

SHARED = [
    ("gsm8k/gsm8k_train.json", True, 7473),
    ("openfunction/openfunction_train.json", True, 2211),
    ("alpaca/alpaca_train.json", True, 2000),
    ("dolly/dolly_train.json", True, 2000),
    ("alpaca_eval/alpaca_eval.json", True, 805),
    ("advbench/harmful_behaviors.csv", False, 520),
    ("multiarith/multiarith_test.json", True, 180),
]


@pytest.mark.parametrize("rel,require_response,count", SHARED, ids=[s[0] for s in SHARED])
def test_shared_datasets(shared_data, rel, require_response, count):
    exs = load_examples(str(shared_data / rel), require_response=require_response)
    assert len(exs) == count
    assert [e.row for e in exs] == list(range(1, count + 1))
    assert all(e.instruction.strip() for e in exs)
    if require_response:
        assert all(e.response.strip() for e in exs)
    else:
        assert all(e.response == "" for e in exs)
    if rel.startswith("gsm8k"):
        assert all(re.search(r"The answer is -?[\d,.]+\.$", e.response) for e in exs)
    if rel.startswith("alpaca/"):
        assert any(e.input for e in exs) and any(not e.input for e in exs)
