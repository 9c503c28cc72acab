"""Math suite: accuracy of the final number on GSM8K-style word problems (greedy, zero-shot).

Data: `eval.math_data` (GSM8K question/answer or MultiArith instruction/output) or, by default, the
built-in arithmetic generator with a seed that training data never uses, so it is a held-out split.
"""

from __future__ import annotations

from sdft.core.config import EvalConfig
from sdft.data.load import load_examples
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult

# The SDFT paper's evaluation prompt, word for word; "{answer}" is literal text, not a placeholder.
MATH_SYSTEM = (
    "You are an expert in math. Below is a math question. Write a response that appropriately answers "
    "the question. Your final answer should be an integer at the end of your response, formatted as: "
    "The answer is {answer}."
)
TEST_SEED = 1000  # built-in training data uses small seeds; this one gives unseen problems
DEFAULT_N = 100

METRICS = (
    MetricSpec("accuracy", "accuracy", "%", +1, "task", "share of questions answered correctly", ("correct",),
               Verdict("accuracy",
                       "{m} solved more held-out math problems than {b}",
                       "{m} solved fewer held-out math problems than {b}",
                       "math accuracy")),
)


def math_source(cfg: EvalConfig) -> str:
    return cfg.math_data or f"builtin:arithmetic?n={cfg.limit or DEFAULT_N}&seed={TEST_SEED}"


def score_math(replies: list[str], references: list[str]) -> tuple[list[dict], Metric]:
    """Per-reply (pred, gold, correct) and the accuracy with its Wilson interval."""
    # Imported here: math_verify is slow to import (sympy), and the report imports this module for its
    # METRICS only.
    from sdft.grading.verify import extract_math_answer, math_answers_equal

    rows = []
    for reply, reference in zip(replies, references, strict=True):
        pred, gold = extract_math_answer(reply), extract_math_answer(reference)
        rows.append({"pred": pred, "gold": gold, "correct": math_answers_equal(pred, gold)})
    return rows, proportion_metric("accuracy", sum(r["correct"] for r in rows), len(rows))


def chats(examples: list) -> list[list[dict]]:
    return [ex.messages(MATH_SYSTEM) for ex in examples]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    return chats(load_examples(math_source(ctx.cfg), limit=ctx.cfg.limit))


def run(ctx: SuiteContext) -> SuiteResult:
    examples = load_examples(math_source(ctx.cfg), limit=ctx.cfg.limit)
    replies = ctx.generate(chats(examples))
    scored, accuracy = score_math(replies, [ex.response for ex in examples])
    rows = [{"id": ex.id, "prompt": ex.prompt, "output": reply, "reference": ex.response} | s
            for ex, reply, s in zip(examples, replies, scored)]
    return SuiteResult([accuracy], rows)
