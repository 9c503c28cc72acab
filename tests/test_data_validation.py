"""Bad input: every kind of problem is found, located (file, row, field) and reported together."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdft.data import DataError, Problem
from sdft.data.load import load_examples


def write(path: Path, content) -> str:
    if isinstance(content, (list, dict)):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def problems(src: str, **kwargs) -> list[Problem]:
    with pytest.raises(DataError) as e:
        load_examples(src, **kwargs)
    assert all(p.file == src for p in e.value.problems)
    assert str(e.value).startswith(src)  # the rendered message names the file
    return e.value.problems


def one(src: str, row, field, pattern: str, **kwargs) -> Problem:
    """Exactly one problem, at `row`/`field`, whose text matches `pattern`; the rendered line names all three."""
    [p] = problems(src, **kwargs)
    assert (p.row, p.field) == (row, field), str(p)
    assert re.search(pattern, p.message), p.message
    rendered = str(p)
    assert rendered.startswith(src)
    assert row is None or f"row {row}" in rendered
    assert field is None or f"field '{field}'" in rendered
    return p


# ---------------------------------------------------------------- the file itself


def test_missing_file(tmp_path):
    one(str(tmp_path / "nope.json"), None, None, "file not found")


def test_directory(tmp_path):
    one(str(tmp_path), None, None, "is a directory")


def test_unknown_extension(tmp_path):
    one(write(tmp_path / "d.txt", "x"), None, None, r"unknown file type '\.txt'.*\.jsonl")
    one(write(tmp_path / "noext", "x"), None, None, "unknown file type")


@pytest.mark.parametrize("name", ["e.json", "e.jsonl", "e.csv", "e.parquet"])
def test_zero_bytes(tmp_path, name):
    one(write(tmp_path / name, b""), None, None, r"empty \(0 bytes\)")


@pytest.mark.parametrize("name,content,pattern", [
    ("w.json", "  \n ", "empty"),
    ("a.json", "[]", "no rows"),
    ("o.json", '{"data": []}', "no rows"),
    ("b.jsonl", "\n\n  \n", "no rows"),
    ("h.csv", "prompt,response\n", "no rows"),
    ("n.csv", "\n\n", "empty"),
])
def test_no_rows(tmp_path, name, content, pattern):
    one(write(tmp_path / name, content), None, None, pattern)


def test_unreadable_parquet(tmp_path):
    one(write(tmp_path / "x.parquet", b"not parquet"), None, None, "not a readable Parquet file")


# ---------------------------------------------------------------- syntax


def test_invalid_json_names_line_and_row(tmp_path):
    src = write(tmp_path / "b.json", '[\n {"prompt": "a", "response": "b"},\n {"prompt": "c" "response": "d"}\n]')
    one(src, 2, None, r"invalid JSON at line 3, column \d+")


def test_truncated_json(tmp_path):
    one(write(tmp_path / "t.json", '[{"prompt": "a", "response": "b"}, {"prompt": "c", "resp'), 2, None, "invalid JSON")


def test_json_top_level_not_rows(tmp_path):
    one(write(tmp_path / "s.json", '"hello"'), None, None, "top level is a string")
    one(write(tmp_path / "o.json", {"prompt": "a", "response": "b"}), None, None, "top level is an object")
    one(write(tmp_path / "two.json", {"a": [{"prompt": "x"}], "b": []}), None, None, "only list field")


def test_json_array_of_non_objects(tmp_path):
    src = write(tmp_path / "n.json", [{"prompt": "a", "response": "b"}, "text", 3, None, ["x"]])
    ps = problems(src)
    assert [(p.row, p.field) for p in ps] == [(2, None), (3, None), (4, None), (5, None)]
    assert [re.search(r"got (.*)", p.message)[1] for p in ps] == ["a string", "an integer", "null", "an array"]


def test_jsonl_bad_lines_are_all_reported(tmp_path):
    src = write(tmp_path / "l.jsonl", '{"prompt": "a", "response": "b"}\n[1, 2]\n{"prompt": \n"str"\n')
    ps = problems(src)
    assert [(p.row, p.field) for p in ps] == [(2, None), (3, None), (4, None)]
    assert "expected a JSON object" in ps[0].message and "invalid JSON (line 3" in ps[1].message
    assert "a string" in ps[2].message


def test_csv_ragged_rows(tmp_path):
    src = write(tmp_path / "r.csv", "prompt,response\na,b\nc,d,e\nf\ng,h\n")
    ps = problems(src)
    assert [(p.row, p.field) for p in ps] == [(2, None), (3, None)]
    assert "3 fields but the header has 2 (line 3)" in ps[0].message
    assert "1 fields but the header has 2 (line 4)" in ps[1].message


def test_csv_bad_quoting(tmp_path):
    one(write(tmp_path / "q.csv", 'prompt,response\na,"b"c\n'), 1, None, "malformed CSV at line 2")


def test_csv_duplicate_header(tmp_path):
    one(write(tmp_path / "d.csv", "prompt,prompt,response\na,b,c\n"), None, "prompt", "more than once")


# ---------------------------------------------------------------- encoding


def test_invalid_utf8_json(tmp_path):
    data = b'[{"prompt": "ok", "response": "ok"},\n {"prompt": "caf\xe9", "response": "x"}]'
    ps = problems(write(tmp_path / "u.json", data))
    assert (ps[0].row, ps[0].field) == (None, None)
    assert f"invalid UTF-8 byte 0xe9 at byte offset {data.index(0xE9)} (line 2)" in ps[0].message
    assert (ps[1].row, ps[1].field) == (2, "prompt") and "caf\\xe9" in ps[1].message
    str(DataError(ps)).encode("utf-8")  # the report itself prints cleanly


def test_invalid_utf8_jsonl_row_is_line(tmp_path):
    data = b'{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "\xff\xfe"}\n'
    ps = problems(write(tmp_path / "u.jsonl", data))
    assert [(p.row, p.field) for p in ps] == [(2, None), (2, None), (2, "response")]
    assert f"byte 0xff at byte offset {data.index(0xFF)} (line 2)" in ps[0].message


def test_invalid_utf8_csv(tmp_path):
    data = b"prompt,response\nfine,ok\nbad\xc3,ok\n"
    ps = problems(write(tmp_path / "u.csv", data))
    assert ps[0].row is None and f"byte offset {data.index(0xC3)} (line 3)" in ps[0].message
    assert (ps[1].row, ps[1].field) == (2, "prompt")


def test_unpaired_surrogate_escape(tmp_path):
    one(write(tmp_path / "s.json", '[{"prompt": "\\ud800x", "response": "r"}]'), 1, "prompt", "not valid UTF-8")


# ---------------------------------------------------------------- columns


def test_no_known_layout_lists_columns_and_layouts(tmp_path):
    p = one(write(tmp_path / "c.json", [{"q": "a", "a": "b"}]), 1, "prompt", "no known layout")
    assert "columns found: q, a" in p.message
    for name in ["instruction", "question", "prompt", "goal", "messages", "--columns prompt=NAME"]:
        assert name in p.message


def test_misnamed_prompt_column(tmp_path):
    p = one(write(tmp_path / "m.json", [{"instrucion": "a", "output": "b"}]), 1, "instruction", "no prompt column")
    assert "instrucion" in p.message and "--columns" in p.message


def test_misnamed_response_column(tmp_path):
    p = one(write(tmp_path / "m.jsonl", '{"prompt": "a", "completion": "b"}\n'), 1, "response", "no response column")
    assert "completion" in p.message


def test_missing_response_column_ok_without_require_response(tmp_path):
    [ex] = load_examples(write(tmp_path / "p.json", [{"prompt": "a"}]), require_response=False)
    assert ex.response == ""


def test_column_missing_in_some_rows(tmp_path):
    src = write(tmp_path / "s.json", [{"prompt": "a", "response": "b"}, {"prompt": "c"}, {"response": "d"}])
    ps = problems(src)
    assert [(p.row, p.field) for p in ps] == [(2, "response"), (3, "prompt")]
    assert all("missing" in p.message for p in ps)


def test_mapped_column_that_does_not_exist(tmp_path):
    src = write(tmp_path / "m.json", [{"q": "a", "a": "b"}])
    p = one(src, 1, "qq", "given for prompt.*does not exist", columns={"prompt": "qq", "response": "a"})
    assert "columns found: q, a" in p.message


def test_bad_columns_argument(tmp_path):
    src = write(tmp_path / "m.json", [{"q": "a", "a": "b"}])
    one(src, None, "answer", "unknown name", columns={"answer": "a"})
    one(src, None, "response", "same column", columns={"prompt": "q", "response": "q"})


def test_advbench_needs_require_response_false(tmp_path):
    src = write(tmp_path / "adv.csv", "goal,target\nx,Sure\n")
    one(src, 1, "response", "prompts only.*require_response=False")


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("value,pattern", [("", "is empty"), ("  \n\t", "whitespace only"), (None, "is null")])
def test_empty_or_null_fields(tmp_path, value, pattern):
    src = write(tmp_path / "e.json", [{"prompt": "ok", "response": "ok"}, {"prompt": "ok", "response": value}])
    one(src, 2, "response", pattern)
    src = write(tmp_path / "p.json", [{"prompt": value, "response": "ok"}])
    one(src, 1, "prompt", pattern, require_response=False)


def test_empty_response_allowed_without_require_response(tmp_path):
    src = write(tmp_path / "e.csv", "prompt,response\na,\nb,  \n")
    assert [e.response for e in load_examples(src, require_response=False)] == ["", "  "]


def test_gsm8k_like_int_answers_are_reported(tmp_path):
    src = write(tmp_path / "g.json", [{"question": "1+1?", "answer": 2}, {"question": "q", "answer": 2.5}])
    ps = problems(src)
    assert [(p.row, p.field) for p in ps] == [(1, "answer"), (2, "answer")]
    assert "must be text, got an integer 2 (write numbers as strings)" in ps[0].message
    # Non-string responses are wrong even when responses are optional.
    assert len(problems(src, require_response=False)) == 2


@pytest.mark.parametrize("value", [True, ["a"], {"t": "a"}, 3])
def test_non_string_prompt_or_input(tmp_path, value):
    one(write(tmp_path / "n.json", [{"instruction": value, "output": "o"}]), 1, "instruction", "must be text")
    one(write(tmp_path / "i.json", [{"instruction": "i", "input": value, "output": "o"}]), 1, "input", "must be text")


def test_duplicate_ids(tmp_path):
    rows = [{"id": i, "prompt": "p", "response": "r"} for i in ["a", "b", "a", "c", "b"]]
    ps = problems(write(tmp_path / "d.json", rows))
    assert [(p.row, p.field) for p in ps] == [(3, "id"), (5, "id")]
    assert "duplicate id 'a' (first in row 1)" in ps[0].message


def test_ids_int_and_str_collide(tmp_path):
    src = write(tmp_path / "d.jsonl", '{"id": 1, "prompt": "p", "response": "r"}\n'
                                      '{"id": "1", "prompt": "p", "response": "r"}\n')
    one(src, 2, "id", "duplicate id '1'")


@pytest.mark.parametrize("value,pattern", [
    (None, "null"), ("", "empty"), (1.5, "string or integer"), (True, "string or integer")])
def test_bad_ids(tmp_path, value, pattern):
    rows = [{"id": "a", "prompt": "p", "response": "r"}, {"id": value, "prompt": "p", "response": "r"}]
    src = write(tmp_path / "d.json", rows)
    one(src, 2, "id", pattern)


def test_id_missing_in_a_row(tmp_path):
    src = write(tmp_path / "d.json", [{"id": "a", "prompt": "p", "response": "r"}, {"prompt": "p", "response": "r"}])
    one(src, 2, "id", "missing")


# ---------------------------------------------------------------- chat


def chat(tmp_path, *turns, key="messages", name="c.json"):
    return write(tmp_path / name, [{key: list(turns)}])


U, A, S = ({"role": r, "content": r[0]} for r in ("user", "assistant", "system"))


@pytest.mark.parametrize("turns,field", [
    ((A, U), "messages[0].role"),
    ((U, U, A), "messages[1].role"),
    ((S, A), "messages[1].role"),
    ((U, A, A), "messages[2].role"),
    ((U, S, A), "messages[1].role"),
    ((S, S, U, A), "messages[1].role"),
])
def test_chat_wrong_role_order(tmp_path, turns, field):
    one(chat(tmp_path, *turns), 1, field, "expected an? (user|assistant) turn.*optional system")


def test_chat_must_end_with_assistant(tmp_path):
    one(chat(tmp_path, U, A, U), 1, "messages", "must end with an assistant turn")
    one(chat(tmp_path, S), 1, "messages", "no user turn")


def test_chat_missing_or_bad_content(tmp_path):
    one(chat(tmp_path, {"role": "user"}, A), 1, "messages[0].content", "missing")
    one(chat(tmp_path, U, {"role": "assistant", "content": "  "}), 1, "messages[1].content", "whitespace only")
    one(chat(tmp_path, {"role": "user", "content": 5}, A), 1, "messages[0].content", "must be text")
    one(chat(tmp_path, {"from": "human"}, {"from": "gpt", "value": "a"}, key="conversations"),
        1, "conversations[0].value", "missing")


def test_chat_bad_roles_and_shapes(tmp_path):
    one(chat(tmp_path, {"role": "robot", "content": "x"}, A), 1, "messages[0].role", "unknown")
    one(chat(tmp_path, {"content": "x"}, A), 1, "messages[0].role", "missing")
    one(chat(tmp_path, "hi", A), 1, "messages[0]", "must be an object")
    one(write(tmp_path / "e.json", [{"messages": []}]), 1, "messages", "non-empty list")
    one(write(tmp_path / "s.json", [{"messages": "hi"}]), 1, "messages", "non-empty list")


# ---------------------------------------------------------------- collected together, whole file checked


def test_all_problems_reported_together(tmp_path):
    rows = [{"instruction": "ok", "output": "ok"}] * 3 + [
        {"instruction": "", "output": "ok"},
        {"instruction": "ok", "output": 7},
        "oops",
        {"instruction": "ok", "output": "   "},
    ]
    ps = problems(write(tmp_path / "many.json", rows))
    assert [(p.row, p.field) for p in ps] == [(4, "instruction"), (5, "output"), (6, None), (7, "output")]


def test_limit_still_validates_whole_file(tmp_path):
    rows = [{"prompt": "p", "response": "r"}] * 10 + [{"prompt": "p", "response": ""}]
    one(write(tmp_path / "l.json", rows), 11, "response", "empty", limit=2)


def test_builtin_errors():
    for src, field in [("builtin:nope", None), ("builtin:arithmetic?n=x", "n"), ("builtin:arithmetic?n=0", "n"),
                       ("builtin:arithmetic?size=3", "size")]:
        with pytest.raises(DataError) as e:
            load_examples(src)
        assert e.value.problems[0].field == field
    with pytest.raises(DataError, match="does not apply"):
        load_examples("builtin:arithmetic", columns={"prompt": "q"})


# ---------------------------------------------------------------- property: malformed input never slips through

TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, blacklist_categories=("Cs",),
                             blacklist_characters="@"), min_size=1, max_size=12).filter(str.strip)
BLANK = st.text(" \t\r\n\u00a0\u3000", max_size=4)
NON_STRING = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.just("k"), st.integers(), max_size=1))
BAD_BYTES = st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf",
                             b"\xf8\x88"])
FIELDS = ("instruction", "output")


def rows_strategy(min_size=1):
    return st.lists(st.fixed_dictionaries({"instruction": TEXT, "output": TEXT}), min_size=min_size, max_size=5)


def serialize(fmt: str, rows: list[dict]) -> bytes:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False).encode()
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    buf = io.StringIO()
    header = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[r.get(k, "") for k in header] for r in rows])
    return buf.getvalue().encode()


@st.composite
def malformed(draw) -> tuple[str, bytes]:
    """(file suffix, bytes) of an input that must be rejected with a problem naming a row."""
    kind = draw(st.sampled_from(["corrupt_json", "non_object", "missing_column", "blank_field", "non_string",
                                 "bad_utf8", "duplicate_id", "ragged_csv", "bad_roles"]))
    rows = draw(rows_strategy())
    k = draw(st.integers(0, len(rows) - 1))
    field = draw(st.sampled_from(FIELDS))
    if kind == "corrupt_json":
        fmt = draw(st.sampled_from(["json", "jsonl"]))
        if fmt == "json":
            text = json.dumps(rows, ensure_ascii=False)
            return "json", text[: draw(st.integers(1, len(text) - 1))].encode()  # any strict prefix is invalid
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        lines[k] = lines[k][: draw(st.integers(1, len(lines[k]) - 1))]
        return "jsonl", ("\n".join(lines) + "\n").encode()
    if kind == "non_object":
        rows[k] = draw(st.one_of(TEXT, st.integers(), st.none(), st.booleans(), st.lists(TEXT, max_size=2)))
        return (fmt := draw(st.sampled_from(["json", "jsonl"]))), serialize(fmt, rows)
    if kind == "missing_column":
        fmt = draw(st.sampled_from(["json", "jsonl", "csv"]))
        how = draw(st.sampled_from(["drop_everywhere", "rename", "drop_in_one_row"]))
        if how == "drop_in_one_row" and fmt != "csv":
            del rows[k][field]
        else:
            new = draw(st.sampled_from(["instrucion", "outptu", "text", "q", "label", "Output", "INSTRUCTION"]))
            for r in rows:
                value = r.pop(field)
                if how == "rename" and new not in r:
                    r[new] = value
        return fmt, serialize(fmt, rows)
    if kind == "blank_field":
        rows[k][field] = draw(BLANK)
        return (fmt := draw(st.sampled_from(["json", "jsonl", "csv"]))), serialize(fmt, rows)
    if kind == "non_string":
        rows[k][field] = draw(NON_STRING)
        return (fmt := draw(st.sampled_from(["json", "jsonl"]))), serialize(fmt, rows)
    if kind == "bad_utf8":
        rows[k][field] = draw(st.text(max_size=0) | TEXT) + "@@" + draw(st.text(max_size=0) | TEXT)
        fmt = draw(st.sampled_from(["json", "jsonl", "csv"]))
        return fmt, serialize(fmt, rows).replace(b"@@", draw(BAD_BYTES), 1)
    if kind == "duplicate_id":
        rows = draw(rows_strategy(min_size=2))
        ids = draw(st.lists(st.one_of(st.integers(0, 50), st.text("abc123", min_size=1, max_size=3)),
                            min_size=len(rows), max_size=len(rows)))
        i, j = draw(st.lists(st.integers(0, len(rows) - 1), min_size=2, max_size=2, unique=True))
        ids[j] = ids[i]
        fmt = draw(st.sampled_from(["json", "jsonl", "csv"]))
        rows = [{"id": str(v) if fmt == "csv" else v, **r} for v, r in zip(ids, rows)]
        return fmt, serialize(fmt, rows)
    if kind == "ragged_csv":
        lines = serialize("csv", rows).decode().split("\n")
        line = lines[k + 1]  # + 1: the header
        if draw(st.booleans()):
            lines[k + 1] = line + "," + draw(st.sampled_from(["x", "", '"y, z"']))
        else:
            cells = next(csv.reader([line]))
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow(cells[:1])
            lines[k + 1] = buf.getvalue()
        return "csv", "\n".join(lines).encode()
    # bad_roles: a conversation whose role sequence is not [system] (user assistant)+
    sharegpt = draw(st.booleans())
    roles = draw(st.lists(st.sampled_from(["system", "user", "assistant"]), min_size=1, max_size=6).filter(
        lambda rs: not re.fullmatch(r"(system )?(user assistant )+", " ".join(rs) + " ")))
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = [{"from": names[r], "value": "t"} if sharegpt else {"role": r, "content": "t"} for r in roles]
    good = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}] if sharegpt else \
           [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    key = "conversations" if sharegpt else "messages"
    convs = [{key: good} for _ in rows]
    convs[k] = {key: turns}
    return (fmt := draw(st.sampled_from(["json", "jsonl"]))), serialize(fmt, convs)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=malformed())
def test_malformed_inputs_are_rejected(tmp_path_factory, case):
    suffix, data = case
    path = tmp_path_factory.mktemp("bad") / f"input.{suffix}"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        load_examples(str(path))
    assert e.value.problems and all(p.file == str(path) for p in e.value.problems)
    assert any(p.row is not None for p in e.value.problems), str(e.value)
    str(e.value).encode("utf-8")  # the report can always be printed
    assert path.read_bytes() == data  # never modified
