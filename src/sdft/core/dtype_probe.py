"""Whether bfloat16 pays on this CPU, found by timing it once per machine.

A CPU that reports bf16 instructions does not always multiply bf16 faster than float32: without AMX
some Intel Xeons run bf16 matmuls at 0.5-0.7x float32, while AVX-512 BF16 on other CPUs runs them
2-3x faster. So `dtype: auto` on a CPU times a few matrix multiplies of the model's own shapes in both
dtypes (well under a second) and keeps the figures in a small JSON file, keyed by what decides the
speed: the CPU model, its bf16-related flags, the torch version and the thread count. Another key
means another machine (or another torch), which is measured afresh.

This module imports the standard library, torch and sdft.core.io only; sdft.core.models passes in
the cache file and the model's shapes.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sdft.core.io import atomic_write

# bf16 must beat float32 by this factor (geometric mean over the probed shapes) to be chosen. bf16
# costs something float32 does not: greedy replies depend on the batch they were decoded in, so a
# suite's results move with its batch size. A 15% gain is worth that; a few percent is not, and a
# few percent is also what a short probe on a busy machine can get wrong either way.
BF16_MARGIN = 1.15

# Rows of one decode step: the engine decodes batches of a few dozen prompts at a time.
DECODE_ROWS = 64
REPEATS = 3  # timed runs after one warm-up; the best is kept (the least disturbed by other work)
# A large output layer (a 128k vocabulary) would take seconds to multiply in full; its speed per FLOP
# shows in a slice of its columns, so each probed matmul is cut to about this many FLOPs.
MAX_MATMUL_FLOP = 2.5e8
MIN_COLUMNS = 256
# Stop repeating a matmul once its timed runs took this long (emulated bf16 can be very slow).
SHAPE_BUDGET_S = 0.1
# The flags that decide how fast bf16 can be (x86: AVX-512, its BF16 extension, AMX; Arm: bf16).
SPEED_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "bf16")
CACHE_FORMAT = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelShapes:
    """The sizes that set a decoder's matmul shapes."""

    hidden: int
    intermediate: int
    vocab: int

    def label(self) -> str:
        return f"{self.hidden}x{self.intermediate}x{self.vocab}"

    def matmuls(self, rows: int = DECODE_ROWS) -> dict[str, tuple[int, int, int]]:
        """(rows, inputs, outputs) of the MLP's up-projection and the output layer, the latter cut to
        at most MAX_MATMUL_FLOP."""
        cut = max(MIN_COLUMNS, int(MAX_MATMUL_FLOP / (2 * rows * self.hidden)))
        return {"mlp": (rows, self.hidden, min(self.intermediate, cut)),
                "output": (rows, self.hidden, min(self.vocab, cut))}


DEFAULT_SHAPES = ModelShapes(hidden=576, intermediate=1536, vocab=49152)  # SmolLM2-135M


def shapes_from_config(config) -> ModelShapes:
    """The shapes of a transformers config (object or dict); DEFAULT_SHAPES where it names none."""
    if config is None:
        return DEFAULT_SHAPES
    if not isinstance(config, dict):
        if callable(getattr(config, "get_text_config", None)):  # multimodal configs nest the decoder's
            config = config.get_text_config()
        config = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    config = config.get("text_config") or config
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    vocab = config.get("vocab_size")
    if not isinstance(hidden, int) or not isinstance(vocab, int) or hidden < 1 or vocab < 1:
        return DEFAULT_SHAPES
    intermediate = config.get("intermediate_size") or config.get("n_inner") or config.get("ffn_dim")
    if not isinstance(intermediate, int) or intermediate < 1:
        intermediate = 4 * hidden  # the usual MLP width where the config leaves it implicit
    return ModelShapes(hidden, intermediate, vocab)


@functools.lru_cache(maxsize=None)
def read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def cpu_model_name() -> str:
    for line in read_cpuinfo().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`), empty where /proc/cpuinfo is absent."""
    flags = set()
    for line in read_cpuinfo().splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def machine_key() -> dict:
    """What decides bf16's speed against float32 here; a cached result holds only for the same key."""
    return {"cpu": cpu_model_name(), "flags": sorted(cpu_flags() & set(SPEED_FLAGS)),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def time_matmul(rows: int, inputs: int, outputs: int, dtype: torch.dtype) -> float:
    """Best seconds of a linear layer's matmul (rows x inputs) by (outputs x inputs) transposed, as the
    model computes it, after one warm-up."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inputs, generator=generator).to(dtype)
    w = torch.randn(outputs, inputs, generator=generator).to(dtype)
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        best, spent = math.inf, 0.0
        for _ in range(REPEATS):
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            seconds = time.perf_counter() - start
            best, spent = min(best, seconds), spent + seconds
            if spent > SHAPE_BUDGET_S:
                break
    return max(best, 1e-9)


def measure(shapes: ModelShapes) -> tuple[dict, dict]:
    """(figures, matmuls): GFLOP/s per dtype and matmul name, and the (rows, inputs, outputs) timed."""
    matmuls = shapes.matmuls()
    figures = {}
    for name, dtype in DTYPES.items():
        figures[name] = {}
        for kind, (m, k, n) in matmuls.items():
            figures[name][kind] = round(2 * m * k * n / time_matmul(m, k, n, dtype) / 1e9, 1)
    return figures, {kind: list(shape) for kind, shape in matmuls.items()}


def bf16_speedup(figures: dict) -> float:
    """bf16's rate over float32's, the geometric mean over the matmuls timed in both."""
    kinds = [k for k in figures.get("float32", {}) if k in figures.get("bfloat16", {})]
    if not kinds:
        raise ValueError(f"no matmul timed in both float32 and bfloat16: {figures}")
    ratios = [figures["bfloat16"][k] / figures["float32"][k] for k in kinds]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def choose_dtype(figures: dict, margin: float = BF16_MARGIN) -> str:
    """'bfloat16' where it beats float32 by more than `margin`, else 'float32'."""
    return "bfloat16" if bf16_speedup(figures) > margin else "float32"


def read_cache(path: Path) -> dict:
    """The cache's machines ({key text: entry}); {} for a missing, corrupt or foreign file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError):
        sys.stderr.write(f"sdft: {path} is unreadable; measuring the CPU's dtypes again\n")
        return {}
    machines = data.get("machines") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
    return machines if isinstance(machines, dict) else {}


def cached_figures(machines: dict, key: dict, shapes: ModelShapes) -> dict | None:
    """The stored probe for this machine and these shapes, if whole."""
    entry = machines.get(key_text(key))
    probe = entry.get("probes", {}).get(shapes.label()) if isinstance(entry, dict) else None
    if not isinstance(probe, dict):
        return None
    try:
        bf16_speedup(probe["figures"])
        return probe if isinstance(probe.get("matmuls"), dict) else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None


def write_cache(path: Path, machines: dict) -> None:
    try:
        with atomic_write(path) as f:
            json.dump({"format": CACHE_FORMAT, "machines": machines}, f, indent=2)
            f.write("\n")
    except OSError as e:  # a read-only cache costs a probe per process, nothing more
        sys.stderr.write(f"sdft: could not keep the dtype probe in {path}: {e}\n")


def probe_or_cached(cache_file: Path, shapes: ModelShapes) -> dict:
    """This machine's figures for `shapes`: from the cache file, else measured now and stored."""
    key = machine_key()
    machines = read_cache(cache_file)
    probe = cached_figures(machines, key, shapes)
    if probe is not None:
        return {**probe, "source": "cache"}
    start = time.perf_counter()
    figures, matmuls = measure(shapes)
    probe = {"figures": figures, "matmuls": matmuls, "probe_seconds": round(time.perf_counter() - start, 3),
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entry = machines.get(key_text(key))
    entry = entry if isinstance(entry, dict) and isinstance(entry.get("probes"), dict) else {"probes": {}}
    entry["machine"] = key
    entry["probes"][shapes.label()] = probe
    machines[key_text(key)] = entry
    write_cache(cache_file, machines)
    return {**probe, "source": "measured"}


# Decisions made in this process, by (cache file, machine key, shapes): each is printed once.
_decisions: dict[tuple[str, str, str], dict] = {}
_latest: list[dict] = []


def decide(cache_file: Path, shapes: ModelShapes = DEFAULT_SHAPES) -> dict:
    """The dtype `auto` means on this CPU for a model of `shapes`, with the figures behind it. The
    choice is made from the stored figures each time, so a changed margin needs no new probe."""
    key = machine_key()
    memo = (str(cache_file), key_text(key), shapes.label())
    if memo not in _decisions:
        probe = probe_or_cached(cache_file, shapes)
        decision = {"choice": choose_dtype(probe["figures"]),
                    "bf16_speedup": round(bf16_speedup(probe["figures"]), 3), "margin": BF16_MARGIN,
                    "model_shapes": shapes.label(), "machine": key, **probe}
        _decisions[memo] = decision
        sys.stderr.write(one_line(decision) + "\n")
        sys.stderr.flush()
    _latest[:] = [_decisions[memo]]
    return json.loads(json.dumps(_decisions[memo]))  # a copy: callers may keep or change it


def latest_decision() -> dict | None:
    """The decision this process made last, or None before any."""
    return json.loads(json.dumps(_latest[0])) if _latest else None


def forget_decisions() -> None:
    """Drop this process's decisions, so the next `decide` reads the cache (or probes) again."""
    _decisions.clear()
    _latest.clear()


def one_line(decision: dict) -> str:
    rates = ", ".join(f"{kind} {'x'.join(map(str, decision['matmuls'][kind]))} "
                      f"{decision['figures']['float32'][kind]:g} vs {decision['figures']['bfloat16'][kind]:g}"
                      for kind in decision["figures"]["float32"] if kind in decision["figures"]["bfloat16"])
    machine = decision["machine"]
    how = "measured now" if decision["source"] == "measured" else f"measured {decision.get('measured_at', '')}"
    return (f"sdft: dtype auto on this CPU ({machine['cpu']}, {machine['threads']} threads): "
            f"{decision['choice']}; bf16 ran {decision['bf16_speedup']:.2f}x float32 (GFLOP/s float32 vs bf16: "
            f"{rates}; bf16 needs > {decision['margin']}x), {how}")
