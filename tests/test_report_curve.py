"""Learning against forgetting in the report: reading forgetting off a curve at a task level, the
matched level of two methods, the two-level bootstrap, the seed-by-seed sign count, and the report that
opens with the curve figure. Curve files are written here by a small generator that follows the
curve.jsonl contract (sdft.core.layout.curve_path), so every expected number is known in advance."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sdft.core.errors import InputError
from sdft.core.layout import curve_path, eval_dir
from sdft.report.build import build_report
from sdft.report.curve import (Curve, compare_matched, forgetting_at, load_run_curves, matched_difference,
                               matched_level, mean_curve, read_curve)
from sdft.report.verdict import matched_line

TASK_PROMPTS, FORGETTING_PROMPTS = 50, 20


# ---------------------------------------------------------------------------------------------------
# A generator of curve.jsonl files.

def right(k: int, n: int = TASK_PROMPTS, graded: bool = False) -> list[float]:
    """0/1 per prompt, the first k right: a model that learns keeps what it had right before. Graded:
    every prompt scores k/n instead (a pass rate over samples), so that prompts agree exactly."""
    return [k / n] * n if graded else [1.0 if i < k else 0.0 for i in range(n)]


def around(mean: float, spread: float = 0.0, rng: random.Random | None = None,
           n: int = FORGETTING_PROMPTS) -> list[float]:
    """Per-prompt forgetting with exactly this mean: zero-sum noise of the given spread."""
    noise = [rng.uniform(-spread, spread) if rng else 0.0 for _ in range(n // 2)]
    values = [mean + e for e in noise] + [mean - e for e in noise]
    return values + [mean] * (n - len(values))


def row(step: int, task_values: list[float], forgetting_values: list[float], metric: str = "accuracy",
        direction: int = 1) -> dict:
    return {"step": step, "task_metric": metric, "task_direction": direction,
            "task": sum(task_values) / len(task_values), "task_values": task_values,
            "forgetting_metric": "kl_from_seed", "forgetting": sum(forgetting_values) / len(forgetting_values),
            "forgetting_values": forgetting_values, "metrics": {"nll_shift": 0.01 * step}}


def write_curve(folder: Path, rows: list[dict]) -> None:
    path = curve_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_run(run: Path, methods: dict[str, dict[int, list[dict]]], seed_rows: list[dict] | None = None) -> Path:
    if seed_rows is not None:
        write_curve(eval_dir(run, "seed"), seed_rows)
    for method, by_seed in methods.items():
        for seed, rows in by_seed.items():
            write_curve(eval_dir(run, method, seed), rows)
    return run


SEED_ROWS = [row(0, right(10), around(0.0))]  # 20% right before training, no forgetting yet


def learning_run(run: Path, sdft_forgetting: dict[int, tuple[float, float]] | None = None, spread: float = 0.0,
                 seeds: tuple[int, ...] = (1, 2, 3), graded: bool = False) -> Path:
    """SFT: 40% right at step 4 with forgetting 0.2, 60% at step 8 with 0.4. SDFT learns further (50%,
    80%) for less forgetting (0.1, 0.3 unless given per seed). At SFT's 60%, SDFT is a third of the way
    from its (0.5, 0.1) to (0.8, 0.3): 0.1667, so the difference is 0.1667 - 0.4 = -0.2333."""
    rng = random.Random(7)
    sdft_forgetting = sdft_forgetting or {}
    methods = {"sft": {}, "sdft": {}}
    for s in seeds:
        methods["sft"][s] = [row(4, right(20, graded=graded), around(0.2, spread, rng)),
                             row(8, right(30, graded=graded), around(0.4, spread, rng))]
        f4, f8 = sdft_forgetting.get(s, (0.1, 0.3))
        methods["sdft"][s] = [row(4, right(25, graded=graded), around(f4, spread, rng)),
                              row(8, right(40, graded=graded), around(f8, spread, rng))]
    return write_run(run, methods, [row(0, right(10, graded=graded), around(0.0))])


TRUE_DIFF = (0.1 + (0.6 - 0.5) / (0.8 - 0.5) * (0.3 - 0.1)) - 0.4


# ---------------------------------------------------------------------------------------------------
# Reading forgetting off one curve.

def test_forgetting_at_interpolates_along_the_curve():
    c = Curve((0, 1, 2), (0.2, 0.4, 0.8), (0.0, 0.1, 0.5))
    assert forgetting_at(c, 0.4) == pytest.approx(0.1)  # exactly at a checkpoint
    assert forgetting_at(c, 0.6) == pytest.approx(0.3)  # half way from (0.4, 0.1) to (0.8, 0.5)
    assert forgetting_at(c, 0.3) == pytest.approx(0.05)
    assert forgetting_at(c, 0.2) == 0.0 and forgetting_at(c, 0.1) == 0.0  # reached at the start
    assert forgetting_at(c, 0.8) == pytest.approx(0.5)
    assert forgetting_at(c, 0.81) is None  # never reached


def test_forgetting_at_takes_the_first_crossing_in_step_order():
    # Up to 0.6, back to 0.4, then up to 0.8: 0.5 is first reached on the first segment, 0.7 on the last.
    c = Curve((0, 1, 2, 3), (0.2, 0.6, 0.4, 0.8), (0.0, 0.2, 0.3, 0.7))
    assert forgetting_at(c, 0.5) == pytest.approx(0.15)
    assert forgetting_at(c, 0.7) == pytest.approx(0.3 + 0.75 * 0.4)


def test_forgetting_at_with_a_lower_is_better_task_metric():
    # An answer NLL falling from 2.0 to 1.0: learning is going down.
    c = Curve((0, 4, 8), (2.0, 1.5, 1.0), (0.0, 0.2, 0.6), direction=-1)
    assert forgetting_at(c, 1.25) == pytest.approx(0.4)
    assert forgetting_at(c, 1.5) == pytest.approx(0.2)
    assert forgetting_at(c, 2.5) == 0.0  # the seed is already there
    assert forgetting_at(c, 0.9) is None


def test_matched_level_is_the_furthest_both_reach():
    a = Curve((0, 1, 2), (0.2, 0.5, 0.8), (0.0, 0.1, 0.3))
    b = Curve((0, 1, 2), (0.2, 0.6, 0.5), (0.0, 0.4, 0.5))  # peaks at 0.6, then slips back
    assert matched_level(a, b) == matched_level(b, a) == 0.6
    level, diff = matched_difference(a, b)
    assert level == 0.6 and diff == pytest.approx((0.1 + 0.2 / 3) - 0.4)
    nll_a = Curve((0, 1), (2.0, 1.0), (0.0, 0.5), direction=-1)
    nll_b = Curve((0, 1), (2.0, 1.4), (0.0, 0.2), direction=-1)
    assert matched_level(nll_a, nll_b) == 1.4  # the higher NLL is the lesser learning
    assert matched_difference(nll_a, nll_b)[1] == pytest.approx(0.3 - 0.2)


# ---------------------------------------------------------------------------------------------------
# The matched-learning comparison on generated run folders.

def test_mean_curve_and_the_interval_around_the_true_difference(tmp_path):
    curves = load_run_curves(learning_run(tmp_path, spread=0.15), ["sft", "sdft"])
    assert (curves.task_prompts, curves.forgetting_prompts) == (TASK_PROMPTS, FORGETTING_PROMPTS)
    sft = mean_curve(curves, "sft")
    assert sft.steps == (0, 4, 8) and sft.task == pytest.approx((0.2, 0.4, 0.6))
    assert sft.forgetting == pytest.approx((0.0, 0.2, 0.4))
    c = compare_matched(curves, "sdft", "sft")
    assert c.level == pytest.approx(0.6) and c.diff == pytest.approx(TRUE_DIFF)
    assert c.method_peak == pytest.approx(0.8) and c.baseline_peak == pytest.approx(0.6)
    assert c.low < TRUE_DIFF < c.high and c.high < 0 and c.outcome == "less"
    assert (c.seeds_agree, c.seeds) == (3, 3)
    # A fixed RNG seed: the same interval every time.
    again = compare_matched(curves, "sdft", "sft")
    assert (again.low, again.high) == (c.low, c.high)
    line = matched_line(c, "SDFT", "SFT")
    assert line.startswith("SDFT forgot less than SFT at matched learning: kl_from_seed -0.233 [")
    assert "at accuracy 60.0%, the most both reached (SFT never got to SDFT's 80.0%)" in line
    assert "3 of 3 seeds agree" in line and "50 task / 20 forgetting prompts" in line


def test_interval_is_narrow_when_seeds_and_prompts_agree_and_wide_when_not(tmp_path):
    # Every seed alike, every prompt alike (graded task scores, no noise in forgetting): nothing moves.
    calm = compare_matched(load_run_curves(learning_run(tmp_path / "calm", graded=True), ["sft", "sdft"]),
                           "sdft", "sft")
    # SDFT's third seed forgets far more than the other two, every prompt's forgetting is noisy, and
    # the task is right or wrong per prompt.
    wild = compare_matched(load_run_curves(learning_run(tmp_path / "wild", {3: (0.5, 0.9)}, spread=0.4),
                                           ["sft", "sdft"]), "sdft", "sft")
    calm_width, wild_width = calm.high - calm.low, wild.high - wild.low
    assert calm.diff == pytest.approx(TRUE_DIFF) and calm.low == pytest.approx(calm.high) == pytest.approx(TRUE_DIFF)
    assert calm_width < 1e-9 and wild_width > 0.2 and wild.low < wild.diff < wild.high
    # Seeds 1 and 2 keep the mean curve's sign (-0.233 each); seed 3 forgets more (+0.233): 2 of 3.
    mean_sdft = ((0.1 + 0.1 + 0.5) / 3, (0.3 + 0.3 + 0.9) / 3)
    assert wild.diff == pytest.approx(mean_sdft[0] + (mean_sdft[1] - mean_sdft[0]) / 3 - 0.4)
    assert (wild.seeds_agree, wild.seeds) == (2, 3)
    assert "2 of 3 seeds agree" in matched_line(wild, "SDFT", "SFT")


def test_seeds_only_one_method_has_are_averaged_but_not_paired(tmp_path):
    run = learning_run(tmp_path, seeds=(1, 2))
    write_curve(eval_dir(run, "sdft", 5), [row(4, right(25), around(0.1)), row(8, right(40), around(0.3))])
    c = compare_matched(load_run_curves(run, ["sft", "sdft"]), "sdft", "sft")
    assert (c.method_seeds, c.baseline_seeds, c.seeds, c.seeds_agree) == (3, 2, 2, 2)
    assert "(3 SDFT and 2 SFT seeds x" in matched_line(c, "SDFT", "SFT")


def seed_effect_run(run: Path, sdft_seeds: tuple[int, ...]) -> Path:
    """Every prompt alike (graded task scores, no spread), but each training seed forgets more or less
    for both methods alike: seed-N of SDFT forgets as much more as seed-N of SFT does."""
    extra = (0.0, 0.1, 0.3)
    methods = {"sft": {}, "sdft": {}}
    for e, s_sft, s_sdft in zip(extra, (1, 2, 3), sdft_seeds):
        methods["sft"][s_sft] = [row(4, right(20, graded=True), around(0.2 + e)),
                                 row(8, right(30, graded=True), around(0.4 + e))]
        methods["sdft"][s_sdft] = [row(4, right(25, graded=True), around(0.1 + e)),
                                   row(8, right(40, graded=True), around(0.3 + e))]
    return write_run(run, methods, [row(0, right(10, graded=True), around(0.0))])


def test_seeds_both_methods_ran_are_redrawn_together(tmp_path):
    # The same seeds: one draw for both, the shared seed effect cancels and nothing else moves.
    paired = compare_matched(load_run_curves(seed_effect_run(tmp_path / "p", (1, 2, 3)), ["sft", "sdft"]),
                             "sdft", "sft")
    # The same numbers under other seed names: each method's seeds are drawn on their own.
    apart = compare_matched(load_run_curves(seed_effect_run(tmp_path / "a", (4, 5, 6)), ["sft", "sdft"]),
                            "sdft", "sft")
    assert paired.paired_seeds and not apart.paired_seeds
    assert paired.diff == pytest.approx(apart.diff) == pytest.approx(TRUE_DIFF)
    assert paired.high - paired.low < 1e-9
    assert apart.high - apart.low > 0.1 and apart.low < TRUE_DIFF < apart.high


def test_no_learning_makes_no_claim(tmp_path):
    stalled = {"sft": {1: [row(4, right(10), around(0.2)), row(8, right(8), around(0.3))]},
               "sdft": {1: [row(4, right(25), around(0.1)), row(8, right(40), around(0.2))]}}
    c = compare_matched(load_run_curves(write_run(tmp_path, stalled, SEED_ROWS), ["sft", "sdft"]), "sdft", "sft")
    assert c.level is None and c.diff is None and c.outcome == "no learning" and c.stalled() == ["sft"]
    line = matched_line(c, "SDFT", "SFT")
    assert line.startswith("SDFT vs SFT, forgetting at matched learning: no claim: the task did not improve")
    assert "SFT's mean accuracy never got past the seed's 20.0%" in line


def test_a_lower_is_better_task_metric_end_to_end(tmp_path):
    # Answer NLL per prompt: the seed at 2.0; SFT gets to 1.5 (forgetting 0.4), SDFT to 1.0 (0.2 at 1.5).
    def nll(x: float) -> list[float]:
        return [x - 0.1, x + 0.1] * (TASK_PROMPTS // 2)

    methods = {"sft": {1: [row(10, nll(1.5), around(0.4), "answer_nll", -1)]},
               "sdft": {1: [row(10, nll(1.0), around(0.4), "answer_nll", -1)]}}
    run = write_run(tmp_path, methods, [row(0, nll(2.0), around(0.0), "answer_nll", -1)])
    c = compare_matched(load_run_curves(run, ["sft", "sdft"]), "sdft", "sft")
    assert c.level == pytest.approx(1.5) and c.diff == pytest.approx(0.2 - 0.4)
    line = matched_line(c, "SDFT", "SFT")
    assert "at answer_nll 1.500, the most both reached (SFT never got to SDFT's 1.000)" in line


def test_bad_curve_files_name_file_line_and_field(tmp_path):
    good = row(4, right(20), around(0.2))
    write_curve(tmp_path / "a", [good, {k: v for k, v in good.items() if k != "forgetting_values"} | {"step": 8}])
    with pytest.raises(InputError, match=r"a/curve.jsonl, line 2: missing field\(s\) `forgetting_values`"):
        read_curve(curve_path(tmp_path / "a"))
    write_curve(tmp_path / "b", [good | {"task": 0.9}])
    with pytest.raises(InputError, match=r"line 1: field `task` is 0.9 but the mean of `task_values` is 0.4"):
        read_curve(curve_path(tmp_path / "b"))
    write_curve(tmp_path / "c", [good, good])
    with pytest.raises(InputError, match=r"line 2: field `step` must increase"):
        read_curve(curve_path(tmp_path / "c"))
    # Files of one run that score different prompts cannot be paired.
    run = learning_run(tmp_path / "run", seeds=(1,))
    write_curve(eval_dir(run, "sdft", 2), [row(4, right(20, n=30), around(0.2))])
    with pytest.raises(InputError, match=r"sdft/seed-2/curve.jsonl, line 1: .* hold 30 / 20 prompts"):
        load_run_curves(run, ["sft", "sdft"])


def test_curves_measured_along_another_sample_of_the_seed_are_refused(tmp_path):
    write_curve(tmp_path / "a", [row(4, right(20), around(0.2)) | {"reference": "x"},
                                 row(8, right(20), around(0.3)) | {"reference": "y"}])
    with pytest.raises(InputError, match=r"line 2: field `reference` differs"):
        read_curve(curve_path(tmp_path / "a"))
    run = write_run(tmp_path / "run", {"sft": {1: [row(4, right(20), around(0.2)) | {"reference": "x"}]},
                                       "sdft": {1: [row(4, right(20), around(0.2)) | {"reference": "y"}]}},
                    [r | {"reference": "x"} for r in SEED_ROWS])
    with pytest.raises(InputError, match=r"field `reference` is 'y' but .* has 'x'"):
        load_run_curves(run, ["sft", "sdft"])
    # a seed the run no longer trains is left out, not mixed in
    write_curve(eval_dir(run, "sdft", 1), [row(4, right(20), around(0.2)) | {"reference": "x"}])
    write_curve(eval_dir(run, "sdft", 7), [row(4, right(20), around(0.9)) | {"reference": "old"}])
    curves = load_run_curves(run, ["sft", "sdft"], seeds=[1])
    assert set(curves.methods["sdft"]) == {1}


# ---------------------------------------------------------------------------------------------------
# The report.

def test_report_opens_with_the_curve_and_the_matched_line(tmp_path):
    run = learning_run(tmp_path / "run", {3: (0.5, 0.9)}, spread=0.1)
    paths = build_report(run)
    assert run / "plots" / "learning_forgetting.png" in paths and run / "report.json" in paths
    md = (run / "report.md").read_text()
    sections = md.split("\n## ")
    assert sections[1].startswith("Learning against forgetting\n")
    assert "](plots/learning_forgetting.png)" in sections[1]
    assert sections[2].startswith("Verdict\n")
    first_line = next(ln for ln in sections[2].splitlines() if ln.startswith("- "))
    # One of three SDFT seeds forgets far more: the interval spans 0, so the line claims nothing.
    assert first_line.startswith("- SDFT vs SFT, forgetting at matched learning: no difference detected at this "
                                 "size: kl_from_seed -0.078 [")
    assert "2 of 3 seeds agree" in first_line
    assert "| SFT | 3 | 2 | 60.0 [" in sections[1] and "(step 8) |" in sections[1]  # 2 trained checkpoints; accuracy in %

    data = json.loads((run / "report.json").read_text())
    (matched,) = [v for v in data["verdict"] if v["axis"] == "forgetting_at_matched_learning"]
    assert matched["method"] == "sdft" and matched["baseline"] == "sft"
    assert matched["level"] == pytest.approx(0.6) and (matched["seeds_agree"], matched["seeds"]) == (2, 3)
    assert matched["low"] < matched["diff"] < matched["high"] and matched["text"] == first_line[2:]
    assert len(data["curve"]) == 1 + 2 * 3 * 2  # the seed's point, then 2 checkpoints x 3 seeds x 2 methods
    assert {(r["method"], r["seed"], r["step"]) for r in data["curve"]} >= {("seed", None, 0), ("sdft", 3, 8)}
    sft_mean = [r for r in data["curve_mean"] if r["method"] == "sft"]
    assert [r["step"] for r in sft_mean] == [0, 4, 8] and sft_mean[-1]["forgetting"] == pytest.approx(0.4)
    page = (run / "report.html").read_text()
    assert page.index("Learning against forgetting") < page.index("Verdict") < page.index("<h2>Run</h2>")


def test_a_run_where_nothing_was_learned_says_so(tmp_path):
    flat = {m: {1: [row(4, right(10), around(0.1)), row(8, right(9), around(0.2))]} for m in ("sft", "sdft")}
    run = write_run(tmp_path / "run", flat, SEED_ROWS)
    build_report(run)
    md = (run / "report.md").read_text()
    assert "no claim: the task did not improve (SFT's and SDFT's mean accuracy never got past" in md
    (matched,) = json.loads((run / "report.json").read_text())["verdict"]
    assert matched["outcome"] == "no learning" and matched["diff"] is None and matched["level"] is None


def test_a_broken_curve_file_is_a_note_not_a_crash(tmp_path):
    run = learning_run(tmp_path / "run")
    path = curve_path(eval_dir(run, "sft", 2))
    path.write_text(path.read_text() + '{"step": 9, "task": "high"}\n')
    build_report(run)
    md = (run / "report.md").read_text()
    assert "could not read the curves: eval/sft/seed-2/curve.jsonl, line 3: missing field(s)" in md
    assert "## Problems reading the run folder" in md and str(tmp_path) not in md


def test_the_figure_gives_each_method_its_own_colour(tmp_path):
    from sdft.report.plots import distinct_colors, learning_forgetting

    colors = distinct_colors(["SFT", "SDFT", "SDFT (on-policy)"])
    assert len(set(colors.values())) == 3 and colors["SDFT"] == distinct_colors(["SDFT"])["SDFT"]
    seeds = [[(0, 20.0, 0.0), (4, 40.0, 0.2)], [(0, 20.0, 0.0), (4, 44.0, 0.3)]]
    path = learning_forgetting({"SFT": (seeds, [(0, 20.0, 0.0), (4, 42.0, 0.25)])}, tmp_path / "c.png",
                               xlabel="accuracy (%)", ylabel="kl", title="t", seed_point=(20.0, 0.0))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        learning_forgetting({"SFT": ([], [])}, tmp_path / "none.png", xlabel="x", ylabel="y", title="t")


# ---------------------------------------------------------------------------------------------------
# Every metric along training: KL on the task prompts and knowledge, per prompt, in the report.

QUESTIONS, KL_PROMPTS = 40, 30  # each metric with its own number of prompts


def answered(right_ones: range, n: int = QUESTIONS) -> list[float]:
    """0/1 per question: right exactly on the questions in `right_ones`."""
    return [1.0 if i in right_ones else 0.0 for i in range(n)]


def with_extras(r: dict, kl_task: list[float], knowledge: list[float] | None = None) -> dict:
    """A curve row that also carries kl_task (and knowledge) as means and per prompt, as sdft.evaluate.curve
    writes them."""
    out = r | {"metrics": {"kl_task": sum(kl_task) / len(kl_task)}, "kl_task_values": kl_task}
    if knowledge is not None:
        out["metrics"]["knowledge"] = sum(knowledge) / len(knowledge)
        out["knowledge_values"] = knowledge
    return out


def extras_run(run: Path) -> Path:
    """The seed knows questions 0-29. SFT seed 1 at step 8 knows 2-32 (lost 0 and 1, gained 30-32), seed 2
    knows 5-29 (lost 0-4): 2 and 5 right->wrong, 3.5 on average, although the accuracies (77.5%, 62.5%)
    fell by less. SDFT keeps every question and learns two more. kl_task per prompt is constant per row."""
    seed = [with_extras(row(0, right(10), around(0.0)), [0.0] * KL_PROMPTS, answered(range(30)))]
    sft = {1: [with_extras(row(4, right(20), around(0.2)), [0.1] * KL_PROMPTS, answered(range(1, 31))),
               with_extras(row(8, right(30), around(0.4)), [0.3] * KL_PROMPTS, answered(range(2, 33)))],
           2: [with_extras(row(4, right(20), around(0.2)), [0.2] * KL_PROMPTS, answered(range(2, 30))),
               with_extras(row(8, right(30), around(0.4)), [0.5] * KL_PROMPTS, answered(range(5, 30)))]}
    sdft = {s: [with_extras(row(4, right(25), around(0.1)), [0.05] * KL_PROMPTS, answered(range(31))),
                with_extras(row(8, right(40), around(0.3)), [0.15] * KL_PROMPTS, answered(range(32)))]
            for s in (1, 2)}
    return write_run(run, {"sft": sft, "sdft": sdft}, seed)


def along_table(md: str) -> tuple[list[str], list[list[str]]]:
    """The "Along training" table of report.md: (header, rows)."""
    lines = md.split("**Along training.**", 1)[1].splitlines()
    table = [ln for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("|"))):]]
    table = table[:next((i for i, ln in enumerate(table) if not ln.startswith("|")), len(table))]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table]
    return split[0], split[2:]


def test_other_metric_values_are_read_with_their_own_number_of_prompts(tmp_path):
    run = extras_run(tmp_path)
    f = read_curve(curve_path(eval_dir(run, "sft", 1)))
    assert f.rows[1].metric_values["kl_task"] == (0.3,) * KL_PROMPTS
    assert f.rows[1].metric_values["knowledge"] == tuple(answered(range(2, 33)))
    assert f.rows[1].metrics["knowledge"] == pytest.approx(31 / 40)
    curves = load_run_curves(run, ["sft", "sdft"])
    assert curves.metric_prompts == {"kl_task": KL_PROMPTS, "knowledge": QUESTIONS}
    assert curves.task_prompts == TASK_PROMPTS  # kl_task's 30 prompts are not the task's 50
    # Files without them read as before.
    plain = read_curve(curve_path(eval_dir(learning_run(tmp_path / "plain"), "sft", 1)))
    assert plain.rows[0].metric_values == {} and plain.rows[0].metrics == {"nll_shift": pytest.approx(0.04)}


def test_malformed_metric_values_name_file_line_and_field(tmp_path):
    good = with_extras(row(4, right(20), around(0.2)), [0.1] * KL_PROMPTS, answered(range(30)))
    cases = {
        "a": ([good | {"knowledge_values": [1.0, "yes"] + [0.0] * 38}],
              r"a/curve.jsonl, line 1: field `knowledge_values\[1\]` must be a finite number, got 'yes'"),
        "b": ([good | {"kl_task_values": []}], r"b/curve.jsonl, line 1: field `kl_task_values` must be a non-empty "
                                               r"list"),
        "c": ([good | {"metrics": {"kl_task": 0.5, "knowledge": 0.75}}],
              r"c/curve.jsonl, line 1: field `metrics.kl_task` is 0.5 but the mean of `kl_task_values` is 0.1"),
        "d": ([good, with_extras(row(8, right(20), around(0.2)), [0.1] * KL_PROMPTS, answered(range(30), n=39))],
              r"d/curve.jsonl, line 2: field `knowledge_values` holds 39 values but earlier rows hold 40"),
    }
    for folder, (rows, message) in cases.items():
        write_curve(tmp_path / folder, rows)
        with pytest.raises(InputError, match=message):
            read_curve(curve_path(tmp_path / folder))
    # A row without the lists is fine, between rows that have them.
    write_curve(tmp_path / "e", [good, row(8, right(20), around(0.2)), good | {"step": 9}])
    assert [set(r.metric_values) for r in read_curve(curve_path(tmp_path / "e")).rows] == [
        {"kl_task", "knowledge"}, set(), {"kl_task", "knowledge"}]
    # Files of one run must score the same questions.
    run = extras_run(tmp_path / "run")
    write_curve(eval_dir(run, "sdft", 3), [with_extras(row(4, right(25), around(0.1)), [0.05] * KL_PROMPTS,
                                                       answered(range(30), n=35))])
    with pytest.raises(InputError, match=r"sdft/seed-3/curve.jsonl, step 4: field `knowledge_values` holds 35 "
                                         r"values but .*seed/curve.jsonl holds 40"):
        load_run_curves(run, ["sft", "sdft"])


def test_report_shows_every_metric_along_training(tmp_path):
    run = extras_run(tmp_path / "run")
    build_report(run)
    md = (run / "report.md").read_text()
    header, rows = along_table(md.split("\n## ")[1])
    assert header == ["model", "step", "accuracy (%)", "kl_from_seed (general)", "kl_task (task)",
                      "knowledge (%)", "knowledge right→wrong"]
    cells = {(r[0], r[1]): dict(zip(header, r)) for r in rows}
    assert list(cells) == [("Seed", "0"), ("SFT", "4"), ("SFT", "8"), ("SDFT", "4"), ("SDFT", "8")]
    seed, sft8, sdft8 = cells[("Seed", "0")], cells[("SFT", "8")], cells[("SDFT", "8")]
    assert seed["accuracy (%)"].startswith("20.0 [") and seed["kl_task (task)"] == "0"
    assert seed["knowledge (%)"].startswith("75.0 [") and seed["knowledge right→wrong"] == "0"
    assert sft8["accuracy (%)"].startswith("60.0 [") and sft8["kl_from_seed (general)"] == "0.4 [0.4, 0.4]"
    assert sft8["kl_task (task)"] == "0.4 [0.4, 0.4]"  # the mean of 0.3 and 0.5 over the two seeds
    assert sft8["knowledge (%)"].startswith("70.0 [")  # (31 + 25) / 2 of 40 questions
    assert sft8["knowledge right→wrong"] == "3.5"  # (2 + 5) / 2
    assert cells[("SFT", "4")]["knowledge right→wrong"] == "1.5"  # lost question 0, then questions 0 and 1
    assert sdft8["knowledge (%)"].startswith("80.0 [") and sdft8["knowledge right→wrong"] == "0.0"
    low, high = (float(x) for x in sft8["knowledge (%)"].split("[")[1].rstrip("]").split(", "))
    assert low < 70.0 < high
    assert ("kl_task (task): KL from the seed on 30 task prompts; knowledge: multiple-choice accuracy on 40 "
            "questions; right→wrong: of the 30 questions the seed answers right" in md)

    data = json.loads((run / "report.json").read_text())
    at = {(r["method"], r["seed"], r["step"]): r for r in data["curve"]}
    assert at[("seed", None, 0)]["metrics"] == {"kl_task": 0.0, "knowledge": 0.75}
    assert at[("sft", 2, 8)]["metrics"] == pytest.approx({"kl_task": 0.5, "knowledge": 25 / 40})
    assert (at[("sft", 1, 8)]["knowledge_flips"], at[("sft", 2, 8)]["knowledge_flips"]) == (2, 5)
    means = {(r["method"], r["step"]): r for r in data["curve_mean"]}
    assert means[("sft", 8)]["metrics"] == pytest.approx({"kl_task": 0.4, "knowledge": 0.7})
    assert means[("sft", 8)]["knowledge_flips"] == 3.5 and means[("sft", 0)]["knowledge_flips"] == 0
    assert means[("sdft", 8)]["metrics"]["knowledge"] == pytest.approx(0.8) and means[("sdft", 8)]["seeds"] == 2
    assert means[("sft", 8)]["task"] == pytest.approx(0.6)  # the documented fields stay


def test_knowledge_of_only_some_seeds_shows_no_mean(tmp_path):
    run = extras_run(tmp_path / "run")
    # SFT seed 2 was measured without knowledge (an older curve): SFT's knowledge cells say nothing.
    rows = [json.loads(ln) for ln in curve_path(eval_dir(run, "sft", 2)).read_text().splitlines()]
    for r in rows:
        del r["knowledge_values"], r["metrics"]["knowledge"]
    write_curve(eval_dir(run, "sft", 2), rows)
    build_report(run)
    header, table = along_table((run / "report.md").read_text())
    cells = {(r[0], r[1]): dict(zip(header, r)) for r in table}
    assert cells[("SFT", "8")]["knowledge (%)"] == "—" and cells[("SFT", "8")]["knowledge right→wrong"] == "—"
    assert cells[("SFT", "8")]["kl_task (task)"] == "0.4 [0.4, 0.4]"
    assert cells[("SDFT", "8")]["knowledge right→wrong"] == "0.0"
    means = {(r["method"], r["step"]): r for r in json.loads((run / "report.json").read_text())["curve_mean"]}
    assert "knowledge" not in means[("sft", 8)]["metrics"] and "knowledge_flips" not in means[("sft", 8)]


def test_a_run_without_the_other_metrics_builds_as_before(tmp_path):
    run = learning_run(tmp_path / "run")
    build_report(run)
    md = (run / "report.md").read_text()
    header, rows = along_table(md)
    assert header == ["model", "step", "accuracy (%)", "kl_from_seed (general)"]
    assert [r[:2] for r in rows] == [["Seed", "0"], ["SFT", "4"], ["SFT", "8"], ["SDFT", "4"], ["SDFT", "8"]]
    assert rows[2][3] == "0.4 [0.4, 0.4]" and "knowledge" not in md and "kl_task" not in md
    data = json.loads((run / "report.json").read_text())
    assert all("knowledge_flips" not in r for r in data["curve"] + data["curve_mean"])
    assert data["curve"][1]["metrics"] == {"nll_shift": pytest.approx(0.04)}
