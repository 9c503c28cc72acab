"""`sdft run --preset gsm8k`: real GSM8K, three seeds, sized for 2 CPU cores (the run itself is not made here)."""

from __future__ import annotations

import pytest

from sdft.core.config import load_config, preset_path
from sdft.data.load import load_examples
from sdft.evaluate.builtin_sets import SAFETY, load_resource


def test_preset_loads_with_three_seeds_and_a_bounded_size():
    cfg = load_config(preset_path("gsm8k"))
    assert cfg.data.source == "openai/gsm8k:main:train" and cfg.data.task == "math"
    assert cfg.eval.math_data == "openai/gsm8k:main:test"
    assert len(cfg.seeds) == 3 and cfg.methods == ["sft", "sdft"]
    steps = cfg.data.limit * cfg.train.epochs / (cfg.train.batch_size * cfg.train.grad_accum)
    assert steps <= 40  # ~6.5 s a step on 2 cores, 6 training runs
    assert len(load_resource(SAFETY)) <= cfg.eval.limit <= 64  # every safety probe; evaluation stays bounded
    cfg = load_config(preset_path("gsm8k"), ["data.source=local.json"])
    assert cfg.data.source == "local.json" and cfg.data.limit == 128


def test_preset_rows_from_the_local_copy_are_normalised(shared_data):
    path = shared_data / "gsm8k" / "gsm8k_train.json"
    if not path.is_file():
        pytest.skip(f"{path.name} is not present")
    cfg = load_config(preset_path("gsm8k"))
    rows = load_examples(str(path), limit=cfg.data.limit)
    assert len(rows) == cfg.data.limit
    assert all(r.response.rsplit("\n", 1)[-1].startswith("The answer is ") and "<<" not in r.response for r in rows)
