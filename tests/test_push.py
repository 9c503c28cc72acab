"""`sdft push`: the folder and model card built from a run folder, checked offline with huggingface_hub;
nothing is uploaded (the tests run with HF_HUB_OFFLINE=1, and the upload calls are guarded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from sdft.cli import main
from sdft.recipes.push import DEFAULT_BASE
from sdft.report.build import build_report

REPO_ID = "someone/tiny-sdft"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def evaluated(run: Path, row: str, right: int, refusals: int, of: int = 20) -> None:
    """math and safety results of one model: metrics.json with intervals, and per-prompt rows."""
    for suite, name, field, hits in (("math", "accuracy", "correct", right), ("safety", "refusal_rate", "refused", refusals)):
        folder = run / "eval" / row / suite
        write_jsonl(folder / "predictions.jsonl", [{"id": i, field: i < hits} for i in range(of)])
        (folder / "metrics.json").write_text(json.dumps([{"suite": suite, "name": name, "value": hits / of, "n": of,
                                                          "low": max(hits / of - 0.2, 0), "high": min(hits / of + 0.2, 1)}]))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_tiny_llama) -> Path:
    """A run folder as `sdft run` leaves it: config, a LoRA adapter per method (saved on a tiny random
    model), eval metrics of the seed, SFT and SDFT, and the report."""
    from peft import LoraConfig, get_peft_model

    run = tmp_path_factory.mktemp("run")
    cfg = {"model": {"name": "default"}, "data": {"source": "openai/gsm8k:main:train", "task": "math"},
           "methods": ["sft", "sdft"], "seeds": [1], "eval": {"math_data": None}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for method in ("sft", "sdft"):
        model, _ = make_tiny_llama()
        lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        lora.save_pretrained(run / "train" / method / "seed-1" / "adapter")
        (run / "train" / method / "seed-1" / "train_summary.json").write_text(json.dumps({"steps": 16, "rows": 64}))
    evaluated(run, "seed", 6, 15)
    evaluated(run, "sft/seed-1", 8, 9)
    evaluated(run, "sdft/seed-1", 10, 14)
    build_report(run)
    return run


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub in offline mode (it read HF_HUB_OFFLINE when first imported, maybe before conftest
    set it): every request it would send raises instead."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def no_upload(offline, monkeypatch):
    """Any call that would reach the hub fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the hub was called")

    for name in ("create_repo", "upload_folder", "upload_file", "create_commit"):
        monkeypatch.setattr(HfApi, name, forbidden)


def test_dry_run_builds_a_valid_card_and_a_loadable_adapter(run_folder, no_upload, make_tiny_llama, capsys):
    assert main(["push", str(run_folder), "--repo", REPO_ID, "--dry-run"]) == 0
    folder = run_folder / "push" / "sdft-seed-1"
    out = capsys.readouterr().out
    assert f"built {folder}" in out and "nothing uploaded" in out
    assert {p.name for p in folder.iterdir()} == {"README.md", "report.html", "adapter_config.json",
                                                  "adapter_model.safetensors"}
    assert (folder / "report.html").read_bytes() == (run_folder / "report.html").read_bytes()

    # huggingface_hub parses the card back: its metadata and the model-index
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    data = card.data
    assert data.base_model == DEFAULT_BASE and data.library_name == "peft"
    assert {"sdft", "lora"} <= set(data.tags) and data.datasets == ["openai/gsm8k"]
    assert data.to_dict()["model-index"][0]["name"] == REPO_ID
    measured = {(r.dataset_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert measured == {("math", "accuracy"): pytest.approx(0.5), ("safety", "refusal_rate"): pytest.approx(0.7)}
    assert all(r.task_type == "text-generation" for r in data.eval_results)

    # the text compares the seed, SFT and SDFT, gives the verdict and links the report
    text = card.text
    assert "| Seed | 0.3 [0.1, 0.5] | 0.75 [0.55, 0.95] |" in text
    assert "| SFT (seed 1) | 0.4 [0.2, 0.6] |" in text and "| SDFT (seed 1) | 0.5 [0.3, 0.7] |" in text
    assert "- SDFT " in text and "than SFT" in text
    assert "[report.html](report.html)" in text and f'PeftModel.from_pretrained(base, "{REPO_ID}")' in text

    # the folder is an adapter PEFT loads, pointing at the hub base model, not at this machine's copy
    from peft import PeftModel

    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_BASE
    model, _ = make_tiny_llama()
    assert isinstance(PeftModel.from_pretrained(model, folder), PeftModel)


def test_push_sft_by_method_and_seed(run_folder, no_upload):
    assert main(["push", str(run_folder), "--repo", REPO_ID, "--method", "sft", "--seed", "1", "--dry-run"]) == 0
    card = ModelCard.load(run_folder / "push" / "sft-seed-1" / "README.md")
    assert "sft" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["accuracy"] == pytest.approx(0.4)


@pytest.mark.parametrize("args, expected", [
    (["{missing}"], "no run folder there"),
    (["{run}", "--seed", "7"], "seed-7/adapter: no adapter there (adapter_config.json is missing); trained sdft seeds: 1"),
    (["{run}", "--method", "onpolicy"], "no onpolicy model trained here"),
    (["{run}", "--repo", "not a repo id"], "--repo not a repo id: not a hub repository id"),
], ids=["no-run-folder", "no-such-seed", "method-not-trained", "bad-repo-id"])
def test_missing_run_or_adapter_is_bad_input(run_folder, tmp_path, no_upload, capsys, args, expected):
    argv = [a.format(missing=tmp_path / "nowhere", run=run_folder) for a in args]
    rc = main(["push", *argv, *([] if "--repo" in argv else ["--repo", REPO_ID]), "--dry-run"])
    assert rc == 2
    assert expected in capsys.readouterr().err


def test_without_dry_run_it_uploads_and_offline_that_stops_in_one_line(run_folder, offline, capsys):
    rc = main(["push", str(run_folder), "--repo", REPO_ID])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.startswith("sdft push: ") and "offline" in err.lower(), err
