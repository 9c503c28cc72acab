"""Arithmetic steps in a worked math answer ("48/2 = 24", "100 - 50 - 30 - 15 = 5") and whether they hold.

A distilled reply can reach the right final answer through wrong work; training on it teaches the
wrong work. `wrong_steps` finds every equation written in the reply whose sides it can read without
guessing and returns those that do not hold. Anything ambiguous (a fraction of a unit, "2 dozen",
"3:30", "x" as a variable, a number glued to a word, an operator it doesn't know) is skipped, not
judged: the check must never reject correct human work.

Expressions are parsed with `ast` and evaluated by walking the tree: numbers and + - * / and
parentheses only, never `eval`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

# Words after a number that scale it or relate it to another quantity: "2 dozen", "20% of 50",
# "3 times 4". An expression next to one of these is only part of what the author computed.
_MULTIPLIERS = frozenset(
    "dozen dozens hundred hundreds thousand thousands million millions billion billions trillion "
    "k half halves quarter quarters third thirds twice double triple score pair pairs".split()
)
_CONNECTORS = frozenset("of times by per than plus minus over into divided multiplied and or from".split())
# Words that end a number's phrase rather than name its unit: "24 clips in May", "$106 on T-shirts".
_NOT_UNITS = _CONNECTORS | frozenset(
    "on in at for to with each a an the is are was were be so but then which that this it its he she they "
    "we you i his her their if when because since as".split()
)
_TIMES = frozenset({"x", "X", "*", "×", "·"})
_DIVIDE = frozenset({"/", "÷"})
_MAX_SPAN = 40  # tokens either side of "=" that are looked at; real steps are far shorter

# Rewrites applied before tokenising: LaTeX and typography into plain arithmetic.
_SUBS = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"<<[^<>\n]*>>", ""),  # GSM8K calculator annotations
        (r"\\[dt]?frac\{\s*(\d+(?:\.\d+)?)\s*\}\{\s*(\d+(?:\.\d+)?)\s*\}", r"(\1/\2)"),
        (r"\\times|\\cdot", " * "),
        (r"\\div", " / "),
        (r"\\[$%]", lambda m: m[0][1]),
        (r"\\[()\[\]]|\\left|\\right|\\,|\\!|\\text\{|\\mathrm\{", " "),
        (r"\*\*|__", " "),  # Markdown bold, not powers
        (r"(?m)^[ \t]*(?:[-*+•]|\d+[.)])[ \t]+", ""),  # list bullets and item numbers
        ("[\u2212\u2013]", "-"),  # minus sign, en dash
        ("\u00a0|\u202f", " "),
    )
)
_TOKEN = re.compile(
    r"(?P<num>\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?%?|\$?\.\d+%?)"
    r"|(?P<word>[A-Za-z]+(?:'[a-z]+)?)"
    r"|(?P<op>[-+*/×÷·])"
    r"|(?P<paren>[()])"
    r"|(?P<eq>=)"
    r"|(?P<other>\S)"
)


class _Tok(NamedTuple):  # a tuple: lines are tokenised often and this is the hot path
    kind: str  # num word op paren eq other
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Expr:
    """A parsed side of an equation: Python source under both readings of '%', and what it held."""

    sources: tuple[str, ...]  # "5/100" and "5" for "5%"; one entry when there is no '%'
    first: str  # source of its first number (with a leading minus), for chains like "2*3 = 6 + 1 = 7"
    decimals: int  # most decimal places among its numbers: the precision it was written to
    has_op: bool
    units: frozenset[str]  # words after its numbers ("hour" for "5 hours"), "dollar" for "$5"
    # "50 + 20%" (20% of what?) or "28 / 1/5" (divided by a fifth?): read more than one way
    ambiguous: bool
    signed: bool  # starts with a minus sign


@dataclass(frozen=True)
class Step:
    text: str  # the equation as written
    left: float
    right: float


def wrong_steps(text: str) -> list[Step]:
    """Every readable equation in `text` that does not hold (empty when all hold or none is readable)."""
    for pattern, repl in _SUBS:
        text = pattern.sub(repl, text)
    wrong = []
    for line in text.split("\n"):
        if "=" in line:
            wrong += _line_steps(line)
    return wrong


def _line_steps(line: str) -> list[Step]:
    toks = [_Tok(m.lastgroup, m[0], m.start(), m.end()) for m in _TOKEN.finditer(line)]
    eqs = [i for i, t in enumerate(toks) if t.kind == "eq"]
    inside = _inside(toks)
    wrong = []
    for k, e in enumerate(eqs):
        lo = eqs[k - 1] + 1 if k else 0
        hi = eqs[k + 1] if k + 1 < len(eqs) else len(toks)
        left = _longest(toks, inside, range(max(lo, e - _MAX_SPAN), e), e, from_left=False)
        right = _longest(toks, inside, range(e + 1, min(hi, e + 1 + _MAX_SPAN)), e + 1, from_left=True)
        if left is None or right is None:
            continue
        (ls, lexpr), (re_, rexpr) = left, right
        if not lexpr.has_op or not _clean_before(toks, ls, line, lexpr.signed) or not _clean_after(toks, re_, line):
            continue
        bad = _mismatch(lexpr, rexpr)
        if bad is not None:
            wrong.append(Step(line[toks[ls].start: toks[re_ - 1].end].strip(), *bad))
    return wrong


def _longest(toks: list[_Tok], inside: list[bool], span: range, anchor: int,
             from_left: bool) -> tuple[int, _Expr] | None:
    """The longest expression ending just before `anchor` (from_left False) or starting at it (True).

    Returns (start, expr) for the left side and (end, expr) for the right side. An expression never
    spans punctuation or prose, so the search stops there.
    """
    if from_left:
        stop = next((j for j in span if not inside[j]), span.stop)
        for end in range(stop, anchor, -1):
            if (expr := _parse(tuple(toks[anchor:end]))) is not None:
                return end, expr
        return None
    begin = next((j + 1 for j in reversed(span) if not inside[j]), span.start)
    for start in range(begin, anchor):
        if toks[start].text in ("(", "-") or toks[start].kind == "num":
            if (expr := _parse(tuple(toks[start:anchor]))) is not None:
                return start, expr
    return None


def _inside(toks: list[_Tok]) -> list[bool]:
    """Which tokens an expression may hold: numbers, operators, parentheses, 'x', and up to two
    unit words right after a number. The search for each side of an '=' stops at the others."""
    out, units = [], None  # units: unit words seen since the last number, None when not after one
    for t in toks:
        if t.kind == "num":
            ok, units = True, 0
        elif t.kind in ("op", "paren") or t.text in _TIMES:
            ok, units = True, None
        elif (t.kind == "word" and units is not None and units < 2
              and t.text.lower() not in _NOT_UNITS | _MULTIPLIERS):
            ok, units = True, units + 1
        else:
            ok, units = False, None
        out.append(ok)
    return out


def _clean_before(toks: list[_Tok], start: int, line: str, signed: bool = False) -> bool:
    """Whether what precedes the left side ends it: the expression is not part of a longer one."""
    if start == 0:
        return True
    p, first = toks[start - 1], toks[start]
    if p.kind == "eq":
        return True
    if p.kind == "paren" and p.text == "(":  # "($100 * 10/100 = $10)", but not "$100+($100*0.1 = $10"
        return _clean_before(toks, start - 1, line)
    if p.kind == "word":
        # "M - 4 = 2": a minus after a word is a subtraction from something unread
        return (not signed and p.end < first.start
                and p.text.lower() not in _CONNECTORS | _MULTIPLIERS | _TIMES)
    if p.kind == "other":
        ends_sentence = (p.start > 0 and not line[p.start - 1].isspace()
                         and p.end < len(line) and line[p.end].isspace())
        # "14, 400 / 80": a comma after a number may be a thousands separator
        after_number = start >= 2 and toks[start - 2].kind == "num"
        return p.text in "$\"'“”‘’[{" or (p.text in ",;:.!?" and ends_sentence and not after_number)
    return False  # a number, an operator, a closing paren


def _clean_after(toks: list[_Tok], end: int, line: str) -> bool:
    """Whether what follows the right side ends it."""
    if end == len(toks):
        return True
    q, last = toks[end], toks[end - 1]
    if q.kind == "eq" or (q.kind == "paren" and q.text == ")"):
        return True
    if q.kind == "word":
        return q.text.lower() not in _MULTIPLIERS | {"x"} and not (q.start == last.end and last.kind == "num")
    if q.kind == "other":
        followed_by_space = q.end >= len(line) or line[q.end].isspace()
        if q.text == "." and line.startswith("..", q.start):
            return False  # "8.333...": the written result is cut short
        return q.text in ".!?$\"'“”‘’]}" or (q.text in ",;:" and followed_by_space)
    return False


# ---------------------------------------------------------------- parsing


class _Fail(Exception):
    pass


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'x'|'/') factor)* ;
    factor := '-' factor (only where a sign may stand) | '(' expr ')' | NUMBER unit-word{0,2}

    Each side is kept as a list of Python sources, one per reading of its '%' signs.
    """

    def __init__(self, toks: tuple[_Tok, ...]):
        self.toks, self.i = toks, 0
        self.has_op = self.percent = self.percent_sum = self.div_chain = False
        self.units: set[str] = set()
        self.decimals = 0
        self.first: str | None = None

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def expr(self) -> list[str]:
        parts = self.term(sign=True)
        while (t := self.peek()) is not None and t.kind == "op" and t.text in "+-":
            self.i += 1
            self.has_op = True
            pct_before = self.percent
            rhs = self.term(sign=False)
            self.percent_sum |= pct_before or self.percent
            parts = [f"({a}){t.text}({b})" for a in parts for b in rhs]
        return parts

    def term(self, sign: bool) -> list[str]:
        parts = self.factor(sign)
        divided = False
        while (t := self.peek()) is not None and (t.text in _TIMES or t.text in _DIVIDE):
            self.i += 1
            self.has_op = True
            op = "/" if t.text in _DIVIDE else "*"
            self.div_chain |= divided and op == "/"  # "28 / 1/5": divided by a fraction, or not?
            divided = op == "/"
            rhs = self.factor(sign=False)
            parts = [f"({a}){op}({b})" for a in parts for b in rhs]
        return parts

    def factor(self, sign: bool) -> list[str]:
        t = self.peek()
        if t is None:
            raise _Fail
        if t.kind == "op" and t.text == "-" and sign:  # "5 * -3", "--5" and "+5" are left unread
            self.i += 1
            had_first = self.first is not None
            parts = self.factor(sign=False)
            if not had_first:
                self.first = f"-({self.first})"
            return [f"-({p})" for p in parts]
        if t.kind == "paren" and t.text == "(":
            self.i += 1
            parts = self.expr()
            close = self.peek()
            if close is None or close.text != ")":
                raise _Fail
            self.i += 1
            return parts
        if t.kind != "num":
            raise _Fail
        self.i += 1
        digits = t.text.lstrip("$").rstrip("%").replace(",", "")
        if "." in digits:
            self.decimals = max(self.decimals, len(digits.split(".")[1]))
        if t.text.startswith("$"):
            self.units.add("dollar")
        percent = t.text.endswith("%")
        # unit words: "5 hours", "3 red apples"; a multiplier or connector ends the number's phrase
        for _ in range(2):
            w = self.peek()
            if w is None or w.kind != "word":
                break
            low = w.text.lower()
            if low in _MULTIPLIERS or (len(low) == 1 and w.start == t.end):
                raise _Fail  # "2 dozen"; "5x", "1.2Y": a variable, not a unit
            if low in _NOT_UNITS or w.text in _TIMES:
                break
            if low in ("percent", "pct"):
                percent = True
            else:
                self.units.add(low.rstrip("s"))
            self.i += 1
        if self.first is None:
            self.first = digits
        if percent:
            self.percent = True
            return [f"({digits}/100)", digits]
        return [digits]


def _parse(toks: tuple[_Tok, ...]) -> _Expr | None:
    if not toks or toks[0].kind == "word":
        return None
    p = _Parser(toks)
    try:
        sources = p.expr()
    except _Fail:
        return None
    if p.i != len(toks) or p.first is None:
        return None
    return _Expr(tuple(dict.fromkeys(sources)), p.first, p.decimals, p.has_op, frozenset(p.units),
                 ambiguous=p.percent_sum or p.div_chain, signed=toks[0].text == "-")


@lru_cache(maxsize=4096)  # the same small sums recur from line to line
def _value(source: str) -> float | None:
    """Value of an arithmetic-only Python expression; None for anything else or a division by zero."""
    try:
        return _walk(ast.parse(source, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, _Fail):
        return None


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _walk(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Div):
            return a / b
        return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
    raise _Fail


def _close(a: float, b: float, decimals: int) -> bool:
    """Equal up to the precision the result was written to ('10/3 = 3.33', '2/3 = 0.66', '7/3 = 2')."""
    return abs(a - b) < 10.0 ** -decimals * (1 - 1e-9)  # off by one unit of the last digit: wrong


def _mismatch(left: _Expr, right: _Expr) -> tuple[float, float] | None:
    """(left, right) values when the equation certainly fails, else None (it holds or can't be judged)."""
    lvals = [v for s in left.sources if (v := _value(s)) is not None]
    full = [v for s in right.sources if (v := _value(s)) is not None]
    first = _value(right.first)
    if not lvals or not full or abs(max(lvals, key=abs)) > 1e15:
        return None
    # The result may be the whole right side, or, in a running computation such as
    # "48/2 = 24 + 48 = 72", its first number (the next '=' checks the rest).
    rights = full + ([first] if first is not None else [])
    if any(_close(a, b, right.decimals) for a in lvals for b in rights):
        return None
    if left.ambiguous or right.ambiguous:
        return None
    # "1/2 hour = 30 minutes", "$2.50 - $2.24 = 26 cents", "4 pounds - 6 ounces = 58 ounces":
    # a unit conversion the numbers alone don't show
    if len(left.units - {"dollar"}) > 1 or (left.units - right.units and right.units - left.units):
        return None
    return lvals[0], full[0]
