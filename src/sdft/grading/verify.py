"""Checks on model replies: final math answers, Python function calls, code blocks, ban phrases,
loops, and (through sdft.grading.steps) the arithmetic of worked answers.

`check` is the SDFT distillation filter: a rewritten (distilled) response is kept only if
it passes, otherwise the original reference response is used; `status` adds whether the check
could compare it with the reference at all. The same helpers score replies at evaluation time.
Everything here is a pure function of strings; no model.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from collections import Counter
from fractions import Fraction
from typing import Any

from math_verify import parse, verify

from sdft.grading.steps import wrong_steps

# Phrases that show the model talking about the distillation prompt instead of answering.
BAN_PHRASES: tuple[str, ...] = (
    "reference answer",
    "your response",
    "my response",
    "your own response",
    "now it's your turn",
)
# Only at the very start: "Your turn" there means the model handed the task back.
_BANNED_START = re.compile(r"your turn\b")

REJECT_REASONS: tuple[str, ...] = (
    "empty",
    "ban_phrase",
    "no_answer",
    "answer_mismatch",
    "no_call",
    "call_mismatch",
    "no_code_block",
    "wrong_step",  # math: an equation in the reply's work does not hold (see sdft.grading.steps)
    "repetition",  # a line or a long run of words repeated: the model looped
    "truncated",  # the reply hit the token limit before it ended
)
# What became of a row: its rewrite kept after checking it against the reference, kept without that
# check (the reference holds no answer or call to compare with), or replaced by the reference.
STATUSES: tuple[str, ...] = ("accepted", "accepted_unverified", "rejected")

_TASKS = ("math", "function", "code", "general")


# -----------------------------------------------------------------------------
# ban phrases


def _normalize_prose(text: str) -> str:
    text = text.lower()
    for quote in ("\u2019", "\u2018", "\u02bc"):  # curly and modifier apostrophes
        text = text.replace(quote, "'")
    return " ".join(text.split())  # so a line break inside a phrase still matches


def find_ban_phrase(text: str) -> str | None:
    """The first banned phrase (as spelled in BAN_PHRASES) found in `text`, or None."""
    norm = _normalize_prose(text)
    for phrase in BAN_PHRASES:
        if phrase in norm:
            return phrase
    if _BANNED_START.match(norm):
        return "your turn"
    return None


# -----------------------------------------------------------------------------
# math answers

# A number as written in a reply: optional sign, thousands commas, decimals, a/b, or \frac{a}{b}.
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER = re.compile(
    r"\\[dt]?frac\{\s*-?\d+\s*\}\{\s*\d+\s*\}"
    r"|(?<![\w.])-?" + _NUM + r"(?:/\d+(?!\d|\.\d))?"
)


def _clean_number(s: str) -> str:
    return s.replace(",", "") if not s.startswith("\\") else s.replace(" ", "")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


# "#### 72" alone on its line: GSM8K's answer line (a Markdown heading such as "#### Step 2" is not one)
_GSM8K_LINE = re.compile(r"^[ \t]*####[ \t]*\$?[ \t]*(" + _NUMBER.pattern + r")[ \t]*%?[ \t]*\.?[ \t]*$", re.MULTILINE)
# "The answer is: $1,234.50", "the final answer is **18**", "answer is \boxed{7}": the number right after
_ANSWER_NUMBER = re.compile(
    r"answer is[\s:*$(\\]*(?:boxed\{|\\\()?\s*\\?\$?\s*(" + _NUMBER.pattern + r")", re.IGNORECASE
)
# inside \boxed{}: "18 \text{ dollars}", "\$1,000", "25\%" -> the number
_BOXED_NUMBER = re.compile(r"\\?\$?\s*(" + _NUMBER.pattern + r")(?:\s*(?:\\?%|\\text\{[^{}]*\}|[A-Za-z ]+))?\.?")


def extract_math_answer(text: str) -> str | None:
    """The final answer of a math reply, e.g. '1234.50' from 'The answer is: $1,234.50.'.

    In order: the last GSM8K answer line ('#### N' alone on a line), the last 'The answer is N',
    the last \\boxed{..}, then the last number anywhere. Thousands separators, '$' and units are
    dropped, so answers compare by value. None when the text holds no number.
    """
    lines = _GSM8K_LINE.findall(text)
    if lines:
        return _clean_number(lines[-1])
    said = _ANSWER_NUMBER.findall(text)
    if said:
        return _clean_number(said[-1])
    boxed = _last_boxed(text)
    if boxed is not None and re.search(r"\d", boxed):
        boxed = boxed.strip().strip("$").strip().rstrip(".")
        m = _BOXED_NUMBER.fullmatch(boxed)
        return _clean_number(m[1]) if m else boxed
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number ('1,000', '$3.50', '1/2', '\\frac{1}{2}'), else None."""
    s = s.strip().replace("\\$", "").strip("$ ").rstrip(".").replace(",", "")
    m = re.fullmatch(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}", s)
    if m:
        s = f"{m[1]}/{m[2]}"
    # short exponents only: Fraction("1e99999999") would build a 100-million-digit int
    if len(s) > 100 or not re.fullmatch(r"[-+]?[\d.]+(?:[eE][-+]?\d{1,3})?(?:/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _as_latex(s: str) -> str:
    # math_verify only reads LaTeX such as \sqrt{4} inside math delimiters
    return s if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"


def math_answers_equal(pred: str | None, ref: str | None) -> bool:
    """Whether two final answers are mathematically equal ('42' == '42.0', '1/2' == '0.5').

    Plain numbers are compared exactly (to 6 decimals, like math_verify's default rounding);
    anything else goes through math_verify. Never raises.
    """
    if pred is None or ref is None:
        return False
    a, b = _as_number(pred), _as_number(ref)
    if a is not None and b is not None:
        return round(a, 6) == round(b, 6)
    # math_verify bounds sympy with signal.alarm, which only works in the main thread;
    # elsewhere an expression like 9**9**9**9 could hang, so off it we stop at plain numbers.
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        gold = parse(_as_latex(ref), parsing_timeout=1)
        target = parse(_as_latex(pred), parsing_timeout=1)
        return bool(gold and target and verify(gold, target, timeout_seconds=1))
    except Exception:
        return False


# -----------------------------------------------------------------------------
# code blocks

# ```lang\n ... ``` ; a block left open at the end (a reply cut off mid-code) still counts.
_FENCE = re.compile(r"```[ \t]*([^\n`]*)\n(.*?)(?:```|\Z)", re.DOTALL)


def has_code_block(text: str) -> bool:
    """Whether `text` holds a fenced ``` code block with non-empty content."""
    return any(m.group(2).strip() for m in _FENCE.finditer(text))


def extract_code(text: str) -> str:
    """The first fenced code block's content without its language tag, else `text` itself."""
    for m in _FENCE.finditer(text):
        if m.group(2).strip():
            return m.group(2).lstrip("\n").rstrip()
    return text


# -----------------------------------------------------------------------------
# function calls

_CALL_START = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(")
_MAX_CALL_CHARS = 2_000  # bounds the paren scan; real calls are far shorter


def _parse_call_expr(src: str) -> ast.Call | None:
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes inside a reply's strings
            warnings.simplefilter("ignore")
            node = ast.parse(src.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return node if isinstance(node, ast.Call) else None


def _closing_paren(text: str, open_at: int) -> int | None:
    """Index just past the paren matching text[open_at], skipping string literals."""
    depth, i, end = 0, open_at, min(len(text), open_at + _MAX_CALL_CHARS)
    while i < end:
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c in "'\"":
            close = text.find(c, i + 1)
            while close > 0 and text[close - 1] == "\\":
                close = text.find(c, close + 1)
            if close < 0:
                return None
            i = close
        i += 1
    return None


def extract_calls(text: str) -> list[ast.Call]:
    """Every parseable Python call in a reply, in order of appearance, without duplicates.

    Tries the whole text, each fenced code block, each line, and each `dotted.name(...)`
    substring (so calls nested in arguments or quoted in prose are found too).
    """
    candidates: list[tuple[int, str]] = [(0, text)]
    candidates += [(m.start(2), m.group(2)) for m in _FENCE.finditer(text)]
    candidates += [(m.start(), m.group()) for m in re.finditer(r"[^\n]+", text)]
    for m in _CALL_START.finditer(text):
        end = _closing_paren(text, m.end() - 1)
        if end is not None:
            candidates.append((m.start(), text[m.start() : end]))

    found: dict[str, tuple[int, ast.Call]] = {}
    for offset, src in candidates:
        call = _parse_call_expr(src)
        if call is None:
            continue
        pos = offset + len(src) - len(src.lstrip())
        key = ast.dump(call)
        if key not in found or pos < found[key][0]:
            found[key] = (pos, call)
    return [call for _, call in sorted(found.values(), key=lambda pc: pc[0])]


def parse_call(text: str) -> ast.Call | None:
    """The reference call of a row, e.g. "pyarrow.Timestamp(unit='s')", or None if it isn't one."""
    return _parse_call_expr(text.strip().strip("`"))


def _func_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_func_name(func.value)}.{func.attr}"
    return ast.dump(func)


def _canon(v: Any) -> Any:
    """A hashable key for a literal value; bool stays apart from int, 1 == 1.0 as in Python."""
    if v is None or isinstance(v, (bool, str, bytes)):
        return (type(v).__name__, v)
    if isinstance(v, (int, float, complex)):
        return ("num", v)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_canon(x) for x in v))
    if isinstance(v, (set, frozenset)):
        return ("set", frozenset(_canon(x) for x in v))
    if isinstance(v, dict):
        return ("dict", frozenset((_canon(k), _canon(x)) for k, x in v.items()))
    return ("repr", repr(v))


def _value(node: ast.expr) -> Any:
    """Argument value as a comparable key: its literal value if it has one, else its AST."""
    try:
        return _canon(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return ("ast", ast.dump(node))


def _args(call: ast.Call) -> tuple[str, list, dict]:
    pos = [_value(a) for a in call.args]
    # `**kw` has no name; key it by its expression so two identical ones still match
    kw = {k.arg or "**" + ast.dump(k.value): _value(k.value) for k in call.keywords}
    return _func_name(call.func), pos, kw


def calls_equal(a: ast.Call, b: ast.Call) -> bool:
    """Same dotted function, same positional args, same keyword args in any order."""
    return _args(a) == _args(b)


def calls_match_loosely(a: ast.Call, b: ast.Call, signature_hint: list[str] | None = None) -> bool:
    """Equal up to positional-vs-keyword form: f(1, y=2) matches f(x=1, y=2).

    With `signature_hint` (parameter names in order) positional args are bound to names and
    the calls compared by name. Without it, args at the same position must agree, shared
    keywords must agree, and one call's extra positional args are matched, in order, to the
    other's keywords that it does not name. So the argument values match one to one.
    """
    fa, pa, ka = _args(a)
    fb, pb, kb = _args(b)
    if fa != fb or len(pa) + len(ka) != len(pb) + len(kb):
        return False
    if signature_hint is not None:
        bound_a, bound_b = _bind(pa, ka, signature_hint), _bind(pb, kb, signature_hint)
        if bound_a is not None and bound_b is not None:
            return bound_a == bound_b
    n = min(len(pa), len(pb))
    if pa[:n] != pb[:n] or any(ka[k] != kb[k] for k in ka.keys() & kb.keys()):
        return False
    only_a = [v for k, v in ka.items() if k not in kb]
    only_b = [v for k, v in kb.items() if k not in ka]
    return pa[n:] == only_b and pb[n:] == only_a


def _bind(pos: list, kw: dict, names: list[str]) -> dict | None:
    if len(pos) > len(names) or any(name in kw for name in names[: len(pos)]):
        return None  # can't bind: fall back to matching by position
    return {**dict(zip(names, pos)), **kw}


# -----------------------------------------------------------------------------
# repetition

REPEAT_TIMES = 3  # a line, or a run of words, seen this often is a loop, not a list
# words in a run that may not recur REPEAT_TIMES times anywhere: long enough that templated lists
# ("Day 1: Start with a 5-minute warm-up, ...") pass, while a loop of any period is caught once it has
# gone on for a few times this many words
REPEAT_NGRAM = 20
_MIN_LINE_CHARS = 16  # shorter lines ("}", "return x", "Step 1:") legitimately recur
_MIN_LINE_WORDS = 3
# one short unit ("ha", "ab1") repeated over 80+ characters with no spaces to count words by
_CHAR_LOOP = re.compile(r"(\S{1,8}?)\1{9,}")


def find_repetition(text: str) -> str | None:
    """The repeated line or run of words that shows the model looped, else None.

    A loop is: a non-trivial line written REPEAT_TIMES times; a run of REPEAT_NGRAM words written
    REPEAT_TIMES times (so "the the the ..." too); or 80+ characters repeating a short unit with
    letters or digits ("hahaha...", but not a rule of dots or dashes). A song's chorus written three
    times counts too: such a row keeps its reference, which costs little.
    """
    lines = Counter(" ".join(line.split()).lower() for line in text.splitlines())
    for line, n in lines.items():
        if n >= REPEAT_TIMES and len(line) >= _MIN_LINE_CHARS and len(line.split()) >= _MIN_LINE_WORDS:
            return line
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + REPEAT_NGRAM]) for i in range(len(words) - REPEAT_NGRAM + 1))
    if grams and (top := grams.most_common(1)[0])[1] >= REPEAT_TIMES:
        return " ".join(top[0])
    loop = next((m for m in _CHAR_LOOP.finditer(text) if len(m[0]) >= 80 and re.search(r"\w", m[1])), None)
    return loop[0] if loop else None


# -----------------------------------------------------------------------------
# the distillation filter


def check(task: str, distilled: str, reference: str, truncated: bool = False) -> str | None:
    """None if the distilled reply may replace the reference, else a code from REJECT_REASONS.

    Every task: not empty, no ban phrase, no repetition, not cut off at the token limit
    (`truncated`, which only the caller knows). math: the final answers must agree and every
    equation the reply writes must hold. function: some call in the reply must equal the
    reference call (checked only when the reference parses as one). code: the reply must keep a
    fenced code block.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {_TASKS}")
    if not distilled or not distilled.strip():
        return "empty"
    if find_ban_phrase(distilled) is not None:
        return "ban_phrase"
    # before "truncated": a looping reply usually runs into the limit, and the loop is the cause
    if find_repetition(distilled) is not None:
        return "repetition"
    if truncated:
        return "truncated"
    if task == "math":
        pred = extract_math_answer(distilled)
        if pred is None:
            return "no_answer"
        ref = extract_math_answer(reference)
        # a reference without a final answer can't be checked against (see `verifiable`)
        if ref is not None and not math_answers_equal(pred, ref):
            return "answer_mismatch"
        if wrong_steps(distilled):
            return "wrong_step"
    elif task == "function":
        ref_call = parse_call(reference)
        if ref_call is None:
            return None
        calls = extract_calls(distilled)
        if not calls:
            return "no_call"
        if not any(calls_equal(c, ref_call) for c in calls):
            return "call_mismatch"
    elif task == "code":
        if not has_code_block(distilled):
            return "no_code_block"
    return None


def verifiable(task: str, reference: str) -> bool:
    """Whether `check` can compare a reply with this reference: a math reference with a final
    answer, a function reference that parses as a call. code and general compare nothing with the
    reference (their checks are the whole test), so they count as verifiable."""
    if task == "math":
        return extract_math_answer(reference) is not None
    if task == "function":
        return parse_call(reference) is not None
    return True


def status(task: str, distilled: str, reference: str, truncated: bool = False) -> tuple[str, str | None]:
    """(status from STATUSES, reject reason or None) for one distilled reply."""
    reason = check(task, distilled, reference, truncated=truncated)
    if reason is not None:
        return "rejected", reason
    return ("accepted" if verifiable(task, reference) else "accepted_unverified"), None
