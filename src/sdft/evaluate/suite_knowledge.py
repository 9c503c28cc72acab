"""Knowledge suite: multiple-choice accuracy by log-likelihood, the way lm-eval scores MMLU or ARC.

Each choice is scored as the reply to "Question: ...\\nAnswer:" (rendered as a chat turn): the summed
log-probability of " <choice>". "accuracy" picks the highest sum; "accuracy_norm" divides by the
choice's length in characters first (lm-eval's acc_norm), which removes the bias towards short choices.
Data: `eval.knowledge_data` (JSON/JSONL rows {question, choices, answer}) or the built-in set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sdft.core.errors import InputError
from sdft.evaluate.builtin_sets import KNOWLEDGE, load_resource
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn
from sdft.core.io import read_jsonl

if TYPE_CHECKING:  # the scoring engine loads torch; the report imports this module for its METRICS only
    from sdft.engine.likelihood import ResponseScore

METRICS = (
    MetricSpec("accuracy", "accuracy", "%", +1, "forgetting", "share of multiple-choice questions answered correctly",
               ("correct",)),
    MetricSpec("accuracy_norm", "accuracy_norm", "%", +1, "forgetting",
               "multiple-choice accuracy with length-normalised likelihoods", ("correct_norm",)),
)


def load_questions(source: str | None, limit: int | None = None) -> list[dict]:
    """Validated {id, question, choices, answer} rows; `answer` is a 0-based index (or a letter A, B, ...)."""
    if source is None:
        rows = load_resource(KNOWLEDGE)
    else:
        path = Path(source)
        rows = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else read_jsonl(path)
    label = source or KNOWLEDGE
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{label}: expected rows of {{question, choices, answer}} objects")
    items = []
    for n, row in enumerate(rows[:limit], 1):
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
            answer = ord(answer.upper()) - ord("A")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{label} row {n}: 'question' must be non-empty text")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise InputError(f"{label} row {n}: 'choices' must be a list of at least two non-empty strings")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise InputError(f"{label} row {n}: 'answer' must be an index into choices (or a letter)")
        items.append({"id": str(row.get("id", n)), "question": question, "choices": choices, "answer": answer})
    return items


def question_prompt(question: str) -> list[dict]:
    return user_turn(f"Question: {question}\nAnswer:")


def argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on ties."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_questions(items: list[dict], scores: list[list[ResponseScore]]) -> tuple[list[dict], list[Metric]]:
    rows = []
    for item, item_scores in zip(items, scores, strict=True):
        logprobs = [s.logprob for s in item_scores]
        normed = [lp / len(choice) for lp, choice in zip(logprobs, item["choices"])]
        pred, pred_norm = argmax(logprobs), argmax(normed)
        rows.append({"id": item["id"], "answer": item["answer"], "pred": pred, "pred_norm": pred_norm,
                     "correct": pred == item["answer"], "correct_norm": pred_norm == item["answer"],
                     "logprobs": logprobs})
    n = len(rows)
    metrics = [proportion_metric("accuracy", sum(r["correct"] for r in rows), n),
               proportion_metric("accuracy_norm", sum(r["correct_norm"] for r in rows), n)]
    return rows, metrics


def run(ctx: SuiteContext) -> SuiteResult:
    from sdft.engine.likelihood import score_responses

    items = load_questions(ctx.cfg.knowledge_data, ctx.cfg.limit)
    prompts = [question_prompt(item["question"]) for item in items for _ in item["choices"]]
    replies = [" " + choice for item in items for choice in item["choices"]]
    flat = score_responses(ctx.model, ctx.tokenizer, prompts, replies, ctx.cfg.batch_size)
    grouped, at = [], 0
    for item in items:
        grouped.append(flat[at: at + len(item["choices"])])
        at += len(item["choices"])
    rows, metrics = score_questions(items, grouped)
    for row, item in zip(rows, items):
        row["question"] = item["question"]
    return SuiteResult(metrics, rows)
