"""On-policy self-distillation on TRL's SDFTTrainer, with a tiny random model.

What TRL receives is read from inside its trainer (its own callback events carry the prompts it samples
from and the token ids the student and teacher are scored on), not from our inputs to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from sdft.core.chat import render_chat
from sdft.cli import main
from sdft.core.config import ConfigError, load_config
from sdft.data.load import load_examples
from sdft.distill.templates import get_template, render_distill_prompt
from sdft.core.config import OnPolicyConfig, TrainConfig
from sdft.train.onpolicy import train_onpolicy

STEPS = 2
# The same run as the CLI flags below: 2 prompts x 2 samples per step, 8 sampled tokens each.
CFG = TrainConfig(batch_size=4, max_steps=STEPS, save_steps=1, learning_rate=1e-2, max_length=256)
OCFG = OnPolicyConfig(num_generations=2, max_completion_length=8)
CLI_FLAGS = ["--method", "onpolicy", "--max-steps", str(STEPS), "--set", "batch_size=4", "--set", "save_steps=1",
             "--set", "learning_rate=0.01", "--set", "max_length=256", "--set", "onpolicy.num_generations=2",
             "--set", "onpolicy.max_completion_length=8"]


class Spy(TrainerCallback):
    """Records, per generation batch, the prompts TRL samples from and the ids it scores."""

    def __init__(self):
        self.generation_prompts: list[str] = []
        self.batches: list[dict] = []

    def on_generation_prompts_selected(self, args, state, control, generation_prompts=None, **kw):
        self.generation_prompts += list(generation_prompts)

    def on_self_distillation_batch_prepared(self, args, state, control, prompt_ids=None, completion_ids=None,
                                            teacher_input_ids=None, teacher_attention_mask=None, **kw):
        self.batches.append({"prompt_ids": prompt_ids.clone(), "completion_ids": completion_ids.clone(),
                             "teacher_input_ids": teacher_input_ids.clone(),
                             "teacher_attention_mask": teacher_attention_mask.clone()})


class StopAfterSave(TrainerCallback):
    """Interrupts training as Ctrl-C would, right after the checkpoint of `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onpolicy-data") / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is the code word for box {i}?",
                                        "response": f"The code word is ZEBRA{i}."}) + "\n" for i in range(4)))
    return path


@pytest.fixture(scope="module")
def reference_run(tiny_model, data_file, tmp_path_factory):
    spy, out = Spy(), tmp_path_factory.mktemp("onpolicy") / "ref"
    examples = load_examples(str(data_file))
    summary = train_onpolicy(tiny_model, examples, out, CFG, OCFG, task="general", progress=False,
                             callbacks=[spy])
    return {"spy": spy, "out": out, "summary": summary, "examples": examples}


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_teacher_prompt_holds_the_reference_and_the_student_prompt_does_not(tiny_model, reference_run):
    from sdft.core.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    examples, spy = reference_run["examples"], reference_run["spy"]
    template = get_template(None, "general")
    student = {render_chat(tok, ex.messages()): ex for ex in examples}
    teacher = {ex.id: render_distill_prompt(tok, template, ex) for ex in examples}

    # The student samples from the task prompt alone, rendered through the chat template.
    assert spy.generation_prompts and set(spy.generation_prompts) <= set(student)
    assert not any("ZEBRA" in p for p in spy.generation_prompts)
    assert len(spy.batches) == STEPS
    for batch, prompts in zip(spy.batches, [spy.generation_prompts[i:i + 4] for i in range(0, 8, 4)]):
        n_completion = batch["completion_ids"].shape[1]
        for row, prompt in enumerate(prompts):
            ex = student[prompt]
            # Student ids: exactly the rendered prompt (no extra BOS), after the left padding.
            want = tok(prompt, add_special_tokens=False)["input_ids"]
            ids = batch["prompt_ids"][row].tolist()
            assert ids[len(ids) - len(want):] == want
            assert set(ids[:len(ids) - len(want)]) <= {tok.pad_token_id}
            # Teacher ids: the distillation prompt `sdft distill` renders (reference included), then the
            # student's own sample.
            mask = batch["teacher_attention_mask"][row].bool()
            teacher_prompt = batch["teacher_input_ids"][row, :-n_completion][mask[:-n_completion]].tolist()
            assert teacher_prompt == tok(teacher[ex.id], add_special_tokens=False)["input_ids"]
            assert ex.response in tok.decode(teacher_prompt) and ex.response not in tok.decode(ids)
            assert batch["teacher_input_ids"][row, -n_completion:].equal(batch["completion_ids"][row])


def test_loss_is_finite_and_the_adapter_changes_the_model(tiny_model, reference_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, summary = reference_run["out"], reference_run["summary"]
    assert summary["steps"] == STEPS and summary["method"] == "onpolicy" and summary["template"] == "using"
    losses = _losses(out)
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    assert all(math.isfinite(x) and x > 0 for _, x in losses)
    assert math.isfinite(summary["final_loss"]) and (out / "loss.png").is_file()

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-4


def test_interrupted_cli_run_resumes_to_the_same_losses(tiny_model, data_file, reference_run, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_onpolicy(tiny_model, load_examples(str(data_file)), out, CFG, OCFG, task="general", progress=False,
                       callbacks=[StopAfterSave(1)])
    assert not (out / "train_summary.json").exists()
    assert main(["train", "--model", tiny_model, "--data", str(data_file), "--out", str(out), *CLI_FLAGS]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == STEPS and summary["resumed_from"].endswith("checkpoint-1")
    # Sampling after the resume draws from the checkpoint's RNG state: the same samples, the same losses.
    got, want = _losses(out), _losses(reference_run["out"])
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [x for _, x in got] == pytest.approx([x for _, x in want], rel=1e-4)
    assert summary["fingerprint"] == reference_run["summary"]["fingerprint"]


def test_bad_settings_are_refused_before_loading_a_model():
    with pytest.raises(ConfigError, match="num_generations"):
        OnPolicyConfig(num_generations=8).check_with(TrainConfig(batch_size=4, grad_accum=1))
    with pytest.raises(ConfigError, match="teacher"):
        OnPolicyConfig(teacher="frozen")
    with pytest.raises(ConfigError, match="methods"):
        load_config(None, ["methods=[sft, dpo]"])
    cfg = load_config(None, ["methods=[sft, sdft, onpolicy]", "onpolicy.topk=20"])
    assert cfg.methods == ["sft", "sdft", "onpolicy"] and cfg.onpolicy.topk == 20


def test_report_has_an_on_policy_row(tmp_path):
    from sdft.report.build import build_report

    def metrics(folder: str, value: float) -> None:
        path = tmp_path / "eval" / folder / "math" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps([{"suite": "math", "name": "accuracy", "value": value, "low": value - 0.1,
                                     "high": value + 0.1, "n": 32}]))

    metrics("seed", 0.20)
    for method, value in (("sft", 0.30), ("sdft", 0.35), ("onpolicy", 0.40)):
        metrics(f"{method}/seed-42", value)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| SDFT (on-policy) | **40.0 [30.0, 50.0]** |" in md
    assert "| SDFT | 35.0 [25.0, 45.0] |" in md


def test_run_trains_evaluates_and_reports_onpolicy(tiny_model, tmp_path):
    import yaml

    from sdft.core.config import preset_path

    config = yaml.safe_load(preset_path("methods").read_text())
    assert config["methods"] == ["sft", "sdft", "onpolicy"]
    config["model"]["name"] = tiny_model
    config["data"]["source"] = "builtin:arithmetic?n=4"
    config["distill"] |= {"max_new_tokens": 4, "batch_size": 4}
    config["train"] |= {"max_steps": 1, "batch_size": 4, "grad_accum": 1, "save_steps": 100}
    config["onpolicy"] |= {"num_generations": 2, "max_completion_length": 4}
    config["methods"] = ["onpolicy"]  # sft and sdft are covered by test_cli's end-to-end run
    config["eval"] |= {"suites": ["math"], "limit": 2, "max_new_tokens": 4}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "train" / "onpolicy" / "seed-42" / "train_summary.json").read_text())
    assert summary["method"] == "onpolicy" and summary["template"] == "math" and summary["steps"] == 1
    assert (out / "eval" / "onpolicy" / "seed-42" / "math" / "metrics.json").is_file()
    assert not (out / "train" / "sft").exists()
    assert "| SDFT (on-policy) |" in (out / "report.md").read_text()
