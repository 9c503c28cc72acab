"""Write RUN/report.md and a self-contained RUN/report.html for a run folder.

The report puts the seed, SFT and SDFT models (and on-policy SDFT, when the run trained it) side by
side in the shape of the paper's Table 1, adds
the figures that explain the numbers (the distribution gap between original and distilled targets,
how close fine-tuned replies stay to the seed's), and says how to read them.

Every input is optional: a run that only evaluated math, or never evaluated the seed, still gets a
report; a missing or unreadable file drops its column, figure or section and leaves a note instead.

The report is assembled once as a small list of sections (paragraphs, tables, figures, notes) and
then rendered twice, so the Markdown and HTML versions can never disagree.
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

from sdft.core.io import atomic_write
from sdft.report.verdict import AXES, Rows, verdict_line, verdicts

ROWS = {"seed": "Seed", "sft": "SFT", "sdft": "SDFT", "onpolicy": "SDFT (on-policy)"}  # run-folder name -> label
METHODS = ("sft", "sdft", "onpolicy")
OPTIONAL_ROWS = ("onpolicy",)  # shown only when the run has results for them (a run's `methods` may omit them)
VERDICT_SUITES = {a.suite for a in AXES}
SUITE_ORDER = ("math", "function", "humaneval", "safety", "helpfulness", "knowledge", "gap", "retention")


@dataclass(frozen=True)
class MetricInfo:
    direction: int  # +1: higher is better, -1: lower is better, 0: descriptive (never bold)
    kind: str  # pct: a proportion shown as %; nll, score: 3 decimals; bleu: 0-100 as is; num: 1 decimal
    meaning: str


# The one direction map: which way each metric should move, how it is shown, what it measures.
# Higher is better everywhere except the NLLs (a lower NLL means a text is more likely under the model).
# nll_gap has no better direction: SFT shrinks it by learning the originals, SDFT widens it by learning
# the rewrites, so bolding either would only restate which data each model was trained on.
METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo(+1, "pct", "share of questions answered correctly"),
    "accuracy_norm": MetricInfo(+1, "pct", "multiple-choice accuracy with length-normalised likelihoods"),
    "exact": MetricInfo(+1, "pct", "function calls that match the reference exactly"),
    "loose": MetricInfo(+1, "pct", "function calls that match the reference up to formatting"),
    "pass@1": MetricInfo(+1, "pct", "programs that pass their unit tests on the first sample"),
    "refusal_rate": MetricInfo(+1, "pct", "harmful requests the model refuses"),
    "jailbreak_refusal_rate": MetricInfo(+1, "pct", "harmful requests with an adversarial suffix still refused"),
    "mean_words": MetricInfo(+1, "num", "mean reply length in words, a rough proxy for how much help is given"),
    "win_rate_vs_seed": MetricInfo(+1, "pct", "replies a judge prefers over the seed model's"),
    "nll_original": MetricInfo(-1, "nll", "per-token NLL of the original training responses under that row's model"),
    "nll_distilled": MetricInfo(-1, "nll", "per-token NLL of the distilled training responses under that row's model"),
    "nll_shift": MetricInfo(-1, "nll", "change in per-token NLL of the seed's own replies after fine-tuning "
                                       "(how far the model drifted)"),
    "nll_gap": MetricInfo(0, "nll", "mean per-row NLL of the original minus the distilled response, on "
                                    "accepted rows (above 0: the rewrites are the more likely targets)"),
    "rewrite_more_likely": MetricInfo(0, "pct", "accepted rows whose kept target the model finds more likely "
                                                "than the original"),
    "nll_seed_reply": MetricInfo(-1, "nll", "per-token NLL of the seed's replies under that row's model "
                                            "(for the seed: of its own replies)"),
    "cosine_to_seed": MetricInfo(+1, "score", "embedding cosine similarity of replies to the seed's replies"),
    "rouge_l_to_seed": MetricInfo(+1, "score", "ROUGE-L F1 of replies against the seed's replies"),
    "bleu4_to_seed": MetricInfo(+1, "bleu", "sentence BLEU-4 (0-100) of replies against the seed's replies"),
}
UNITS = {"pct": " (%)", "bleu": " (0-100)"}


def metric_info(name: str) -> MetricInfo:
    """Known metrics from METRICS; an unknown one is lower-is-better only if it is an NLL."""
    if name in METRICS:
        return METRICS[name]
    return MetricInfo(-1 if name.startswith("nll") else +1, "score", "metric reported by the suite")


# ---------------------------------------------------------------------------------------------------
# Reading the run folder. Every reader returns None (and records why) instead of raising.

@dataclass(frozen=True)
class Value:
    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None


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


def seed_dirs(parent: Path) -> list[Path]:
    """`parent/seed-N` folders in numeric order (seed-2 before seed-10)."""
    if not parent.is_dir():
        return []
    dirs = [p for p in parent.iterdir() if p.is_dir() and re.fullmatch(r"seed-\d+", p.name)]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def _suite_rank(suite: str) -> int:
    return SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)


def load_metrics(run: Path, problems: list[str]) -> tuple[Results, list[Column], list[str]]:
    """Every metrics.json under eval/, grouped by row and column (columns in suite order), plus one line
    per metric a suite reported as not computed (value null with a "note", e.g. no judge configured)."""
    results: Results = {row: {} for row in ROWS}
    seen: dict[Column, None] = {}  # insertion-ordered set: metrics keep the order suites wrote them
    skipped: dict[tuple[str, str, str], list[str]] = {}  # (suite, metric, note) -> where
    for row in ROWS:
        base = run / "eval" / row
        for d in [base] if row == "seed" else seed_dirs(base):
            where = ROWS[row] if row == "seed" else f"{ROWS[row]} {d.name}"
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
                        value, _finite(e.get("low")), _finite(e.get("high")), n if isinstance(n, int) else None)
                for col, v in found.items():
                    results[row].setdefault(col, []).append(v)
                    seen.setdefault(col)
    columns = sorted(seen, key=lambda c: (_suite_rank(c[0]), c[0]))  # stable: metric order kept
    not_computed = [f"{suite} {name} ({', '.join(where)}): {text}" for (suite, name, text), where in skipped.items()]
    return results, columns, not_computed


def load_predictions(run: Path, suite: str, row: str, problems: list[str]) -> list[dict]:
    """predictions.jsonl rows of one suite for one table row, pooled over training seeds."""
    base = run / "eval" / row
    rows: list[dict] = []
    for d in [base] if row == "seed" else seed_dirs(base):
        rows += _read_jsonl(run, d / suite / "predictions.jsonl", problems) or []
    return rows


def column_values(rows: list[dict], *keys: str) -> list[float]:
    """The finite values of the first of `keys` each row has (suites may use a short per-row name)."""
    out = []
    for r in rows:
        v = _finite(next((r[k] for k in keys if k in r), None))
        if v is not None:
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------------
# Formatting numbers and cells.

def fmt_number(x: float, kind: str) -> str:
    if kind == "pct":
        return f"{100 * x:.1f}"
    if kind in ("nll", "score"):
        return f"{x:.3f}"
    return f"{x:.1f}"


def fmt_cell(values: list[Value], kind: str, multi_seed: bool) -> str:
    """`41.7 [28.9, 55.6]` for one run; `41.7 ± 2.1 (3 seeds)` (sample std) over several seeds."""
    if not values:
        return "—"
    if len(values) == 1:
        v = values[0]
        text = fmt_number(v.value, kind)
        if v.low is not None and v.high is not None:
            text += f" [{fmt_number(v.low, kind)}, {fmt_number(v.high, kind)}]"
        return text + (" (1 seed)" if multi_seed else "")
    xs = [v.value for v in values]
    return f"{fmt_number(statistics.fmean(xs), kind)} ± {fmt_number(statistics.stdev(xs), kind)} ({len(xs)} seeds)"


def center(values: list[Value]) -> float | None:
    return statistics.fmean(v.value for v in values) if values else None


def better_method(results: Results, col: Column) -> str | None:
    """Which fine-tuned method scores best on `col` in its direction; None on a tie for the best, for a
    descriptive column, or when fewer than two methods have a value."""
    sign = metric_info(col[1]).direction
    scores = {m: center(results[m].get(col, [])) for m in METHODS}
    scores = {m: v for m, v in scores.items() if v is not None}
    if sign == 0 or len(scores) < 2:
        return None
    best = max(sign * v for v in scores.values())
    winners = [m for m, v in scores.items() if sign * v == best]
    return winners[0] if len(winners) == 1 else None


def column_label(col: Column) -> str:
    info = metric_info(col[1])
    arrow = {1: " ↑", -1: " ↓"}.get(info.direction, "")
    return f"{col[0]} {col[1]}{UNITS.get(info.kind, '')}{arrow}"


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
    folders = [("seed", run / "eval" / "seed")]
    folders += [(f"{m}/{d.name}", d) for m in METHODS for d in seed_dirs(run / "eval" / m)]
    found: dict[str, dict[str, dict]] = {}
    for label, folder in folders:
        for path in sorted(folder.glob("*/settings.json")) if folder.is_dir() else []:
            settings = _read_json(run, path, problems)
            if isinstance(settings, dict):
                found.setdefault(path.parent.name, {})[label] = settings
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


def settings_section(run: Path, problems: list[str]) -> Section:
    """What produced each suite's numbers, and a warning where models were evaluated under other settings."""
    found = eval_settings(run, problems)
    if not found:
        return Section("Evaluation settings", [Note("no settings.json under eval/ (results of an older sdft)")])
    rows, warnings = [], []
    for suite in sorted(found, key=_suite_rank):
        by_model = found[suite]
        # seed_dir and the seed's predictions differ by design between the seed and fine-tuned models.
        comparable = {label: _settings_text({**s, "files": {k: v for k, v in _mapping(s.get("files")).items()
                                                            if k != "seed_predictions"}})
                      for label, s in by_model.items()}
        texts = sorted(set(comparable.values()))
        rows.append([suite, texts[0] if len(texts) == 1 else " / ".join(texts)])
        if len(texts) > 1:
            warnings.append(f"{suite}: models were evaluated under different settings, so their numbers are not "
                            "comparable: " + "; ".join(f"{label}: {t}" for label, t in sorted(comparable.items())))
    blocks: list[Block] = ["The settings behind each suite's numbers (from each eval folder's settings.json).",
                           Table(["suite", "settings"], rows)]
    blocks += [Note(w) for w in warnings]
    return Section("Evaluation settings", blocks)


def results_section(results: Results, columns: list[Column], not_computed: list[str], multi_seed: bool) -> Section:
    extra: list[Block] = ["Not computed:", not_computed] if not_computed else []
    if not columns:
        return Section("Results", [Note("no evaluation metrics found under eval/; run the evaluation suites")] + extra)
    table = Table(["model"] + [column_label(c) for c in columns], [])
    shown = [r for r in ROWS if r not in OPTIONAL_ROWS or results[r]]
    for i, row in enumerate(shown):
        per_seed = multi_seed and row != "seed"  # the seed model is not trained, so it has no seeds
        table.rows.append([ROWS[row]] + [fmt_cell(results[row].get(c, []), metric_info(c[1]).kind, per_seed)
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
    if any(metric_info(c[1]).direction == 0 for c in columns):
        legend += "; a column without an arrow is descriptive and never bold"
    return Section("Results", [intro + legend + ".", table] + extra)


def predictions_by_seed(run: Path, method: str, problems: list[str]) -> dict[str, Rows]:
    """{suite: {"seed-N": predictions rows}} of one fine-tuned method, for the per-prompt verdict."""
    found: dict[str, Rows] = {}
    for d in seed_dirs(run / "eval" / method):
        for path in sorted(d.glob("*/predictions.jsonl")):
            if path.parent.name not in VERDICT_SUITES:
                continue
            rows = _read_jsonl(run, path, problems)
            if rows:
                found.setdefault(path.parent.name, {})[d.name] = rows
    return found


def verdict_section(run: Path, problems: list[str]) -> Section:
    """The opening lines: each method against SFT, per prompt, with a paired bootstrap interval."""
    predictions = {m: predictions_by_seed(run, m, problems) for m in METHODS}
    lines = [verdict_line(c, ROWS[m], ROWS["sft"]) for m in METHODS if m != "sft"
             for c in verdicts(predictions, m, "sft")]
    if not lines:
        return Section("Verdict", [Note("no verdict: it needs per-prompt results of SFT and another method from "
                                        "the same training seeds (eval/{sft,sdft}/seed-N/<suite>/predictions.jsonl)")])
    return Section("Verdict", [lines, (
        "Each line compares the two models prompt by prompt: the number is the mean difference (first model "
        "minus SFT; accuracies in percentage points), averaged over the training seeds both have, with a 95% "
        "paired bootstrap interval over prompts. A line says a model did better or worse only when the whole "
        "interval lies on that side of 0; each line is tested on its own, so among many lines one may cross "
        "0 by chance.")])


def gap_section(run: Path, plot_dir: Path, problems: list[str], figures: list[Path]) -> Section:
    title = "Distribution gap"
    rows = load_predictions(run, "gap", "seed", problems)
    original, distilled = column_values(rows, "nll_original"), column_values(rows, "nll_distilled")
    if not original and not distilled:
        return Section(title, [Note("skipped: no per-row NLLs in eval/seed/gap/predictions.jsonl")], 3)
    series = {k: v for k, v in (("original (SFT's targets)", original), ("distilled (SDFT's targets)", distilled))
              if v}
    path = _plot("histogram", plot_dir / "gap_nll.png", problems, series,
                 title="Seed model's NLL of the training targets",
                 xlabel="per-token NLL under the seed model (lower = closer to its own distribution)")
    blocks = _figure(run, figures, path, "distribution gap histogram",
                     "Per-token NLL that the seed model assigns to the original responses (what SFT trains on) "
                     "and to its distilled rewrites (what SDFT trains on). Dashed lines mark the means.")
    text = " vs ".join(f"mean {k.split()[0]} NLL {statistics.fmean(v):.3f} (n={len(v)})" for k, v in series.items())
    paired = [(o, d) for o, d in ((_finite(r.get("nll_original")), _finite(r.get("nll_distilled")))
                                  for r in rows) if o is not None and d is not None]
    if paired:
        lower = sum(d < o for o, d in paired)
        text += (f"; on the {len(paired)} rows with an accepted rewrite, the distilled target is more likely "
                 f"under the seed in {100.0 * lower / len(paired):.1f}% of rows")
    blocks.append(text[0].upper() + text[1:] + ".")
    return Section(title, blocks, 3)


def retention_section(run: Path, plot_dir: Path, problems: list[str], figures: list[Path]) -> Section:
    title = "Retention: closeness to the seed's replies"
    series = {ROWS[m]: column_values(load_predictions(run, "retention", m, problems), "cosine_to_seed", "cosine")
              for m in METHODS}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return Section(title, [Note("skipped: no per-row cosine_to_seed in eval/{sft,sdft,onpolicy}/seed-N/"
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
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    table = Table(["model", "seed", "rows", "steps", "final loss"], [])
    for m in METHODS:
        for d in seed_dirs(run / "train" / m):
            log = _read_jsonl(run, d / "train_log.jsonl", problems) or []
            points = [(s, l) for s, l in ((_finite(r.get("step")), _finite(r.get("loss"))) for r in log)
                      if s is not None and l is not None]
            if points:
                curves.setdefault(ROWS[m], {})[d.name] = points
            summary = _read_json(run, d / "train_summary.json", problems)
            if isinstance(summary, dict):
                loss = _finite(summary.get("final_loss"))
                table.rows.append([ROWS[m], d.name[5:], str(summary.get("rows", "—")),
                                   str(summary.get("steps", "—")), f"{loss:.4f}" if loss is not None else "—"])
    if curves:
        path = _plot("loss_curves", plot_dir / "loss_curves.png", problems, curves)
        blocks = _figure(run, figures, path, "training loss curves",
                         "Training loss on response tokens, SFT vs SDFT, same settings. SDFT's targets are "
                         "already likely under the seed, so its loss should start lower. On-policy SDFT's loss "
                         "is its distillation divergence on its own samples, on another scale.")
    else:
        blocks = [Note("skipped the loss plot: no train/{sft,sdft,onpolicy}/seed-N/train_log.jsonl with loss "
                       "values")]
    if table.rows:
        blocks.append(table)
    return Section(title, blocks, 3)


def main_metrics_section(run: Path, results: Results, columns: list[Column], plot_dir: Path,
                         problems: list[str], figures: list[Path]) -> Section:
    """Bar chart of every percentage column (task and safety scores share one 0-100 axis)."""
    title = "Main metrics"
    cols = [c for c in columns if metric_info(c[1]).kind == "pct"]
    if not cols:
        return Section(title, [Note("skipped: no percentage metrics (accuracy, pass@1, refusal rate, ...) found")], 3)
    series = {ROWS[row]: [_bar(results[row].get(c, [])) for c in cols] for row in ROWS}
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


def how_to_read_section(columns: list[Column], multi_seed: bool) -> Section:
    reading = {1: "higher is better", -1: "lower is better", 0: "descriptive, no better direction"}
    metrics = [f"**{s} {m}** ({reading[metric_info(m).direction]}): {metric_info(m).meaning}." for s, m in columns]
    general = [
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
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"{'#' * s.level} {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
                out.append("|" + "---|" * len(b.header))
                for i, row in enumerate(b.rows):
                    cells = [f"**{_md_cell(c)}**" if (i, j) in b.bold else _md_cell(c) for j, c in enumerate(row)]
                    out.append("| " + " | ".join(cells) + " |")
            elif isinstance(b, Figure):
                out += [f"![{b.alt}]({b.path})", "", f"*{b.caption}*"]
            elif isinstance(b, Note):
                out.append(f"> Note: {b.text}")
            elif isinstance(b, list):
                out += [f"- {item}" for item in b]
            else:
                out.append(b)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _inline_html(text: str) -> Markup:
    """Escape, then turn the few Markdown marks the report uses (**bold**, `code`) into tags."""
    text = str(escape(text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


def _html_block(b: Block, run: Path) -> dict:
    """A block as plain data for the template, which cannot tell dataclasses apart."""
    if isinstance(b, Table):
        return {"kind": "table", "header": b.header,
                "rows": [[(c, (i, j) in b.bold) for j, c in enumerate(row)] for i, row in enumerate(b.rows)]}
    if isinstance(b, Figure):
        # Inlined, so the page is one file that can be mailed or attached as is.
        data = base64.b64encode((run / b.path).read_bytes()).decode("ascii")
        return {"kind": "figure", "alt": b.alt, "caption": b.caption, "data": data}
    if isinstance(b, Note):
        return {"kind": "note", "text": b.text}
    if isinstance(b, list):
        return {"kind": "list", "entries": b}
    return {"kind": "paragraph", "text": b}


def render_html(title: str, sections: list[Section], run: Path) -> str:
    """The page from templates/report.html.j2; autoescape on, so no run-folder text becomes markup."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["inline"] = _inline_html
    page = [{"title": s.title, "level": s.level, "blocks": [_html_block(b, run) for b in s.blocks]}
            for s in sections]
    return env.get_template("report.html.j2").render(title=title, sections=page)


# ---------------------------------------------------------------------------------------------------

def run_seeds(run: Path, cfg: dict, env: dict) -> list:
    for seeds in (cfg.get("seeds"), env.get("seeds")):
        if isinstance(seeds, list) and seeds:
            return seeds
    found = {d.name[5:] for base in ("train", "eval") for m in METHODS for d in seed_dirs(run / base / m)}
    return sorted(found, key=int)


def build_report(run_dir: str | Path) -> list[Path]:
    """Write RUN/report.md, RUN/report.html and RUN/plots/*.png; returns the paths written."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder at {run}")
    problems: list[str] = []
    cfg = _read_yaml(run, run / "config.yaml", problems)
    env = _read_json(run, run / "environment.json", problems)
    env = env if isinstance(env, dict) else {}
    distill = _read_json(run, run / "distilled.jsonl.summary.json", problems)
    results, columns, not_computed = load_metrics(run, problems)
    seeds = run_seeds(run, cfg, env)
    multi_seed = len(seeds) > 1 or any(len(seed_dirs(run / "eval" / m)) > 1 for m in METHODS)

    plot_dir, figures = run / "plots", []
    sections = [
        verdict_section(run, problems),
        header_section(cfg, env, distill, seeds),
        distill_section(distill),
        results_section(results, columns, not_computed, multi_seed),
        Section("Figures", []),
        gap_section(run, plot_dir, problems, figures),
        retention_section(run, plot_dir, problems, figures),
        training_section(run, plot_dir, problems, figures),
        main_metrics_section(run, results, columns, plot_dir, problems, figures),
        settings_section(run, problems),
        how_to_read_section(columns, multi_seed),
    ]
    if problems:  # a file read by two sections reports its problem once
        sections.append(Section("Problems reading the run folder", [list(dict.fromkeys(problems))]))

    title = f"SDFT report: {run.resolve().name}"
    md_path, html_path = run / "report.md", run / "report.html"
    with atomic_write(md_path) as f:
        f.write(render_markdown(title, sections))
    with atomic_write(html_path) as f:
        f.write(render_html(title, sections, run))
    return [md_path, html_path, *figures]
