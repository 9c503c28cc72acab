import ast
import json
import threading
import time

import pytest

from sdft.grading.verify import (
    BAN_PHRASES,
    REJECT_REASONS,
    STATUSES,
    calls_equal,
    calls_match_loosely,
    check,
    extract_calls,
    extract_code,
    extract_math_answer,
    find_ban_phrase,
    find_repetition,
    has_code_block,
    math_answers_equal,
    parse_call,
    status,
    verifiable,
)


def call(src: str) -> ast.Call:
    node = parse_call(src)
    assert node is not None, src
    return node


def names(calls: list[ast.Call]) -> list[str]:
    return [ast.unparse(c) for c in calls]


# -----------------------------------------------------------------------------
# ban phrases


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("Here is the Reference Answer rewritten.", "reference answer"),
        ("I hope YOUR RESPONSE is better.", "your response"),
        ("In my response I explain", "my response"),
        ("Compare with your own response", "your own response"),
        ("Now it’s your turn to try!", "now it's your turn"),  # curly apostrophe
        ("NOW IT'S YOUR TURN", "now it's your turn"),
        ("the reference\n  answer is", "reference answer"),  # split over a line break
        ("  Your turn: solve 2+2.", "your turn"),
        ("your turn", "your turn"),
    ],
)
def test_find_ban_phrase_hits(text, phrase):
    assert find_ban_phrase(text) == phrase


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",
        "It is your turn to pick a card.",  # "your turn" only counts at the very start
        "Your turnover was high this year.",
        "We refer to the answer key. Responses vary.",
        "",
    ],
)
def test_find_ban_phrase_misses(text):
    assert find_ban_phrase(text) is None


def test_ban_phrases_listed():
    assert "now it's your turn" in BAN_PHRASES and "reference answer" in BAN_PHRASES


# -----------------------------------------------------------------------------
# math answers


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("So 3 * 4 = 12.\n#### 1,000", "1000"),
        ("48/2 = 24 clips in May.\nThe answer is 72.", "72"),
        ("The answer is: $1,234.50.", "1234.50"),
        ("The answer is 5. Wait, I forgot the tax. The answer is 6.", "6"),
        ("The answer is -3", "-3"),
        ("The answer is 1/2.", "1/2"),
        ("The answer is \\frac{3}{4}.", "\\frac{3}{4}"),
        ("Thus $\\boxed{42}$ apples.", "42"),
        ("So \\boxed{\\frac{1}{2}} of it.", "\\frac{1}{2}"),
        ("\\boxed{1,000}", "1000"),
        ("She has 3 apples and 4 pears, 7 fruits in total", "7"),
        ("5-3 is two", "3"),  # the minus of a subtraction is not a sign
        ("It was -7 degrees.", "-7"),
        ("2 + 6 = 8. So the answer is eight.", "8"),  # no number after the phrase
    ],
)
def test_extract_math_answer(text, answer):
    assert extract_math_answer(text) == answer


@pytest.mark.parametrize("text", ["", "I don't know.", "The answer is: nothing", "\\boxed{A}"])
def test_extract_math_answer_none(text):
    assert extract_math_answer(text) is None


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("42", "42.0"),
        ("1/2", "0.5"),
        ("1,000", "1000"),
        ("$3.50", "3.5"),
        ("\\frac{1}{2}", "0.5"),
        ("-5", "-5.0"),
        ("1e3", "1000"),
        ("\\sqrt{4}", "2"),  # needs math_verify
        ("x+1", "1+x"),
        ("0.333333", "1/3"),  # 6 decimals, as math_verify rounds
    ],
)
def test_math_answers_equal(pred, ref):
    assert math_answers_equal(pred, ref)


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("42", "43"),
        ("0.5", "1/3"),
        ("\\sqrt{2}", "2"),
        ("x", "y"),
        ("", ""),
        (None, "1"),
        ("1", None),
        (None, None),
    ],
)
def test_math_answers_not_equal(pred, ref):
    assert not math_answers_equal(pred, ref)


def test_extracted_answer_with_commas_equals_plain():
    assert math_answers_equal(extract_math_answer("The answer is 1,000."), "1000")


@pytest.mark.parametrize(
    "weird",
    ["", "((((", "\\boxed{", "1/0", "\\frac{1}{0}", "nan", "inf", "\x00", "1e99999999", "{" * 300, "9" * 9999],
)
def test_math_weird_input_never_raises(weird):
    assert math_answers_equal(weird, "1") is False
    extract_math_answer(weird)


def test_math_answers_equal_bounded_time():
    start = time.monotonic()
    assert not math_answers_equal("9**9**9**9", "1")
    assert time.monotonic() - start < 10


def test_math_answers_equal_off_main_thread():
    # math_verify's signal-based timeout raises off the main thread; we must not.
    results, errors = [], []

    def work():
        try:
            results.append(
                (
                    math_answers_equal("42", "42.0"),
                    math_answers_equal("\\frac{1}{2}", "0.5"),
                    math_answers_equal("\\sqrt{4}", "2"),  # beyond plain numbers: no raise, no hang
                )
            )
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=30)
    assert not errors and results and results[0][:2] == (True, True)
    assert isinstance(results[0][2], bool)


# -----------------------------------------------------------------------------
# function calls


def test_parse_call():
    c = call("pyarrow.Timestamp(unit='s')")
    assert isinstance(c, ast.Call) and ast.unparse(c.func) == "pyarrow.Timestamp"
    assert parse_call("  `aws.s3.ls(bucket=\"b\")`\n") is not None


@pytest.mark.parametrize(
    "text",
    ["", "hello world", "x = f(1)", "f(", "pyarrow.nulls", "f(token=<session_token>)", "f(1); g(2)"],
)
def test_parse_call_rejects(text):
    assert parse_call(text) is None


def test_extract_calls_order_and_sources():
    reply = (
        "Use `aws.s3.ls(bucket=\"b\")` first.\n"
        "```python\n"
        "pyarrow.Timestamp(unit='s')\n"
        "pyarrow.Timestamp(unit='ms')\n"
        "```\n"
        "Then pyarrow.array([1, 2], type=pyarrow.int64()) and again aws.s3.ls(bucket='b')."
    )
    assert names(extract_calls(reply)) == [
        "aws.s3.ls(bucket='b')",  # listed once, though it appears twice
        "pyarrow.Timestamp(unit='s')",
        "pyarrow.Timestamp(unit='ms')",
        "pyarrow.array([1, 2], type=pyarrow.int64())",
        "pyarrow.int64()",  # nested calls count too
    ]


def test_extract_calls_multiline_and_parens_in_strings():
    reply = "```\nf(\n    a=1,\n    b='x)y',\n)\n```"
    assert names(extract_calls(reply)) == ["f(a=1, b='x)y')"]


def test_extract_calls_by_line():
    # not a dotted name, so only parsing the line as a whole finds it
    assert names(extract_calls("Try:\nmodels[0].predict(x=1)\nDone.")) == ["models[0].predict(x=1)"]


def test_extract_calls_by_code_block():
    reply = "Here:\n```python\nmodels[0].predict(\n    x=1,\n)\n```\nDone."
    assert names(extract_calls(reply)) == ["models[0].predict(x=1)"]


def test_extract_calls_whole_text():
    assert names(extract_calls("pyarrow.nulls(size=100)")) == ["pyarrow.nulls(size=100)"]
    assert names(extract_calls("models[0].predict(\n    x=1,\n)")) == ["models[0].predict(x=1)"]


@pytest.mark.parametrize("text", ["", "No call here.", "Call it (maybe) later", "f(1, 2"])
def test_extract_calls_none(text):
    assert extract_calls(text) == []


@pytest.mark.parametrize(
    "a, b",
    [
        ("f(x=1, y='s')", 'f(y="s", x=1)'),  # keyword order and quote style don't matter
        ("m.f(1, 'a', k=[1, 2])", "m.f(1, \"a\", k=[1,2])"),
        ("f(x=1)", "f(x=1.0)"),
        ("f(t=pyarrow.int64())", "f(t = pyarrow.int64( ))"),  # non-literals compared as AST
        ("f(**opts)", "f(**opts)"),
    ],
)
def test_calls_equal(a, b):
    assert calls_equal(call(a), call(b))


@pytest.mark.parametrize(
    "a, b",
    [
        ("f(x=1)", "f(x=2)"),
        ("f(x=1)", "g(x=1)"),
        ("m.f(x=1)", "n.f(x=1)"),
        ("f(x=1)", "f(y=1)"),
        ("f(x=1)", "f(x=1, y=2)"),
        ("f(1, 2)", "f(2, 1)"),
        ("f(1, 2)", "f(x=1, y=2)"),  # positional vs keyword: only a loose match
        ("f(x=True)", "f(x=1)"),
        ("f(x='1')", "f(x=1)"),
        ("f(x=(1, 2))", "f(x=[1, 2])"),
        ("f(t=a)", "f(t=b)"),
    ],
)
def test_calls_not_equal(a, b):
    assert not calls_equal(call(a), call(b))


@pytest.mark.parametrize(
    "a, b",
    [
        ("f(1, 2)", "f(x=1, y=2)"),
        ("f(x=1, y=2)", "f(1, 2)"),
        ("f(1, y=2)", "f(x=1, y=2)"),
        ("f(1, y=2)", "f(y=2, x=1)"),
        ("f(1, 2)", "f(1, y=2)"),
        ("f(x=1, y=2)", "f(y=2, x=1)"),  # equal calls match loosely too
    ],
)
def test_calls_match_loosely(a, b):
    assert calls_match_loosely(call(a), call(b))


@pytest.mark.parametrize(
    "a, b",
    [
        ("f(x=2, y=1)", "f(x=1, y=2)"),  # same values, wrong names
        ("f(2, 1)", "f(x=1, y=2)"),  # positional order must follow keyword order
        ("f(x=1, z=2)", "f(x=1, y=2)"),
        ("f(1)", "f(1, 2)"),
        ("f(1, 2)", "g(x=1, y=2)"),
        ("f(1, 3)", "f(x=1, y=2)"),
    ],
)
def test_calls_do_not_match_loosely(a, b):
    assert not calls_match_loosely(call(a), call(b))


def test_calls_match_loosely_with_signature():
    a, b = call("f(2, 1)"), call("f(x=1, y=2)")
    assert not calls_match_loosely(a, b)
    assert calls_match_loosely(a, b, signature_hint=["y", "x"])
    assert not calls_match_loosely(a, b, signature_hint=["x", "y"])


# -----------------------------------------------------------------------------
# code blocks


@pytest.mark.parametrize(
    "text, code",
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
        ("```\n  x = 1\n```", "  x = 1"),  # indentation kept
        ("```\n\n```\n```py\nfirst = 1\n```\n```\nsecond = 2\n```", "first = 1"),
        ("```python\nprint(1)", "print(1)"),  # reply cut off inside the block
    ],
)
def test_code_blocks(text, code):
    assert has_code_block(text)
    assert extract_code(text) == code


@pytest.mark.parametrize("text", ["no code", "use `x = 1` inline", "```\n   \n```", "```python\n```"])
def test_no_code_block(text):
    assert not has_code_block(text)
    assert extract_code(text) == text


# -----------------------------------------------------------------------------
# the filter

GSM_REF = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\nThe answer is 72."
FN_REF = "pyarrow.Timestamp(unit='s')"


@pytest.mark.parametrize(
    "task, distilled, reference, reason",
    [
        ("general", "   \n", "anything", "empty"),
        ("math", "", GSM_REF, "empty"),
        ("general", "As in the reference answer, Paris.", "Paris.", "ban_phrase"),
        ("math", "Now it’s your turn! The answer is 72.", GSM_REF, "ban_phrase"),
        ("code", "Your turn:\n```\nx = 1\n```", "```\nx = 1\n```", "ban_phrase"),
        ("math", "Half of 48 is 24, so 72 in all. The answer is 72.", GSM_REF, None),
        ("math", "She sold seventy-two.\n#### 72.0", GSM_REF, None),
        ("math", "24 + 48 = 73. The answer is 73.", GSM_REF, "answer_mismatch"),
        ("math", "I am not sure how to solve this.", GSM_REF, "no_answer"),
        ("math", "The answer is 4.", "No final answer here.", None),  # reference can't be checked
        ("function", "```\npyarrow.Timestamp(unit=\"s\")\n```\nThis makes the type.", FN_REF, None),
        ("function", "Sure! pyarrow.Timestamp(unit='ms'), pyarrow.Timestamp(unit='s')", FN_REF, None),
        ("function", "pyarrow.Timestamp('s')", FN_REF, "call_mismatch"),
        ("function", "pyarrow.Timestamp(unit='ms')", FN_REF, "call_mismatch"),
        ("function", "Use the Timestamp class with unit s.", FN_REF, "no_call"),
        ("function", "Just pass the session token.", "f(token=<session_token>)", None),
        ("function", "My response: f(token=1)", "f(token=<session_token>)", "ban_phrase"),
        ("code", "```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b): ...", None),
        ("code", "def add(a, b):\n    return a + b", "```\ndef add(a, b): ...\n```", "no_code_block"),
        ("general", "Paris is the capital of France.", "Paris.", None),
    ],
)
def test_check(task, distilled, reference, reason):
    assert check(task, distilled, reference) == reason
    assert reason is None or reason in REJECT_REASONS


def test_reject_reasons_complete():
    math = {"no_answer", "answer_mismatch", "wrong_step"}
    function = {"no_call", "call_mismatch"}
    every_task = {"empty", "ban_phrase", "repetition", "truncated"}
    assert set(REJECT_REASONS) == every_task | {"no_code_block"} | math | function


def test_check_unknown_task():
    with pytest.raises(ValueError):
        check("poetry", "a poem", "a poem")


# -----------------------------------------------------------------------------
# real data


def load(path):
    return json.loads(path.read_text())


def test_shared_openfunction(shared_data):
    rows = load(shared_data / "openfunction" / "openfunction_train.json")
    assert sum(parse_call(r["output"]) is not None for r in rows) >= 0.99 * len(rows)

    # The released distilled set was already filtered (rejected rewrites were swapped back for the
    # original), so nearly all of it should pass, and nearly none when paired with the wrong row.
    distilled = load(shared_data / "openfunction" / "reference_distilled_openfunction_llama2_7b_chat.json")
    outputs = [d["output"] for d in distilled]
    kept = sum(check("function", d, r["output"]) is None for d, r in zip(outputs, rows))
    assert kept >= 0.95 * len(rows)
    shifted = sum(check("function", d, r["output"]) is None for d, r in zip(outputs[1:], rows))
    assert shifted <= 0.01 * len(rows)


def test_shared_math(shared_data):
    gsm = load(shared_data / "gsm8k" / "gsm8k_train.json")
    finals = [r["answer"].rsplit("The answer is", 1)[1].strip(" .").replace(",", "") for r in gsm]
    assert [extract_math_answer(r["answer"]) for r in gsm] == finals
    mismatched = [check("math", a["answer"], b["answer"]) for a, b in zip(gsm[:500], gsm[1:501])]
    assert mismatched.count("answer_mismatch") >= 0.9 * len(mismatched)

    multiarith = load(shared_data / "multiarith" / "multiarith_test.json")
    assert all(extract_math_answer(r["output"]) == r["output"].split()[-1] for r in multiarith)


# -----------------------------------------------------------------------------
# final answers: which line counts, and numbers compared by value


@pytest.mark.parametrize(
    "text, value",
    [
        # a Markdown heading is not a GSM8K answer line
        ("#### Step 2\n7*6=42\nThe answer is 42.", "42"),
        ("#### 2. Add them up\n5 + 3 = 8", "8"),
        # GSM8K lines: alone on their line, the last one wins, after any other phrasing
        ("48+24 = 72\n#### 72", "72"),
        ("The answer is 5.\n#### 7", "7"),
        ("#### $1,000", "1000"),
        ("  ####  -12.5  \n", "-12.5"),
        # "The answer is": the last one with a number right after it
        ("The answer is 5. No wait, the answer is 6.", "6"),
        ("The answer is **18**.", "18"),
        ("The final answer is $\\boxed{18}$.", "18"),
        ("The answer is \\(42\\).", "42"),
        ("The answer is: $ 7", "7"),
        ("The answer is -3.5 hours.", "-3.5"),
        ("The answer is 18 dollars.", "18"),
        ("The answer is 1,234,567.", "1234567"),
        # "answer is" before \boxed, \boxed before the last number
        ("So \\boxed{18} apples, 3 left over", "18"),
        ("\\boxed{18 \\text{ dollars}}", "18"),
        ("\\boxed{\\$1,000}", "1000"),
        ("\\boxed{25\\%}", "25"),
        ("\\boxed{-0.75}", "-0.75"),
        # the last number
        ("It costs $1,234.50 in total.", "1234.50"),
        ("She ends up 7 meters below, at -7 m.", "-7"),
    ],
)
def test_extract_math_answer_rules(text, value):
    assert extract_math_answer(text) == value


@pytest.mark.parametrize(
    "reply, reference",
    [
        ("The answer is $1,000.", "#### 1000"),
        ("\\boxed{1000.00}", "The answer is 1,000."),
        ("The answer is 18 dollars.", "#### 18"),
        ("The answer is -4.", "#### -4"),
        ("The answer is 0.5 hours.", "The answer is .5"),
    ],
)
def test_answers_compare_by_value(reply, reference):
    assert check("math", reply, reference) is None


# -----------------------------------------------------------------------------
# wrong work, loops and cut-off replies


def test_check_wrong_step_even_with_right_answer():
    reply = "Natalia sold 48/2 = 25 clips in May.\nShe sold 48 + 24 = 72 in all.\nThe answer is 72."
    assert check("math", reply, GSM_REF) == "wrong_step"
    assert check("math", reply.replace("25", "24"), GSM_REF) is None


@pytest.mark.parametrize("task", ["math", "general", "code", "function"])
def test_check_repetition_every_task(task):
    looping = "Let me think about this step by step.\n" * 5 + "The answer is 72.\n```\nx = 1\n```\n" + FN_REF
    assert check(task, looping, GSM_REF if task == "math" else FN_REF) == "repetition"


@pytest.mark.parametrize(
    "text",
    [
        "First add the two numbers together.\nThen we check it.\n" * 3,  # a line three times
        "So the total is the sum of the parts. " * 8,  # a sentence over and over on one line
        "the " * 40,
        "ha" * 60,
        "Final Answer: f(x=1). I hope it is correct. " * 6,
    ],
)
def test_find_repetition_hits(text):
    assert find_repetition(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        GSM_REF,
        "Step 1:\nadd\nStep 2:\nadd\nStep 3:\nadd",  # short lines recur in any list
        "}\n}\n}\n}",
        "Table of contents ........................................................................... 1",
        "-" * 120,
        # a template repeated with different values is a list, not a loop
        "\n".join(f"Day {d}: start with a {d}-minute warm-up, then do {d} sets of squats." for d in range(1, 6)),
    ],
)
def test_find_repetition_misses(text):
    assert find_repetition(text) is None


def test_check_truncated():
    assert check("math", "48/2 = 24 clips in May, and then", GSM_REF, truncated=True) == "truncated"
    assert check("general", "Paris is the capital", "Paris.", truncated=True) == "truncated"
    # a loop is why a reply runs out of tokens: that reason is the one reported
    assert check("general", "Paris is the capital of France.\n" * 5, "Paris.", truncated=True) == "repetition"


# -----------------------------------------------------------------------------
# status: checked, unchecked or rejected


@pytest.mark.parametrize(
    "task, reply, reference, expected",
    [
        ("math", "48/2 = 24 and 48 + 24 = 72. The answer is 72.", GSM_REF, ("accepted", None)),
        ("math", "The answer is 4.", "No final answer here.", ("accepted_unverified", None)),
        ("math", "The answer is 71.", GSM_REF, ("rejected", "answer_mismatch")),
        ("math", "2 + 2 = 5. The answer is 5.", "No final answer here.", ("rejected", "wrong_step")),
        ("function", "f(token=1)", "f(token=<session_token>)", ("accepted_unverified", None)),
        ("function", FN_REF, FN_REF, ("accepted", None)),
        ("function", "Use pyarrow.", "not a call (", ("accepted_unverified", None)),
        ("code", "```\nx = 1\n```", "x = 1", ("accepted", None)),
        ("general", "Paris.", "Paris.", ("accepted", None)),
        ("general", "Paris.\n" * 4, "Paris.", ("accepted", None)),  # short lines may recur
        ("general", "Paris", "Paris.", ("rejected", "truncated")),
    ],
)
def test_status(task, reply, reference, expected):
    assert status(task, reply, reference, truncated=expected[1] == "truncated") == expected
    assert expected[0] in STATUSES


@pytest.mark.parametrize(
    "task, reference, checkable",
    [
        ("math", GSM_REF, True),
        ("math", "#### 7", True),
        ("math", "No final answer here.", False),
        ("function", FN_REF, True),
        ("function", "not a call (", False),
        ("code", "anything", True),
        ("general", "anything", True),
    ],
)
def test_verifiable(task, reference, checkable):
    assert verifiable(task, reference) is checkable
