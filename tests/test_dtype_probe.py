"""`dtype: auto` on a CPU: the decision from given timings, the per-machine cache and its key, and the
probe itself on tiny shapes."""

import json
import time

import pytest
import torch
from transformers import LlamaConfig

from sdft.core import dtype_probe
from sdft.core.dtype_probe import BF16_MARGIN, ModelShapes, choose_dtype
from sdft.core.models import DTYPE_PROBE_FILE, cpu_dtype_report, model_shapes, pick_dtype

CPU = torch.device("cpu")
TINY = ModelShapes(hidden=32, intermediate=64, vocab=128)


def figures(fp32: float, bf16: float) -> dict:
    return {"float32": {"mlp": fp32, "output": fp32}, "bfloat16": {"mlp": bf16, "output": bf16}}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test with its own cache folder and no decision carried over from another test."""
    monkeypatch.setenv("SDFT_CACHE", str(tmp_path))
    dtype_probe.forget_decisions()
    yield tmp_path / DTYPE_PROBE_FILE
    dtype_probe.forget_decisions()


@pytest.fixture
def fake_probe(monkeypatch):
    """measure() replaced by given figures, counting its calls (fast and the same on every machine)."""
    state = {"calls": 0, "figures": figures(200.0, 600.0)}

    def measure(shapes):
        state["calls"] += 1
        return state["figures"], {k: list(v) for k, v in shapes.matmuls().items()}

    monkeypatch.setattr(dtype_probe, "measure", measure)
    return state


def test_choose_dtype_bf16_only_when_faster_by_more_than_the_margin():
    assert BF16_MARGIN > 1
    assert choose_dtype(figures(239.0, 150.0)) == "float32"  # the Xeon of issue 24: bf16 at 0.63x
    assert choose_dtype(figures(200.0, 560.0)) == "bfloat16"  # AVX-512 BF16 at 2.8x
    assert choose_dtype(figures(200.0, 200.0 * BF16_MARGIN * 0.97)) == "float32"  # faster, within the margin
    assert choose_dtype(figures(200.0, 200.0 * BF16_MARGIN)) == "float32"  # exactly the margin is not more
    assert choose_dtype(figures(200.0, 200.0 * BF16_MARGIN * 1.03)) == "bfloat16"
    assert choose_dtype(figures(200.0, 220.0), margin=1.05) == "bfloat16"
    assert choose_dtype(figures(200.0, 220.0), margin=1.2) == "float32"


def test_choose_dtype_weighs_the_shapes_together():
    mixed = {"float32": {"mlp": 100.0, "output": 100.0}, "bfloat16": {"mlp": 200.0, "output": 90.0}}
    assert dtype_probe.bf16_speedup(mixed) == pytest.approx((2.0 * 0.9) ** 0.5)
    assert choose_dtype(mixed) == "bfloat16"
    assert choose_dtype(mixed, margin=1.4) == "float32"
    with pytest.raises(ValueError, match="no matmul timed in both"):
        choose_dtype({"float32": {"mlp": 1.0}, "bfloat16": {"output": 1.0}})


def test_machine_key_changes_with_cpu_flags_torch_and_threads(monkeypatch):
    monkeypatch.setattr(dtype_probe, "cpu_model_name", lambda: "Some CPU")
    monkeypatch.setattr(dtype_probe, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "sse4_2"})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    base = dtype_probe.machine_key()
    assert base["cpu"] == "Some CPU" and base["flags"] == ["avx512_bf16", "avx512f"] and base["threads"] == 2
    assert base["torch"] == torch.__version__

    monkeypatch.setattr(dtype_probe, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "sse4_2", "avx2"})
    assert dtype_probe.machine_key() == base  # a flag that does not bear on bf16 leaves the key alone
    monkeypatch.setattr(dtype_probe, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
    assert dtype_probe.machine_key()["flags"] == ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f"]
    monkeypatch.setattr(dtype_probe, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert dtype_probe.machine_key() == base

    changed = []
    monkeypatch.setattr(dtype_probe, "cpu_model_name", lambda: "Another CPU")
    changed.append(dtype_probe.machine_key())
    monkeypatch.setattr(dtype_probe, "cpu_model_name", lambda: "Some CPU")
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    changed.append(dtype_probe.machine_key())
    monkeypatch.undo()
    monkeypatch.setattr(dtype_probe, "cpu_model_name", lambda: "Some CPU")
    monkeypatch.setattr(dtype_probe, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    changed.append(dtype_probe.machine_key())
    assert all(key != base for key in changed)
    assert len({dtype_probe.key_text(k) for k in changed}) == 3


def test_cpu_name_and_flags_come_from_cpuinfo(monkeypatch):
    text = "processor\t: 0\nmodel name\t: Test Xeon 9999\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n"
    monkeypatch.setattr(dtype_probe, "read_cpuinfo", lambda: text)
    assert dtype_probe.cpu_model_name() == "Test Xeon 9999"
    assert dtype_probe.machine_key()["flags"] == ["amx_tile", "avx512_bf16", "avx512f"]
    monkeypatch.setattr(dtype_probe, "read_cpuinfo", lambda: "")
    assert dtype_probe.cpu_model_name()  # platform's name, or "unknown": never empty
    assert dtype_probe.cpu_flags() == set()


def test_auto_on_a_cpu_follows_the_timings_both_ways(fake_probe, own_cache):
    assert pick_dtype("auto", CPU) == torch.bfloat16
    assert fake_probe["calls"] == 1
    dtype_probe.forget_decisions()
    own_cache.unlink()
    fake_probe["figures"] = figures(239.0, 150.0)
    assert pick_dtype("auto", CPU) == torch.float32
    assert pick_dtype("float32", CPU) == torch.float32 and pick_dtype("bf16", CPU) == torch.bfloat16  # as asked


def test_cached_result_is_reused_without_probing(fake_probe, own_cache, monkeypatch):
    first = dtype_probe.decide(own_cache, TINY)
    assert first["source"] == "measured" and first["choice"] == "bfloat16"
    stored = json.loads(own_cache.read_text())
    entry = stored["machines"][dtype_probe.key_text(dtype_probe.machine_key())]
    assert entry["probes"][TINY.label()]["figures"] == fake_probe["figures"]

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again although the cache holds this machine")

    monkeypatch.setattr(dtype_probe, "measure", no_probe)
    monkeypatch.setattr(dtype_probe, "time_matmul", no_probe)
    dtype_probe.forget_decisions()  # a new process: only the file remains
    again = dtype_probe.decide(own_cache, TINY)
    assert again["source"] == "cache" and again["choice"] == "bfloat16"
    assert again["figures"] == first["figures"]


def test_another_machine_key_means_a_new_probe(fake_probe, own_cache, monkeypatch):
    dtype_probe.decide(own_cache, TINY)
    dtype_probe.decide(own_cache, TINY)
    assert fake_probe["calls"] == 1
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    assert dtype_probe.decide(own_cache, TINY)["source"] == "measured"
    assert fake_probe["calls"] == 2
    monkeypatch.setattr(torch, "__version__", "0.0.1-other")
    assert dtype_probe.decide(own_cache, TINY)["source"] == "measured"
    assert fake_probe["calls"] == 3
    # each machine keeps its own entry: a home directory shared by several machines stays useful
    assert len(json.loads(own_cache.read_text())["machines"]) == 3
    # other shapes on the same machine are a probe of their own
    dtype_probe.decide(own_cache, ModelShapes(64, 128, 256))
    assert fake_probe["calls"] == 4


@pytest.mark.parametrize("content", ["{not json", "", '["a list"]', '{"format": 1, "machines": []}',
                                     "CORRUPT-ENTRY", b"\xff\xfe\x00garbage"])
def test_corrupt_cache_is_probed_again(fake_probe, own_cache, content, capsys):
    if content == "CORRUPT-ENTRY":  # valid JSON, this machine's entry without usable figures
        key = dtype_probe.key_text(dtype_probe.machine_key())
        content = json.dumps({"format": 1, "machines": {key: {"probes": {TINY.label(): {"figures": {"x": 1}}}}}})
    if isinstance(content, bytes):
        own_cache.write_bytes(content)
    else:
        own_cache.write_text(content)
    decision = dtype_probe.decide(own_cache, TINY)
    assert decision["source"] == "measured" and fake_probe["calls"] == 1
    stored = json.loads(own_cache.read_text())  # rewritten whole
    assert stored["format"] == dtype_probe.CACHE_FORMAT
    dtype_probe.forget_decisions()
    assert dtype_probe.decide(own_cache, TINY)["source"] == "cache"


def test_decision_printed_once_and_reported(fake_probe, own_cache, capsys):
    assert pick_dtype("auto", CPU) == torch.bfloat16
    pick_dtype("auto", CPU)
    lines = [line for line in capsys.readouterr().err.splitlines() if "dtype auto" in line]
    assert len(lines) == 1
    assert "bfloat16" in lines[0] and "3.00x" in lines[0] and "measured now" in lines[0]
    report = cpu_dtype_report()
    assert report["choice"] == "bfloat16" and report["bf16_speedup"] == pytest.approx(3.0)
    assert report["figures"] == fake_probe["figures"] and report["margin"] == BF16_MARGIN
    assert report["machine"] == dtype_probe.machine_key()
    assert report["model_shapes"] == "576x1536x49152"
    json.dumps(report)  # ready for environment.json as it is
    report["choice"] = "changed"
    assert cpu_dtype_report()["choice"] == "bfloat16"  # the caller got a copy
    assert capsys.readouterr().err == ""


def test_model_shapes_come_from_the_model_config(tmp_path):
    assert model_shapes(None) == model_shapes("default") == dtype_probe.DEFAULT_SHAPES
    config = LlamaConfig(hidden_size=48, intermediate_size=96, vocab_size=300, num_attention_heads=4,
                         num_key_value_heads=2)
    assert model_shapes(config) == ModelShapes(48, 96, 300)
    folder = tmp_path / "model"
    folder.mkdir()
    config.save_pretrained(folder)
    assert model_shapes(str(folder)) == ModelShapes(48, 96, 300)
    assert model_shapes({"text_config": {"hidden_size": 8, "vocab_size": 10}}) == ModelShapes(8, 32, 10)
    assert model_shapes({"hidden_size": "big"}) == dtype_probe.DEFAULT_SHAPES
    assert model_shapes(str(tmp_path / "missing")) == dtype_probe.DEFAULT_SHAPES
    assert model_shapes("nobody-here/no-such-model") == dtype_probe.DEFAULT_SHAPES  # not cached: no download


def test_probed_matmuls_stay_small_for_large_models():
    big = ModelShapes(hidden=4096, intermediate=14336, vocab=128256).matmuls()
    for rows, inputs, outputs in big.values():
        assert rows == dtype_probe.DECODE_ROWS
        assert 2 * rows * inputs * outputs <= dtype_probe.MAX_MATMUL_FLOP
    small = dtype_probe.DEFAULT_SHAPES.matmuls()
    assert small["mlp"] == (64, 576, 1536)  # the embedded model's MLP whole
    assert small["output"][2] < 49152


def test_real_probe_on_tiny_shapes_is_fast(own_cache):
    start = time.perf_counter()
    decision = dtype_probe.decide(own_cache, TINY)
    assert time.perf_counter() - start < 1.0
    assert decision["source"] == "measured" and decision["choice"] in ("float32", "bfloat16")
    for dtype in ("float32", "bfloat16"):
        assert set(decision["figures"][dtype]) == {"mlp", "output"}
        assert all(rate > 0 for rate in decision["figures"][dtype].values())
    assert decision["matmuls"] == {"mlp": [64, 32, 64], "output": [64, 32, 128]}
    assert decision["choice"] == choose_dtype(decision["figures"])
