"""IFEval suite: does the model follow verifiable instructions ("no commas", "at least 300 words", ...)?

IFEval (Zhou et al. 2023) has 541 prompts, each with one to three instructions that a program can check.
The replies are scored by lm-eval's own IFEval checkers (`lm_eval.tasks.ifeval`: the instruction
registry and its strict and loose test functions), so the numbers are the harness's:
  prompt_strict  prompts whose every instruction is followed
  inst_strict    instructions followed, over all instructions of all prompts (its n counts instructions)
  prompt_loose, inst_loose
                 the same where a reply also counts when it passes with its first and/or last line
                 removed or its asterisks stripped (lm-eval's loose variant)
Each predictions row keeps the per-instruction results and the prompt's own figures (`inst_strict` there is
the share of that prompt's instructions followed), which the report pairs prompt by prompt.
A fine-tuned model's fall here is forgetting: instruction following is what chat tuning taught it.

Data: `eval.ifeval_data`, a JSONL (or .json/.csv/.parquet) in google/IFEval's layout ({key, prompt,
instruction_id_list, kwargs}); without it, the hub's `google/IFEval` train split. Every row is checked
before any model loads: a missing field or an instruction id lm-eval does not know stops the run, naming
file, row and field. `eval.limit` takes the first N prompts. Replies are cut at `eval.max_new_tokens`
(512 by default; lm-eval's harness allows 1280, and some prompts ask for 600+ words, so pass
`--max-new-tokens 1280` for numbers comparable with published ones).

What it needs: lm-eval with its ifeval extra (`pip install 'lm-eval[ifeval]'`: lm-eval, langdetect,
immutabledict, nltk>=3.9.1). langdetect carries its language profiles, so the language checks work
offline; its detector is seeded here (it samples, and lm-eval leaves it unseeded) so that a rerun scores
alike. Two instruction types count sentences or words with nltk's punkt model, whose data is not in any
package: `length_constraints:number_sentences` and `change_case:capital_word_frequency` (64 of the 541
prompts). Every other prompt is scored offline with no nltk data. When the prompts to evaluate include
those two types and the data is missing, the suite stops before any model loads and says what to run
(`python -m nltk.downloader punkt_tab`, or a folder holding tokenizers/punkt_tab in NLTK_DATA).
lm-eval tries to download that data itself when its module is imported; that attempt is suppressed here, so
nothing is fetched behind the user's back.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from sdft.core.config import EvalConfig
from sdft.core.errors import SetupError
from sdft.data.example import DataError, Problem
from sdft.data.load import read_rows
from sdft.evaluate.metrics import MetricSpec, Verdict
from sdft.evaluate.stats import Metric, proportion_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, user_turn

IFEVAL_HUB = "hf:google/IFEval"  # its only split, "train", is the benchmark
INSTALL = "pip install 'lm-eval[ifeval]'"
# The instruction types whose lm-eval checkers tokenize with nltk's punkt model (sentence counts, and
# word_tokenize for capitalised words); tests/test_suite_ifeval.py checks this against lm-eval itself.
NEEDS_PUNKT = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})
PUNKT_INSTALL = ("python -m nltk.downloader punkt_tab (or put a folder holding tokenizers/punkt_tab in "
                 "NLTK_DATA)")
LANGDETECT_SEED = 0

METRICS = (
    MetricSpec("prompt_strict", "prompt_strict", "%", +1, "forgetting",
               "IFEval prompts whose every verifiable instruction the reply follows (lm-eval's strict check)",
               ("prompt_strict",),
               Verdict("IFEval prompt-level strict accuracy",
                       "{m} followed more IFEval prompts' instructions than {b}",
                       "{m} followed fewer IFEval prompts' instructions than {b}",
                       "following every verifiable instruction of IFEval prompts")),
    MetricSpec("inst_strict", "inst_strict", "%", +1, "forgetting",
               "IFEval instructions followed, over all instructions (strict; per prompt: the share of its "
               "instructions followed)", ("inst_strict",)),
    MetricSpec("prompt_loose", "prompt_loose", "%", +1, "forgetting",
               "IFEval prompts whose every instruction is followed, allowing for a first or last line of "
               "chatter and markdown asterisks (lm-eval's loose check)", ("prompt_loose",)),
    MetricSpec("inst_loose", "inst_loose", "%", +1, "forgetting",
               "IFEval instructions followed, over all instructions (loose check)", ("inst_loose",)),
)


@dataclass(frozen=True)
class IFEvalItem:
    """One IFEval prompt with its instructions; `kwargs[i]` parameterises `instruction_ids[i]`."""

    id: str
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict]
    row: int


# ---------------------------------------------------------------- lm-eval's checkers


def punkt_installed() -> bool:
    """Whether nltk finds the punkt_tab data that lm-eval's sentence and word counts load."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


def load_checkers():
    """lm-eval's IFEval modules (instructions_registry, utils); SetupError naming what to install.

    Importing them runs nltk.download("punkt_tab") when that data is missing: a network call at import
    time, which fails offline with a misleading "Downloaded" line. It is skipped here; the prompts that need
    the data are refused by `check` instead, with the command that installs it.
    """
    try:
        import langdetect
        import nltk
    except ImportError as e:
        raise SetupError(f"the ifeval suite needs {e.name}: {INSTALL}") from None
    download = nltk.download
    try:
        if not punkt_installed():
            nltk.download = lambda *args, **kwargs: False
        with contextlib.redirect_stdout(io.StringIO()):
            from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError as e:
        raise SetupError(f"the ifeval suite needs lm-eval's IFEval checkers (missing: {e.name}): {INSTALL}") from None
    finally:
        nltk.download = download
    # langdetect samples while it detects; seeded, a reply gets the same language verdict on every run.
    langdetect.DetectorFactory.seed = LANGDETECT_SEED
    return instructions_registry, utils


def checker_kwargs(kwargs: dict) -> dict:
    """An instruction's arguments as lm-eval passes them: the hub's rows carry every argument name, the
    unused ones empty, and lm-eval drops those."""
    return {k: v for k, v in kwargs.items() if v}


# ---------------------------------------------------------------- reading prompts


def source_label(cfg: EvalConfig) -> str:
    return str(cfg.ifeval_data) if cfg.ifeval_data else IFEVAL_HUB


def load_items(source: str | None, limit: int | None = None) -> list[IFEvalItem]:
    """The validated prompts, the first `limit` of them; the whole source is checked either way. Raises
    DataError naming file, row and field for every problem."""
    registry, _ = load_checkers()
    label = str(source) if source else IFEVAL_HUB
    rows, problems = read_rows(label)
    if not source and problems:
        for p in problems:
            p.message += "; for a local copy pass --ifeval-data FILE (eval.ifeval_data)"
    if not rows and not problems:  # e.g. an empty hub split
        problems = [Problem(label, None, None, "no rows")]
    items: list[IFEvalItem] = []
    first_row: dict[str, int] = {}
    for num, row in rows:
        before = len(problems)
        item = ifeval_item(row, num, label, registry.INSTRUCTION_DICT, problems)
        if item is None or len(problems) > before:
            continue
        if item.id in first_row:  # the report pairs models' replies by id
            problems.append(Problem(label, num, "key", f"duplicate key {item.id!r} (first in row {first_row[item.id]})"))
            continue
        first_row[item.id] = num
        items.append(item)
    if problems:
        raise DataError(sorted(problems, key=lambda p: (p.row is not None, p.row or 0)))
    return items[:limit]


def ifeval_item(row, num: int, label: str, known: dict, problems: list[Problem]) -> IFEvalItem | None:
    """One row as an IFEvalItem, or None with its problems added."""
    if not isinstance(row, dict):
        problems.append(Problem(label, num, None, "expected an object {key, prompt, instruction_id_list, kwargs}"))
        return None
    missing = [name for name in ("prompt", "instruction_id_list", "kwargs") if row.get(name) is None]
    problems += [Problem(label, num, name, "missing") for name in missing]
    if missing:
        return None
    prompt, ids, kwargs = row["prompt"], row["instruction_id_list"], row["kwargs"]
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(Problem(label, num, "prompt", "must be non-empty text"))
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        problems.append(Problem(label, num, "instruction_id_list", "must be a non-empty list of instruction ids"))
        return None
    unknown = [i for i in ids if i not in known]
    if unknown:
        problems.append(Problem(label, num, "instruction_id_list",
                                f"unknown to lm-eval's IFEval checkers: {', '.join(map(repr, unknown))}"))
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        problems.append(Problem(label, num, "kwargs", f"must be a list of {len(ids)} objects, one per instruction"))
        return None
    for instruction_id, args in zip(ids, kwargs):
        if instruction_id in known:
            try:  # the checker's own argument handling: unknown names or bad values fail here, not mid-run
                known[instruction_id](instruction_id).build_description(**checker_kwargs(args))
            except Exception as e:  # noqa: BLE001 - whatever it raises, the row's arguments are at fault
                problems.append(Problem(label, num, "kwargs", f"{instruction_id}: {type(e).__name__}: {e}"))
    key = row.get("key")
    return IFEvalItem(id=str(key) if key is not None else str(num), prompt=prompt, instruction_ids=list(ids),
                      kwargs=[dict(k) for k in kwargs], row=num)


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    """Read and validate the prompts, and make sure the checkers they use can run, before any model loads."""
    items = load_items(cfg.ifeval_data, cfg.limit)
    needing = [item for item in items if NEEDS_PUNKT & set(item.instruction_ids)]
    if needing and not punkt_installed():
        raise SetupError(f"{len(needing)} of the {len(items)} IFEval prompts to evaluate (the first: row "
                         f"{needing[0].row} of {source_label(cfg)}) use instructions that lm-eval checks with "
                         f"nltk's punkt tokenizer ({', '.join(sorted(NEEDS_PUNKT))}), and its data is not "
                         f"installed: {PUNKT_INSTALL}")


# ---------------------------------------------------------------- scoring


def score_ifeval(items: list[IFEvalItem], replies: list[str]) -> tuple[list[dict], list[Metric]]:
    """Per-prompt results and the four accuracies, by lm-eval's strict and loose checks."""
    _, utils = load_checkers()
    rows = []
    for item, reply in zip(items, replies, strict=True):
        example = utils.InputExample(key=item.id, instruction_id_list=item.instruction_ids, prompt=item.prompt,
                                     kwargs=item.kwargs)
        strict = utils.test_instruction_following_strict(example, reply)
        loose = utils.test_instruction_following_loose(example, reply)
        rows.append({
            "follow_strict": list(strict.follow_instruction_list),
            "follow_loose": list(loose.follow_instruction_list),
            "prompt_strict": bool(strict.follow_all_instructions),
            "prompt_loose": bool(loose.follow_all_instructions),
            "inst_strict": sum(strict.follow_instruction_list) / len(strict.follow_instruction_list),
            "inst_loose": sum(loose.follow_instruction_list) / len(loose.follow_instruction_list),
        })
    n_instructions = sum(len(item.instruction_ids) for item in items)
    metrics = [
        proportion_metric("prompt_strict", sum(r["prompt_strict"] for r in rows), len(rows)),
        # Pooled over instructions, as lm-eval aggregates it; the Wilson interval treats them as independent.
        proportion_metric("inst_strict", sum(sum(r["follow_strict"]) for r in rows), n_instructions),
        proportion_metric("prompt_loose", sum(r["prompt_loose"] for r in rows), len(rows)),
        proportion_metric("inst_loose", sum(sum(r["follow_loose"]) for r in rows), n_instructions),
    ]
    return rows, metrics


def chats(items: list[IFEvalItem]) -> list[list[dict]]:
    return [user_turn(item.prompt) for item in items]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    return chats(load_items(ctx.cfg.ifeval_data, ctx.cfg.limit))


def run(ctx: SuiteContext) -> SuiteResult:
    items = load_items(ctx.cfg.ifeval_data, ctx.cfg.limit)
    replies = ctx.generate(chats(items))
    scored, metrics = score_ifeval(items, replies)
    rows = [{"id": item.id, "prompt": item.prompt, "output": reply, "instruction_id_list": item.instruction_ids,
             "kwargs": [checker_kwargs(k) for k in item.kwargs]} | s
            for item, reply, s in zip(items, replies, scored)]
    return SuiteResult(metrics, rows)
