"""build_report on hand-written run folders: table cells, seed statistics, bold, self-contained HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdft.report.build import build_report, column_label, fmt_number


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def metrics(run: Path, where: str, suite: str, values: dict[str, tuple[float, float, float]], n: int = 48) -> None:
    write_json(run / "eval" / where / suite / "metrics.json",
               [{"suite": suite, "name": k, "value": v, "n": n, "low": lo, "high": hi}
                for k, (v, lo, hi) in values.items()])


def train_log(run: Path, method: str, seed: int, losses: list[float]) -> None:
    d = run / "train" / method / f"seed-{seed}"
    rows = [{"loss": l, "step": i + 1, "epoch": (i + 1) / len(losses)} for i, l in enumerate(losses)]
    write_jsonl(d / "train_log.jsonl", rows + [{"train_runtime": 1.0, "step": len(losses)}])
    write_json(d / "train_summary.json", {"steps": len(losses), "final_loss": losses[-1], "rows": 64})


def results_table(md: str) -> dict[str, dict[str, str]]:
    """The Markdown results table as {row label: {column header: cell}}."""
    lines = md.split("## Results", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[start:]:  # the first contiguous block of table lines
        if not ln.startswith("|"):
            break
        table.append(ln)
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table]
    header = split[0]
    return {row[0]: dict(zip(header, row)) for row in split[2:]}


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    run = tmp_path / "run-demo"
    run.mkdir()
    (run / "config.yaml").write_text(
        "model:\n  name: tiny-chat\ndata:\n  source: builtin:arithmetic?n=64\n  task: math\nseeds: [42]\n")
    write_json(run / "environment.json", {"python": "3.11.2", "platform": "Linux-x86_64",
                                          "packages": {"torch": "2.4.0", "peft": None}, "cuda": False,
                                          "seeds": [42]})
    write_json(run / "distilled.jsonl.summary.json",
               {"task": "math", "rows": 64, "accepted": 50, "accepted_pct": 78.12,
                "reject_reasons": {"wrong_answer": 10, "too_long": 4}, "model": "tiny-chat", "template": "math"})
    metrics(run, "seed", "math", {"accuracy": (0.4167, 0.289, 0.556)})
    metrics(run, "sft/seed-42", "math", {"accuracy": (0.3542, 0.2323, 0.4999)})
    metrics(run, "sdft/seed-42", "math", {"accuracy": (0.4583, 0.3253, 0.5973)})
    metrics(run, "seed", "safety", {"refusal_rate": (0.9, 0.8, 0.95), "jailbreak_refusal_rate": (0.5, 0.4, 0.6)})
    metrics(run, "sft/seed-42", "safety", {"refusal_rate": (0.7, 0.6, 0.8), "jailbreak_refusal_rate": (0.2, 0.1, 0.3)})
    metrics(run, "sdft/seed-42", "safety", {"refusal_rate": (0.85, 0.75, 0.9),
                                            "jailbreak_refusal_rate": (0.45, 0.35, 0.55)})
    metrics(run, "seed", "gap", {"nll_original": (1.5, 1.4, 1.6), "nll_distilled": (0.8, 0.75, 0.85),
                                 "nll_gap": (0.7, 0.6, 0.8)})
    # SFT has the lower (better) nll_original although SDFT's value is the larger number.
    metrics(run, "sft/seed-42", "gap", {"nll_original": (0.9, 0.85, 0.95), "nll_distilled": (1.1, 1.0, 1.2),
                                        "nll_gap": (-0.2, -0.3, -0.1)})
    metrics(run, "sdft/seed-42", "gap", {"nll_original": (1.2345, 1.2, 1.3), "nll_distilled": (0.6543, 0.6, 0.7),
                                         "nll_gap": (0.58, 0.5, 0.66)})
    metrics(run, "seed", "retention", {"nll_seed_reply": (0.5, 0.45, 0.55)})
    metrics(run, "seed", "helpfulness", {"mean_words": (87.25, 80.0, 95.5)})
    for m in ("sft", "sdft"):
        path = run / "eval" / m / "seed-42" / "helpfulness" / "metrics.json"
        write_json(path, [{"suite": "helpfulness", "name": "mean_words", "value": 60.0 if m == "sft" else 85.0,
                           "n": 48, "low": 55.0, "high": 90.0},
                          {"suite": "helpfulness", "name": "win_rate_vs_seed", "value": None, "n": 0, "low": None,
                           "high": None, "note": "no judge configured"}])
    for m, cos, bleu in (("sft", 0.62, 21.33), ("sdft", 0.81, 40.07)):
        metrics(run, f"{m}/seed-42", "retention", {"nll_shift": (0.4 if m == "sft" else 0.1, 0.0, 0.5),
                                                     "cosine_to_seed": (cos, cos - 0.05, cos + 0.05),
                                                     "rouge_l_to_seed": (cos / 2, cos / 2 - 0.05, cos / 2 + 0.05),
                                                     "bleu4_to_seed": (bleu, bleu - 5, bleu + 5)})
        key = "cosine_to_seed" if m == "sft" else "cosine"  # both per-row spellings are read
        write_jsonl(run / "eval" / m / "seed-42" / "retention" / "predictions.jsonl",
                    [{"output": "r", key: cos + 0.01 * (i % 7 - 3), "rouge_l": 0.3} for i in range(40)])
    write_jsonl(run / "eval" / "seed" / "retention" / "predictions.jsonl", [{"output": "r", "nll": 0.5}])
    write_jsonl(run / "eval" / "seed" / "gap" / "predictions.jsonl",
                [{"nll_original": 1.2 + 0.05 * (i % 9), "nll_distilled": None if i % 5 == 0 else 0.6 + 0.04 * (i % 8)}
                 for i in range(60)])
    train_log(run, "sft", 42, [2.0, 1.6, 1.3, 1.1, 1.0, 0.95])
    train_log(run, "sdft", 42, [1.2, 1.0, 0.9, 0.85, 0.8, 0.78])
    return run


def test_full_report_files_table_and_bold(full_run: Path) -> None:
    paths = build_report(full_run)
    md_path, html_path = full_run / "report.md", full_run / "report.html"
    assert paths[:3] == [md_path, html_path, full_run / "report.json"]
    assert md_path.is_file() and html_path.is_file()
    for name in ("gap_nll.png", "retention_cosine.png", "loss_curves.png", "main_metrics.png"):
        assert (full_run / "plots" / name).is_file()
        assert full_run / "plots" / name in paths
    md = md_path.read_text()
    assert "tiny-chat" in md and "builtin:arithmetic?n=64" in md and "Python 3.11.2" in md
    assert "50 of 64" in md and "78.1%" in md
    assert "| wrong_answer | 10 | 15.6% |" in md

    t = results_table(md)
    assert list(t) == ["Seed", "SFT", "SDFT"]
    acc = "math accuracy (%) ↑"
    assert t["Seed"][acc] == "41.7 [28.9, 55.6]"
    assert t["SFT"][acc] == "35.4 [23.2, 50.0]"
    assert t["SDFT"][acc] == "**45.8 [32.5, 59.7]**"
    # Lower is better for NLLs: SFT's 0.900 wins over SDFT's 1.234 ...
    assert t["SFT"]["gap nll_original ↓"] == "**0.900 [0.850, 0.950]**"
    assert t["SDFT"]["gap nll_original ↓"] == "1.234 [1.200, 1.300]"
    # ... and SDFT's 0.654 over SFT's 1.100; the seed row is never bold.
    assert t["SDFT"]["gap nll_distilled ↓"] == "**0.654 [0.600, 0.700]**"
    assert t["Seed"]["gap nll_distilled ↓"] == "0.800 [0.750, 0.850]"
    assert t["SDFT"]["retention nll_shift ↓"].startswith("**0.100")
    # BLEU stays on its 0-100 scale; metrics a model lacks show a dash.
    assert t["SDFT"]["retention bleu4_to_seed (0-100) ↑"] == "**40.1 [35.1, 45.1]**"
    assert t["Seed"]["retention bleu4_to_seed (0-100) ↑"] == "—"
    assert t["SFT"]["retention nll_seed_reply ↓"] == "—"
    # nll_gap has no better direction: no arrow, no bold.
    assert t["SFT"]["gap nll_gap"] == "-0.200 [-0.300, -0.100]" and t["SDFT"]["gap nll_gap"] == "0.580 [0.500, 0.660]"
    assert t["SDFT"]["helpfulness mean_words ↑"] == "**85.0 [55.0, 90.0]**"
    # A metric a suite could not compute is listed with its reason, not given a column.
    assert "helpfulness win_rate_vs_seed (SFT seed-42, SDFT seed-42): no judge configured" in md
    assert not any("win_rate" in h for h in t["Seed"])
    # Columns follow the suite order: math, safety, gap, retention.
    header = list(t["Seed"])
    assert (header.index(acc) < header.index("safety refusal_rate (%) ↑") < header.index("helpfulness mean_words ↑")
            < header.index("gap nll_original ↓") < header.index("retention nll_shift ↓"))

    assert "](plots/gap_nll.png)" in md and "](plots/retention_cosine.png)" in md
    assert "SFT: mean cosine 0.619 over 40 replies; SDFT: mean cosine 0.809 over 40 replies" in md
    assert "## How to read this report" in md and "lower is better" in md
    assert "Problems reading" not in md


NUMBER = re.compile(r"-?\d+\.\d+")


def assert_table_round_trips(run: Path) -> None:
    """Every number of the Markdown results table is in report.json's table, for that model and column,
    with the same value as the report prints it; and report.json holds no cell the table lacks."""
    table = results_table((run / "report.md").read_text())
    rows = json.loads((run / "report.json").read_text())["table"]
    labels = {"seed": "Seed", "sft": "SFT", "sdft": "SDFT", "onpolicy": "SDFT (on-policy)"}
    printed: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        assert r["role"] in ("task", "forgetting", "other")
        numbers = [r["value"]] + ([r["std"]] if r["seed"] == "mean" else [r["low"], r["high"]])
        cell = printed.setdefault((labels[r["model"]], column_label((r["suite"], r["metric"]))), set())
        cell.update(fmt_number(x, r["unit"]) for x in numbers if x is not None)
    shown = 0
    for model, cells in table.items():
        for header, text in cells.items():
            if header == "model" or text == "—":
                continue
            numbers = NUMBER.findall(text)
            assert numbers and set(numbers) <= printed[(model, header)], (model, header, text)
            shown += 1
    assert shown == len(printed)


def test_report_json_holds_the_table_the_report_shows(full_run: Path, tmp_path: Path) -> None:
    build_report(full_run)
    assert_table_round_trips(full_run)
    data = json.loads((full_run / "report.json").read_text())
    acc = next(r for r in data["table"] if (r["model"], r["suite"], r["metric"]) == ("sdft", "math", "accuracy"))
    assert acc == {"model": "sdft", "seed": 42, "suite": "math", "metric": "accuracy", "role": "task", "unit": "%",
                   "value": 0.4583, "low": 0.3253, "high": 0.5973, "n": 48}
    roles = {(r["suite"], r["metric"]): r["role"] for r in data["table"]}
    assert roles[("safety", "refusal_rate")] == "forgetting" and roles[("gap", "nll_gap")] == "other"
    # A run folder without curve files: no curve section, no curve rows, nothing broken.
    assert "Learning against forgetting" not in (full_run / "report.md").read_text()
    assert data["curve"] == [] and data["curve_mean"] == []
    assert all(v["axis"] != "forgetting_at_matched_learning" for v in data["verdict"])

    # Several seeds: the cell's mean and std are in report.json too, beside each seed's value.
    run = tmp_path / "seeds"
    metrics(run, "seed", "math", {"accuracy": (0.4167, 0.289, 0.556)})
    for seed, sft, sdft in ((1, 0.40, 0.60), (2, 0.50, 0.55), (3, 0.54, 0.62)):
        metrics(run, f"sft/seed-{seed}", "math", {"accuracy": (sft, sft - 0.1, sft + 0.1)})
        metrics(run, f"sdft/seed-{seed}", "math", {"accuracy": (sdft, sdft - 0.1, sdft + 0.1)})
    metrics(run, "sdft/seed-1", "gap", {"nll_original": (1.05, 1.0, 1.1)})
    build_report(run)
    assert_table_round_trips(run)
    rows = json.loads((run / "report.json").read_text())["table"]
    mean = next(r for r in rows if r["model"] == "sft" and r["seed"] == "mean")
    assert mean["value"] == pytest.approx(0.48) and mean["std"] == pytest.approx(0.0721, abs=1e-4)
    assert mean["seeds"] == 3 and [r["seed"] for r in rows if r["model"] == "sft"] == [1, 2, 3, "mean"]


def test_html_is_self_contained(full_run: Path) -> None:
    build_report(full_run)
    page = (full_run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert "plots/" not in page  # no image is referenced by file
    assert "<strong>45.8 [32.5, 59.7]</strong>" in page
    assert "<strong>0.900 [0.850, 0.950]</strong>" in page


def test_several_seeds_show_mean_and_std(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics(run, "seed", "math", {"accuracy": (0.4167, 0.289, 0.556)})
    for seed, sft, sdft in ((1, 0.40, 0.60), (2, 0.50, 0.55), (3, 0.54, 0.62)):
        metrics(run, f"sft/seed-{seed}", "math", {"accuracy": (sft, sft - 0.1, sft + 0.1)})
        metrics(run, f"sdft/seed-{seed}", "math", {"accuracy": (sdft, sdft - 0.1, sdft + 0.1)})
        metrics(run, f"sft/seed-{seed}", "gap", {"nll_original": (1.0 + seed / 10, 1.0, 1.5)})
    metrics(run, "sdft/seed-1", "gap", {"nll_original": (1.05, 1.0, 1.1)})
    build_report(run)
    t = results_table((run / "report.md").read_text())
    acc = "math accuracy (%) ↑"
    # SFT 0.40, 0.50, 0.54: mean 0.48, sample var (0.0064 + 0.0004 + 0.0036) / 2 = 0.0052, std 0.0721.
    assert t["SFT"][acc] == "48.0 ± 7.2 (3 seeds)"
    # SDFT 0.60, 0.55, 0.62: mean 0.59, sample var (0.0001 + 0.0016 + 0.0009) / 2 = 0.0013, std 0.0361.
    assert t["SDFT"][acc] == "**59.0 ± 3.6 (3 seeds)**"
    assert t["Seed"][acc] == "41.7 [28.9, 55.6]"
    # SFT nll 1.1, 1.2, 1.3: mean 1.2, std 0.1; SDFT ran one seed only and is lower (better).
    assert t["SFT"]["gap nll_original ↓"] == "1.200 ± 0.100 (3 seeds)"
    assert t["SDFT"]["gap nll_original ↓"] == "**1.050 [1.000, 1.100] (1 seed)**"


def test_only_math_without_seed_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics(run, "sft/seed-7", "math", {"accuracy": (0.25, 0.15, 0.4)})
    metrics(run, "sdft/seed-7", "math", {"accuracy": (0.25, 0.15, 0.4)})
    paths = build_report(run)
    assert paths == [run / "report.md", run / "report.html", run / "report.json", run / "plots" / "main_metrics.png"]
    md = (run / "report.md").read_text()
    t = results_table(md)
    assert list(t["Seed"]) == ["model", "math accuracy (%) ↑"]
    assert t["Seed"]["math accuracy (%) ↑"] == "—"
    assert t["SFT"]["math accuracy (%) ↑"] == "25.0 [15.0, 40.0]"  # a tie: nothing bold
    assert t["SDFT"]["math accuracy (%) ↑"] == "25.0 [15.0, 40.0]"
    assert "no distillation summary" in md and "skipped: no per-row NLLs" in md
    assert "skipped: no per-row cosine_to_seed" in md and "skipped the loss plot" in md
    assert (run / "report.html").read_text().count("data:image/png;base64,") == 1


def test_empty_and_broken_run_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_report(empty) == [empty / "report.md", empty / "report.html", empty / "report.json"]
    assert json.loads((empty / "report.json").read_text()) == {"table": [], "curve": [], "curve_mean": [],
                                                               "verdict": []}
    assert "no evaluation metrics found" in (empty / "report.md").read_text()
    # Oddly shaped but valid inputs are reported as far as they go.
    (empty / "config.yaml").write_text("model: tiny\ndata: 3\nseeds: 5\n")
    write_json(empty / "distilled.jsonl.summary.json", {"rows": 10, "reject_reasons": {"x": "many"}})
    build_report(empty)
    assert "? of 10 rewrites" in (empty / "report.md").read_text()

    broken = tmp_path / "broken"
    (broken / "eval" / "seed" / "math").mkdir(parents=True)
    (broken / "eval" / "seed" / "math" / "metrics.json").write_text("[{not json")
    metrics(broken, "sft/seed-1", "safety", {"refusal_rate": (float("nan"), 0, 1)})
    metrics(broken, "sdft/seed-1", "knowledge", {"accuracy": (0.3, 0.2, 0.4)})
    (broken / "config.yaml").write_text("model: [unclosed\n")
    write_jsonl(broken / "eval" / "seed" / "gap" / "predictions.jsonl", [{"nll_original": 1.0}])
    (broken / "eval" / "seed" / "gap" / "predictions.jsonl").open("a").write('{"nll_original": 1.')
    build_report(broken)
    md = (broken / "report.md").read_text()
    assert "## Problems reading the run folder" in md
    assert "eval/seed/math/metrics.json" in md and "skipped 1 unreadable line" in md
    assert results_table(md)["SDFT"]["knowledge accuracy (%) ↑"] == "30.0 [20.0, 40.0]"

    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "missing")


def test_cli_report(full_run: Path, capsys) -> None:
    from sdft.cli import main

    assert main(["report", str(full_run)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_settings_are_printed_and_mismatches_flagged(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def settings(where: str, limit: int) -> None:
        write_json(run / "eval" / where / "math" / "settings.json",
                   {"suite": "math", "model": {"name": "m", "revision": None, "dtype": "float32"}, "adapter": None,
                    "settings": {"limit": limit, "max_new_tokens": 128, "math_data": None}, "files": {}})

    for where in ("seed", "sft/seed-1", "sdft/seed-1"):
        metrics(run, where, "math", {"accuracy": (0.25, 0.15, 0.4)})
        settings(where, 32)
    build_report(run)
    md = (run / "report.md").read_text()
    section = md.split("## Evaluation settings", 1)[1]
    assert "| math | limit=32, max_new_tokens=128, math_data=built-in, dtype=float32 |" in section
    assert "under different settings" not in md
    settings("sdft/seed-1", 16)  # one model evaluated on fewer items
    build_report(run)
    md = (run / "report.md").read_text()
    assert "math: models were evaluated under different settings" in md and "sdft/seed-1: limit=16" in md


def test_the_seed_reference_is_not_a_difference_in_settings(tmp_path: Path) -> None:
    """The seed's retention has no seed_dir / seed_topk (it is the seed); fine-tuned models name it. That
    alone is no mismatch, but another limit is, and so are two fine-tuned models compared with different
    seed top-k files."""
    run = tmp_path / "run"

    def settings(where: str, limit: int = 112, topk: str | None = "8ea839e4823a" + "0" * 52) -> None:
        values = {"limit": limit, "max_new_tokens": 96, "batch_size": 56}
        files = {}
        if where != "seed":
            values["seed_dir"] = "of3/eval/seed"
            files = {"seed_predictions": "ab" * 32} | ({"seed_topk": topk} if topk else {})
        write_json(run / "eval" / where / "retention" / "settings.json",
                   {"suite": "retention", "model": {"name": "m", "revision": None, "dtype": "bfloat16"},
                    "adapter": None, "settings": values, "files": files})

    models = ("seed", *(f"{m}/seed-{s}" for m in ("sft", "sdft") for s in (1, 2, 3)))
    for where in models:
        metrics(run, where, "retention", {"nll_seed_reply": (0.5, 0.45, 0.55)})
        settings(where)
    build_report(run)
    md = (run / "report.md").read_text()
    assert "under different settings" not in md
    section = md.split("## Evaluation settings", 1)[1]
    assert ("| retention | limit=112, max_new_tokens=96, batch_size=56, seed_dir=of3/eval/seed, seed_topk sha256 "
            "8ea839e4823a, dtype=bfloat16 |" in section)

    settings("sdft/seed-2", topk="ffff" + "0" * 60)  # compared with another seed top-k
    build_report(run)
    md = (run / "report.md").read_text()
    assert "retention: models were evaluated under different settings" in md
    assert ("sdft/seed-2: limit=112, max_new_tokens=96, batch_size=56, seed_dir=of3/eval/seed, seed_topk sha256 "
            "ffff" in md)

    settings("sdft/seed-2")
    settings("seed", limit=100)  # the seed itself on fewer items
    build_report(run)
    md = (run / "report.md").read_text()
    assert "retention: models were evaluated under different settings" in md
    assert "seed: limit=100, max_new_tokens=96, batch_size=56, dtype=bfloat16" in md

    settings("seed")
    settings("sft/seed-3", topk=None)  # one fine-tuned model measured before the seed had its top-k
    build_report(run)
    assert "retention: models were evaluated under different settings" in (run / "report.md").read_text()
