"""Eval reply lengths: long enough for a 7B model's chain of thought and for whole HumanEval functions."""

from sdft.cli import build_parser
from sdft.core.config import EvalConfig, load_config


def test_per_suite_default_unless_the_user_sets_one():
    cfg = EvalConfig()
    assert cfg.max_new_tokens is None
    assert cfg.for_suite("math").max_new_tokens == 512
    assert cfg.for_suite("humaneval").max_new_tokens == 1024
    assert EvalConfig(max_new_tokens=64).for_suite("humaneval").max_new_tokens == 64
    assert load_config(None, ["eval.max_new_tokens=300"]).eval.for_suite("humaneval").max_new_tokens == 300


def test_eval_help_states_the_defaults():
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    text = " ".join(eval_parser.format_help().split())
    assert "default: 512, 1024 for humaneval" in text


def test_an_eval_batch_decodes_all_at_once():
    """Eval batches are small: with fewer rows than prompts, the last prompts would decode as a second,
    thin wave after rows free up (the demo's 64 safety prompts took ~24 s with 48 rows, ~16 s with 64)."""
    from sdft.evaluate.replies import eval_generation
    from sdft.engine.decode import DecodeConfig, rows_at_once

    gen = eval_generation(128, 64)
    assert gen.max_rows == 64 > DecodeConfig.max_rows
    assert rows_at_once([[1] * 100] * 64, gen) == 64


def test_eval_decodes_in_its_own_process():
    """Decoding workers (auto from 96 prompts on a CPU) would hold a KV cache each: eval asks for none."""
    import torch

    from sdft.evaluate.replies import eval_generation
    from sdft.engine.workers import decode_workers

    cpu_model = torch.nn.Linear(2, 2)
    assert decode_workers(cpu_model, eval_generation(128, 128).workers, 128) == 1
