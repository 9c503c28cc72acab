"""The command line on a tiny random model: distill, train, generate, run; config resolution."""

import json

import pytest
import yaml

from sdft.cli import main
from sdft.core.config import ConfigError, load_config, preset_path


def test_demo_preset_and_overrides(tmp_path):
    cfg = load_config(preset_path("demo"), ["train.epochs=3", "eval.suites=[math]", "model.name=x/y"])
    assert cfg.train.epochs == 3 and cfg.eval.suites == ["math"] and cfg.model.name == "x/y"
    assert cfg.data.task == "math" and cfg.train.lora_r == 8 and cfg.train.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["train.lora_rank=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_distill_train_generate(tiny_model, tmp_path, capsys):
    out = tmp_path / "distilled.jsonl"
    code = main(["distill", "--model", tiny_model, "--data", "builtin:arithmetic?n=6", "--task", "math",
                 "--out", str(out), "--max-new-tokens", "4", "--batch-size", "3"])
    assert code == 0
    assert "accepted" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {"prompt", "original", "distilled", "response", "accepted", "reject_reason"} <= set(rows[0])

    for target in ("original", "response"):
        run = tmp_path / target
        assert main(["train", "--model", tiny_model, "--data", str(out), "--target", target, "--out", str(run),
                     "--max-steps", "2", "--set", "batch_size=3"]) == 0
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["steps"] == 2 and summary["rows"] == 6
        assert (run / "adapter" / "adapter_config.json").is_file() and (run / "loss.png").is_file()
        adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == 8 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]

    gen = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", tiny_model, "--adapter", str(tmp_path / "response" / "adapter"),
                 "--data", str(out), "--columns", "prompt=prompt,response=original", "--out", str(gen),
                 "--max-new-tokens", "3"]) == 0
    gen_rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert [r["id"] for r in gen_rows] == [r["id"] for r in rows] and all("output" in r for r in gen_rows)


def test_bad_data_exits_2_without_output(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "ok", "response": "fine"}\n{"prompt": "  ", "response": "x"}\n')
    before = data.read_bytes()
    out = tmp_path / "out.jsonl"
    code = main(["distill", "--model", "no/such-model", "--data", str(data), "--task", "general", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "row 2" in err and "prompt" in err and str(data) in err
    assert not out.exists() and data.read_bytes() == before


def test_run_recipe_end_to_end(tiny_model, tmp_path):
    """The whole flow on a tiny model: distill, SFT and SDFT, the demo's suites, the curve, the report."""
    config = yaml.safe_load(preset_path("demo").read_text())
    config["model"]["name"] = tiny_model
    config["data"]["source"] = "builtin:arithmetic?n=6"
    config["distill"] |= {"max_new_tokens": 4, "batch_size": 3}
    config["train"] |= {"max_steps": 2, "batch_size": 3, "save_steps": 100, "curve_steps": [1]}
    config["eval"] |= {"limit": 3, "max_new_tokens": 4, "curve_limit": 3, "curve_max_new_tokens": 4}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    for method in ("sft", "sdft"):
        assert (out / "train" / method / "seed-42" / "adapter" / "adapter_model.safetensors").is_file()
        for suite in config["eval"]["suites"]:
            metrics = json.loads((out / "eval" / method / "seed-42" / suite / "metrics.json").read_text())
            assert metrics and all(m["suite"] == suite for m in metrics)
        curve = [json.loads(line) for line in (out / "eval" / method / "seed-42" / "curve.jsonl").read_text().splitlines()]
        assert [r["step"] for r in curve] == [1, 2]  # the snapshot, then the final adapter
    report = (out / "report.md").read_text()
    assert "| Seed" in report and "| SFT" in report and "| SDFT" in report
    assert report.index("Learning against forgetting") < report.index("## Verdict")
    saved = json.loads((out / "report.json").read_text())
    assert {(r["method"], r["step"]) for r in saved["curve"]} >= {("sft", 1), ("sft", 2), ("sdft", 2)}
    assert (out / "report.html").is_file() and (out / "loss_curves.png").is_file()
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"]["name"] == tiny_model and resolved["seeds"] == [42]
    assert json.loads((out / "environment.json").read_text())["packages"]["transformers"]
    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["distill", "train sft seed 42", "train sdft seed 42", "evaluate seed",
                                            "evaluate sft seed 42", "evaluate sdft seed 42", "curve"]
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 100 for s in stages)


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    out = tmp_path / "d.jsonl"
    code = main(["distill", "--model", tiny_model, "--data", "builtin:arithmetic?n=2", "--task", "math",
                 "--out", str(out), "--backend", "vllm"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'sdft[vllm]'" in err and "Traceback" not in err  # a missing extra, not bad input
    assert not out.exists()


@pytest.mark.parametrize("curve_task_data, message", [
    ("null", "eval.function_data"),  # no task data at all
    ("training", "no held-out task prompts left"),  # the training file, every row of it trained on
])
def test_a_curve_without_its_task_data_stops_before_any_model_loads(tmp_path, capsys, no_model, curve_task_data,
                                                                     message):
    """The curve runs after training and evaluation; its inputs are checked before the first stage."""
    out = tmp_path / "run"
    code = main(["run", "--preset", "openfunctions", "--out", str(out),
                 "--set", "data.source=builtin:arithmetic?n=4", "--set", "eval.function_data=null",
                 "--set", f"eval.curve_task_data={curve_task_data}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (out / "distilled.jsonl").exists() and not (out / "train").exists()
