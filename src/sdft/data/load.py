"""Load task examples from a file, a Hugging Face hub dataset or a built-in set.

Everything is validated before anything is returned: every row is checked and all problems are
raised together as one `DataError`, so a bad file stops a run before any model is loaded, and the
user fixes the whole file in one go instead of one error per attempt. Input files are only read.

Sources:
  path/to/file.{json,jsonl,csv,parquet}   local file
  owner/name[:config[:split]]              hub dataset, when no local path of that name exists
  hf:owner/name[:config[:split]]           hub dataset, always (default split "train")
  builtin:arithmetic[?n=200&seed=0]        generated offline (see arithmetic.py)
  builtin:units[?n=200&seed=0&split=train] generated offline (see units.py; split=test is held out)

Layouts, detected from the column names:
  chat             messages | conversations   (OpenAI role/content or ShareGPT from/value turns)
  alpaca           instruction, output, optional input   (also MultiArith, OpenFunctions, AlpacaEval)
  gsm8k            question, answer   (an answer ending in GSM8K's "#### N" is normalised: see gsm8k.py)
  prompt/response  prompt, response
  advbench         goal (prompts only; `target` is the attack's wished-for reply, never a reference)
Optional columns `id`, `system` and `history` (earlier chat turns, as `sdft distill`
writes them) are used when present. Other names are mapped with
`columns={"prompt": "q", "response": "a"}` (CLI: `--columns prompt=q,response=a`).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sdft.data.arithmetic import generate_arithmetic
from sdft.data.units import generate_units
from sdft.data.example import DataError, Example, Problem
from sdft.data.gsm8k import normalize_gsm8k_answer
from sdft.core.errors import InputError

CANONICAL = ("prompt", "response", "input", "id", "system", "messages", "history")
EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")
BUILTINS = {"arithmetic": generate_arithmetic, "units": generate_units}


@dataclass(frozen=True)
class Layout:
    name: str
    prompt: str
    response: str | None  # None: the layout carries prompts only
    input: str | None = None


FIELD_LAYOUTS = (
    Layout("alpaca", "instruction", "output", "input"),
    Layout("gsm8k", "question", "answer"),
    Layout("prompt/response", "prompt", "response"),
    Layout("advbench", "goal", None),
)
CHAT_COLUMNS = ("messages", "conversations")
RESPONSE_NAMES = ("output", "answer", "response")
LAYOUT_HELP = (
    "known layouts: alpaca (instruction, output, optional input); gsm8k (question, answer); "
    "prompt/response (prompt, response); advbench (goal; prompts only); chat (messages or conversations); "
    "map other names with --columns prompt=NAME,response=NAME (columns={...} in Python)"
)
CHAT_ORDER = "turns must be: optional system, then user/assistant alternating, ending with assistant"

# Chat roles as written by OpenAI-style and ShareGPT-style files.
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}

_MISSING = object()
# Bytes that were not UTF-8 (kept as surrogates by surrogateescape) or unpaired \uXXXX escapes.
_BAD_UTF8 = re.compile("[\ud800-\udfff]")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]*(:[\w.\[\]:%+-]+)?)?$")
_NOT_HUB_SUFFIXES = EXTENSIONS + (".txt", ".tsv", ".gz", ".zip", ".xz", ".arrow")

Rows = list[tuple[int, Any]]  # (1-based row number as the user would count it, raw row)


@dataclass
class _Report:
    """Problems found so far in one source."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, row: int | None, field: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, row, field, message))


# ---------------------------------------------------------------- public API


def load_examples(
    source: str,
    columns: dict[str, str] | None = None,
    limit: int | None = None,
    require_response: bool = True,
) -> list[Example]:
    """Read, validate and convert `source` into Examples.

    The whole source is validated even when `limit` is set: a problem anywhere raises `DataError`
    (with every problem found) before any model is loaded; `limit` then keeps the first N rows.
    With `require_response=False` (prompt-only sets such as AdvBench) responses may be missing or
    empty and come back as "".
    """
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    source = str(source)
    mapping = _check_mapping(columns, source)
    if source.startswith("builtin:"):
        if mapping:
            raise DataError(Problem(source, None, None, "--columns does not apply to built-in sets"))
        examples = _load_builtin(source)
    else:
        rows, problems = read_rows(source)
        if not rows and not problems:  # e.g. an empty hub split
            problems = [Problem(source, None, None, "no rows")]
        examples, more = examples_from_rows(rows, source, mapping, require_response)
        if problems or more:
            # File-level problems first, then by row, so the report reads top to bottom.
            raise DataError(sorted(problems + more, key=lambda p: (p.row is not None, p.row or 0)))
    return examples if limit is None else examples[:limit]


def parse_columns(spec: str) -> dict[str, str]:
    """Parse the CLI form "prompt=q,response=a" into {"prompt": "q", "response": "a"}."""
    mapping: dict[str, str] = {}
    report = _Report("--columns")
    for part in filter(str.strip, spec.split(",")):
        key, sep, col = (s.strip() for s in part.partition("="))
        if not sep or not key or not col:
            report.add(None, key or None, f"'{part.strip()}' is not NAME=COLUMN")
        elif key not in CANONICAL:
            report.add(None, key, f"unknown name; use one of {', '.join(CANONICAL)}")
        elif key in mapping:
            report.add(None, key, "given more than once")
        else:
            mapping[key] = col
    if not mapping and not report.problems:
        report.add(None, None, "empty; expected e.g. prompt=question,response=answer")
    if report.problems:
        raise DataError(report.problems)
    return mapping


def read_rows(source: str) -> tuple[Rows, list[Problem]]:
    """Raw rows of a local file or hub dataset, plus problems with the file itself."""
    if source.startswith("hf:"):
        return _read_hub(source, source[3:])
    path = Path(source).expanduser()
    report = _Report(source)
    if path.is_dir():
        hint = f"; for the hub dataset of that name write hf:{source}" if _looks_like_hub(source) else ""
        report.add(None, None, f"is a directory, expected a {'/'.join(EXTENSIONS)} file{hint}")
    elif not path.exists():
        if _looks_like_hub(source):
            rows, problems = _read_hub(source, source)
            for p in problems:  # it may have been meant as a local path after all
                p.message += f" (and there is no local file '{source}')"
            return rows, problems
        report.add(None, None, "file not found (hub datasets are named owner/name, e.g. openai/gsm8k)")
    elif path.suffix.lower() not in EXTENSIONS:
        report.add(None, None, f"unknown file type '{path.suffix or '(none)'}'; expected {', '.join(EXTENSIONS)}")
    elif path.stat().st_size == 0:
        report.add(None, None, "file is empty (0 bytes)")
    else:
        reader = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
        rows = reader[path.suffix.lower()](path, report)
        if not rows and not report.problems:
            report.add(None, None, "file has no rows")
        return rows, report.problems
    return [], report.problems


def examples_from_rows(
    rows: Rows, label: str, columns: dict[str, str] | None = None, require_response: bool = True
) -> tuple[list[Example], list[Problem]]:
    """Turn raw rows into Examples, collecting a Problem for everything wrong (nothing is raised)."""
    report = _Report(label)
    dict_rows: Rows = []
    for num, row in rows:
        if isinstance(row, dict):
            dict_rows.append((num, row))
        else:
            report.add(num, None, f"expected an object with named fields, got {_kind(row)}")
    if not dict_rows:
        return [], report.problems
    cols = list(dict.fromkeys(k for _, row in dict_rows for k in row))  # union, first-seen order
    spec = _resolve_columns(report, cols, dict_rows[0][0], columns or {}, require_response)
    if spec is None:
        return [], report.problems

    examples: list[Example] = []
    first_seen: dict[str, int] = {}
    for num, row in dict_rows:
        before = len(report.problems)
        ex = _convert_row(report, num, row, spec, require_response)
        if ex is None or len(report.problems) > before:
            continue
        if spec.id and ex.id in first_seen:
            report.add(num, spec.id, f"duplicate id '{_show(ex.id)}' (first in row {first_seen[ex.id]})")
            continue
        first_seen[ex.id] = num
        examples.append(ex)
    return examples, report.problems


# ---------------------------------------------------------------- readers


def _decode(data: bytes, report: _Report, line_is_row: bool) -> str:
    """UTF-8 text. Bad bytes are kept as surrogates, so the rows and fields holding them can
    still be located, and each is reported with its byte offset and line."""
    pos, found = 0, 0
    while pos < len(data) and found < 10:
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            off = pos + e.start
            line = data.count(b"\n", 0, off) + 1
            report.add(line if line_is_row else None, None,
                       f"invalid UTF-8 byte 0x{data[off]:02x} at byte offset {off} (line {line})")
            pos, found = pos + e.end, found + 1
    text = data.decode("utf-8", "surrogateescape")
    return text.removeprefix("\ufeff")  # a BOM is harmless; don't let it into a column name


def _read_json(path: Path, report: _Report) -> Rows:
    text = _decode(path.read_bytes(), report, line_is_row=False)
    if not text.strip():
        report.add(None, None, "file is empty (only whitespace)")
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        report.add(_json_array_row(text, e.pos), None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}")
        return []
    if isinstance(data, dict):
        # {"data": [...]} is accepted only when unambiguous: exactly one field holds a list of objects.
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in data[lists[0]]):
            data = data[lists[0]]
        else:
            keys = ", ".join(_show(k) for k in list(data)[:10])
            report.add(None, None, f"top level is an object (keys: {keys}); expected an array of row objects, "
                                   "or an object whose only list field holds them")
            return []
    if not isinstance(data, list):
        report.add(None, None, f"top level is {_kind(data)}; expected an array of row objects")
        return []
    return [(i + 1, r) for i, r in enumerate(data)]


def _json_array_row(text: str, pos: int) -> int | None:
    """Which element of a top-level JSON array a syntax error at `pos` falls in (best effort)."""
    dec = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    i = ws.match(text, 0).end()
    if i >= len(text) or text[i] != "[" or pos <= i:
        return None
    i, row = i + 1, 1
    while True:
        i = ws.match(text, i).end()
        if i >= pos:
            return row
        try:
            _, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return row
        i = ws.match(text, i).end()
        if i >= pos or i >= len(text) or text[i] != ",":
            return row
        i, row = i + 1, row + 1


def _read_jsonl(path: Path, report: _Report) -> Rows:
    text = _decode(path.read_bytes(), report, line_is_row=True)
    rows: Rows = []
    # split on "\n" only: str.splitlines would also break on U+2028, which JSON strings may hold.
    for num, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            report.add(num, None, f"invalid JSON (line {num}, column {e.colno}): {e.msg}")
            continue
        if not isinstance(obj, dict):
            report.add(num, None, f"line {num} is {_kind(obj)}, expected a JSON object")
            continue
        rows.append((num, obj))
    return rows


def _read_csv(path: Path, report: _Report) -> Rows:
    text = _decode(path.read_bytes(), report, line_is_row=False)
    # The csv module (not pandas) so a row with too many or too few fields is an error, not NaN.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long responses are normal
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: Rows = []
    header: list[str] | None = None
    num = 0  # data records so far: the header and blank lines don't count
    try:
        for record in reader:
            if not record:
                continue  # blank line
            if header is None:
                header = [h.strip() for h in record]
                for h in sorted({h for h in header if header.count(h) > 1}):
                    report.add(None, h, "column name appears more than once in the header")
                continue
            num += 1
            if len(record) != len(header):
                report.add(num, None, f"has {len(record)} fields but the header has {len(header)} "
                                      f"(line {reader.line_num})")
                continue
            rows.append((num, dict(zip(header, record))))
    except csv.Error as e:
        report.add(num + 1 if header else None, None, f"malformed CSV at line {reader.line_num}: {e}")
    if header is None and not report.problems:
        report.add(None, None, "file is empty (no header row)")
    return rows


def _read_parquet(path: Path, report: _Report) -> Rows:
    import pyarrow.parquet as pq  # lazy: only Parquet users pay for it

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        report.add(None, None, f"not a readable Parquet file: {e}")
        return []
    return [(i + 1, r) for i, r in enumerate(table.to_pylist())]


def _looks_like_hub(source: str) -> bool:
    name = source.split(":", 1)[0]
    return bool(_HUB_ID.match(source)) and not name.lower().endswith(_NOT_HUB_SUFFIXES)


def _read_hub(label: str, spec: str) -> tuple[Rows, list[Problem]]:
    name, config, split = (spec.split(":", 2) + ["", ""])[:3]
    split = split or "train"
    try:
        import datasets  # lazy: heavy import, and only hub users need it

        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown name, bad config/split: all are the user's to fix
        where = f"'{name}'" + (f" config '{config}'" if config else "") + f" split '{split}'"
        return [], [Problem(label, None, None, f"could not load hub dataset {where}: {type(e).__name__}: {e}")]
    return [(i + 1, dict(r)) for i, r in enumerate(ds)], []


def _load_builtin(source: str) -> list[Example]:
    name, _, query = source[len("builtin:"):].partition("?")
    report = _Report(source)
    if name not in BUILTINS:
        report.add(None, None, f"unknown built-in set '{name}'; available: {', '.join(BUILTINS)}")
        raise DataError(report.problems)
    kwargs = {}
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as e:
        report.add(None, None, f"bad parameters '{query}': {e}")
        params = {}
    known = list(inspect.signature(BUILTINS[name]).parameters)
    for key, values in params.items():
        if key not in known:
            report.add(None, key, f"unknown parameter; use {', '.join(known)}")
        elif len(values) != 1:
            report.add(None, key, f"expected one value, got {values}")
        elif key not in ("n", "seed"):
            kwargs[key] = values[0]
        elif not re.fullmatch(r"-?\d+", values[0]):
            report.add(None, key, f"expected one integer, got {values}")
        elif key == "n" and int(values[0]) < 1:
            report.add(None, key, "must be at least 1")
        else:
            kwargs[key] = int(values[0])
    if report.problems:
        raise DataError(report.problems)
    try:
        return BUILTINS[name](**kwargs)
    except InputError as e:
        raise DataError([Problem(source, None, None, str(e))]) from None


# ---------------------------------------------------------------- columns and rows


@dataclass
class _Spec:
    """Which source column feeds which Example field."""

    layout: str
    prompt: str | None = None
    response: str | None = None
    input: str | None = None
    id: str | None = None
    system: str | None = None
    messages: str | None = None
    history: str | None = None  # earlier chat turns of a non-chat row (e.g. a distilled file)


def _check_mapping(columns: dict[str, str] | None, label: str) -> dict[str, str]:
    report = _Report(label)
    for key, col in (columns or {}).items():
        if key not in CANONICAL:
            report.add(None, key, f"unknown name in columns; use one of {', '.join(CANONICAL)}")
        elif not isinstance(col, str) or not col.strip():
            report.add(None, key, f"column name must be a non-empty string, got {col!r}")
    if columns and columns.get("prompt") and columns.get("prompt") == columns.get("response"):
        report.add(None, "response", "prompt and response map to the same column")
    if report.problems:
        raise DataError(report.problems)
    return dict(columns or {})


def _best_layout(present: set[str]) -> Layout | None:
    """The layout matching most columns, prompt weighing most; ties go to the earlier one."""
    best, best_score = None, 0
    for lay in FIELD_LAYOUTS:
        score = 2 * (lay.prompt in present) + (lay.response is not None and lay.response in present)
        if score > best_score:
            best, best_score = lay, score
    return best


def _resolve_columns(
    report: _Report, cols: list[str], first_row: int, mapping: dict[str, str], require_response: bool
) -> _Spec | None:
    """Pick the columns to read; a problem here is reported once, at the first row, not per row."""
    present = set(cols)
    hint = f"columns found: {', '.join(_show(c) for c in cols) or 'none'}; {LAYOUT_HELP}"
    chat = mapping.get("messages") or next((c for c in CHAT_COLUMNS if c in present), None)
    layout = None
    if chat and "prompt" not in mapping:
        spec = _Spec("chat", messages=chat)
    else:
        layout = _best_layout(present)
        has = lambda name: name if name and name in present else None  # noqa: E731
        spec = _Spec(
            "columns" if mapping else (layout.name if layout else "unknown"),
            prompt=mapping.get("prompt") or has(layout and layout.prompt),
            # A known response name is taken even from another layout (e.g. question + output).
            response=mapping.get("response") or has(layout and layout.response)
            or (next((c for c in RESPONSE_NAMES if c in present), None) if layout and layout.response else None),
            input=mapping.get("input") or has("input"),
        )
    spec.id = mapping.get("id") or ("id" if "id" in present else None)
    spec.system = mapping.get("system") or ("system" if "system" in present else None)
    if spec.messages is None:
        spec.history = mapping.get("history") or ("history" if "history" in present else None)

    before = len(report.problems)
    for key, col in mapping.items():
        if col not in present:
            report.add(first_row, col, f"column '{_show(col)}' (given for {key}) does not exist; {hint}")
    if len(report.problems) > before:
        return None
    if spec.messages is None and spec.prompt is None:
        what = f"no prompt column for the {layout.name} layout ('{layout.prompt}')" if layout else "no known layout"
        report.add(first_row, layout.prompt if layout else "prompt", f"{what}; {hint}")
        return None
    if spec.messages is None and spec.response is None and require_response:
        if layout is not None and layout.response is None:
            report.add(first_row, "response", f"the {layout.name} layout has prompts only, no reference "
                                              "responses; load it with require_response=False")
        else:
            name = layout.response if layout and layout.response else "response"
            report.add(first_row, name, f"no response column ('{name}'); {hint}")
        return None
    return spec


def _convert_row(report: _Report, num: int, row: dict, spec: _Spec, require_response: bool) -> Example | None:
    def text(col: str | None, what: str, required: bool) -> str:
        if col is None:
            return ""
        value = row.get(col, _MISSING)
        if value is _MISSING or value is None:
            if required:
                report.add(num, col, f"{what} is {'missing' if value is _MISSING else 'null'}")
            return ""
        return _check_text(report, num, col, value, what, required)

    ex_id = _check_id(report, num, spec.id, row.get(spec.id, _MISSING)) if spec.id else str(num)
    system = text(spec.system, "system prompt", required=False) or None
    if spec.messages:
        parsed = _parse_chat(report, num, spec.messages, row.get(spec.messages, _MISSING), require_response)
        if parsed is None:
            return None
        chat_system, history, instruction, response = parsed
        return Example(ex_id, instruction, response, system=chat_system or system, history=history, row=num)
    instruction = text(spec.prompt, "prompt", required=True)
    response = text(spec.response, "response", required=require_response)
    if spec.layout == "gsm8k":  # "<<48/2=24>>" annotations and "#### 72" into plain text (see gsm8k.py)
        response = normalize_gsm8k_answer(response)
    inp = text(spec.input, "input", required=False)
    history = _parse_history(report, num, spec.history, row.get(spec.history)) if spec.history else []
    return Example(ex_id, instruction, response, input=inp, system=system, history=history or [], row=num)


def _check_text(report: _Report, num: int, field: str, value: Any, what: str, required: bool) -> str:
    if not isinstance(value, str):
        # GSM8K-like integer answers are refused, not str()-ed: a silent conversion would hide a
        # file that was built differently from what the user thinks.
        tip = " (write numbers as strings)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        report.add(num, field, f"{what} must be text, got {_kind(value)} {_show(repr(value))}{tip}")
        return ""
    if _BAD_UTF8.search(value):
        report.add(num, field, f"{what} contains bytes that are not valid UTF-8: '{_show(value)}'")
        return ""
    if required and not value.strip():
        report.add(num, field, f"{what} is {'empty' if not value else 'whitespace only'}")
    return value


def _check_id(report: _Report, num: int, field: str, value: Any) -> str:
    if value is _MISSING or value is None:
        report.add(num, field, "id is missing (other rows have one)" if value is _MISSING else "id is null")
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        report.add(num, field, f"id must be a string or integer, got {_kind(value)}")
    elif isinstance(value, str) and not value.strip():
        report.add(num, field, "id is empty")
    elif isinstance(value, str) and _BAD_UTF8.search(value):
        report.add(num, field, f"id contains bytes that are not valid UTF-8: '{_show(value)}'")
    else:
        return str(value)
    return str(num)


def _parse_chat(
    report: _Report, num: int, col: str, value: Any, require_response: bool
) -> tuple[str | None, list[dict], str, str] | None:
    """Optional system, then user/assistant alternating, ending with assistant (or with user when
    responses are not required). Returns (system, history, last user text, last assistant text)."""
    if value is _MISSING or value is None:
        report.add(num, col, "conversation is missing")
        return None
    if not isinstance(value, list) or not value:
        report.add(num, col, f"expected a non-empty list of turns, got {_kind(value)}")
        return None
    before = len(report.problems)
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(value):
        where = f"{col}[{i}]"
        if not isinstance(turn, dict):
            report.add(num, where, f"turn must be an object, got {_kind(turn)}")
            continue
        raw_role = turn.get("role", turn.get("from"))
        role = ROLES.get(raw_role.lower()) if isinstance(raw_role, str) else None
        if role is None:
            what = "missing (expected 'role' or 'from')" if raw_role is None else f"unknown: {_show(repr(raw_role))}"
            report.add(num, f"{where}.role", f"role {what}; use system/user/assistant or system/human/gpt")
            continue
        key = "content" if "content" in turn or "role" in turn else "value"
        # The final assistant turn is the reference response: optional when responses are.
        required = not (i == len(value) - 1 and role == "assistant" and not require_response)
        if turn.get(key) is None:
            if required:
                report.add(num, f"{where}.{key}", "turn content is missing")
            turns.append((role, ""))
            continue
        turns.append((role, _check_text(report, num, f"{where}.{key}", turn[key], f"{role} turn", required)))
    if len(report.problems) > before:
        return None

    system = (turns.pop(0)[1] or None) if turns[0][0] == "system" else None
    offset = len(value) - len(turns)  # index shift from a leading system turn
    for i, (role, _) in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            after = turns[i - 1][0] if i else ("system" if offset else "the start")
            article = "a" if expected == "user" else "an"
            report.add(num, f"{col}[{i + offset}].role", f"expected {article} {expected} turn after {after}, "
                                                        f"got {role}; {CHAT_ORDER}")
            return None
    if not turns:
        report.add(num, col, "conversation has no user turn")
        return None
    if turns[-1][0] == "user":
        if require_response:
            report.add(num, col, "conversation must end with an assistant turn (the reference response)")
            return None
        turns.append(("assistant", ""))
    history = [{"role": r, "content": c} for r, c in turns[:-2]]
    return system, history, turns[-2][1], turns[-1][1]


def _parse_history(report: _Report, num: int, col: str, value: Any) -> list[dict] | None:
    """Earlier turns before a row's prompt: user/assistant alternating, from user to assistant, as
    chat turns (role/content or from/value). Missing, null or [] means no history."""
    if value is None or value == []:
        return []
    parsed = _parse_chat(report, num, col, value, require_response=True)
    if parsed is None:
        return None
    system, history, user, assistant = parsed
    if system is not None:
        report.add(num, f"{col}[0].role", "history cannot hold a system turn; put it in the system column")
        return None
    return history + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(text: str, limit: int = 60) -> str:
    """User text made safe to print: invalid bytes as \\xNN (unpaired surrogates as \\uXXXX), long values cut."""
    def escape(m: re.Match) -> str:
        code = ord(m[0])
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    text = _BAD_UTF8.sub(escape, text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
