"""The learning-against-forgetting curve: snapshots along training, and their points measured against the seed."""

import json
import os

import pytest
import torch

from sdft.core.config import EvalConfig, ModelSpec, TrainConfig
from sdft.core.io import read_jsonl
from sdft.core.layout import curve_path, snapshot_dir, snapshot_steps
from sdft.data.load import load_examples
from sdft.evaluate.curve import kl_per_prompt, measure_curves, seed_reference, curve_prompts
from sdft.train.snapshots import curve_steps
from sdft.train.trainer import train


def test_curve_steps_are_powers_of_two_below_the_last():
    assert curve_steps(32, None) == [1, 2, 4, 8, 16]
    assert curve_steps(33, None) == [1, 2, 4, 8, 16, 32]
    assert curve_steps(1, None) == []
    # asked steps: the seed (0) and the final adapter (last) are points already; beyond the end never comes
    assert curve_steps(10, [0, 5, 3, 10, 20, 5]) == [3, 5]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A 4-step run on built-in unit conversions with the default snapshots (steps 1 and 2)."""
    root = tmp_path_factory.mktemp("curve")
    cfg = TrainConfig(batch_size=4, epochs=1, learning_rate=5e-2, save_steps=100, max_length=128, seed=0)
    summary = train(tiny_model, load_examples("builtin:units?n=16"), root / "train", cfg, progress=False)
    return root, summary


def test_training_keeps_the_adapter_at_the_curve_steps(trained):
    root, summary = trained
    assert summary["steps"] == 4
    assert snapshot_steps(root / "train") == [1, 2]
    # a snapshot is a loadable adapter, and training moved it between snapshots
    from safetensors.torch import load_file

    one = load_file(snapshot_dir(root / "train", 1) / "adapter_model.safetensors")
    two = load_file(snapshot_dir(root / "train", 2) / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    assert any(not torch.equal(one[k], two[k]) for k in one)


def _eval_cfg() -> EvalConfig:
    return EvalConfig(batch_size=4, math_data="builtin:units?n=6&split=test", curve_limit=4, curve_max_new_tokens=6)


def test_curve_points_for_the_seed_and_each_kept_step(trained, tiny_model):
    root, _ = trained
    spec = ModelSpec(tiny_model, device="cpu", dtype="float32")
    seed_eval, run_eval = root / "eval" / "seed", root / "eval" / "sft"
    measure_curves(spec, _eval_cfg(), "math", seed_eval, [(root / "train", run_eval)])

    (seed_row,) = read_jsonl(curve_path(seed_eval))
    rows = read_jsonl(curve_path(run_eval))
    assert seed_row["step"] == 0 and seed_row["forgetting"] == 0.0
    assert [r["step"] for r in rows] == [1, 2, 4]
    for row in [seed_row, *rows]:
        assert row["task_metric"] == "accuracy" and row["forgetting_metric"] == "kl_from_seed"
        assert len(row["task_values"]) == 4 and set(row["task_values"]) <= {0.0, 1.0}
        assert len(row["forgetting_values"]) == 4 and len(row["kl_task_values"]) == 4
        assert row["task"] == pytest.approx(sum(row["task_values"]) / 4)
        assert row["forgetting"] == pytest.approx(sum(row["forgetting_values"]) / 4)
    # a learning rate of 0.05 moves a random model: the KL from the seed is positive and grows along training
    assert 0 < rows[0]["forgetting"] < rows[-1]["forgetting"]
    assert rows[-1]["metrics"]["kl_task"] > 0

    # A rerun keeps every point; a changed adapter is measured again, the others are not.
    before = {r["step"]: r for r in rows}
    stamp = os.stat(curve_path(run_eval)).st_mtime_ns
    measure_curves(spec, _eval_cfg(), "math", seed_eval, [(root / "train", run_eval)])
    assert os.stat(curve_path(run_eval)).st_mtime_ns == stamp
    weights = snapshot_dir(root / "train", 2) / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: v * 0 if "lora_B" in k else v for k, v in tensors.items()}, weights)  # the seed again
    measure_curves(spec, _eval_cfg(), "math", seed_eval, [(root / "train", run_eval)])
    after = {r["step"]: r for r in read_jsonl(curve_path(run_eval))}
    assert after[1] == before[1] and after[4] == before[4]
    assert after[2]["key"] != before[2]["key"]
    assert after[2]["forgetting"] == pytest.approx(0.0, abs=1e-9)  # LoRA B = 0: the seed's own weights


def test_kl_from_the_seed_is_zero_for_the_seed_and_grows_with_a_known_shift(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sdft.core.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    seed = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    cfg = _eval_cfg()
    prompts = curve_prompts(cfg, "math")
    spec = ModelSpec(tiny_model, device="cpu", dtype="float32")
    reference = seed_reference(seed, tok, spec, prompts, cfg, tmp_path / "ref")
    assert any(reply for reply in reference.general)  # sampled replies to measure along

    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=True)).eval()
    torch.manual_seed(1)
    direction = {n: torch.randn_like(p) for n, p in lora.named_parameters() if "lora_B" in n}

    def kl_at(scale: float) -> float:
        with torch.no_grad():
            for n, p in lora.named_parameters():
                if n in direction:
                    p.copy_(direction[n] * scale)
        values = kl_per_prompt(lora, tok, prompts.general_chats, reference.general, reference.general_topk, 4)
        return sum(values) / len(values)

    shifts = [kl_at(s) for s in (0.0, 0.05, 0.2)]
    assert shifts[0] == pytest.approx(0.0, abs=1e-9)
    assert 0 < shifts[1] < shifts[2]


def test_the_seed_reference_is_reused_and_redone_when_its_settings_change(tiny_model, tmp_path):
    from sdft.core.models import load_model

    spec = ModelSpec(tiny_model, device="cpu", dtype="float32")
    model, tok = load_model(spec)
    cfg = _eval_cfg()
    first = seed_reference(model, tok, spec, curve_prompts(cfg, "math"), cfg, tmp_path)
    stamp = os.stat(tmp_path / "reference.json").st_mtime_ns
    again = seed_reference(model, tok, spec, curve_prompts(cfg, "math"), cfg, tmp_path)
    assert os.stat(tmp_path / "reference.json").st_mtime_ns == stamp and again.general == first.general
    assert all(torch.equal(a.ids, b.ids) for a, b in zip(first.general_topk, again.general_topk))
    longer = EvalConfig(**{**cfg.__dict__, "curve_max_new_tokens": 12})
    redone = seed_reference(model, tok, spec, curve_prompts(longer, "math"), longer, tmp_path)
    assert redone.key != first.key
    assert json.loads((tmp_path / "reference.json").read_text())["key"] == redone.key


def test_a_task_without_a_checkable_answer_has_no_curve():
    from sdft.core.errors import InputError

    with pytest.raises(InputError, match="checkable answer"):
        curve_prompts(_eval_cfg(), "general")


def test_merging_in_place_equals_loading_a_merged_copy_and_restores_the_seed(trained, tiny_model):
    from sdft.core.models import load_model
    from sdft.evaluate.curve import merge_adapter, restore_weights

    root, _ = trained
    spec = ModelSpec(tiny_model, device="cpu", dtype="float32")
    model, _ = load_model(spec)
    seed = {k: v.clone() for k, v in model.state_dict().items()}
    kept: dict = {}
    # (step 2's snapshot may have been set back to the seed by the test above)
    for adapter in (snapshot_dir(root / "train", 1), root / "train" / "adapter"):
        merged = merge_adapter(model, adapter, kept)
        reference, _ = load_model(spec, str(adapter))
        want = reference.state_dict()
        assert merged.state_dict().keys() == want.keys()
        assert all(torch.equal(merged.state_dict()[k], want[k]) for k in want)
        assert any(not torch.equal(merged.state_dict()[k], seed[k]) for k in seed)
        restore_weights(merged, kept)
        model = merged
        assert all(torch.equal(model.state_dict()[k], seed[k]) for k in seed)
    assert kept and all(name.endswith(("q_proj", "v_proj")) for name in kept)


def test_the_task_score_reads_held_out_rows_of_the_training_file():
    from sdft.core.errors import InputError

    source = "builtin:units?n=40"
    trained_rows = load_examples(source)[:30]
    exclude = frozenset(ex.prompt for ex in trained_rows)
    cfg = EvalConfig(curve_task_data=source, curve_limit=3, curve_task_limit=8)
    prompts = curve_prompts(cfg, "math", exclude)
    held_out = [ex for ex in load_examples(source) if ex.prompt not in exclude]
    assert 0 < len(prompts.task_chats) <= 8
    assert len(prompts.task_chats) == min(8, len({ex.prompt for ex in held_out}))
    asked = [c[-1]["content"] for c in prompts.task_chats]
    assert not any(any(ex.prompt in text for ex in trained_rows) for text in asked)
    assert len(set(asked)) == len(asked)  # a prompt repeated in the file is scored once
    assert len(prompts.kl_task_chats) == 3 and len(prompts.general_chats) == 3  # the KL passes keep curve_limit
    with pytest.raises(InputError, match="no held-out task prompts"):
        curve_prompts(cfg, "math", frozenset(ex.prompt for ex in load_examples(source)))


def test_knowledge_is_measured_along_training_when_the_run_has_the_knowledge_suite(trained, tiny_model, tmp_path):
    root, _ = trained
    spec = ModelSpec(tiny_model, device="cpu", dtype="float32")
    cfg = EvalConfig(**{**_eval_cfg().__dict__, "suites": ["math", "knowledge"]})
    seed_eval, run_eval = tmp_path / "seed", tmp_path / "sft"
    measure_curves(spec, cfg, "math", seed_eval, [(root / "train", run_eval)])
    rows = read_jsonl(curve_path(seed_eval)) + read_jsonl(curve_path(run_eval))
    for row in rows:
        assert len(row["knowledge_values"]) == 4 and set(row["knowledge_values"]) <= {0.0, 1.0}
        assert row["metrics"]["knowledge"] == pytest.approx(sum(row["knowledge_values"]) / 4)
        # every row names the seed's sample it was measured along (a digest), the same in every file
        assert row["reference"] == rows[0]["reference"] and len(row["reference"]) == 64

    # the seed's values are the knowledge suite's own verdicts on the same questions
    from sdft.core.models import load_model
    from sdft.evaluate.suite_context import SuiteContext
    from sdft.evaluate import suite_knowledge

    model, tok = load_model(spec)
    suite_cfg = EvalConfig(batch_size=4, limit=4)
    result = suite_knowledge.run(SuiteContext(name="knowledge", model=model, tokenizer=tok, cfg=suite_cfg, spec=spec,
                                              adapter=None, suite_dir=tmp_path / "suite"))
    assert [float(r["correct"]) for r in result.rows] == rows[0]["knowledge_values"]
    # without the knowledge suite, no knowledge questions
    assert curve_prompts(_eval_cfg(), "math").knowledge == []
