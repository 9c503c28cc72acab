"""Decoding on a CPU in several single-threaded processes, each with a share of a batch's prompts.

On a CPU with few cores, one process per core decodes faster than one process whose operations are
each split across the cores: a decoding step is hundreds of small operations (attention over a few
hundred columns, norms, the rows' elementwise work), and every one of them pays a thread hand-off.
On 2 cores, 128 GSM8K distillation prompts in bf16: two processes of 64 rows, one thread each, 40.7 s
against 51-54 s for one two-threaded process of 64 rows (docs/PERFORMANCE.md).

The workers are forked, so they share the parent's weights (copy-on-write: nothing is copied or
reloaded, adapters and dtypes included) and each builds its own KV buffers: `max_rows` and
`max_batch_tokens` hold per worker, and KV memory grows with the number of workers. Each worker runs
one thread: GNU OpenMP, which PyTorch's Linux wheels use, hangs in a forked child that starts a
multi-threaded region after its parent ran one. Only CPU models are forked (a CUDA context does not
survive a fork), and not inside a distributed launch, whose processes already share the machine.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import sys
import traceback
import warnings
from typing import Callable

import torch

from sdft.core.errors import InputError

MAX_AUTO_WORKERS = 4  # beyond a few cores one process with many threads keeps the cores busy with less memory
# Auto only: the gain comes from each worker keeping many rows busy. On 2 cores, 64 GSM8K prompts
# (32 a worker) took 25.3 s against 25.9 s in one process, 32 prompts 16.6 against 16.4 s; 128 prompts
# took 40-47 s against 51-55 s.
MIN_PROMPTS_PER_WORKER = 48


def fork_available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def decode_workers(model, requested: int, n_prompts: int) -> int:
    """Processes a batch of `n_prompts` prompts decodes in. `requested` 0 (auto): one per torch thread
    where there are 2 to MAX_AUTO_WORKERS of them, on a CPU model outside a distributed launch, and as
    many as have MIN_PROMPTS_PER_WORKER prompts each; 1: this process only; more: as many as asked
    (never more than there are prompts)."""
    if requested < 0:
        raise InputError(f"workers must be 0 (auto) or a positive number, got {requested}")
    if requested == 1:
        return 1
    device = next(model.parameters()).device
    if requested > 1 and (device.type != "cpu" or not fork_available()):
        raise InputError(f"workers {requested}: several decoding processes need a CPU model on Linux "
                         f"(this model is on {device.type}); use workers 0 or 1")
    if device.type != "cpu" or not fork_available():
        return 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return 1
    if requested == 0:
        threads = torch.get_num_threads()
        auto = threads if 2 <= threads <= MAX_AUTO_WORKERS else 1
        return max(1, min(auto, n_prompts // MIN_PROMPTS_PER_WORKER))
    return max(1, min(requested, n_prompts))


def shares(n_prompts: int, workers: int) -> list[list[int]]:
    """Prompt indices per worker, dealt out in turn: batches arrive sorted by length, so every worker
    gets long and short prompts alike."""
    return [list(range(w, n_prompts, workers)) for w in range(workers)]


Decode = Callable[..., list[list[int]]]  # (model, tokenizer, prompt_ids, cfg, on_done) -> token ids per prompt


def _worker(decode: Decode, model, tokenizer, prompt_ids, cfg, worker: int, results) -> None:
    torch.set_num_threads(1)  # see the module docstring: more threads hang after a fork
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the tokenizers library's own threads, likewise
    try:
        out = decode(model, tokenizer, prompt_ids, cfg, on_done=lambda i, n: results.put(("done", worker, i, n)))
        results.put(("out", worker, out, None))
    except BaseException:  # noqa: BLE001 - the parent raises it; a worker must always answer
        results.put(("error", worker, traceback.format_exc(), None))


def decode_in_workers(decode: Decode, model, tokenizer, prompt_ids: list[list[int]], cfg, workers: int,
                      on_done=None) -> list[list[int]]:
    """`decode` (decode_token_ids with workers=1 in cfg) on `workers` forked processes, one share of
    the prompts each; `on_done(i, n_tokens)` is called here, in this process, as each reply finishes."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    parts = shares(len(prompt_ids), workers)
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(decode, model, tokenizer, [prompt_ids[i] for i in part], cfg, w, results))
             for w, part in enumerate(parts)]
    out: list[list[int] | None] = [None] * len(prompt_ids)
    finished: set[int] = set()
    # Frozen objects are left alone by a worker's garbage collector, which would otherwise write to every
    # Python object's header and so copy the pages holding them: the parent's whole heap, per worker.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns on any fork of a process with threads; ours hold no lock a worker takes.
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
            for p in procs:
                p.start()
        while len(finished) < workers:
            try:
                kind, w, a, b = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w, p in enumerate(procs) if w not in finished and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"decoding worker {dead[0]} exited with code {procs[dead[0]].exitcode} "
                                       "before answering (out of memory?)") from None
                continue
            if kind == "done":
                if on_done:
                    on_done(parts[w][a], b)
            elif kind == "out":
                for i, ids in zip(parts[w], a):
                    out[i] = ids
                finished.add(w)
            else:
                raise RuntimeError(f"decoding worker {w} failed:\n{a}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        gc.unfreeze()
    return out  # type: ignore[return-value]
