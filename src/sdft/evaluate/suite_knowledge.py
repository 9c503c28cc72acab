"""Knowledge suite: multiple-choice accuracy by log-likelihood, the way lm-eval scores MMLU or ARC.

Each choice is scored as the reply to "Question: ...\\nAnswer:" (rendered as a chat turn): the summed
log-probability of " <choice>". "accuracy" picks the highest sum; "accuracy_norm" divides by the
choice's length in characters first (lm-eval's acc_norm), which removes the bias towards short choices.
Each row also keeps `margin`: the right answer's log-probability minus the best wrong choice's (above 0
exactly when the question is answered right; its size says how close the call was).

Data: `eval.knowledge_data` names a local file (.json/.jsonl/.csv/.parquet) or a hub dataset
(e.g. `allenai/ai2_arc:ARC-Easy:test`), read through sdft.data.load; without it, the built-in 60
questions. Two row layouts are read:
  built-in  {id, question, choices: [...], answer}   answer: a 0-based index into choices, or a letter
  ARC       {id, question, choices: {text: [...], label: [...]}, answerKey}   answerKey: one of the
            labels ("A".."E", or "1".."4" as in some ARC questions)
Every row is checked before anything is scored, and all problems are reported together.

Flips: evaluating a fine-tuned model against the seed model's eval folder (`seed_dir`), each question is
compared with the seed's answer to the same question (matched by id): `right_to_wrong` is the share of
questions the seed answered right and this model answers wrong (knowledge lost), `wrong_to_right` the
reverse. Accuracy's change from the seed is their difference; their sum is how much the answers churned.
Both follow `accuracy` (summed log-likelihoods). The seed must have been scored on exactly the same
questions; anything else is refused. The seed's own run reports them as not computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdft.core.config import EvalConfig
from sdft.core.errors import InputError
from sdft.core.io import read_jsonl
from sdft.data.example import DataError, Problem
from sdft.data.load import read_rows
from sdft.evaluate.builtin_sets import KNOWLEDGE, load_resource
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, finite_or_none, note, user_turn

if TYPE_CHECKING:  # the scoring engine loads torch; the report imports this module for its METRICS only
    from sdft.engine.likelihood import ResponseScore

METRICS = (
    MetricSpec("accuracy", "accuracy", "%", +1, "forgetting", "share of multiple-choice questions answered correctly",
               ("correct",)),
    MetricSpec("accuracy_norm", "accuracy_norm", "%", +1, "forgetting",
               "multiple-choice accuracy with length-normalised likelihoods", ("correct_norm",)),
    MetricSpec("right_to_wrong", "right_to_wrong", "%", -1, "forgetting",
               "share of multiple-choice questions the seed model answered right and this model answers wrong",
               ("right_to_wrong",),
               Verdict("right-to-wrong flips",
                       "{m} turned fewer of the seed's right answers wrong than {b}",
                       "{m} turned more of the seed's right answers wrong than {b}",
                       "multiple-choice questions the seed answered right and the model answers wrong")),
    MetricSpec("wrong_to_right", "wrong_to_right", "%", 0, "other",
               "share of multiple-choice questions the seed model answered wrong and this model answers right "
               "(accuracy's change from the seed is wrong_to_right minus right_to_wrong)",
               ("wrong_to_right",)),
)
FLIPS = ("right_to_wrong", "wrong_to_right")


# ---------------------------------------------------------------- reading questions


def load_questions(source: str | None, limit: int | None = None) -> list[dict]:
    """Validated {id, question, choices, answer} items (answer: a 0-based index into choices), the first
    `limit` of them; the whole source is checked either way. Raises DataError naming row and field."""
    if source is None:
        label = KNOWLEDGE
        rows, problems = list(enumerate(load_resource(KNOWLEDGE), 1)), []
    else:
        label = str(source)
        rows, problems = read_rows(label)
        if not rows and not problems:  # e.g. an empty hub split
            problems = [Problem(label, None, None, "no rows")]
    items: list[dict] = []
    first_row: dict[str, int] = {}
    for num, row in rows:
        before = len(problems)
        item = question_item(row, num, label, problems)
        if item is None or len(problems) > before:
            continue
        if item["id"] in first_row:  # flips are matched by id: ids must be unique
            problems.append(Problem(label, num, "id", f"duplicate id {item['id']!r} (first in row "
                                                      f"{first_row[item['id']]})"))
            continue
        first_row[item["id"]] = num
        items.append(item)
    if problems:
        raise DataError(sorted(problems, key=lambda p: (p.row is not None, p.row or 0)))
    return items[:limit]


def question_item(row, num: int, label: str, problems: list[Problem]) -> dict | None:
    """One row as an item, in either layout; None (with its problems added) when it is not usable."""
    if not isinstance(row, dict):
        problems.append(Problem(label, num, None, "expected an object {question, choices, answer} or "
                                                  "{question, choices: {text, label}, answerKey}"))
        return None
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(Problem(label, num, "question", "must be non-empty text"))
    if "answerKey" in row or isinstance(row.get("choices"), dict):
        found = arc_choices(row, num, label, problems)
    else:
        found = builtin_choices(row, num, label, problems)
    if found is None or not isinstance(question, str):
        return None
    choices, answer = found
    row_id = row.get("id")
    return {"id": str(row_id) if row_id is not None and row_id != "" else str(num), "question": question,
            "choices": choices, "answer": answer}


def valid_choice_texts(texts, field: str, num: int, label: str, problems: list[Problem]) -> bool:
    if not isinstance(texts, list) or len(texts) < 2:
        problems.append(Problem(label, num, field, "must be a list of at least two choices"))
        return False
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        problems.append(Problem(label, num, field, f"choice {empty[0]} is not non-empty text"))
        return False
    return True


def builtin_choices(row: dict, num: int, label: str, problems: list[Problem]) -> tuple[list[str], int] | None:
    """{choices: [...], answer: index or letter} -> (choices, answer index)."""
    choices, answer = row.get("choices"), row.get("answer")
    if not valid_choice_texts(choices, "choices", num, label, problems):
        return None
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
        answer = ord(answer.upper()) - ord("A")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        problems.append(Problem(label, num, "answer", f"must be an index into the {len(choices)} choices "
                                                      f"(or a letter), got {row.get('answer')!r}"))
        return None
    return choices, answer


def arc_choices(row: dict, num: int, label: str, problems: list[Problem]) -> tuple[list[str], int] | None:
    """ARC's {choices: {text: [...], label: [...]}, answerKey} -> (choices, answer index)."""
    choices = row.get("choices")
    if not isinstance(choices, dict):
        problems.append(Problem(label, num, "choices", "must be an object {text: [...], label: [...]}"))
        return None
    texts, labels = choices.get("text"), choices.get("label")
    if not valid_choice_texts(texts, "choices.text", num, label, problems):
        return None
    if not isinstance(labels, list) or len(labels) != len(texts):
        problems.append(Problem(label, num, "choices.label", f"must be a list of {len(texts)} labels, one per "
                                                             "choice"))
        return None
    labels = [str(x).strip() for x in labels]
    if len(set(labels)) != len(labels) or not all(labels):
        problems.append(Problem(label, num, "choices.label", f"labels must be distinct and non-empty: {labels}"))
        return None
    key = row.get("answerKey")
    key = str(key).strip() if isinstance(key, (str, int)) and not isinstance(key, bool) else None
    if key not in labels:
        problems.append(Problem(label, num, "answerKey", f"{row.get('answerKey')!r} is not one of the labels "
                                                         f"{', '.join(labels)}"))
        return None
    return texts, labels.index(key)


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    """Before any model is loaded: the questions must read, and a seed to compare with must have been
    scored on them."""
    items = load_questions(cfg.knowledge_data, cfg.limit)
    if seed_dir is not None:
        same_questions(items, read_seed_rows(seed_dir), seed_predictions(seed_dir))


# ---------------------------------------------------------------- scoring


def question_prompt(question: str) -> list[dict]:
    return user_turn(f"Question: {question}\nAnswer:")


def argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on ties."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def answer_margin(logprobs: list[float], answer: int) -> float | None:
    """The right choice's log-probability minus the best wrong one's (> 0: answered right)."""
    best_wrong = max(lp for i, lp in enumerate(logprobs) if i != answer)
    return finite_or_none(logprobs[answer] - best_wrong)


def choice_scores(model, tokenizer, items: list[dict], batch_size: int) -> list[list[ResponseScore]]:
    """Each item's choices scored as replies to its question, grouped per item."""
    from sdft.engine.likelihood import score_responses

    prompts = [question_prompt(item["question"]) for item in items for _ in item["choices"]]
    replies = [" " + choice for item in items for choice in item["choices"]]
    flat = score_responses(model, tokenizer, prompts, replies, batch_size)
    grouped, at = [], 0
    for item in items:
        grouped.append(flat[at: at + len(item["choices"])])
        at += len(item["choices"])
    return grouped


def score_questions(items: list[dict], scores: list[list[ResponseScore]]) -> tuple[list[dict], list[Metric]]:
    rows = []
    for item, item_scores in zip(items, scores, strict=True):
        logprobs = [s.logprob for s in item_scores]
        normed = [lp / len(choice) for lp, choice in zip(logprobs, item["choices"])]
        pred, pred_norm = argmax(logprobs), argmax(normed)
        rows.append({"id": item["id"], "answer": item["answer"], "pred": pred, "pred_norm": pred_norm,
                     "correct": pred == item["answer"], "correct_norm": pred_norm == item["answer"],
                     "margin": answer_margin(logprobs, item["answer"]), "logprobs": logprobs})
    n = len(rows)
    metrics = [proportion_metric("accuracy", sum(r["correct"] for r in rows), n),
               proportion_metric("accuracy_norm", sum(r["correct_norm"] for r in rows), n)]
    return rows, metrics


# ---------------------------------------------------------------- flips against the seed


def seed_predictions(seed_dir: str | Path) -> Path:
    return Path(seed_dir) / "knowledge" / "predictions.jsonl"


def read_seed_rows(seed_dir: str | Path) -> list[dict]:
    path = seed_predictions(seed_dir)
    if not path.is_file():
        raise InputError(f"counting flips compares with the seed model's answers, but {path} does not exist: "
                         "evaluate the seed model on the knowledge suite (without seed_dir) first")
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable as the seed's knowledge predictions ({e})") from e


def same_questions(items: list[dict], seed_rows: list[dict], where: Path) -> dict[str, bool]:
    """{id: the seed answered it right}, after checking that the seed was scored on exactly these
    questions (same ids, same text, choices and answer); raises InputError naming the first difference."""
    redo = ("evaluate the seed and this model with the same eval.knowledge_data and eval.limit "
            "(re-evaluate the seed with --force)")
    seed: dict[str, tuple[int, dict]] = {}
    for n, row in enumerate(seed_rows, 1):
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("correct"), bool):
            raise DataError(Problem(str(where), n, "correct" if isinstance(row, dict) and "id" in row else "id",
                                    "the seed's row lacks it; " + redo))
        seed[str(row["id"])] = (n, row)
    ours = [item["id"] for item in items]
    missing = [i for i in ours if i not in seed]
    extra = sorted(set(seed) - set(ours))
    if missing or extra:
        parts = [f"the seed was scored on {len(seed)} questions, this model on {len(ours)}"]
        if missing:
            parts.append(f"{len(missing)} of this model's are not among the seed's (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} of the seed's are not among this model's (e.g. {extra[0]!r})")
        raise InputError(f"{where}: the seed model was scored on other knowledge questions: "
                         f"{'; '.join(parts)}; {redo}")
    for item in items:
        n, theirs = seed[item["id"]]
        for field in ("question", "choices", "answer"):
            if field in theirs and theirs[field] != item[field]:  # older seed rows may lack `choices`
                raise DataError(Problem(str(where), n, field, f"question {item['id']!r} differs from the one "
                                                              f"scored now; {redo}"))
    return {item_id: row["correct"] for item_id, (_, row) in seed.items()}


def count_flips(rows: list[dict], seed_correct: dict[str, bool]) -> list[Metric]:
    """Adds each row's `seed_correct`, `flip` ("right_to_wrong", "wrong_to_right" or None) and the two
    flips as booleans (the report's per-question fields); returns both flip rates over all rows."""
    for row in rows:
        before, now = seed_correct[str(row["id"])], row["correct"]
        flip = "right_to_wrong" if before and not now else "wrong_to_right" if now and not before else None
        row.update(seed_correct=before, flip=flip,
                   right_to_wrong=flip == "right_to_wrong", wrong_to_right=flip == "wrong_to_right")
    return [proportion_metric(name, sum(row[name] for row in rows), len(rows)) for name in FLIPS]


def no_flips(rows: list[dict], why: str) -> list[dict]:
    """The seed's own run, or a model evaluated without the seed's folder: flips are not computed (null)."""
    for row in rows:
        row.update(flip=None, right_to_wrong=None, wrong_to_right=None)
    return [note(name, why) for name in FLIPS]


def run(ctx: SuiteContext) -> SuiteResult:
    items = load_questions(ctx.cfg.knowledge_data, ctx.cfg.limit)
    # Before scoring: a seed scored on other questions is refused without spending the forward passes.
    seed_correct = (same_questions(items, read_seed_rows(ctx.seed_dir), seed_predictions(ctx.seed_dir))
                    if ctx.seed_dir is not None else None)
    rows, metrics = score_questions(items, choice_scores(ctx.model, ctx.tokenizer, items, ctx.cfg.batch_size))
    for row, item in zip(rows, items):
        row["question"], row["choices"] = item["question"], item["choices"]
    notes = []
    if seed_correct is not None:
        metrics += count_flips(rows, seed_correct)
    elif ctx.adapter:
        notes = no_flips(rows, "skipped: counting flips against the seed model needs --seed-dir DIR "
                               "(the seed model's eval folder)")
    else:
        notes = no_flips(rows, "skipped: this is the seed model, which flips are counted against")
    return SuiteResult(metrics, rows, notes)
