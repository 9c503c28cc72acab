"""Write RUN/report.md and a self-contained RUN/report.html for a run folder.

The report opens, where the run measured checkpoints along training, with learning against forgetting:
each method's curve of task metric against forgetting, and as the verdict's first line how much more
or less each method forgot than SFT once both had learned as much (sdft.report.curve). It then puts
the seed, SFT and SDFT models (and on-policy SDFT, when the run trained it) side by side in the shape
of the paper's Table 1, adds the figures that explain the numbers (the distribution gap between
original and distilled targets, how close fine-tuned replies stay to the seed's), and says how to
read them.

Every input is optional: a run that only evaluated math, or never evaluated the seed, still gets a
report; a missing or unreadable file drops its column, figure or section and leaves a note instead.

The report is assembled once as a small list of sections (paragraphs, tables, figures, notes) and
then rendered twice, from templates/report.md.j2 and templates/report.html.j2, so the Markdown and
HTML versions can never disagree.

What a metric means, which way is better, its unit and whether the verdict compares it prompt by
prompt all come from the suites' declarations (sdft.evaluate.metrics); where results live, from
sdft.core.layout.

Beside them, RUN/report.json holds the same numbers for programs:
  table    one row per model, training seed, suite and metric of the results table: {model, seed, suite,
           metric, role, unit, value, low, high, n}, values as metrics.json stores them (a proportion as
           0-1; the table prints it in %). The seed model's rows have seed null. Where a model has several
           training seeds, the cell shows their mean ± sample std, and a row with seed "mean" holds it
           ({value: mean, std, seeds}).
  curve    each curve.jsonl row: {method ("seed" for the seed model), seed, step, task, forgetting,
           metrics}; metrics holds the row's other metrics as its file gives them (kl_task: KL from the
           seed on the task prompts; knowledge: multiple-choice accuracy as 0-1, where the run measured
           it; {} for files without them), and knowledge_flips (questions right at the seed and wrong
           here) is added where the row and the seed's point have per-question knowledge values;
  curve_mean  each method's mean curve over seeds: {method, step, task, forgetting, seeds, metrics}, metrics
           and knowledge_flips as in curve but each the mean over the seeds (a metric only where every
           seed's row has it);
  verdict  one row per verdict line: {axis, method, baseline, diff, low, high, outcome, text, ...}; the
           matched-learning row has axis "forgetting_at_matched_learning" and adds level, seeds_agree,
           seeds and both methods' peak task values (diff, low, high and level are null when it makes no
           claim).
"""

from __future__ import annotations

import base64
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup, escape

from sdft.core.config import METHODS, RunConfig
from sdft.core.errors import InputError
from sdft.core.io import atomic_write, write_json
from sdft.core.layout import SEED_ROW, distilled_path, eval_dir, seed_dirs, seed_of, summary_path, train_dir
from sdft.evaluate.stats import bootstrap_mean_interval, wilson_interval
from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.suites import SUITES, metric_spec
from sdft.report.curve import (KL_TASK, KNOWLEDGE, MatchedComparison, RunCurves, along_training, compare_matched,
                               knowledge_flips, load_run_curves, mean_curve, metric_unit)
from sdft.report.verdict import Comparison, Rows, axes, matched_line, verdict_line, verdicts

# How the report names each row: the seed model's, then one per training method (sdft.core.config.METHODS).
LABELS = {SEED_ROW: "Seed", "sft": "SFT", "sdft": "SDFT", "onpolicy": "SDFT (on-policy)"}
ROWS = (SEED_ROW, *METHODS)

# How a unit's numbers are printed: a proportion as a percentage with one decimal, the other scales of
# their own with one, NLLs and plain scores (cosine, ROUGE F1) with three.
DECIMALS = {"%": 1, "0-100": 1, "words": 1}
# Units the column head leaves out: the metric's name already says them (nll_*, mean_words). "How to
# read this report" names them instead.
UNITS_IN_NAME = ("nats/token", "words")


def label(row: str) -> str:
    return LABELS.get(row, row)


# ---------------------------------------------------------------------------------------------------
# Reading the run folder. Every reader returns None (and records why) instead of raising.

@dataclass(frozen=True)
class Value:
    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None
    seed: int | None = None  # the training seed; None for the seed model


Column = tuple[str, str]  # (suite, metric)
Results = dict[str, dict[Column, list[Value]]]  # row -> column -> one Value per training seed


def _rel(run: Path, path: Path) -> str:
    try:
        return path.relative_to(run).as_posix()
    except ValueError:
        return path.name


def _read_json(run: Path, path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"could not read `{_rel(run, path)}`: {e}")
        return None


def _read_jsonl(run: Path, path: Path, problems: list[str]) -> list[dict] | None:
    if not path.is_file():
        return None
    rows, bad = [], 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        problems.append(f"could not read `{_rel(run, path)}`: {e}")
        return None
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1  # e.g. a truncated last line: keep the rest
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        problems.append(f"`{_rel(run, path)}`: skipped {bad} unreadable line(s)")
    return rows


def _read_yaml(run: Path, path: Path, problems: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"could not read `{_rel(run, path)}`: {e}")
        return {}
    return data if isinstance(data, dict) else {}


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def eval_folders(run: Path, row: str) -> list[Path]:
    """A row's eval folders: the seed model's one, or a method's one per training seed (numeric order)."""
    return [eval_dir(run, row)] if row == SEED_ROW else seed_dirs(eval_dir(run, row))


def train_folders(run: Path, method: str) -> list[Path]:
    """A method's train/<method>/seed-N folders: the parent of any one seed's folder holds them all."""
    return seed_dirs(train_dir(run, method))


def _suite_rank(suite: str) -> int:
    """Suites in registry order (sdft.evaluate.suites); any other after them."""
    order = list(SUITES)
    return order.index(suite) if suite in order else len(order)


def declaration(col: Column) -> MetricSpec:
    """The suite's declaration of the column's metric. One no suite declares (results of another sdft
    version) is shown as descriptive: no arrow, never bold."""
    suite, name = col
    return metric_spec(suite, name) or MetricSpec(name, name, None, 0, "other", "not declared by its suite")


def load_metrics(run: Path, problems: list[str]) -> tuple[Results, list[Column], list[str]]:
    """Every metrics.json under eval/, grouped by row and column (columns in suite order), plus one line
    per metric a suite reported as not computed (value null with a "note", e.g. no judge configured)."""
    results: Results = {row: {} for row in ROWS}
    seen: dict[Column, None] = {}  # insertion-ordered set: metrics keep the order suites wrote them
    skipped: dict[tuple[str, str, str], list[str]] = {}  # (suite, metric, note) -> where
    for row in ROWS:
        for d in eval_folders(run, row):
            where = label(row) if row == SEED_ROW else f"{label(row)} {d.name}"
            training_seed = None if row == SEED_ROW else seed_of(d)
            for path in sorted(d.glob("*/metrics.json")):
                entries = _read_json(run, path, problems)
                if entries is None:
                    continue
                if not isinstance(entries, list):
                    problems.append(f"`{_rel(run, path)}` is not a list of metrics; skipped")
                    continue
                found: dict[Column, Value] = {}  # one value per column per folder, even if repeated
                for e in entries:
                    value = _finite(e.get("value")) if isinstance(e, dict) else None
                    if value is None and isinstance(e, dict) and e.get("note"):
                        key = (str(e.get("suite") or path.parent.name), str(e.get("name")), str(e["note"]))
                        skipped.setdefault(key, []).append(where)
                        continue
                    if value is None or not e.get("name"):
                        problems.append(f"`{_rel(run, path)}`: skipped a metric without a name or numeric value")
                        continue
                    n = e.get("n")
                    found[(str(e.get("suite") or path.parent.name), str(e["name"]))] = Value(
                        value, _finite(e.get("low")), _finite(e.get("high")), n if isinstance(n, int) else None,
                        training_seed)
                for col, v in found.items():
                    results[row].setdefault(col, []).append(v)
                    seen.setdefault(col)
    columns = sorted(seen, key=lambda c: (_suite_rank(c[0]), c[0]))  # stable: metric order kept
    problems += [f"`{suite} {name}`: no suite declares this metric; shown without a better direction"
                 for suite, name in columns if metric_spec(suite, name) is None]
    not_computed = [f"{suite} {name} ({', '.join(where)}): {text}" for (suite, name, text), where in skipped.items()]
    return results, columns, not_computed


def load_predictions(run: Path, suite: str, row: str, problems: list[str]) -> list[dict]:
    """predictions.jsonl rows of one suite for one table row, pooled over training seeds."""
    rows: list[dict] = []
    for d in eval_folders(run, row):
        rows += _read_jsonl(run, d / suite / "predictions.jsonl", problems) or []
    return rows


def per_prompt_fields(suite: str, name: str) -> tuple[str, ...]:
    """The predictions.jsonl fields that hold the metric per prompt, as its suite declares them."""
    spec = metric_spec(suite, name)
    return spec.per_prompt if spec else ()


def row_value(row: dict, keys: tuple[str, ...]) -> float | None:
    """The row's finite value of the first of `keys` it has."""
    return _finite(next((row[k] for k in keys if k in row), None))


def column_values(rows: list[dict], keys: tuple[str, ...]) -> list[float]:
    """The finite per-row values of one metric (see row_value)."""
    return [v for v in (row_value(r, keys) for r in rows) if v is not None]


# ---------------------------------------------------------------------------------------------------
# Formatting numbers and cells.

def fmt_number(x: float, unit: str | None) -> str:
    """A metric's value as its unit prints it; proportions are stored as 0-1 and shown in %."""
    return f"{100 * x if unit == '%' else x:.{DECIMALS.get(unit, 3)}f}"


def fmt_cell(values: list[Value], unit: str | None, multi_seed: bool) -> str:
    """`41.7 [28.9, 55.6]` for one run; `41.7 ± 2.1 (3 seeds)` (sample std) over several seeds."""
    if not values:
        return "—"
    if len(values) == 1:
        v = values[0]
        text = fmt_number(v.value, unit)
        if v.low is not None and v.high is not None:
            text += f" [{fmt_number(v.low, unit)}, {fmt_number(v.high, unit)}]"
        return text + (" (1 seed)" if multi_seed else "")
    xs = [v.value for v in values]
    return f"{fmt_number(statistics.fmean(xs), unit)} ± {fmt_number(statistics.stdev(xs), unit)} ({len(xs)} seeds)"


def center(values: list[Value]) -> float | None:
    return statistics.fmean(v.value for v in values) if values else None


def better_method(results: Results, col: Column) -> str | None:
    """Which fine-tuned method scores best on `col` in its direction; None on a tie for the best, for a
    descriptive column, or when fewer than two methods have a value."""
    sign = declaration(col).direction
    scores = {m: center(results[m].get(col, [])) for m in METHODS}
    scores = {m: v for m, v in scores.items() if v is not None}
    if sign == 0 or len(scores) < 2:
        return None
    best = max(sign * v for v in scores.values())
    winners = [m for m, v in scores.items() if sign * v == best]
    return winners[0] if len(winners) == 1 else None


def column_label(col: Column) -> str:
    """`math accuracy (%) ↑`: suite, the declared label, the unit unless the name says it, the direction."""
    spec = declaration(col)
    unit = f" ({spec.unit})" if spec.unit and spec.unit not in UNITS_IN_NAME else ""
    arrow = {1: " ↑", -1: " ↓"}.get(spec.direction, "")
    return f"{col[0]} {spec.heading(col[1])}{unit}{arrow}"


# ---------------------------------------------------------------------------------------------------
# The document: sections of blocks, rendered to Markdown and HTML.

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to emphasise


@dataclass
class Figure:
    path: str  # relative to the run folder
    alt: str
    caption: str


@dataclass
class Note:
    text: str


Block = str | Table | Figure | Note | list  # a str is a paragraph, a list is bullet points


@dataclass
class Section:
    title: str
    blocks: list[Block]
    level: int = 2


# ---------------------------------------------------------------------------------------------------
# Sections.

def _mapping(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def header_section(cfg: dict, env: dict, distill: dict | None, seeds: list) -> Section:
    data, distill = _mapping(cfg.get("data")), _mapping(distill)
    model = _mapping(cfg.get("model")).get("name") or distill.get("model") or "unknown"
    source = str(data.get("source") or "unknown")
    if data.get("limit"):
        source += f" (first {data['limit']} rows)"
    task = data.get("task") or distill.get("task") or "unknown"
    items = [f"**Model:** `{model}`", f"**Data:** `{source}`", f"**Task:** {task}",
             f"**Seeds:** {', '.join(str(s) for s in seeds) if seeds else 'unknown'}",
             f"**Environment:** {environment_line(env)}"]
    return Section("Run", [items])


def environment_line(env: dict) -> str:
    if not env:
        return "not recorded (no environment.json)"
    parts = []
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    if env.get("platform"):
        parts.append(str(env["platform"]))
    packages = env.get("packages") or {}
    if isinstance(packages, dict):
        parts += [f"{k} {v}" for k, v in packages.items() if v]
    if "cuda" in env:
        parts.append(f"CUDA {'yes' if env['cuda'] else 'no'}")
    return "; ".join(parts) or "not recorded"


def distill_section(distill: dict | None) -> Section:
    if not isinstance(distill, dict):
        return Section("Distillation", [Note("no distillation summary (distilled.jsonl.summary.json) found")])
    rows, accepted = distill.get("rows"), distill.get("accepted")
    pct = distill.get("accepted_pct")
    if pct is None and isinstance(rows, int) and isinstance(accepted, int) and rows:
        pct = 100.0 * accepted / rows
    rows_text = str(rows) if isinstance(rows, int) else "?"
    accepted_text = str(accepted) if isinstance(accepted, int) else "?"
    blocks: list[Block] = [
        f"The seed model rewrote each training response in its own words; {accepted_text} of {rows_text} rewrites "
        f"were accepted ({_pct_text(pct)}) and SDFT trains on those. Rejected rows fall back to the "
        f"original response. Template: `{distill.get('template', 'unknown')}`."]
    unverified = distill.get("accepted_unverified")
    if isinstance(unverified, int) and unverified:
        blocks.append(f"{unverified} of the accepted rewrites are unverified: their reference holds no final "
                      f"answer or call to compare with, so only the reply's own checks applied.")
    reasons = distill.get("reject_reasons") or {}
    if isinstance(reasons, dict) and reasons:
        blocks.append(Table(["reject reason", "rows", "% of rows"],
                            [[str(k), str(v), _pct_text(100.0 * v / rows) if isinstance(rows, int) and rows
                              and isinstance(v, (int, float)) else "—"] for k, v in reasons.items()]))
    else:
        blocks.append("No rewrite was rejected.")
    return Section("Distillation", blocks)


def _pct_text(pct: Any) -> str:
    return f"{pct:.1f}%" if _finite(pct) is not None else "—"


def eval_settings(run: Path, problems: list[str]) -> dict[str, dict[str, dict]]:
    """{suite: {model label: settings.json}} over the seed's and every fine-tuned model's eval folders."""
    found: dict[str, dict[str, dict]] = {}
    for row in ROWS:
        for folder in eval_folders(run, row):
            where = row if row == SEED_ROW else f"{row}/{folder.name}"
            for path in sorted(folder.glob("*/settings.json")) if folder.is_dir() else []:
                settings = _read_json(run, path, problems)
                if isinstance(settings, dict):
                    found.setdefault(path.parent.name, {})[where] = settings
    return found


def _settings_text(settings: dict) -> str:
    values = _mapping(settings.get("settings"))
    files = _mapping(settings.get("files"))
    parts = [f"{k}={'built-in' if v is None and k.endswith('_data') else v}" for k, v in values.items()
             if not (v is None and not k.endswith("_data"))]
    parts += [f"{k} sha256 {str(v)[:12]}" for k, v in files.items()]
    model = _mapping(settings.get("model"))
    parts.append(f"dtype={model.get('dtype')}")
    return ", ".join(parts)


# Settings that name the seed model's results a fine-tuned model is compared with. The seed's own
# evaluation has none (it is the seed), so they are compared among fine-tuned models only.
SEED_REFERENCE = {"settings": ("seed_dir",), "files": ("seed_topk",)}


def _without(settings: dict, drop: dict[str, tuple[str, ...]]) -> dict:
    """settings.json without the named keys of its "settings" and "files" parts."""
    return {**settings, **{part: {k: v for k, v in _mapping(settings.get(part)).items() if k not in keys}
                           for part, keys in drop.items()}}


def settings_differ(by_model: dict[str, dict]) -> bool:
    """Whether models were evaluated under different settings: any difference but the seed reference
    among all of them, or any difference at all among the fine-tuned ones."""
    core = {_settings_text(_without(s, SEED_REFERENCE)) for s in by_model.values()}
    tuned = {_settings_text(s) for where, s in by_model.items() if where != SEED_ROW}
    return len(core) > 1 or len(tuned) > 1


def settings_section(run: Path, problems: list[str]) -> Section:
    """What produced each suite's numbers, and a warning where models were evaluated under other settings."""
    found = eval_settings(run, problems)
    if not found:
        return Section("Evaluation settings", [Note("no settings.json under eval/ (results of an older sdft)")])
    rows, warnings = [], []
    for suite in sorted(found, key=_suite_rank):
        # The digest of the seed's predictions differs by design between the seed and fine-tuned models.
        by_model = {where: _without(s, {"files": ("seed_predictions",)}) for where, s in found[suite].items()}
        comparable = {where: _settings_text(s) for where, s in by_model.items()}
        differ = settings_differ(by_model)
        # Alike: the fine-tuned models' text, which also names the seed reference they were compared with.
        shown = {t for where, t in comparable.items() if where != SEED_ROW} or set(comparable.values())
        texts = sorted(set(comparable.values()) if differ else shown)
        rows.append([suite, texts[0] if len(texts) == 1 else " / ".join(texts)])
        if differ:
            warnings.append(f"{suite}: models were evaluated under different settings, so their numbers are not "
                            "comparable: " + "; ".join(f"{where}: {t}" for where, t in sorted(comparable.items())))
    blocks: list[Block] = ["The settings behind each suite's numbers (from each eval folder's settings.json).",
                           Table(["suite", "settings"], rows)]
    blocks += [Note(w) for w in warnings]
    return Section("Evaluation settings", blocks)


def shown_rows(cfg: dict, results: Results) -> list[str]:
    """The seed, the methods the run trains (its config's `methods`, else the default ones) even where
    they have no results yet, and any other method that has results."""
    methods = cfg.get("methods")
    configured = methods if isinstance(methods, list) else RunConfig().methods
    return [row for row in ROWS if row == SEED_ROW or row in configured or results[row]]


def results_section(results: Results, columns: list[Column], not_computed: list[str], multi_seed: bool,
                    rows: list[str]) -> Section:
    extra: list[Block] = ["Not computed:", not_computed] if not_computed else []
    if not columns:
        return Section("Results", [Note("no evaluation metrics found under eval/; run the evaluation suites")] + extra)
    table = Table(["model"] + [column_label(c) for c in columns], [])
    for i, row in enumerate(rows):
        per_seed = multi_seed and row != SEED_ROW  # the seed model is not trained, so it has no seeds
        table.rows.append([label(row)] + [fmt_cell(results[row].get(c, []), declaration(c).unit, per_seed)
                                          for c in columns])
        for j, col in enumerate(columns):
            if better_method(results, col) == row:
                table.bold.add((i, j + 1))
    intro = ("Each cell is the score with its 95% interval (Wilson for proportions, bootstrap for means)."
             if not multi_seed else
             "Seed cells carry a 95% interval; fine-tuned models' cells are the mean ± sample standard deviation "
             "across training seeds.")
    legend = (" The best fine-tuned model in each column is in bold; ↑ means higher is better, ↓ lower is "
              "better")
    if any(declaration(c).direction == 0 for c in columns):
        legend += "; a column without an arrow is descriptive and never bold"
    return Section("Results", [intro + legend + ".", table] + extra)


def predictions_by_seed(run: Path, method: str, problems: list[str]) -> dict[str, Rows]:
    """{suite: {"seed-N": predictions rows}} of one fine-tuned method, for the per-prompt verdict."""
    found: dict[str, Rows] = {}
    compared = {axis.suite for axis in axes()}
    for d in eval_folders(run, method):
        for path in sorted(d.glob("*/predictions.jsonl")):
            if path.parent.name not in compared:
                continue
            rows = _read_jsonl(run, path, problems)
            if rows:
                found.setdefault(path.parent.name, {})[d.name] = rows
    return found


def prompt_comparisons(run: Path, problems: list[str]) -> list[tuple[str, Comparison]]:
    """(method, comparison with SFT) on every per-prompt axis both have results for."""
    predictions = {m: predictions_by_seed(run, m, problems) for m in METHODS}
    return [(m, c) for m in METHODS if m != "sft" for c in verdicts(predictions, m, "sft")]


def verdict_section(matched: list[MatchedComparison], compared: list[tuple[str, Comparison]]) -> Section:
    """The opening lines: forgetting at matched learning first (where the run has curves), then each
    method against SFT, per prompt, with a paired bootstrap interval."""
    lines = [matched_line(c, label(c.method), label(c.baseline)) for c in matched]
    lines += [verdict_line(c, label(m), label("sft")) for m, c in compared]
    if not lines:
        return Section("Verdict", [Note("no verdict: it needs per-prompt results of SFT and another method from "
                                        "the same training seeds (eval/{sft,sdft}/seed-N/<suite>/predictions.jsonl)")])
    blocks: list[Block] = [lines]
    if matched:
        blocks.append(
            "The matched-learning line reads forgetting off each method's mean curve (over its training seeds) "
            "where its task metric first reaches the furthest level both it and SFT reach, linear between "
            "checkpoints, and gives the method minus SFT with a 95% interval from a two-level bootstrap "
            "(training seeds redrawn, one draw for both methods when they ran the same seeds, since seed N of "
            "each starts alike and sees the rows in the same order; then prompts, the same prompts for both "
            "methods), and "
            "how many training seeds, compared seed by seed on their own curves, give a difference of the same "
            "sign. Where either method's task metric never got past the seed's, there is no learning to match "
            "and the line makes no claim.")
    if compared:
        blocks.append(
            ("The other lines" if matched else "Each line") +
            " compare the two models prompt by prompt: the number is the mean difference (first model "
            "minus SFT; accuracies in percentage points), averaged over the training seeds both have, with a 95% "
            "paired bootstrap interval over prompts.")
    blocks.append("A line says a model did better or worse only when the whole interval lies on that side of 0; "
                  "each line is tested on its own, so among many lines one may cross 0 by chance.")
    return Section("Verdict", blocks)


# ---------------------------------------------------------------------------------------------------
# Learning against forgetting.

def read_curves(run: Path, problems: list[str], cfg: dict | None = None) -> tuple[RunCurves | None, str | None]:
    """The run's curve files (of the config's methods and seeds), or None with why they could not be used
    (None, None: the run has none)."""
    cfg = cfg or {}
    methods = [m for m in cfg.get("methods") or METHODS if m in METHODS]
    seeds = cfg.get("seeds") if isinstance(cfg.get("seeds"), list) else None
    try:
        return load_run_curves(run, tuple(methods), seeds), None
    except InputError as e:
        why = str(e).replace(f"{run}/", "")  # name files relative to the run folder, as every note does
        problems.append(f"curves: {why}")
        return None, why


def matched_comparisons(curves: RunCurves | None) -> list[MatchedComparison]:
    if curves is None:
        return []
    found = [compare_matched(curves, m, "sft") for m in METHODS if m != "sft"]
    return [c for c in found if c is not None]


def _task_scale(curves: RunCurves) -> tuple[float, str]:
    """The figure's x in the task metric's units: a proportion in %."""
    return (100.0, " (%)") if metric_unit(curves.task_metric) == "%" else (1.0, "")


def last_point_interval(curves: RunCurves, method: str, field: str) -> tuple[float, float]:
    """95% bootstrap interval over prompts of a method's value at its last checkpoint (per prompt, the mean
    over the training seeds that reached that step)."""
    import numpy as np

    last = mean_curve(curves, method).steps[-1]  # the step the table's value is at: the last all seeds share
    values = [getattr(r, field) for rows in curves.methods[method].values() for r in rows if r.step == last]
    if not values:  # no checkpoint of its own yet: only the seed's point
        return math.nan, math.nan
    return mean_interval(np.mean(np.asarray(values, dtype=float), axis=0))


def mean_interval(values) -> tuple[float, float]:
    """Wilson for 0/1 values (a bootstrap of all-0 prompts would claim [0, 0]), else a bootstrap of the mean."""
    values = [float(v) for v in values]
    if values and set(values) <= {0.0, 1.0}:
        return wilson_interval(int(sum(values)), len(values))
    return bootstrap_mean_interval(values)


def curve_section(run: Path, curves: RunCurves | None, why: str | None, plot_dir: Path, problems: list[str],
                  figures: list[Path]) -> Section | None:
    """The figure the report opens with, a table of its last points and one of every curve metric along
    training; None for a run folder without curve files."""
    title = "Learning against forgetting"
    if curves is None:
        return None if why is None else Section(title, [Note(f"could not read the curves: {why}")])
    scale, unit = _task_scale(curves)
    plotted, table, notes = {}, Table(["model", "seeds", "checkpoints", f"{curves.task_metric}{unit} at the last",
                                       f"{curves.forgetting_metric} at the last",
                                       f"furthest {curves.task_metric}{unit}"], []), []
    for m in METHODS:
        if m not in curves.methods:
            continue
        mean = mean_curve(curves, m)
        seeds = [[(r.step, scale * r.task, r.forgetting) for r in curves.seed_curve(m, s)]
                 for s in sorted(curves.methods[m])]
        plotted[label(m)] = (seeds, [(k, scale * t, f) for k, t, f in zip(mean.steps, mean.task, mean.forgetting)])
        measured = {r.step for rows in curves.methods[m].values() for r in rows if r.step > 0}
        left_out = sorted(measured - set(mean.steps))
        if left_out:
            notes.append(Note(f"{label(m)}: step(s) {', '.join(map(str, left_out))} were measured for only some "
                              "training seeds; the mean curve leaves them out"))
        if mean.steps:
            best = max(mean.task, key=lambda t: curves.task_direction * t)
            digits = 1 if unit else 3
            task_low, task_high = last_point_interval(curves, m, "task_values")
            low, high = last_point_interval(curves, m, "forgetting_values")
            table.rows.append([label(m), str(len(curves.methods[m])), str(sum(k > 0 for k in mean.steps)),
                               f"{scale * mean.task[-1]:.{digits}f} [{scale * task_low:.{digits}f}, "
                               f"{scale * task_high:.{digits}f}] (step {mean.steps[-1]})",
                               f"{mean.forgetting[-1]:.4g} [{low:.4g}, {high:.4g}]", f"{scale * best:.{digits}f}"])
    if curves.seed_point is not None and table.rows:
        digits = 1 if unit else 3
        low, high = mean_interval(curves.seed_point.task_values)
        table.rows.insert(0, [label(SEED_ROW), "", "", f"{scale * curves.seed_point.task:.{digits}f} "
                              f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}] (step 0)", "0", ""])
    if curves.seed_point is None:
        notes.append(Note("no eval/seed/curve.jsonl: the curves start at their first checkpoint instead of the "
                          "seed model's point, and the matched-learning comparison cannot be made"))
    seed = curves.seed_point
    more = "right" if curves.task_direction > 0 else "left"
    path = _plot("learning_forgetting", plot_dir / "learning_forgetting.png", problems, plotted,
                 xlabel=f"{curves.task_metric}{unit} ({more} = more learned)",
                 ylabel=f"{curves.forgetting_metric} (higher = more forgotten)",
                 title="Learning against forgetting",
                 seed_point=None if seed is None else (scale * seed.task, seed.forgetting))
    blocks = _figure(run, figures, path, "learning against forgetting curves",
                     f"Each point is a checkpoint: across, its {curves.task_metric} on {curves.task_prompts} task "
                     f"prompts (further {more} = more learned); up, its {curves.forgetting_metric} on "
                     f"{curves.forgetting_prompts} other prompts (higher = more forgotten). Thin lines are single "
                     "training seeds, bold ones their mean; the small numbers are training steps"
                     + ("" if seed is None else " and the star is the seed model before training")
                     + ". At any level of learning, the lower curve forgot less to get there.")
    if table.rows:
        blocks.append(table)
    return Section(title, blocks + along_training_blocks(curves) + notes)


def _cell(values: tuple[float, ...] | None, mean: float, fmt, kl: bool = False) -> str:
    """`mean [low, high]` (95% interval over prompts) where the per-prompt values are known, else the mean."""
    if values is None:
        return fmt(mean)
    low, high = bootstrap_mean_interval(values) if kl else mean_interval(values)
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def along_training_blocks(curves: RunCurves) -> list[Block]:
    """The table of every curve metric at every point: the seed's, then each method's mean over its training
    seeds at each step they all measured. A column only where some point has the metric."""
    points = along_training(curves, METHODS)
    if not points:
        return []
    scale, unit = _task_scale(curves)
    digits = 1 if unit else 3
    has = {n for p in points for n in p.means}
    flips = any(p.knowledge_flips is not None for p in points)

    def task_text(x: float) -> str:
        return f"{scale * x:.{digits}f}"

    def kl_text(x: float) -> str:  # as the first table prints KL
        return f"{x:.4g}"

    def percent_text(x: float) -> str:
        return fmt_number(x, "%")

    # (header, metric, format, is a KL)
    columns = [(f"{curves.task_metric}{unit}", "task", task_text, False),
               (f"{curves.forgetting_metric} (general)", "forgetting", kl_text, True)]
    columns += [(f"{KL_TASK} (task)", KL_TASK, kl_text, True)] if KL_TASK in has else []
    columns += [("knowledge (%)", KNOWLEDGE, percent_text, False)] if KNOWLEDGE in has else []
    table = Table(["model", "step", *(c[0] for c in columns)] + (["knowledge right→wrong"] if flips else []), [])
    for p in points:
        cells = [label(p.model), str(p.step)]
        for _, name, fmt, is_kl in columns:
            if name not in p.means:
                cells.append("—")
            elif is_kl and p.model == SEED_ROW:
                cells.append("0")  # the seed's KL from itself
            else:
                cells.append(_cell(p.values.get(name), p.means[name], fmt, is_kl))
        if flips:
            cells.append("—" if p.knowledge_flips is None else
                         "0" if p.model == SEED_ROW else f"{p.knowledge_flips:.1f}")
        table.rows.append(cells)
    meaning = [f"{curves.task_metric}: the task score on {curves.task_prompts} task prompts",
               f"{curves.forgetting_metric} (general): KL from the seed on {curves.forgetting_prompts} general "
               "prompts (the forgetting above)"]
    if KL_TASK in has:
        meaning.append(f"{KL_TASK} (task): KL from the seed on "
                       f"{curves.metric_prompts.get(KL_TASK, curves.task_prompts)} task prompts")
    if KNOWLEDGE in has:
        questions = curves.metric_prompts.get(KNOWLEDGE)
        meaning.append("knowledge: multiple-choice accuracy" + (f" on {questions} questions" if questions else ""))
    if flips:
        right = sum(v == 1.0 for v in curves.seed_point.metric_values[KNOWLEDGE])
        meaning.append(f"right→wrong: of the {right} questions the seed answers right, how many this model "
                       "answers wrong (knowledge lost)")
    caption = ("**Along training.** Each method's row is the mean over its training seeds that all measured the "
               "step, with a 95% interval over prompts; " + "; ".join(meaning) + ".")
    return [caption, table]


def gap_section(run: Path, plot_dir: Path, problems: list[str], figures: list[Path]) -> Section:
    title = "Distribution gap"
    rows = load_predictions(run, "gap", SEED_ROW, problems)
    original_keys, distilled_keys = per_prompt_fields("gap", "nll_original"), per_prompt_fields("gap", "nll_distilled")
    original, distilled = column_values(rows, original_keys), column_values(rows, distilled_keys)
    if not original and not distilled:
        where = _rel(run, eval_dir(run, SEED_ROW) / "gap" / "predictions.jsonl")
        return Section(title, [Note(f"skipped: no per-row NLLs in {where}")], 3)
    series = {k: v for k, v in (("original (SFT's targets)", original), ("distilled (SDFT's targets)", distilled))
              if v}
    path = _plot("histogram", plot_dir / "gap_nll.png", problems, series,
                 title="Seed model's NLL of the training targets",
                 xlabel="per-token NLL under the seed model (lower = closer to its own distribution)")
    blocks = _figure(run, figures, path, "distribution gap histogram",
                     "Per-token NLL that the seed model assigns to the original responses (what SFT trains on) "
                     "and to its distilled rewrites (what SDFT trains on). Dashed lines mark the means.")
    text = " vs ".join(f"mean {k.split()[0]} NLL {statistics.fmean(v):.3f} (n={len(v)})" for k, v in series.items())
    paired = [(o, d) for o, d in ((row_value(r, original_keys), row_value(r, distilled_keys)) for r in rows)
              if o is not None and d is not None]
    if paired:
        lower = sum(d < o for o, d in paired)
        text += (f"; on the {len(paired)} rows with an accepted rewrite, the distilled target is more likely "
                 f"under the seed in {100.0 * lower / len(paired):.1f}% of rows")
    blocks.append(text[0].upper() + text[1:] + ".")
    return Section(title, blocks, 3)


def _methods_text() -> str:
    """The methods' folder names for notes about where files were looked for: {sft,sdft,onpolicy}."""
    return "{" + ",".join(METHODS) + "}"


def retention_section(run: Path, plot_dir: Path, problems: list[str], figures: list[Path]) -> Section:
    title = "Retention: closeness to the seed's replies"
    keys = per_prompt_fields("retention", "cosine_to_seed")
    series = {label(m): column_values(load_predictions(run, "retention", m, problems), keys) for m in METHODS}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return Section(title, [Note(f"skipped: no per-row cosine_to_seed in eval/{_methods_text()}/seed-N/"
                                    "retention/")], 3)
    path = _plot("histogram", plot_dir / "retention_cosine.png", problems, series,
                 title="Similarity of fine-tuned replies to the seed's replies",
                 xlabel="cosine similarity to the seed model's reply (higher = closer)")
    blocks = _figure(run, figures, path, "retention similarity histogram",
                     "Embedding cosine similarity between each fine-tuned model's reply and the seed model's "
                     "reply to the same instruction (pooled over training seeds).")
    blocks.append("; ".join(f"{k}: mean cosine {statistics.fmean(v):.3f} over {len(v)} replies"
                            for k, v in series.items()) + ".")
    return Section(title, blocks, 3)


def training_section(run: Path, plot_dir: Path, problems: list[str], figures: list[Path]) -> Section:
    title = "Training"
    curves: dict[str, list[tuple[float, float]]] = {}  # "SFT", or "SFT seed-42" when a method has several
    table = Table(["model", "seed", "rows", "steps", "final loss"], [])
    for m in METHODS:
        folders = train_folders(run, m)
        for d in folders:
            log = _read_jsonl(run, d / "train_log.jsonl", problems) or []
            points = [(s, l) for s, l in ((_finite(r.get("step")), _finite(r.get("loss"))) for r in log)
                      if s is not None and l is not None]
            if points:
                curves[label(m) if len(folders) == 1 else f"{label(m)} {d.name}"] = points
            summary = _read_json(run, d / "train_summary.json", problems)
            if isinstance(summary, dict):
                loss = _finite(summary.get("final_loss"))
                table.rows.append([label(m), str(seed_of(d)), str(summary.get("rows", "—")),
                                   str(summary.get("steps", "—")), f"{loss:.4f}" if loss is not None else "—"])
    if curves:
        path = _plot("plot_losses", plot_dir / "loss_curves.png", problems, curves,
                     title="Training loss: SFT vs SDFT")
        blocks = _figure(run, figures, path, "training loss curves",
                         "Training loss on response tokens, SFT vs SDFT, same settings. SDFT's targets are "
                         "already likely under the seed, so its loss should start lower. On-policy SDFT's loss "
                         "is its distillation divergence on its own samples, on another scale.")
    else:
        blocks = [Note(f"skipped the loss plot: no train/{_methods_text()}/seed-N/train_log.jsonl with loss "
                       "values")]
    if table.rows:
        blocks.append(table)
    return Section(title, blocks, 3)


def main_metrics_section(run: Path, results: Results, columns: list[Column], plot_dir: Path,
                         problems: list[str], figures: list[Path]) -> Section:
    """Bar chart of every percentage column (task and safety scores share one 0-100 axis)."""
    title = "Main metrics"
    cols = [c for c in columns if declaration(c).unit == "%"]
    if not cols:
        return Section(title, [Note("skipped: no percentage metrics (accuracy, pass@1, refusal rate, ...) found")], 3)
    series = {label(row): [_bar(results[row].get(c, [])) for c in cols] for row in ROWS}
    series = {k: v for k, v in series.items() if any(b is not None for b in v)}
    path = _plot("bar_chart", plot_dir / "main_metrics.png", problems, [f"{s}\n{m}" for s, m in cols], series,
                 ylabel="score (%)", title="Seed vs SFT vs SDFT", ylim=(0, 105))
    blocks = _figure(run, figures, path, "main metrics bar chart",
                     "The table's percentage metrics. Error bars: the 95% interval for a single run, "
                     "± one standard deviation across seeds for several.")
    return Section(title, blocks or [Note("skipped: the bar chart could not be drawn")], 3)


def _bar(values: list[Value]) -> tuple[float, float, float] | None:
    if not values:
        return None
    if len(values) > 1:
        xs = [100 * v.value for v in values]
        mean, std = statistics.fmean(xs), statistics.stdev(xs)
        return mean, std, std
    v = values[0]
    low = v.value if v.low is None else v.low
    high = v.value if v.high is None else v.high
    return 100 * v.value, max(0.0, 100 * (v.value - low)), max(0.0, 100 * (high - v.value))


def column_meaning(col: Column) -> str:
    """`**math accuracy** (higher is better): share of ...`, naming the unit where the head leaves it out."""
    spec = declaration(col)
    reading = {1: "higher is better", -1: "lower is better", 0: "descriptive, no better direction"}[spec.direction]
    if spec.unit in UNITS_IN_NAME:
        reading += f"; in {spec.unit}"
    return f"**{col[0]} {spec.heading(col[1])}** ({reading}): {spec.meaning}."


def how_to_read_section(columns: list[Column], multi_seed: bool, curves: bool = False) -> Section:
    metrics = [column_meaning(c) for c in columns]
    general = [
        "**Learning against forgetting.** Each checkpoint of each training run is a point: how far it has "
        "learned the task across, how much it has forgotten up. A method that learns as much while forgetting "
        "less runs below the other; comparing final checkpoints alone would favour whichever learned less, so "
        "the verdict compares forgetting at the same level of learning. The table under it gives every "
        "curve metric the run measured at every checkpoint, the KL on the task's own prompts among them "
        "(forgetting tracked it in \"RL's Razor\").",
    ] if curves else []
    general += [
        "**Rows.** Seed is the model before fine-tuning; SFT is LoRA on the original responses; SDFT is the "
        "same LoRA training on the seed's own rewrites of those responses (the distilled set). SDFT "
        "(on-policy), when present, trains on the model's own samples, pulled towards the seed reading the "
        "reference (docs/METHODS.md); its loss is a divergence, not comparable in size to the others'.",
        "**Cells.** `41.7 [28.9, 55.6]` is a score with its 95% interval; proportions are in %, NLLs have 3 "
        "decimals, BLEU is on its 0-100 scale. Overlapping intervals mean the difference may be noise."
        + (" `mean ± std (k seeds)` summarises k training seeds." if multi_seed else ""),
        "**Bold** marks the best fine-tuned model in a column, in that column's direction. \"—\" means that "
        "model was not evaluated on that suite.",
        "**Distribution gap.** The histogram compares how likely the seed finds each kind of training target. "
        "SDFT's distilled targets should sit to the left (lower NLL): they are closer to the seed's own "
        "distribution, so training on them moves the model less.",
        "**Retention.** The cosine histogram compares how close each fine-tuned model's replies stay to the "
        "seed's replies on general instructions. SDFT's should sit further right (more similar): fine-tuning "
        "on self-distilled data should preserve more of what the seed could already do.",
    ]
    blocks: list[Block] = [general]
    if metrics:
        blocks += ["The columns in this run:", metrics]
    return Section("How to read this report", blocks)


# ---------------------------------------------------------------------------------------------------
# Plotting is imported lazily (matplotlib is slow to import) and never allowed to sink the report.

def _figure(run: Path, figures: list[Path], path: Path | None, alt: str, caption: str) -> list[Block]:
    """The drawn plot as a report block (and in `figures`); nothing when it could not be drawn."""
    if path is None:
        return []
    figures.append(path)
    return [Figure(_rel(run, path), alt, caption)]


def _plot(name: str, path: Path, problems: list[str], *args, **kwargs) -> Path | None:
    """Call sdft.report.plots.<name>(*args, path=path, ...); None (and a note) if it fails."""
    try:
        from sdft.report import plots

        return getattr(plots, name)(*args, path=path, **kwargs)
    except Exception as e:  # a broken figure must not cost the rest of the report
        problems.append(f"could not draw `{path.name}`: {e}")
        return None


# ---------------------------------------------------------------------------------------------------
# Rendering.

def _md_cell(text: str) -> str:
    """Table cell text that cannot end its cell or its row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _inline_html(text: str) -> Markup:
    """Escape, then turn the few Markdown marks the report uses (**bold**, `code`) into tags."""
    text = str(escape(text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


def _block_data(b: Block, run: Path, embed: bool) -> dict:
    """A block as plain data for the templates, which cannot tell dataclasses apart. `embed`: the
    figure's PNG as base64, so the HTML page is one file that can be mailed or attached as is."""
    if isinstance(b, Table):
        return {"kind": "table", "header": b.header,
                "rows": [[(c, (i, j) in b.bold) for j, c in enumerate(row)] for i, row in enumerate(b.rows)]}
    if isinstance(b, Figure):
        data = base64.b64encode((run / b.path).read_bytes()).decode("ascii") if embed else None
        return {"kind": "figure", "alt": b.alt, "caption": b.caption, "path": b.path, "data": data}
    if isinstance(b, Note):
        return {"kind": "note", "text": b.text}
    if isinstance(b, list):
        return {"kind": "list", "entries": b}
    return {"kind": "paragraph", "text": b}


def _render(template: str, title: str, sections: list[Section], run: Path, html: bool) -> str:
    """templates/<template> over the sections. HTML autoescapes, so no run-folder text becomes markup;
    Markdown is plain text, with table cells kept inside their cell."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=html, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=not html, lstrip_blocks=not html)
    env.filters["inline"] = _inline_html
    env.filters["cell"] = _md_cell
    page = [{"title": s.title, "level": s.level, "blocks": [_block_data(b, run, embed=html) for b in s.blocks]}
            for s in sections]
    return env.get_template(template).render(title=title, sections=page)


def render_markdown(title: str, sections: list[Section], run: Path) -> str:
    return _render("report.md.j2", title, sections, run, html=False).rstrip() + "\n"


def render_html(title: str, sections: list[Section], run: Path) -> str:
    return _render("report.html.j2", title, sections, run, html=True)


# ---------------------------------------------------------------------------------------------------
# report.json: the numbers behind the page, for programs (fields in the module docstring).

def table_data(results: Results, columns: list[Column], rows: list[str]) -> list[dict]:
    """The results table's numbers: each model's value per training seed, and the mean ± std a cell
    shows where there are several."""
    out = []
    for row in rows:
        for col in columns:
            spec, values = declaration(col), results[row].get(col, [])
            base = {"model": row, "suite": col[0], "metric": col[1], "role": spec.role, "unit": spec.unit}
            out += [base | {"seed": v.seed, "value": v.value, "low": v.low, "high": v.high, "n": v.n}
                    for v in values]
            if len(values) > 1:
                xs = [v.value for v in values]
                out.append(base | {"seed": "mean", "value": statistics.fmean(xs), "low": None, "high": None,
                                   "n": None, "std": statistics.stdev(xs), "seeds": len(xs)})
    return out


def _flips(flips: float | None) -> dict:
    return {} if flips is None else {"knowledge_flips": flips}


def curve_data(curves: RunCurves | None) -> tuple[list[dict], list[dict]]:
    """(every curve.jsonl row, each method's mean curve)."""
    if curves is None:
        return [], []
    seed, rows = curves.seed_point, []
    if seed is not None:
        rows.append({"method": SEED_ROW, "seed": None, "step": seed.step, "task": seed.task,
                     "forgetting": seed.forgetting, "metrics": dict(seed.metrics)}
                    | _flips(knowledge_flips(seed, seed)))
    points = {(p.model, p.step): p for p in along_training(curves, METHODS)}
    means = []
    for m in METHODS:
        for s, own in sorted(curves.methods.get(m, {}).items()):
            rows += [{"method": m, "seed": s, "step": r.step, "task": r.task, "forgetting": r.forgetting,
                      "metrics": dict(r.metrics)} | _flips(knowledge_flips(seed, r)) for r in own]
        if m in curves.methods:
            mean = mean_curve(curves, m)
            for k, t, f in zip(mean.steps, mean.task, mean.forgetting):
                point = points.get((m, k)) or points[(SEED_ROW, k)]  # step 0 is the seed's own point
                means.append({"method": m, "step": k, "task": t, "forgetting": f, "seeds": len(curves.methods[m]),
                              "metrics": {n: v for n, v in point.means.items() if n not in ("task", "forgetting")}}
                             | _flips(point.knowledge_flips))
    return rows, means


def verdict_data(matched: list[MatchedComparison], compared: list[tuple[str, Comparison]]) -> list[dict]:
    out = [{"axis": "forgetting_at_matched_learning", "method": c.method, "baseline": c.baseline,
            "diff": c.diff, "low": c.low, "high": c.high, "outcome": c.outcome,
            "text": matched_line(c, label(c.method), label(c.baseline)),
            "level": c.level, "seeds_agree": c.seeds_agree, "seeds": c.seeds,
            "task_metric": c.task_metric, "task_direction": c.task_direction,
            "forgetting_metric": c.forgetting_metric, "seed_task": c.seed_task,
            "method_peak": c.method_peak, "baseline_peak": c.baseline_peak,
            "method_seeds": c.method_seeds, "baseline_seeds": c.baseline_seeds,
            "task_prompts": c.task_prompts, "forgetting_prompts": c.forgetting_prompts,
            "paired_seeds": c.paired_seeds} for c in matched]
    out += [{"axis": f"{c.axis.suite}/{c.axis.metric.name}", "method": m, "baseline": "sft", "diff": c.diff,
             "low": c.low, "high": c.high, "outcome": c.outcome, "text": verdict_line(c, label(m), label("sft")),
             "seeds": c.seeds, "prompts": c.prompts} for m, c in compared]
    return out


# ---------------------------------------------------------------------------------------------------

def run_seeds(run: Path, cfg: dict, env: dict) -> list:
    for seeds in (cfg.get("seeds"), env.get("seeds")):
        if isinstance(seeds, list) and seeds:
            return seeds
    found = {seed_of(d) for m in METHODS for d in train_folders(run, m) + eval_folders(run, m)}
    return sorted(found)


def build_report(run_dir: str | Path) -> list[Path]:
    """Write RUN/report.md, RUN/report.html, RUN/report.json and RUN/plots/*.png; returns the paths
    written."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder at {run}")
    problems: list[str] = []
    cfg = _read_yaml(run, run / "config.yaml", problems)
    env = _read_json(run, run / "environment.json", problems)
    env = env if isinstance(env, dict) else {}
    distill = _read_json(run, summary_path(distilled_path(run)), problems)
    results, columns, not_computed = load_metrics(run, problems)
    seeds = run_seeds(run, cfg, env)
    multi_seed = len(seeds) > 1 or any(len(eval_folders(run, m)) > 1 for m in METHODS)

    curves, curves_unreadable = read_curves(run, problems, cfg if isinstance(cfg, dict) else None)
    matched = matched_comparisons(curves)
    compared = prompt_comparisons(run, problems)
    rows = shown_rows(cfg, results)

    plot_dir, figures = run / "plots", []
    opening = curve_section(run, curves, curves_unreadable, plot_dir, problems, figures)
    sections = [
        *([opening] if opening is not None else []),
        verdict_section(matched, compared),
        header_section(cfg, env, distill, seeds),
        distill_section(distill),
        results_section(results, columns, not_computed, multi_seed, rows),
        Section("Figures", []),
        gap_section(run, plot_dir, problems, figures),
        retention_section(run, plot_dir, problems, figures),
        training_section(run, plot_dir, problems, figures),
        main_metrics_section(run, results, columns, plot_dir, problems, figures),
        settings_section(run, problems),
        how_to_read_section(columns, multi_seed, curves is not None),
    ]
    if problems:  # a file read by two sections reports its problem once
        sections.append(Section("Problems reading the run folder", [list(dict.fromkeys(problems))]))

    title = f"SDFT report: {run.resolve().name}"
    md_path, html_path, json_path = run / "report.md", run / "report.html", run / "report.json"
    with atomic_write(md_path) as f:
        f.write(render_markdown(title, sections, run))
    with atomic_write(html_path) as f:
        f.write(render_html(title, sections, run))
    curve_rows, curve_means = curve_data(curves)
    write_json(json_path, {"table": table_data(results, columns, rows), "curve": curve_rows,
                           "curve_mean": curve_means, "verdict": verdict_data(matched, compared)})
    return [md_path, html_path, json_path, *figures]
