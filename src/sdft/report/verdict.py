"""The report's opening lines: did SDFT (or on-policy SDFT) do better than SFT, prompt by prompt?

Both methods answer the same prompts, and with several training seeds (seed-N of one method paired
with seed-N of the other) each prompt gets one SDFT-minus-SFT difference per seed. Comparing the two
methods' means with separate intervals throws that pairing away: most of the spread between prompts
(an easy prompt is easy for both) cancels in the difference. So each axis is judged on the per-prompt
difference, averaged over seeds, with a paired bootstrap over prompts (`bootstrap_difference_interval`).

A line claims only what its 95% interval supports: an interval above 0 in the axis's good direction
says the method did better, one on the bad side says it did worse, and one containing 0 says no
difference was detected at this size (which is not evidence that there is none).

The axes are the suites' metric declarations that carry a `verdict` (sdft.evaluate.metrics): its
per-prompt field, its direction and the words of its line.

The first line, where the run measured learning-against-forgetting curves, is of another kind: how
much more or less each method forgot than SFT by the time both had learned the task equally well
(sdft.report.curve), with a two-level bootstrap interval over training seeds and prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdft.evaluate.metrics import MetricSpec
from sdft.evaluate.stats import bootstrap_difference_interval
from sdft.evaluate.suites import declared_metrics
from sdft.report.curve import MatchedComparison, metric_unit

Rows = dict[str, list[dict]]  # training-seed folder ("seed-42") -> that model's predictions.jsonl rows


@dataclass(frozen=True)
class Axis:
    suite: str
    metric: MetricSpec  # its per-prompt field is compared; its `verdict` says how the line reads

    @property
    def pct(self) -> bool:
        """A 0/1 outcome per prompt, so the difference reads in percentage points."""
        return self.metric.unit == "%"


def axes() -> list[Axis]:
    """Every metric the suites declare a per-prompt comparison for, in suite order."""
    return [Axis(suite, m) for suite, m in declared_metrics() if m.verdict is not None]


@dataclass(frozen=True)
class Comparison:
    axis: Axis
    diff: float  # mean over seeds and prompts of method minus baseline, in the metric's own units
    low: float
    high: float
    seeds: int
    prompts: int

    @property
    def outcome(self) -> str:
        """"better" or "worse" only when the whole interval is on that side of 0; else "none"."""
        if self.low > 0 or self.high < 0:
            return "better" if (self.low > 0) == (self.axis.metric.direction > 0) else "worse"
        return "none"


def row_value(row: dict, keys: tuple[str, ...]) -> float | None:
    """The row's score as a float (booleans as 0/1); None when absent, unscorable (null) or not finite."""
    v = next((row[k] for k in keys if k in row), None)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def per_prompt(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """{prompt id: score}; rows without an id are keyed by position (same suite, same order)."""
    out = {}
    for i, row in enumerate(rows):
        v = row_value(row, keys)
        if v is not None:
            out[str(row.get("id", f"#{i}"))] = v
    return out


def compare(axis: Axis, method: Rows, baseline: Rows, n_resamples: int = 2000,
            seed: int = 0) -> Comparison | None:
    """method minus baseline on `axis`, over the training seeds both have and the prompts every one of
    those models scored; None when there is nothing to pair."""
    seeds = [s for s in method if s in baseline]
    keys = axis.metric.per_prompt
    scores = [(per_prompt(method[s], keys), per_prompt(baseline[s], keys)) for s in seeds]
    scores = [(m, b) for m, b in scores if m and b]
    if not scores:
        return None
    common = set.intersection(*(set(m) & set(b) for m, b in scores))
    ids = sorted(common)
    if not ids:
        return None
    a = [[m[i] for i in ids] for m, _ in scores]
    b = [[bl[i] for i in ids] for _, bl in scores]
    low, high = bootstrap_difference_interval(a, b, paired=True, n_resamples=n_resamples, seed=seed)
    diff = sum(x - y for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / (len(ids) * len(scores))
    return Comparison(axis, diff, low, high, len(scores), len(ids))


def fmt_diff(x: float, pct: bool, decimals: int = 3) -> str:
    return f"{100 * x:+.1f}" if pct else f"{x:+.{decimals}f}"


def decimals_for(*values: float) -> int:
    """3 decimals, or where all of the numbers are below 0.001 (a KL of ~1e-3 nats moves by ~1e-4)
    enough for two significant digits of the largest, so that the line does not read +0.000."""
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    return 3 if largest >= 1e-3 or largest == 0 else 1 - math.floor(math.log10(largest))


def verdict_line(c: Comparison, method: str, baseline: str) -> str:
    """One sentence that claims no more than the interval supports."""
    pct, words = c.axis.pct, c.axis.metric.verdict
    units = " pts" if pct else ""
    d = decimals_for(c.diff, c.low, c.high)
    numbers = (f"{words.label} {fmt_diff(c.diff, pct, d)}{units} [{fmt_diff(c.low, pct, d)}, "
               f"{fmt_diff(c.high, pct, d)}]")
    size = f"({c.seeds} seed{'s' if c.seeds != 1 else ''} x {c.prompts} prompts)"
    if c.outcome == "better":
        text = words.better.format(m=method, b=baseline)
    elif c.outcome == "worse":
        text = words.worse.format(m=method, b=baseline)
    else:
        text = f"{method} vs {baseline}, {words.about}: no difference detected at this size"
    return f"{text}: {numbers} {size}"


def verdicts(predictions: dict[str, dict[str, Rows]], method: str, baseline: str = "sft") -> list[Comparison]:
    """Every axis both methods have per-prompt results for; predictions is {method: {suite: Rows}}."""
    mine, theirs = predictions.get(method, {}), predictions.get(baseline, {})
    found = []
    for axis in axes():
        c = compare(axis, mine.get(axis.suite, {}), theirs.get(axis.suite, {}))
        if c is not None:
            found.append(c)
    return found


def fmt_level(x: float, metric: str) -> str:
    """A task value as its metric's unit reads: `45.0%` for a proportion, else 3 decimals."""
    return f"{100 * x:.1f}%" if metric_unit(metric) == "%" else f"{x:.3f}"


def matched_line(c: MatchedComparison, method: str, baseline: str) -> str:
    """The matched-learning line: forgetting of `method` minus `baseline` where both mean curves have
    learned the task as far as the one that learned less; no claim when either learned nothing."""
    about = f"{method} vs {baseline}, forgetting at matched learning"
    names = {c.method: method, c.baseline: baseline}
    if c.level is None:
        stalled = c.stalled()
        if not stalled:
            return (f"{about}: no claim: the seed's own point (eval/seed/curve.jsonl) is missing, so the curves "
                    "have no common start to measure learning from")
        who = " and ".join(f"{names[m]}'s" for m in stalled)
        return (f"{about}: no claim: the task did not improve ({who} mean {c.task_metric} never got past the "
                f"seed's {fmt_level(c.seed_task, c.task_metric)}), so there is no learning to match")
    d = decimals_for(c.diff, c.low, c.high)
    numbers = (f"{c.forgetting_metric} {fmt_diff(c.diff, False, d)} [{fmt_diff(c.low, False, d)}, "
               f"{fmt_diff(c.high, False, d)}] at {c.task_metric} {fmt_level(c.level, c.task_metric)}")
    direction = c.task_direction
    reach = "the most both reached"
    if direction * c.method_peak > direction * c.baseline_peak:
        reach += f" ({baseline} never got to {method}'s {fmt_level(c.method_peak, c.task_metric)})"
    elif direction * c.method_peak < direction * c.baseline_peak:
        reach += f" ({method} never got to {baseline}'s {fmt_level(c.baseline_peak, c.task_metric)})"
    if c.outcome == "less":
        text = f"{method} forgot less than {baseline} at matched learning"
    elif c.outcome == "more":
        text = f"{method} forgot more than {baseline} at matched learning"
    else:
        text = f"{about}: no difference detected at this size"
    if not c.seeds:
        agree = "no training seed in common to compare seed by seed"
    else:
        agree = f"{c.seeds_agree} of {c.seeds} " + ("seeds agree" if c.seeds != 1 else "seed agrees")
    seeds = (str(c.method_seeds) if c.method_seeds == c.baseline_seeds
             else f"{c.method_seeds} {method} and {c.baseline_seeds} {baseline}")
    return (f"{text}: {numbers}, {reach}; {agree} ({seeds} seed{'s' if c.method_seeds + c.baseline_seeds > 2 else ''}"
            f" x {c.task_prompts} task / {c.forgetting_prompts} forgetting prompts)")
