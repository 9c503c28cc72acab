"""Bad input through the command line: exit code 2, a message naming the file and row, no model loaded,
nothing written. Plus the policy for rows beyond the model's context (distill keeps the original,
train skips the row).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdft.cli import main

# ---------------------------------------------------------------- malformed files

WORD = st.text(st.characters(categories=("L", "N", "P", "S"), max_codepoint=0x2FF, exclude_characters='"\\,'),
               min_size=1, max_size=12)
BLANK = st.sampled_from(["", " ", "\t", "   ", "\u3000", " \t "])
NOT_TEXT = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                     st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(WORD, st.integers(), max_size=2))
NOT_OBJECT = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), WORD, st.booleans(),
                       st.none(), st.lists(WORD, max_size=3))
BAD_BYTES = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x80abc", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
BROKEN_JSON = st.sampled_from(['{"prompt": "x", ', '{"prompt": "x" "response": "y"}', "{prompt: 1}", "{'a': 1}",
                               '{"prompt": "x",}', "[1, 2", '{"a": tru}', "}{", '{"prompt": "x"}}'])
MISNAMED = st.sampled_from(["promt", "Prompt", "PROMPT", "q", "text", "respons", "reply", "completion", "Response"])
# Chats that break "optional system, then user/assistant alternating, ending with assistant".
BAD_CHATS = st.sampled_from([
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
    [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "user", "content": "a"}],
    [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}],
    [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "b"}],
    [{"content": "a"}, {"role": "assistant", "content": "b"}],
    [{"role": "user"}, {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}],
    [],
    "not a list",
    ["user: a", "assistant: b"],
])

ROW_KINDS = ["bad_json", "not_object", "missing_field", "blank_field", "not_text", "bad_utf8", "duplicate_id",
             "bad_chat"]
FILE_KINDS = ["misnamed_column", "columns_flag", "unknown_extension", "empty", "json_top_level", "no_rows"]


def _row(i: int, draw) -> dict:
    return {"id": f"r{i}", "prompt": draw(WORD), "response": draw(WORD)}


def _chat(i: int, draw) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": draw(WORD)},
                                        {"role": "assistant", "content": draw(WORD)}]}


@st.composite
def malformed(draw, kind: str) -> tuple[str, bytes, int | None, list[str]]:
    """(file name, content, the row the message must name or None, extra CLI args) of one kind of damage."""
    fmt = draw(st.sampled_from(["jsonl", "json", "csv"]))
    if kind in ("bad_json", "not_object", "not_text", "bad_chat"):
        fmt = draw(st.sampled_from(["jsonl", "json"]))  # CSV cells are always text
    n = draw(st.integers(2, 6))
    k = draw(st.integers(0, n - 1))  # the row to break (0-based)
    rows: list = [(_chat if kind == "bad_chat" else _row)(i, draw) for i in range(n)]
    raw: dict[int, bytes] = {}  # rows replaced by bytes that are not JSON
    field = draw(st.sampled_from(["prompt", "response"]))
    expected: int | None = k + 1
    extra: list[str] = []

    if kind == "bad_json":
        raw[k] = draw(BROKEN_JSON).encode()
        if fmt == "json":
            expected = None  # the row of a syntax error inside an array is a best guess
    elif kind == "not_object":
        rows[k] = draw(NOT_OBJECT)
    elif kind == "missing_field":
        del rows[k][field]
    elif kind == "blank_field":
        rows[k][field] = draw(BLANK)
    elif kind == "not_text":
        rows[k][field] = draw(NOT_TEXT)
    elif kind == "bad_utf8":
        rows[k][field] = "@@BAD@@"
    elif kind == "duplicate_id":
        k = draw(st.integers(1, n - 1))
        rows[k]["id"] = rows[draw(st.integers(0, k - 1))]["id"]
        expected = k + 1
    elif kind == "bad_chat":
        rows[k]["messages"] = draw(BAD_CHATS)
    elif kind == "misnamed_column":
        for r in rows:  # reported once, at the first row
            r[draw(MISNAMED)] = r.pop(field)
        expected = 1
    elif kind == "columns_flag":
        extra = ["--columns", f"prompt={draw(MISNAMED)},response=response"]
        expected = 1
    else:
        expected = None

    if kind == "unknown_extension":
        name = "data" + draw(st.sampled_from([".txt", ".yaml", ".tsv", ".jsonlines", "", ".json.gz"]))
        return name, json.dumps(rows).encode(), None, extra
    if kind == "empty":
        return f"data.{fmt}", draw(st.sampled_from([b"", b" ", b"\n\n", b" \t\n"])), None, extra
    if kind == "json_top_level":
        value = draw(st.one_of(NOT_OBJECT, st.dictionaries(WORD, st.integers(), max_size=3)))
        return "data.json", json.dumps(value).encode(), None, extra
    if kind == "no_rows":
        content = draw(st.sampled_from([("json", b"[]"), ("json", b'{"data": []}'), ("csv", b"prompt,response\n"),
                                        ("jsonl", b"\n \n")]))
        return f"data.{content[0]}", content[1], None, extra

    if fmt == "csv":
        columns = list(dict.fromkeys(c for r in rows for c in r))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.get(c, "") for c in columns])
        lines = buf.getvalue().encode().split(b"\n")[:-1]
        if kind == "missing_field":  # a CSV row can't lack a column, only have too few fields
            lines[k + 1] = lines[k + 1].rsplit(b",", 1)[0]
        if kind in ROW_KINDS and kind != "missing_field" and draw(st.booleans()):  # ragged: a field too many
            lines[k + 1] += b",extra"
        content = b"\n".join(lines) + b"\n"
    elif fmt == "jsonl":
        content = b"\n".join(raw.get(i, json.dumps(r).encode()) for i, r in enumerate(rows)) + b"\n"
    else:
        content = b"[\n" + b",\n".join(raw.get(i, json.dumps(r).encode()) for i, r in enumerate(rows)) + b"\n]"
    content = content.replace(b"@@BAD@@", draw(BAD_BYTES))
    return f"data.{fmt}", content, expected, extra




# One run per kind of damage: drawn from a single strategy, the rarer kinds would hardly come up.
@pytest.mark.parametrize("kind", ROW_KINDS + FILE_KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_files_exit_2_naming_the_row(kind, data, tmp_path, capsys, no_model):
    name, content, row, extra = data.draw(malformed(kind))
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / name
    path.write_bytes(content)
    commands = {
        "distill": ["distill", "--model", "default", "--task", "general", "--out", str(work / "out.jsonl")],
        "train": ["train", "--model", "default", "--out", str(work / "run")],
    }
    for command, args in commands.items():
        code = main(args + ["--data", str(path), *extra])
        err = capsys.readouterr().err
        assert code == 2, (kind, command, err)
        assert err.startswith(f"sdft {command}: bad input:\n"), err
        assert str(path) in err, err
        if row is not None:
            assert f"row {row}," in err or f"row {row}:" in err, (kind, row, err)
        assert "Traceback" not in err
        # Nothing written: no output, no parts folder, no summary, no run folder.
        assert sorted(p.name for p in work.iterdir()) == [name], (kind, command)


# ---------------------------------------------------------------- rows beyond the model's context


def test_distill_rows_beyond_context_keep_the_original(tiny_model, tmp_path, monkeypatch):
    import sdft.engine.decode
    from sdft.data.load import load_examples
    from sdft.distill.templates import get_template, render_distill_prompt
    from sdft.engine.decode import tokenize_prompts
    from sdft.core.models import load_tokenizer

    new_tokens = 8
    examples = load_examples("builtin:arithmetic?n=12")
    tok = load_tokenizer(tiny_model)
    prompts = [render_distill_prompt(tok, get_template(None, "math"), ex) for ex in examples]
    lengths = [len(ids) for ids in tokenize_prompts(tok, prompts)]
    limit = sorted(lengths)[len(lengths) // 2] + new_tokens  # about half the rows don't fit
    too_long = {i for i, n in enumerate(lengths) if n + new_tokens > limit}
    assert 0 < len(too_long) < len(examples)

    seen: list[int] = []  # prompt lengths the model was given
    real = sdft.engine.decode.generate_batch

    def recording(model, tokenizer, prompt_ids, cfg, **kwargs):
        seen.extend(len(p) for p in prompt_ids)
        return real(model, tokenizer, prompt_ids, cfg, **kwargs)

    monkeypatch.setattr(sdft.engine.decode, "generate_batch", recording)
    out = tmp_path / "d.jsonl"
    assert main(["distill", "--model", tiny_model, "--data", "builtin:arithmetic?n=12", "--task", "math",
                 "--out", str(out), "--batch-size", "4", "--max-new-tokens", str(new_tokens),
                 "--max-context", str(limit)]) == 0
    assert sorted(seen) == sorted(n for i, n in enumerate(lengths) if i not in too_long)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for i, r in enumerate(rows):
        if i in too_long:
            assert r["reject_reason"] == "too_long" and not r["accepted"]
            assert r["distilled"] is None and r["response"] == r["original"] == examples[i].response
        else:
            assert r["reject_reason"] != "too_long" and isinstance(r["distilled"], str)
    summary = json.loads((tmp_path / "d.jsonl.summary.json").read_text())
    assert summary["reject_reasons"]["too_long"] == len(too_long)


def test_train_skips_rows_whose_prompt_exceeds_max_length(tiny_model, tmp_path):
    from sdft.core.chat import render_chat
    from sdft.core.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    rows = [{"prompt": "word " * n, "response": "ok"} for n in (2, 4, 8, 60, 120, 3)]
    lengths = [len(tok(render_chat(tok, [{"role": "user", "content": r["prompt"]}]),
                       add_special_tokens=False)["input_ids"]) for r in rows]
    max_length = 64
    skipped = sum(n >= max_length - 1 for n in lengths)  # no room left for a single response token
    assert skipped == 2
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", tiny_model, "--data", str(data), "--out", str(out), "--max-steps", "1",
            "--set", f"max_length={max_length}", "--set", "save_steps=10"]
    assert main(args) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["skipped_too_long"] == skipped and summary["rows"] == len(rows) - skipped

    # Every row too long: bad input, exit 2, nothing trained.
    assert main(args[:-4] + ["--set", "max_length=8", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none" / "train_summary.json").exists()
