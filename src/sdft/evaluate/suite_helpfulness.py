"""Helpfulness suite: replies to everyday instructions, saved for AlpacaEval, with an optional judge.

Writes `alpaca_eval_outputs.json` (an array of {instruction, output, generator}) that the
`alpaca_eval` tool reads as model outputs. The only number computed here without a judge is the
mean reply length in words (fine-tuning often makes replies much shorter or longer). When
SDFT_JUDGE_URL and SDFT_JUDGE_MODEL are set and the seed model's outputs exist, an LLM judge compares
each reply with the seed's: "win_rate_vs_seed" (0.5 = as good as the seed).
"""

from __future__ import annotations

from pathlib import Path

from sdft.core.config import EvalConfig
from sdft.data.load import load_examples
from sdft.evaluate.builtin_sets import RETENTION, load_resource
from sdft.evaluate.judge import JudgeConfig, JudgeError, compare_to_seed
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.stats import Metric, mean_metric
from sdft.evaluate.suite_context import SuiteContext, SuiteResult, mean_of_finite, note, user_turn
from sdft.core.io import read_jsonl, write_json

ALPACA_EVAL_FILE = "alpaca_eval_outputs.json"
JUDGE_SEED = 0


ALPACA_EVAL_HUB = "tatsu-lab/alpaca_eval:alpaca_eval:eval"  # AlpacaEval's 805 instructions

METRICS = (
    MetricSpec("mean_words", "mean_words", "words", +1, "forgetting",
               "mean reply length in words, a rough proxy for how much help is given", ("words",)),
    MetricSpec("win_rate_vs_seed", "win_rate_vs_seed", "%", +1, "forgetting",
               "replies a judge prefers over the seed model's"),
)


def helpfulness_instructions(cfg: EvalConfig) -> list[tuple[str, str]]:
    """(id, instruction) pairs: the configured instructions (a file, a hub set, or "alpaca_eval"), else the
    built-in everyday instructions. AlpacaEval matches outputs to its set by the instruction text, which
    is therefore passed through unchanged."""
    source = ALPACA_EVAL_HUB if cfg.helpfulness_data == "alpaca_eval" else cfg.helpfulness_data
    if source:
        return [(ex.id, ex.prompt) for ex in load_examples(source, limit=cfg.limit, require_response=False)]
    return [(row["id"], row["instruction"]) for row in load_resource(RETENTION)[: cfg.limit]]


def check(cfg: EvalConfig, train_data: str | None, seed_dir) -> None:
    """Read the configured instructions before any model is loaded: a bad file fails first."""
    if cfg.helpfulness_data:
        helpfulness_instructions(cfg)


def mean_words_metric(replies: list[str]) -> Metric:
    return mean_metric("mean_words", [len(reply.split()) for reply in replies])


def seed_outputs(seed_dir: Path | None) -> dict[str, str] | None:
    path = Path(seed_dir) / "helpfulness" / "predictions.jsonl" if seed_dir else None
    if path is None or not path.is_file():
        return None
    return {str(row["id"]): row["output"] for row in read_jsonl(path)}


def judge_against_seed(ctx: SuiteContext, items: list[tuple[str, str]], replies: list[str],
                       rows: list[dict]) -> tuple[list[Metric], list[dict]]:
    """(metrics, notes) of the optional judge; fills each row's `judge` field when it runs."""
    name = "win_rate_vs_seed"
    cfg = JudgeConfig.from_env()
    if cfg is None:
        return [], [note(name, "skipped: set SDFT_JUDGE_URL and SDFT_JUDGE_MODEL to compare with the seed")]
    if ctx.seed_dir is None:
        if ctx.adapter:
            return [], [note(name, "skipped: judging a fine-tuned model against the seed needs --seed-dir DIR "
                                   "(the seed model's eval folder)")]
        return [], [note(name, "skipped: this is the seed model")]
    theirs = seed_outputs(ctx.seed_dir)
    if theirs is None:
        return [], [note(name, "skipped: no seed outputs in seed_dir/helpfulness/predictions.jsonl")]
    shared = [i for i, (item_id, _) in enumerate(items) if str(item_id) in theirs]
    if not shared:
        return [], [note(name, "skipped: the seed's outputs cover none of these instructions")]
    try:
        verdicts = compare_to_seed(cfg, [items[i][1] for i in shared], [replies[i] for i in shared],
                                   [theirs[str(items[i][0])] for i in shared], seed=JUDGE_SEED)
    except JudgeError as e:
        # Optional: a judge outage must not cost the other numbers. Rerun with --force to retry.
        return [], [note(name, f"failed: {e}")]
    for i, verdict in zip(shared, verdicts):
        rows[i]["judge"] = verdict
    metric = mean_of_finite(name, [v["score"] for v in verdicts])
    if metric is None:
        return [], [note(name, "failed: no judge answer could be read as A or B")]
    return [metric], []


def chats(items: list[tuple[str, str]]) -> list[list[dict]]:
    return [user_turn(text) for _, text in items]


def conversations(ctx: SuiteContext) -> list[list[dict]]:
    return chats(helpfulness_instructions(ctx.cfg))


def run(ctx: SuiteContext) -> SuiteResult:
    items = helpfulness_instructions(ctx.cfg)
    replies = ctx.generate(chats(items))
    write_json(ctx.suite_dir / ALPACA_EVAL_FILE,
               [{"instruction": text, "output": reply, "generator": ctx.generator}
                for (_, text), reply in zip(items, replies)])
    rows = [{"id": item_id, "instruction": text, "output": reply, "words": len(reply.split())}
            for (item_id, text), reply in zip(items, replies)]
    metrics = [mean_words_metric(replies)] if replies else []
    judged, notes = judge_against_seed(ctx, items, replies, rows)
    return SuiteResult(metrics + judged, rows, notes)
