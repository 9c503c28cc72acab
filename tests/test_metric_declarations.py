"""Each suite declares its metrics once (sdft.evaluate.metrics): every number a suite writes has a
declaration, every declaration names a number its suite writes, and the report follows them: flip a
declaration's direction and the bold cell and the verdict's reading flip with it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sdft.core.config import EvalConfig, ModelSpec
from sdft.core.io import read_jsonl
from sdft.evaluate.suite_lm_eval import MAIN_METRICS, metrics_from_results
from sdft.evaluate.suites import SUITES, declared_metrics, metric_spec, run_suites
from sdft.report.build import build_report

BOGUS = ModelSpec("no-such/model-for-tests")  # loading it would fail: every run below gets its model passed in


# One worker runs the whole module: its fixture runs every suite once, not once per worker
pytestmark = pytest.mark.xdist_group("metric_declarations")



def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


Written = list[tuple[str, set[str], list[dict]]]  # (suite, names in one metrics.json, its predictions rows)


def written(out: Path) -> Written:
    found = []
    for metrics in sorted(out.glob("*/metrics.json")):
        names = {entry["name"] for entry in json.loads(metrics.read_text())}  # numbers and "not computed" notes
        found.append((metrics.parent.name, names, read_jsonl(metrics.parent / "predictions.jsonl")))
    return found


@pytest.fixture(scope="module")
def every_suite(tiny, tmp_path_factory) -> Written:
    """What every suite writes: each run once on a tiny random model (the seed, then a "fine-tuned" model
    against it for the suites that compare with the seed), humaneval on given predictions, and lm_eval's
    reading of a harness output that has each metric it knows."""
    model, tok = tiny
    tmp = tmp_path_factory.mktemp("every-suite")
    train_data = write_jsonl(tmp / "distilled.jsonl", [
        {"id": "a", "prompt": "What is 3 + 4?", "original": "3 + 4 = 7.", "response": "Seven.", "accepted": True},
        {"id": "b", "prompt": "What is 5 - 2?", "original": "5 - 2 = 3.", "response": "5 - 2 = 3.", "accepted": False}])
    function_data = write_jsonl(tmp / "calls.jsonl", [
        {"instruction": "Weather in Paris?", "output": 'get_weather(city="Paris")'},
        {"instruction": "Add 2 and 3.", "output": "add(2, 3)"}])
    ifeval_data = write_jsonl(tmp / "ifeval.jsonl", [
        {"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "Name a fruit.", "instruction_id_list": ["keywords:existence"],
         "kwargs": [{"keywords": ["apple"]}]}])

    def run(suites: list[str], out: Path, **kwargs) -> Written:
        cfg = EvalConfig(suites=suites, limit=2, batch_size=4, max_new_tokens=4, function_data=str(function_data),
                         ifeval_data=str(ifeval_data), humaneval_predictions=kwargs.pop("humaneval_predictions", None))
        run_suites(BOGUS, None, cfg, out, model=model, tokenizer=tok, train_data=str(train_data), progress=False,
                   **kwargs)
        return written(out)

    with pytest.MonkeyPatch.context() as mp:
        for var in ("SDFT_JUDGE_URL", "SDFT_JUDGE_MODEL"):  # the judge's metric is then a "not computed" note
            mp.delenv(var, raising=False)
        seed = tmp / "seed"
        found = run(["math", "function", "safety", "helpfulness", "knowledge", "gap", "retention", "ifeval"], seed)
        found += run(["retention", "helpfulness", "knowledge"], tmp / "tuned", seed_dir=seed)

    from sdft.evaluate.humaneval import load_humaneval

    (problem,) = load_humaneval(1)
    predictions = write_jsonl(tmp / "humaneval.jsonl", [{"task_id": problem["task_id"],
                                                        "completion": problem["canonical_solution"]}])
    cfg = EvalConfig(suites=["humaneval"], limit=1, humaneval_predictions=str(predictions))
    run_suites(BOGUS, None, cfg, tmp / "graded", progress=False)
    found += written(tmp / "graded")

    harness = {"results": {f"task_{m}": {f"{m},none": 0.5} for m in MAIN_METRICS}}
    metrics, rows, _ = metrics_from_results(harness)
    found.append(("lm_eval", {m.name for m in metrics}, rows))
    return found


def test_every_suite_was_run(every_suite):
    assert {suite for suite, _, _ in every_suite} == set(SUITES)  # a new suite must join every_suite


def test_every_metric_a_suite_writes_is_declared(every_suite):
    undeclared = [(suite, name) for suite, names, _ in every_suite for name in sorted(names)
                  if metric_spec(suite, name) is None]
    assert undeclared == []


def test_every_declaration_names_a_metric_its_suite_writes(every_suite):
    stale = [(suite, spec.name) for suite, spec in declared_metrics()
             if not any(s == suite and any(spec.matches(n) for n in names) for s, names, _ in every_suite)]
    assert stale == []


def test_declared_per_prompt_fields_are_in_the_predictions(every_suite):
    missing = [(suite, name, metric_spec(suite, name).per_prompt) for suite, names, rows in every_suite
               for name in sorted(names) if metric_spec(suite, name).per_prompt
               and not all(any(k in row for k in metric_spec(suite, name).per_prompt) for row in rows)]
    assert missing == []


def test_declarations_are_unique_and_the_verdict_has_task_and_forgetting_axes():
    pairs = [(suite, spec.name) for suite, spec in declared_metrics()]
    assert len(pairs) == len(set(pairs))
    roles = {spec.role for _, spec in declared_metrics() if spec.verdict is not None}
    assert roles == {"task", "forgetting"}
    with pytest.raises(ValueError, match="direction"):
        dataclasses.replace(metric_spec("math", "accuracy"), direction=2)
    with pytest.raises(ValueError, match="verdict"):
        dataclasses.replace(metric_spec("math", "accuracy"), direction=0)  # a verdict needs a better side


# ------------------------------------------------------------------ the report reads the declarations

def flip(monkeypatch, suite: str, name: str) -> None:
    """Declare `suite`'s metric `name` with the other better direction, for this test only."""
    entry = SUITES[suite]
    specs = tuple(dataclasses.replace(s, direction=-s.direction) if s.name == name else s for s in entry.metrics)
    monkeypatch.setitem(SUITES, suite, dataclasses.replace(entry, metrics=specs))


def math_run(run: Path) -> None:
    """SDFT scores higher than SFT on math: 30 of 40 prompts right against 10, in metrics and per prompt."""
    for method, right in (("sft", 10), ("sdft", 30)):
        folder = run / "eval" / method / "seed-1" / "math"
        folder.mkdir(parents=True)
        value = right / 40
        (folder / "metrics.json").write_text(json.dumps([{"suite": "math", "name": "accuracy", "value": value,
                                                          "n": 40, "low": value - 0.1, "high": value + 0.1}]))
        write_jsonl(folder / "predictions.jsonl", [{"id": i, "correct": i < right} for i in range(40)])


def report_of(run: Path) -> tuple[dict[str, str], list[str]]:
    """The results table's math column by row label, and the verdict's lines."""
    build_report(run)
    md = (run / "report.md").read_text()
    verdict = [ln[2:] for ln in md.split("## Verdict", 1)[1].split("\n## ", 1)[0].splitlines() if ln.startswith("- ")]
    table = [ln for ln in md.split("## Results", 1)[1].splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split(" | ")]
    cells = {row[0]: dict(zip(header, row)) for row in ([c.strip() for c in ln.strip("|").split(" | ")]
                                                       for ln in table[2:])}
    column = next(h for h in header if h.startswith("math accuracy"))
    return {row: cells[row][column] for row in cells} | {"heading": column}, verdict


def test_flipping_a_direction_flips_the_bold_cell_and_the_verdict(tmp_path, monkeypatch):
    math_run(tmp_path / "as-declared")
    cells, verdict = report_of(tmp_path / "as-declared")
    assert cells["heading"] == "math accuracy (%) ↑"
    assert cells["SDFT"].startswith("**75.0") and not cells["SFT"].startswith("**")
    assert any(line.startswith("SDFT solved more held-out math problems than SFT: accuracy +50.0 pts")
               for line in verdict)

    flip(monkeypatch, "math", "accuracy")
    math_run(tmp_path / "flipped")
    cells, verdict = report_of(tmp_path / "flipped")
    assert cells["heading"] == "math accuracy (%) ↓"
    assert cells["SFT"].startswith("**25.0") and not cells["SDFT"].startswith("**")
    assert any(line.startswith("SDFT solved fewer held-out math problems than SFT: accuracy +50.0 pts")
               for line in verdict)


def test_an_undeclared_metric_is_shown_without_a_direction(tmp_path):
    run = tmp_path / "run"
    for method, value in (("sft", 0.2), ("sdft", 0.4)):
        folder = run / "eval" / method / "seed-1" / "math"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps([{"suite": "math", "name": "mystery", "value": value}]))
    build_report(run)
    md = (run / "report.md").read_text()
    assert "| model | math mystery |" in md and "**" not in md.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "`math mystery`: no suite declares this metric" in md
