"""Learning against forgetting: the curves a run measures at training checkpoints, and how much each
method forgot by the time it had learned as much as SFT.

Each model's evaluation folder may hold a curve.jsonl (sdft.core.layout.curve_path): one row per
checkpoint, in step order, with the task metric and the forgetting metric, each as a mean and per
prompt. The seed model's folder holds one row (step 0); a method's curve is that point followed by the
rows of its own checkpoints. Every file of a run scores the same task prompts and the same forgetting
prompts in the same order, so position i of `task_values` (or `forgetting_values`) is the same prompt
in every file.
Rows may also carry other metrics in `metrics` (`kl_task`, the KL on the task prompts; `knowledge`, a
multiple-choice accuracy) and their per-prompt values as `<name>_values`, each with its own number of
prompts (or questions), the same in every file of the run that has them; files without them are read
as before.

Comparing two methods' forgetting at their final checkpoints would reward the one that learned less.
So the comparison is made at matched learning: walk along each method's mean curve (mean over training
seeds) to the first point where the task metric reaches a level, read the forgetting there
(`forgetting_at`, linear between checkpoints), and take as the level the furthest both mean curves
reach (`matched_level`). The number reported is method minus baseline forgetting at that level.

No learning, no claim: when either mean curve never gets past the seed's task value, the level both
reach is the seed's own, where both curves are still at the seed's point; `compare_matched` then
reports no difference and the line says the task did not improve instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdft.core.errors import InputError
from sdft.core.layout import SEED_ROW, curve_path, eval_dir, seed_dirs, seed_of
from sdft.evaluate.suites import declared_metrics

# The fields every curve.jsonl row carries.
REQUIRED = ("step", "task_metric", "task_direction", "task", "task_values",
            "forgetting_metric", "forgetting", "forgetting_values")
# A row's `task` is the mean of its `task_values` (the same for forgetting) up to float rounding.
MEAN_TOLERANCE = 1e-6
# Metrics whose per-prompt values a row may carry as `<name>_values` (any other name in a row's `metrics`
# may carry them too): the KL from the seed on the task prompts, and multiple-choice accuracy (0/1 each).
KL_TASK, KNOWLEDGE = "kl_task", "knowledge"
EXTRA_METRICS = (KL_TASK, KNOWLEDGE)


# ---------------------------------------------------------------------------------------------------
# Reading curve.jsonl files.

@dataclass(frozen=True)
class CurveRow:
    """One checkpoint of one model, as a curve.jsonl line holds it."""

    step: int
    task: float
    forgetting: float
    task_values: tuple[float, ...]
    forgetting_values: tuple[float, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    metric_values: dict[str, tuple[float, ...]] = field(default_factory=dict)  # `<name>_values`, where present


@dataclass(frozen=True)
class CurveFile:
    path: Path
    task_metric: str
    task_direction: int  # +1: a higher task value is more learning; -1: lower (e.g. an answer NLL)
    forgetting_metric: str
    rows: tuple[CurveRow, ...]
    reference: str | None = None  # which sample of the seed the KL was measured along (sdft.evaluate.curve)


def _bad(path: Path, line: int, what: str) -> InputError:
    return InputError(f"{path}, line {line}: {what}")


def _number(path: Path, line: int, name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise _bad(path, line, f"field `{name}` must be a finite number, got {x!r}")
    return float(x)


def _numbers(path: Path, line: int, name: str, xs) -> tuple[float, ...]:
    if not isinstance(xs, list) or not xs:
        raise _bad(path, line, f"field `{name}` must be a non-empty list of numbers (one per prompt)")
    return tuple(_number(path, line, f"{name}[{i}]", x) for i, x in enumerate(xs))


def _check_mean(path: Path, line: int, name: str, mean: float, values: tuple[float, ...],
                values_name: str | None = None) -> None:
    actual = math.fsum(values) / len(values)
    if abs(mean - actual) > MEAN_TOLERANCE * max(1.0, abs(actual)):
        raise _bad(path, line, f"field `{name}` is {mean!r} but the mean of `{values_name or name + '_values'}` "
                   f"is {actual!r}")


def _metric_values(path: Path, line: int, raw: dict, metrics: dict[str, float]) -> dict[str, tuple[float, ...]]:
    """The row's `<name>_values` lists of its other metrics, checked like task_values; where the row also
    gives the metric's mean in `metrics`, it must be their mean. An absent list is fine."""
    names = dict.fromkeys([*EXTRA_METRICS, *(raw["metrics"] if isinstance(raw.get("metrics"), dict) else ())])
    out = {}
    for name in names:
        if name in ("task", "forgetting") or f"{name}_values" not in raw:
            continue
        values = _numbers(path, line, f"{name}_values", raw[f"{name}_values"])
        if name in metrics:
            _check_mean(path, line, f"metrics.{name}", metrics[name], values, f"{name}_values")
        out[str(name)] = values
    return out


def read_curve(path: str | Path) -> CurveFile:
    """One curve.jsonl, checked: every field present and numeric, one metric and direction throughout,
    the same number of prompts on every row, steps increasing. Raises InputError naming file, line, field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: could not read: {e}") from e
    rows: list[CurveRow] = []
    first: dict | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise _bad(path, number, f"not JSON ({e})") from e
        if not isinstance(raw, dict):
            raise _bad(path, number, "a row must be a JSON object")
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise _bad(path, number, f"missing field(s) {', '.join(f'`{k}`' for k in missing)}")
        step = raw["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise _bad(path, number, f"field `step` must be a whole number >= 0, got {step!r}")
        if raw["task_direction"] not in (1, -1) or isinstance(raw["task_direction"], bool):
            raise _bad(path, number, f"field `task_direction` must be 1 or -1, got {raw['task_direction']!r}")
        for name in ("task_metric", "forgetting_metric"):
            if not isinstance(raw[name], str) or not raw[name]:
                raise _bad(path, number, f"field `{name}` must be a metric name")
        task_values = _numbers(path, number, "task_values", raw["task_values"])
        forgetting_values = _numbers(path, number, "forgetting_values", raw["forgetting_values"])
        task, forgetting = _number(path, number, "task", raw["task"]), _number(path, number, "forgetting",
                                                                                raw["forgetting"])
        _check_mean(path, number, "task", task, task_values)
        _check_mean(path, number, "forgetting", forgetting, forgetting_values)
        if first is None:
            first = raw
        else:
            for name in ("task_metric", "task_direction", "forgetting_metric"):
                if raw[name] != first[name]:
                    raise _bad(path, number, f"field `{name}` is {raw[name]!r}; earlier rows have {first[name]!r}")
            if len(task_values) != len(rows[0].task_values) or len(forgetting_values) != len(
                    rows[0].forgetting_values):
                raise _bad(path, number, "`task_values` / `forgetting_values` hold another number of prompts "
                           "than earlier rows")
            if step <= rows[-1].step:
                raise _bad(path, number, f"field `step` must increase: {step} after {rows[-1].step}")
            if raw.get("reference") != first.get("reference"):
                raise _bad(path, number, "field `reference` differs from earlier rows: they were measured "
                           "against another sample of the seed")
        metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
        metrics = {str(k): float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        metric_values = _metric_values(path, number, raw, metrics)
        for name, values in metric_values.items():
            earlier = next((r.metric_values[name] for r in rows if name in r.metric_values), None)
            if earlier is not None and len(values) != len(earlier):
                raise _bad(path, number, f"field `{name}_values` holds {len(values)} values but earlier rows hold "
                           f"{len(earlier)}")
        rows.append(CurveRow(step, task, forgetting, task_values, forgetting_values, metrics, metric_values))
    if first is None:
        raise InputError(f"{path}: no rows")
    return CurveFile(path, first["task_metric"], first["task_direction"], first["forgetting_metric"], tuple(rows),
                     first.get("reference"))


@dataclass(frozen=True)
class RunCurves:
    """Every curve file of a run: the seed model's point and each method's rows per training seed."""

    task_metric: str
    task_direction: int
    forgetting_metric: str
    seed_point: CurveRow | None  # eval/seed/curve.jsonl's step-0 row; None when that file is absent
    methods: dict[str, dict[int, tuple[CurveRow, ...]]]  # method -> training seed -> its own rows
    task_prompts: int
    forgetting_prompts: int
    metric_prompts: dict[str, int] = field(default_factory=dict)  # other metric -> its values per row

    def seed_curve(self, method: str, seed: int) -> tuple[CurveRow, ...]:
        """One training run's curve: the seed's point, then its own checkpoints. A method's own step-0
        row measures the same untrained model; the shared seed point stands in for it, so that every
        curve starts at the same place."""
        own = self.methods[method][seed]
        if self.seed_point is None:
            return own
        return (self.seed_point, *(r for r in own if r.step > 0))


def load_run_curves(run: str | Path, methods: list[str] | tuple[str, ...],
                    seeds: list[int] | None = None) -> RunCurves | None:
    """The run's curve files (of `seeds` only, when given: files of seeds a run no longer has are left
    alone); None when it has none (older run folders). Raises InputError when a file is malformed or the
    files disagree on metrics, direction, number of prompts or the seed sample they were measured along."""
    run = Path(run)
    files: list[tuple[str, int | None, CurveFile]] = []
    seed_file = curve_path(eval_dir(run, SEED_ROW))
    if seed_file.is_file():
        files.append((SEED_ROW, None, read_curve(seed_file)))
    for m in methods:
        for folder in seed_dirs(eval_dir(run, m)):
            if curve_path(folder).is_file() and (seeds is None or seed_of(folder) in seeds):
                files.append((m, seed_of(folder), read_curve(curve_path(folder))))
    if not files:
        return None
    ref = files[0][2]
    for _, _, f in files[1:]:
        for name in ("task_metric", "task_direction", "forgetting_metric", "reference"):
            if getattr(f, name) != getattr(ref, name):
                raise InputError(f"{f.path}, line 1: field `{name}` is {getattr(f, name)!r} but {ref.path} has "
                                 f"{getattr(ref, name)!r}; a run's curves must measure the same thing")
        if (len(f.rows[0].task_values), len(f.rows[0].forgetting_values)) != (
                len(ref.rows[0].task_values), len(ref.rows[0].forgetting_values)):
            raise InputError(f"{f.path}, line 1: `task_values` / `forgetting_values` hold "
                             f"{len(f.rows[0].task_values)} / {len(f.rows[0].forgetting_values)} prompts but "
                             f"{ref.path} holds {len(ref.rows[0].task_values)} / "
                             f"{len(ref.rows[0].forgetting_values)}; a run's curves must score the same prompts")
    metric_prompts = _metric_prompts([f for _, _, f in files])
    seed_point = None
    by_method: dict[str, dict[int, tuple[CurveRow, ...]]] = {}
    for method, seed, f in files:
        if method == SEED_ROW:
            seed_point = f.rows[0]
        else:
            by_method.setdefault(method, {})[seed] = f.rows
    return RunCurves(ref.task_metric, ref.task_direction, ref.forgetting_metric, seed_point, by_method,
                     len(ref.rows[0].task_values), len(ref.rows[0].forgetting_values), metric_prompts)


def _metric_prompts(files: list[CurveFile]) -> dict[str, int]:
    """How many values each other metric holds per row; every file that has a metric's values must hold
    as many (the same prompts or questions), or they cannot be paired."""
    found: dict[str, tuple[int, Path]] = {}
    for f in files:
        for r, name, values in ((r, n, v) for r in f.rows for n, v in r.metric_values.items()):
            if name in found and found[name][0] != len(values):
                raise InputError(f"{f.path}, step {r.step}: field `{name}_values` holds {len(values)} values but "
                                 f"{found[name][1]} holds {found[name][0]}; a run's curves must score the same "
                                 "prompts")
            found.setdefault(name, (len(values), f.path))
    return {name: n for name, (n, _) in found.items()}


# ---------------------------------------------------------------------------------------------------
# Every metric along training: one point per model and step.

@dataclass(frozen=True)
class TrainingPoint:
    """One model at one step: the seed model at step 0, or a method at a step all its training seeds
    measured, each metric averaged over those seeds."""

    model: str  # SEED_ROW or a method
    step: int
    seeds: int  # training seeds averaged (0 for the seed model)
    means: dict[str, float]  # "task", "forgetting" and each other metric every seed's row has
    values: dict[str, tuple[float, ...]]  # the same, per prompt (mean over seeds), where every seed's row has them
    knowledge_flips: float | None  # questions right at the seed and wrong here, mean over seeds; None: unknown


def knowledge_flips(seed: CurveRow | None, row: CurveRow) -> int | None:
    """How many questions the seed answered right (1) and this row answers wrong (0): knowledge lost.
    None when either lacks per-question knowledge values."""
    if seed is None or KNOWLEDGE not in seed.metric_values or KNOWLEDGE not in row.metric_values:
        return None
    return sum(a == 1.0 and b == 0.0 for a, b in zip(seed.metric_values[KNOWLEDGE], row.metric_values[KNOWLEDGE]))


def _row_means(row: CurveRow) -> dict[str, float]:
    return {**row.metrics, "task": row.task, "forgetting": row.forgetting}


def _row_values(row: CurveRow) -> dict[str, tuple[float, ...]]:
    return {**row.metric_values, "task": row.task_values, "forgetting": row.forgetting_values}


def training_point(model: str, rows: list[CurveRow], seed: CurveRow | None) -> TrainingPoint:
    """The mean of `rows` (one per training seed, all at one step): a metric only where every row has it."""
    means = [_row_means(r) for r in rows]
    values = [_row_values(r) for r in rows]
    flips = [knowledge_flips(seed, r) for r in rows]
    return TrainingPoint(
        model, rows[0].step, len(rows) if model != SEED_ROW else 0,
        {k: float(np.mean([m[k] for m in means])) for k in means[0] if all(k in m for m in means)},
        {k: tuple(np.mean([v[k] for v in values], axis=0).tolist()) for k in values[0] if all(k in v for v in values)},
        None if any(f is None for f in flips) else float(np.mean(flips)))


def along_training(curves: RunCurves, methods: list[str] | tuple[str, ...]) -> list[TrainingPoint]:
    """The seed's point, then each method's points at the steps all its training seeds measured (its mean
    curve's checkpoints), in step order."""
    seed = curves.seed_point
    out = [] if seed is None else [training_point(SEED_ROW, [seed], seed)]
    for m in methods:
        if m not in curves.methods:
            continue
        by_seed = curves.methods[m]
        at = {s: {r.step: r for r in rows if seed is None or r.step > 0} for s, rows in by_seed.items()}
        common = sorted(set.intersection(*(set(steps) for steps in at.values())))
        out += [training_point(m, [at[s][k] for s in sorted(at)], seed) for k in common]
    return out


def metric_unit(name: str) -> str | None:
    """The unit the suites declare for a metric of this name ("%" for accuracy), when they all agree."""
    units = {m.unit for _, m in declared_metrics() if not m.is_pattern and m.name == name}
    return units.pop() if len(units) == 1 else None


# ---------------------------------------------------------------------------------------------------
# One curve, and reading forgetting off it at a task level.

@dataclass(frozen=True)
class Curve:
    """Points of one learning-against-forgetting curve, in step order."""

    steps: tuple[int, ...]
    task: tuple[float, ...]
    forgetting: tuple[float, ...]
    direction: int = 1  # +1: higher task values are more learning; -1: lower ones

    def learning(self) -> list[float]:
        """The task values turned so that more learning is always larger."""
        return [self.direction * t for t in self.task]


def forgetting_at(curve: Curve, level: float) -> float | None:
    """Forgetting at the first point along the curve (in step order, linear between checkpoints) where
    the task value reaches `level` in its good direction; None when the curve never reaches it."""
    learned, goal = curve.learning(), curve.direction * level
    if not learned:
        return None
    if learned[0] >= goal:
        return curve.forgetting[0]
    for i in range(1, len(learned)):
        if learned[i] >= goal:  # learned[i - 1] < goal here, so the segment rises through it
            t = (goal - learned[i - 1]) / (learned[i] - learned[i - 1])
            return curve.forgetting[i - 1] + t * (curve.forgetting[i] - curve.forgetting[i - 1])
    return None


def peak(curve: Curve) -> float:
    """The furthest task value the curve reaches, in its good direction (the lowest for direction -1)."""
    return curve.direction * max(curve.learning())


def matched_level(a: Curve, b: Curve) -> float:
    """The furthest task level both curves reach: the nearer of their two peaks."""
    return a.direction * min(max(a.learning()), max(b.learning()))


def matched_difference(a: Curve, b: Curve) -> tuple[float, float]:
    """(matched level, forgetting of a minus forgetting of b there). Both curves reach the level by its
    choice, so both readings exist."""
    level = matched_level(a, b)
    return level, forgetting_at(a, level) - forgetting_at(b, level)


def curve_of(rows: tuple[CurveRow, ...], direction: int) -> Curve:
    return Curve(tuple(r.step for r in rows), tuple(r.task for r in rows), tuple(r.forgetting for r in rows),
                 direction)


# ---------------------------------------------------------------------------------------------------
# Mean curves over training seeds, as arrays the bootstrap can reweight.

@dataclass(frozen=True)
class MethodArrays:
    """A method's per-prompt values at the checkpoints every one of its training seeds measured."""

    seeds: tuple[int, ...]
    steps: tuple[int, ...]  # own checkpoints (step > 0 where the seed's point is known)
    task: np.ndarray  # (seeds, steps, task prompts)
    forgetting: np.ndarray  # (seeds, steps, forgetting prompts)


def method_arrays(curves: RunCurves, method: str) -> MethodArrays:
    by_seed = curves.methods[method]
    seeds = tuple(sorted(by_seed))
    own = {s: [r for r in by_seed[s] if curves.seed_point is None or r.step > 0] for s in seeds}
    common = sorted(set.intersection(*({r.step for r in rows} for rows in own.values())))
    at = {s: {r.step: r for r in rows} for s, rows in own.items()}
    task = np.array([[at[s][k].task_values for k in common] for s in seeds], dtype=np.float64)
    forgetting = np.array([[at[s][k].forgetting_values for k in common] for s in seeds], dtype=np.float64)
    shape_t, shape_f = (len(seeds), len(common), curves.task_prompts), (len(seeds), len(common),
                                                                       curves.forgetting_prompts)
    return MethodArrays(seeds, tuple(common), task.reshape(shape_t), forgetting.reshape(shape_f))


def _weighted_curves(values: np.ndarray, seed_w: np.ndarray, prompt_w: np.ndarray) -> np.ndarray:
    """(resamples, steps): for each resample, the mean over its seeds of the mean over its prompts.
    seed_w / prompt_w hold each seed's / prompt's share of a resample (rows sum to 1)."""
    return np.einsum("bs,skp,bp->bk", seed_w, values, prompt_w, optimize=True)


def _curve(seed_task: float | None, seed_forgetting: float | None, steps, task, forgetting,
           direction: int) -> Curve:
    if seed_task is None:
        return Curve(tuple(steps), tuple(task), tuple(forgetting), direction)
    return Curve((0, *steps), (seed_task, *task), (seed_forgetting, *forgetting), direction)


def mean_curve(curves: RunCurves, method: str) -> Curve:
    """The method's curve averaged over its training seeds, at the checkpoints they all measured."""
    arrays = method_arrays(curves, method)
    return _mean_curves(curves, [arrays], *_full_weights(curves, [arrays]))[0][0]


def _full_weights(curves: RunCurves, arrays: list[MethodArrays]):
    """Weights that select every seed and prompt once: the point estimate."""
    return ([np.full((1, len(a.seeds)), 1.0 / len(a.seeds)) for a in arrays],
            np.full((1, curves.task_prompts), 1.0 / curves.task_prompts),
            np.full((1, curves.forgetting_prompts), 1.0 / curves.forgetting_prompts))


def _mean_curves(curves: RunCurves, arrays: list[MethodArrays], seed_ws: list[np.ndarray], task_w: np.ndarray,
                 forgetting_w: np.ndarray) -> list[list[Curve]]:
    """For each method in `arrays`, its mean curve under each resample's weights: [method][resample]."""
    seed_task = seed_forgetting = None
    if curves.seed_point is not None:
        seed_task = task_w @ np.asarray(curves.seed_point.task_values)
        seed_forgetting = forgetting_w @ np.asarray(curves.seed_point.forgetting_values)
    out = []
    for a, seed_w in zip(arrays, seed_ws):
        task = _weighted_curves(a.task, seed_w, task_w)
        forgetting = _weighted_curves(a.forgetting, seed_w, forgetting_w)
        out.append([_curve(None if seed_task is None else float(seed_task[b]),
                           None if seed_forgetting is None else float(seed_forgetting[b]),
                           a.steps, task[b].tolist(), forgetting[b].tolist(), curves.task_direction)
                    for b in range(task.shape[0])])
    return out


# ---------------------------------------------------------------------------------------------------
# The matched-learning comparison.

@dataclass(frozen=True)
class MatchedComparison:
    """Forgetting of `method` minus `baseline` at the furthest task level both mean curves reach."""

    method: str
    baseline: str
    task_metric: str
    task_direction: int
    forgetting_metric: str
    seed_task: float | None  # the seed's task value, where its point is known
    method_peak: float  # the furthest each mean curve got, in task units
    baseline_peak: float
    level: float | None  # the matched level; None when either method learned nothing (no claim)
    diff: float | None
    low: float | None
    high: float | None
    seeds_agree: int  # training seeds whose own pair of curves gives a difference of the same sign
    seeds: int  # training seeds both methods have
    method_seeds: int
    baseline_seeds: int
    task_prompts: int
    forgetting_prompts: int
    paired_seeds: bool = False  # the interval drew training seeds once for both methods (same seeds run)

    @property
    def outcome(self) -> str:
        """"less" / "more" forgetting only when the whole interval is on that side of 0; "none" when
        it contains 0; "no learning" when there was nothing to match."""
        if self.level is None:
            return "no learning"
        if self.high < 0:
            return "less"
        if self.low > 0:
            return "more"
        return "none"

    def stalled(self) -> list[str]:
        """The methods whose mean curve never got past the seed's task value."""
        if self.seed_task is None:
            return []
        d = self.task_direction
        return [m for m, p in ((self.baseline, self.baseline_peak), (self.method, self.method_peak))
                if d * p <= d * self.seed_task]


def _percentile_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


def compare_matched(curves: RunCurves, method: str, baseline: str = "sft", n_resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> MatchedComparison | None:
    """`method` minus `baseline` forgetting at matched learning, with a two-level bootstrap interval;
    None when either has no curve.

    The interval. Two sources of chance move the difference: which training seeds were run, and which
    prompts were scored. Each resample redraws both, in two levels:
      1. training seeds, with replacement. When both methods ran the same seeds, one draw serves
         both (seed N of either method starts from the same LoRA initialisation and sees the rows in
         the same order: a paired design, so what makes a seed's run forget more or less for both
         cancels in the difference; measured on a 3-seed OpenFunctions run, the seeds' share of the
         interval fell from +/-0.022 redrawn apart to +/-0.012 redrawn together). Otherwise each
         method's seeds are drawn on their own;
      2. prompts, with replacement: one draw of task prompt positions and one of forgetting prompt
         positions, used for both methods, every seed and every checkpoint, and the seed's point,
         because the same position is the same prompt in every file (a paired design: what makes a
         prompt easy or hard for both cancels in the difference).
    From the redrawn seeds and prompts it recomputes both mean curves, their matched level, both
    interpolations and the difference; the interval is the 2.5th to 97.5th percentile of those
    differences (percentile bootstrap, fixed RNG seed, so a rebuilt report reads the same).
    A resample in which either method's mean curve does not get past the seed's point matches at the
    seed's own level, where both curves are still at the shared seed point: its difference is 0. That
    pulls the interval towards 0 when learning is shaky, which is the cautious side.

    The sign count compares seed N of the method with seed N of the baseline on their own curves, for
    the seeds both have: how many give a difference of the same sign as the mean curves' one.
    """
    if method not in curves.methods or baseline not in curves.methods:
        return None
    arrays = [method_arrays(curves, method), method_arrays(curves, baseline)]
    (mine,), (theirs,) = _mean_curves(curves, arrays, *_full_weights(curves, arrays))
    if not mine.task or not theirs.task:
        return None  # no seed point and no checkpoint all of a method's seeds measured
    seed_task = curves.seed_point.task if curves.seed_point is not None else None
    base = dict(method=method, baseline=baseline, task_metric=curves.task_metric,
                task_direction=curves.task_direction, forgetting_metric=curves.forgetting_metric,
                seed_task=seed_task, method_peak=peak(mine), baseline_peak=peak(theirs),
                method_seeds=len(arrays[0].seeds), baseline_seeds=len(arrays[1].seeds),
                task_prompts=curves.task_prompts, forgetting_prompts=curves.forgetting_prompts)
    shared = sorted(set(arrays[0].seeds) & set(arrays[1].seeds))
    d = curves.task_direction
    level, diff = matched_difference(mine, theirs)
    # Without the seed's point the curves start at different checkpoints, so there is no common start
    # to measure learning from: no claim (the line says the point is missing).
    if seed_task is None or d * level <= d * seed_task:
        return MatchedComparison(**base, level=None, diff=None, low=None, high=None, seeds_agree=0,
                                 seeds=len(shared))

    rng = np.random.default_rng(seed)
    def seed_draw(seeds: tuple[int, ...]) -> np.ndarray:
        return rng.multinomial(len(seeds), np.full(len(seeds), 1.0 / len(seeds)), size=n_resamples) / len(seeds)

    paired = arrays[0].seeds == arrays[1].seeds
    seed_ws = [seed_draw(arrays[0].seeds)] * 2 if paired else [seed_draw(a.seeds) for a in arrays]
    task_w = rng.multinomial(curves.task_prompts, np.full(curves.task_prompts, 1.0 / curves.task_prompts),
                             size=n_resamples) / curves.task_prompts
    forgetting_w = rng.multinomial(curves.forgetting_prompts,
                                   np.full(curves.forgetting_prompts, 1.0 / curves.forgetting_prompts),
                                   size=n_resamples) / curves.forgetting_prompts
    resampled = _mean_curves(curves, arrays, seed_ws, task_w, forgetting_w)
    diffs = np.array([matched_difference(a, b)[1] for a, b in zip(*resampled)])
    low, high = _percentile_interval(diffs, confidence)

    per_seed = [matched_difference(curve_of(curves.seed_curve(method, s), d),
                                   curve_of(curves.seed_curve(baseline, s), d))[1] for s in shared]
    agree = sum(np.sign(x) == np.sign(diff) for x in per_seed)
    return MatchedComparison(**base, level=level, diff=diff, low=low, high=high, seeds_agree=int(agree),
                             seeds=len(shared), paired_seeds=paired)
