"""Batched greedy generation that keeps the cores busy.

Prompts are sorted by length into batches; a batch is the unit that is resumed, sharded across
processes and yielded. Within a batch, up to `max_rows` rows decode together against one
pre-allocated KV cache, and a row that finishes hands its place to the batch's next waiting prompt,
so the matrix multiplies stay wide instead of trailing off with a few long replies. On a CPU with a few
cores, a batch is dealt out to one single-threaded process per core (`sdft.engine.workers`). The prompt prefix
that every prompt of a batch shares (the chat template and system prompt of a distillation template)
is run once and copied to every row.

Every choice made while decoding a batch depends only on that batch's prompts and the settings,
which is what lets a stage resume at a batch boundary, or split batches across processes, and still
produce exactly the output of one uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from sdft.engine.attention import generation_attention
from sdft.engine.workers import decode_in_workers, decode_workers

# Called as soon as a reply is finished, with the prompt's index in the batch and its new-token count:
# rows finish one by one (a refilled row hands its place on), so progress can move per prompt.
OnDone = Callable[[int, int], None]


@dataclass
class DecodeConfig:
    max_new_tokens: int = 256
    batch_size: int = 32  # prompts per planned batch: the unit that is resumed, sharded and yielded
    # Caps rows decoded at once x (batch's longest prompt + new tokens): bounds KV-cache memory. Long
    # prompts mean fewer rows at once, never smaller batches.
    max_batch_tokens: int = 32768
    stop: tuple[str, ...] = field(default_factory=tuple)
    # Rows decoded at once (in each worker); a batch with more prompts refills rows as replies finish.
    # On two CPU cores, two workers of 48 rows decode within 3% of two of 64 with a quarter less KV
    # memory (docs/PERFORMANCE.md); on a GPU raise it. 0: the whole batch at once.
    max_rows: int = 48
    prefill_tokens: int = 2048  # prompt tokens per prefill forward: bounds activation memory
    # Once no prompt waits and few rows are left, a step is bound by reading the weights, not by
    # arithmetic: rows then also verify draft tokens looked up in their own prompt and reply (replies
    # that copy the reference or repeat themselves get many tokens a step), as long as rows x (1 + draft)
    # stays within this many tokens per step (32 measured best on 2 CPU cores). 0: plain decoding only.
    draft_budget: int = 32
    # Sampling instead of greedy decoding when temperature > 0 (see `_Picker`): top_k (0: off) and top_p
    # (1: off) filter as transformers' generate does. Drafting is off while sampling. On a CPU, top_p
    # without top_k is slow with a large vocabulary (a full sort per step).
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0  # mixed with each prompt's tokens into that row's own random generator
    # Processes a batch decodes in on a CPU, one thread each (sdft.engine.workers); max_rows and
    # max_batch_tokens hold per process. 0: auto, one per core on CPUs with 2-4 threads for batches
    # of 96 prompts or more, else 1.
    workers: int = 0


def plan_batches(lengths: list[int], batch_size: int, max_new_tokens: int = 0,
                 max_batch_tokens: int | None = None) -> list[list[int]]:
    """Group indices into batches of similar length, longest first (memory peaks early): at most
    `batch_size` each, and (when set) at most `max_batch_tokens` rows x (widest + max_new_tokens)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + max_new_tokens
        too_wide = max_batch_tokens is not None and (len(current) + 1) * width > max_batch_tokens
        if current and (len(current) >= batch_size or too_wide):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def plan_generation(prompt_ids: list[list[int]], cfg: DecodeConfig) -> list[list[int]]:
    """The batches `iter_generate` runs: a function of the prompts and the settings alone, so that a
    resumed or sharded run plans exactly the same batches. Memory is bounded inside a batch, by the
    number of rows decoding at once (`rows_at_once`)."""
    return plan_batches([len(p) for p in prompt_ids], cfg.batch_size)


def rows_at_once(prompt_ids: list[list[int]], cfg: DecodeConfig) -> int:
    """Rows a batch decodes together: max_rows, fewer where rows x (longest prompt + max new tokens)
    would pass max_batch_tokens, at least one."""
    rows = min(cfg.max_rows, len(prompt_ids)) if cfg.max_rows > 0 else len(prompt_ids)
    width = max(len(p) for p in prompt_ids) + cfg.max_new_tokens
    return max(1, min(rows, cfg.max_batch_tokens // width))


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a reply: the tokenizer's EOS and the model's generation config EOS list."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


def _cut_at_stop(text: str, stop: Iterable[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _common_prefix(prompt_ids: list[list[int]]) -> int:
    first, n = prompt_ids[0], min(len(p) for p in prompt_ids)
    for k in range(n):
        if any(p[k] != first[k] for p in prompt_ids):
            return k
    return n


# ---------------------------------------------------------------------------------------------
# The KV cache: one pre-allocated buffer per layer, rows right-aligned at a shared write column.
# ---------------------------------------------------------------------------------------------


class _Rows:
    """KV buffers for up to `rows` sequences of at most `cols` columns.

    Every live row's newest token sits in column `hi - 1`; columns before a row's first token are
    masked out. Live rows are always slots 0..n-1 (a finished row is replaced by the last one), so
    each step's cache is a view, never a copy. `lo` trims the columns no live row uses any more.
    """

    def __init__(self, like, rows: int, cols: int, start: int):
        def buffer(t: torch.Tensor) -> torch.Tensor:
            # zeros, not empty: masked columns still enter q.k, and stale garbage could hold NaN
            return torch.zeros((rows, t.shape[1], cols, t.shape[3]), dtype=t.dtype, device=t.device)

        self.k = [buffer(layer.keys) for layer in like.layers]
        self.v = [buffer(layer.values) for layer in like.layers]
        device = like.layers[0].keys.device
        self.mask = torch.zeros((rows, cols), dtype=torch.long, device=device)
        self.next = torch.zeros(rows, dtype=torch.long, device=device)  # token each row feeds next
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)  # position of each row's newest token
        self.first = [0] * rows  # each slot's first column: its window starts there
        self.n, self.lo, self.hi, self.start = 0, start, start, start
        self.cache = _slot_cache(self)

    def insert(self, cache, mask, pos, first) -> None:
        """Append the rows of a prefilled cache (width w) as slots n.., ending at column hi."""
        g, w = mask.shape
        a, b = self.n, self.n + g
        for i, layer in enumerate(cache.layers):
            self.k[i][a:b, :, self.hi - w:self.hi] = layer.keys
            self.v[i][a:b, :, self.hi - w:self.hi] = layer.values
        self.mask[a:b] = 0
        self.mask[a:b, self.hi - w:self.hi] = mask
        self.pos[a:b], self.next[a:b] = pos, first
        self.first[a:b] = [self.hi - w] * g
        self.n, self.lo = b, min(self.lo, self.hi - w)

    def remove(self, slot: int) -> None:
        """Drop a row: the last live row moves into its slot."""
        last = self.n - 1
        if slot != last:
            lo, hi = self.lo, self.hi
            for t in (*self.k, *self.v):
                t[slot, :, lo:hi] = t[last, :, lo:hi]
            self.mask[slot] = self.mask[last]  # whole row: columns left of lo may come back into use
            self.pos[slot], self.next[slot] = self.pos[last], self.next[last]
            self.first[slot] = self.first[last]
        self.n = last

    def trim(self) -> None:
        """Skip leading columns that no live row attends to any more."""
        if self.n == 0:
            self.lo = self.hi
            return
        used = self.mask[:self.n, self.lo:self.hi].any(0)
        self.lo += int(used.int().argmax())

    def make_room(self, need: int = 1) -> None:
        """Before writing `need` columns at hi: when the buffer is full, shift the used window left,
        or, when rejected drafts left holes that keep it wide, pack every row's columns together."""
        cols = self.mask.shape[1]
        if self.hi + need <= cols:
            return
        # keep hi >= start so any waiting prompt (at most `start` wide) still fits before it
        shift = min(self.lo, self.hi - self.start)
        if shift > 0 and self.hi - shift + need <= cols:
            lo, hi = self.lo, self.hi
            for t in (*self.k, *self.v):
                t[:self.n, :, lo - shift:hi - shift] = t[:self.n, :, lo:hi].clone()
            self.mask[:self.n, lo - shift:hi - shift] = self.mask[:self.n, lo:hi].clone()
            self.mask[:, hi - shift:] = 0
            self.first[:self.n] = [c - shift for c in self.first[:self.n]]
            self.lo, self.hi = lo - shift, hi - shift
            return
        self.repack()
        if self.hi + need > cols:
            raise RuntimeError("KV buffer too small")  # can't happen: cols leaves room for max_new_tokens

    def repack(self) -> None:
        """Move each row's attended columns together, right-aligned at a common column."""
        lo, n = self.lo, self.n
        used = self.mask[:n, lo:self.hi].bool()
        widest = int(used.sum(1).max()) if n else 0
        end = max(self.start, widest)
        for r in range(n):
            idx = used[r].nonzero().squeeze(1) + lo
            for t in (*self.k, *self.v):
                t[r, :, end - len(idx):end] = t[r, :, idx]  # the gather copies first: overlap is safe
            self.mask[r] = 0
            self.mask[r, end - len(idx):end] = 1
            self.first[r] = end - len(idx)
        self.lo, self.hi = end - widest, end

    def windows(self, parts: int) -> list[tuple[int, int, int]]:
        """The live slots cut into up to `parts` contiguous ranges (start, end, first column any of
        them attends to, counted from lo): attention per range reads fewer columns, since rows that
        joined later start further right (`generation_attention`)."""
        size = -(-self.n // parts)
        out: list[tuple[int, int, int]] = []
        for a in range(0, self.n, size):
            b = min(self.n, a + size)
            col = min(self.first[a:b]) - self.lo
            if out and out[-1][2] == col:
                out[-1] = (out[-1][0], b, col)
            else:
                out.append((a, b, col))
        return out


def _slot_cache(rows: _Rows):
    """A transformers cache whose layers read and write the `_Rows` buffers."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class _Layer(DynamicLayer):
        def __init__(self, i: int):  # no super().__init__: keys/values are views, not attributes
            self.i, self.is_initialized = i, True
            self.dtype, self.device = rows.k[i].dtype, rows.k[i].device

        @property
        def keys(self):
            return rows.k[self.i][:rows.n, :, rows.lo:rows.hi]

        @property
        def values(self):
            return rows.v[self.i][:rows.n, :, rows.lo:rows.hi]

        def update(self, key_states, value_states, *args, **kwargs):
            q = key_states.shape[-2]
            rows.k[self.i][:rows.n, :, rows.hi:rows.hi + q] = key_states
            rows.v[self.i][:rows.n, :, rows.hi:rows.hi + q] = value_states
            return (rows.k[self.i][:rows.n, :, rows.lo:rows.hi + q],
                    rows.v[self.i][:rows.n, :, rows.lo:rows.hi + q])

        def get_seq_length(self) -> int:
            return rows.hi - rows.lo

    cache = DynamicCache()
    cache.layers = [_Layer(i) for i in range(len(rows.k))]
    return cache


def _plain_layers(model) -> bool:
    """The slot cache handles models whose every layer keeps a full, growing KV cache (no sliding windows)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if getattr(model.config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _draft(context: list[int], k: int, window: int = 1024) -> list[int]:
    """Prompt-lookup drafting: the tokens that followed the latest earlier occurrence of the context's
    last 3 (else 2) tokens."""
    context = context[-window:]
    for size in (3, 2):
        if len(context) <= size:
            continue
        tail = context[-size:]
        for start in range(len(context) - size - 1, -1, -1):
            if context[start:start + size] == tail:
                return context[start + size:start + size + k]
    return []


# ---------------------------------------------------------------------------------------------
# Sampling (cfg.temperature > 0)
# ---------------------------------------------------------------------------------------------


def row_seed(seed: int, prompt: list[int]) -> int:
    """The seed of one row's generator: from the settings' seed and the prompt's tokens alone, so a
    prompt samples the same reply in any batch, beside any other rows, in a resumed or sharded run."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class HeadInput:
    """Keeps the latest input of the model's output layer: the final hidden states at exactly the
    positions whose logits were computed. Use as a context manager around the forward calls."""

    def __init__(self, model):
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.head = head if isinstance(getattr(head, "weight", None), torch.Tensor) else None
        self.last: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> "HeadInput":
        if self.head is not None:
            self._handle = self.head.register_forward_pre_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
        self.last = None

    def _keep(self, module, args) -> None:
        self.last = args[0]


def exact_argmax(logits: torch.Tensor, hidden: torch.Tensor | None, head) -> torch.Tensor:
    """argmax over the vocabulary, where half-precision rounding cannot decide it: rows whose best logits
    lie within one rounding step of the top (bf16 keeps 8 significant bits, so logits near 30 come in
    steps of 0.125) are rescored in float32 from `hidden`, the output layer's input, for just those
    tokens. Plain argmax would give such a tie to the lowest token id: on GSM8K distillation prompts
    2% of bf16 decoding steps had an exact tie and 6% a top within one step.

    logits (..., vocab), hidden (..., hidden size) at the same positions; float32 logits or no hidden
    states: plain argmax."""
    # max(-1) returns argmax's index (the first maximum) and ran ~3x faster than argmax over bf16 rows
    top, picks = logits.max(-1)
    if hidden is None or head is None or logits.dtype not in (torch.bfloat16, torch.float16):
        return picks
    flat, states = logits.reshape(-1, logits.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
    top, flat_picks = top.reshape(-1, 1).float(), picks.reshape(-1, 1)
    step = torch.ldexp(torch.full_like(top, torch.finfo(logits.dtype).eps), torch.frexp(top).exponent - 1)
    near = flat >= (top - step).to(flat.dtype)
    # a row is undecided when a token other than its pick is near the top; any() over booleans, not
    # sum(), which widens the rows x vocabulary mask to int64 (25 MB a step, page faults and all)
    rivals = near.clone().scatter_(-1, flat_picks, False)
    rows = rivals.any(-1).nonzero().flatten().tolist()
    if not rows:
        return picks
    out = picks.reshape(-1).clone()
    bias = getattr(head, "bias", None)
    for r in rows:
        ids = near[r].nonzero().flatten()
        scores = head.weight[ids].float() @ states[r].float()
        if bias is not None:
            scores = scores + bias[ids].float()
        out[r] = ids[scores.argmax()]
    return out.reshape(picks.shape)


class _Picker:
    """Chooses each row's next token: the argmax, or, when sampling, a draw from the row's filtered
    distribution. Filtering follows transformers' generate (temperature, then top-k, then top-p; see
    `filtered`). The draw is by inverse CDF with one uniform number from the row's own generator per
    token, so a row's draws never depend on which rows decode beside it.

    Not transformers' warpers and torch.multinomial: the top-p warper sorts the whole vocabulary
    (measured 0.4 s a step for 64 rows x 49k tokens on one CPU core, against 11 ms for the top 50),
    and one uniform per row keeps the row's random stream independent of the vocabulary's layout.
    """

    def __init__(self, cfg: DecodeConfig, prompt_ids: list[list[int]], head_input: HeadInput | None = None):
        self.cfg, self.prompt_ids, self.head_input = cfg, prompt_ids, head_input
        self.sampling = cfg.temperature > 0
        self.generators: dict[int, torch.Generator] = {}

    def filtered(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(unnormalised probabilities, their token ids) of each row's sampling distribution; ids is
        None when the probabilities cover the vocabulary in order."""
        cfg = self.cfg
        scores, ids = logits.float() / cfg.temperature, None
        if 0 < cfg.top_k < scores.shape[-1]:
            scores, ids = scores.topk(cfg.top_k)  # sorted, most likely first
        if cfg.top_p >= 1.0:
            return scores.softmax(-1), ids
        if ids is None:
            scores, ids = scores.sort(-1, descending=True)
        probs = scores.softmax(-1)
        # keep a token while the tokens more likely than it hold less than top_p (the first always)
        return probs.masked_fill(probs.cumsum(-1) - probs >= cfg.top_p, 0.0), ids

    def __call__(self, logits: torch.Tensor, prompts: list[int]) -> torch.Tensor:
        """Next token of each row of `logits` (rows x vocabulary); `prompts`: each row's prompt index."""
        if not self.sampling:
            return self.argmax(logits)
        probs, ids = self.filtered(logits)
        u = torch.cat([torch.rand(1, generator=self._generator(p), dtype=torch.float64) for p in prompts])
        cdf = probs.double().cumsum(-1)
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]
        # side="right": the first token whose cumulative mass passes the target, never a zero-mass one
        picks = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
        return (picks if ids is None else ids.gather(-1, picks)).squeeze(-1)

    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy picks of logits (rows x vocabulary, or rows x positions x vocabulary) from the latest
        forward call, near-ties decided in float32 (`exact_argmax`)."""
        h = self.head_input
        if h is None or h.last is None:
            return logits.argmax(-1)
        hidden = h.last[:, -logits.shape[1]:] if logits.dim() == 3 else h.last[:, -1]
        return exact_argmax(logits, hidden, h.head)

    def _generator(self, prompt: int) -> torch.Generator:
        if prompt not in self.generators:  # CPU generators: one number a step, the same on any device
            self.generators[prompt] = torch.Generator().manual_seed(row_seed(self.cfg.seed, self.prompt_ids[prompt]))
        return self.generators[prompt]


@torch.inference_mode()
def decode_token_ids(model, tokenizer, prompt_ids: list[list[int]], cfg: DecodeConfig,
                     on_done: OnDone | None = None) -> list[list[int]]:
    """Greedy-decode one batch; returns each row's new token ids (end-of-reply token excluded).
    `on_done(i, n_tokens)` is called once per prompt, as soon as its reply is finished. With
    cfg.temperature > 0 the tokens are sampled instead (`_Picker`).

    Works in any floating dtype the model is in: the KV buffers take the dtype of the model's keys and
    values, and in bf16/fp16 a top the logits' rounding leaves undecided is decided in float32 from the
    output layer's input (`exact_argmax`)."""
    if not prompt_ids or cfg.max_new_tokens <= 0:
        if on_done:
            for i in range(len(prompt_ids)):
                on_done(i, 0)
        return [[] for _ in prompt_ids]
    workers = decode_workers(model, cfg.workers, len(prompt_ids))
    if workers > 1:
        return decode_in_workers(decode_token_ids, model, tokenizer, prompt_ids, replace(cfg, workers=1), workers,
                                 on_done)
    # HeadInput: for argmax ties in half precision (exact_argmax)
    with HeadInput(model) as head_input, generation_attention(model) as window_parts:
        if not _plain_layers(model):  # no refilling: one group of rows after another
            step = rows_at_once(prompt_ids, cfg)
            out: list[list[int]] = []
            for start in range(0, len(prompt_ids), step):
                shifted = (lambda i, n, start=start: on_done(start + i, n)) if on_done else None
                out += _greedy_padded(model, tokenizer, prompt_ids[start:start + step], cfg, shifted, head_input)
            return out
        return _greedy_refill(model, tokenizer, prompt_ids, cfg, on_done, head_input, window_parts)


class _Replies:
    """Per-prompt token lists and the end-of-reply rules (EOS, length, stop strings)."""

    def __init__(self, n: int, eos: set[int], tokenizer, cfg: DecodeConfig, on_done: OnDone | None = None):
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.eos, self.tokenizer, self.cfg, self.on_done = eos, tokenizer, cfg, on_done
        self.tail = max((len(s) for s in cfg.stop), default=0) + 2

    def add(self, row: int, tok: int) -> bool:
        """Record a token; True when the reply is finished (the caller then drops the row)."""
        if self._ends(row, tok):
            if self.on_done:
                self.on_done(row, len(self.ids[row]))
            return True
        return False

    def _ends(self, row: int, tok: int) -> bool:
        if tok in self.eos:
            return True
        ids = self.ids[row]
        ids.append(tok)
        if len(ids) >= self.cfg.max_new_tokens:
            return True
        # decoding a short tail is only worth it when there are stop strings to look for
        return bool(self.cfg.stop) and any(s in self.tokenizer.decode(ids[-self.tail:]) for s in self.cfg.stop)


def _greedy_refill(model, tokenizer, prompt_ids: list[list[int]], cfg: DecodeConfig,
                   on_done: OnDone | None = None, head_input: HeadInput | None = None,
                   window_parts: int = 0) -> list[list[int]]:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    replies = _Replies(len(prompt_ids), stop_token_ids(model, tokenizer), tokenizer, cfg, on_done)
    pick = _Picker(cfg, prompt_ids, head_input)
    n_rows = rows_at_once(prompt_ids, cfg)

    # The shared prefix is computed once; every row keeps at least one token of its own, whose
    # logits give the row's first reply token.
    prefix_len = min(_common_prefix(prompt_ids), min(len(p) for p in prompt_ids) - 1)
    prefix_kv = None
    if prefix_len >= 8:
        pc = DynamicCache()
        model(input_ids=torch.tensor([prompt_ids[0][:prefix_len]], device=device), past_key_values=pc,
              use_cache=True, logits_to_keep=1)
        prefix_kv = [(layer.keys, layer.values) for layer in pc.layers]
    else:
        prefix_len = 0

    widest = max(len(p) for p in prompt_ids)
    slack = max(32, (widest + cfg.max_new_tokens) // 8)  # columns between window shifts
    rows: _Rows | None = None
    slot_prompt: list[int] = []  # slot -> prompt index
    waiting = deque(range(len(prompt_ids)))

    def prefill(group: list[int]) -> None:
        nonlocal rows
        suffixes = [prompt_ids[i][prefix_len:] for i in group]
        s = max(len(x) for x in suffixes)
        ids = torch.full((len(group), s), pad_id, dtype=torch.long)
        pos = torch.full((len(group), s), prefix_len, dtype=torch.long)
        mask = torch.zeros((len(group), prefix_len + s), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, x in enumerate(suffixes):  # [prefix | padding | suffix]: the prefix cache stays shared
            ids[r, s - len(x):] = torch.tensor(x)
            pos[r, s - len(x):] = torch.arange(prefix_len, prefix_len + len(x))
            mask[r, prefix_len + s - len(x):] = 1
        ids, pos, mask = ids.to(device), pos.to(device), mask.to(device)
        cache = DynamicCache()
        for i, (k, v) in enumerate(prefix_kv or []):
            cache.update(k.expand(len(group), -1, -1, -1), v.expand(len(group), -1, -1, -1), i)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        first = pick(out.logits[:, -1], group)
        if rows is None:
            rows = _Rows(cache, n_rows, widest + cfg.max_new_tokens + slack, start=widest)
        base = rows.n
        rows.insert(cache, mask, pos[:, -1], first)
        slot_prompt.extend(group)
        finish(range(base, rows.n), first.tolist())

    def finish(slots: range, tokens: list[int]) -> None:
        done = [j for j, tok in zip(slots, tokens) if replies.add(slot_prompt[j], tok)]
        drop(done)

    def drop(done: list[int]) -> None:
        for j in reversed(done):  # highest first, so every move takes a row that is still live
            rows.remove(j)
            slot_prompt[j] = slot_prompt[-1]
            slot_prompt.pop()
        if done:
            rows.trim()

    def admit() -> None:
        while waiting and len(slot_prompt) < n_rows:
            free = n_rows - len(slot_prompt)
            group = [waiting.popleft()]
            width = len(prompt_ids[group[0]]) - prefix_len  # the group is padded to its widest prompt
            while waiting and len(group) < free:
                wider = max(width, len(prompt_ids[waiting[0]]) - prefix_len)
                if (len(group) + 1) * wider > cfg.prefill_tokens:
                    break
                group.append(waiting.popleft())
                width = wider
            prefill(group)

    def speculate(drafts: list[list[int]], k: int) -> None:
        """One step that feeds each row's next token plus k draft tokens and keeps the longest prefix
        of drafts that greedy decoding confirms, plus the token after it. A rejected draft's column
        stays in the buffer, masked out."""
        rows.make_room(k + 1)
        n, hi = rows.n, rows.hi
        filler = [d + [pad_id] * (k - len(d)) for d in drafts]  # a filler that happens to match is right too
        inputs = torch.cat([rows.next[:n, None], torch.tensor(filler, device=device)], dim=1)
        steps = torch.arange(1, k + 2, device=device)
        rows.mask[:n, hi:hi + k + 1] = 1
        out = model(input_ids=inputs, attention_mask=rows.mask[:n, rows.lo:hi + k + 1],
                    position_ids=rows.pos[:n, None] + steps, past_key_values=rows.cache, use_cache=True)
        rows.hi = hi + k + 1
        preds = pick.argmax(out.logits).tolist()
        fed = inputs.tolist()
        done = []
        for j in range(n):
            a = 0
            while a < k and preds[j][a] == fed[j][a + 1]:
                a += 1
            if any(replies.add(slot_prompt[j], tok) for tok in preds[j][:a + 1]):
                done.append(j)
                continue
            rows.mask[j, hi + a + 1:hi + k + 1] = 0
            rows.next[j], rows.pos[j] = preds[j][a], rows.pos[j] + a + 1
        drop(done)

    refill_at = max(1, n_rows // 8)  # free rows worth a prefill forward of their own
    admit()
    while slot_prompt or waiting:
        if waiting and (not slot_prompt or n_rows - len(slot_prompt) >= refill_at):
            admit()
            continue
        k = 0
        if not waiting and cfg.draft_budget > 0 and not pick.sampling:  # drafts are checked against argmax
            k = min(cfg.draft_budget // rows.n - 1, slack // 2)
            drafts = [_draft(prompt_ids[i] + replies.ids[i], k) for i in slot_prompt] if k > 0 else []
            k = max(map(len, drafts), default=0)
        if k:
            speculate(drafts, k)
            continue
        rows.make_room()
        n, hi = rows.n, rows.hi
        rows.mask[:n, hi] = 1
        rows.pos[:n] += 1
        windows = {"row_windows": rows.windows(window_parts)} if window_parts > 1 else {}
        out = model(input_ids=rows.next[:n, None], attention_mask=rows.mask[:n, rows.lo:hi + 1],
                    position_ids=rows.pos[:n, None], past_key_values=rows.cache, use_cache=True, **windows)
        rows.hi = hi + 1
        rows.next[:n] = pick(out.logits[:, -1], slot_prompt[:n])
        finish(range(n), rows.next[:n].tolist())
    return replies.ids


def _greedy_padded(model, tokenizer, prompt_ids: list[list[int]], cfg: DecodeConfig,
                   on_done: OnDone | None = None, head_input: HeadInput | None = None) -> list[list[int]]:
    """The general path (sliding-window and other special caches): the whole batch left-padded at once,
    finished rows dropped from the cache."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    replies = _Replies(len(prompt_ids), stop_token_ids(model, tokenizer), tokenizer, cfg, on_done)
    pick = _Picker(cfg, prompt_ids, head_input)
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width + cfg.max_new_tokens), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):width] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention[:, :width].cumsum(-1) - 1).clamp(min=0)

    cache = DynamicCache(config=model.config)
    out = model(input_ids=input_ids, attention_mask=attention[:, :width], position_ids=positions,
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    next_tokens = pick(out.logits[:, -1], list(range(len(prompt_ids))))
    last_pos = positions[:, -1]
    alive = list(range(len(prompt_ids)))  # batch row -> prompt index
    for step in range(cfg.max_new_tokens):
        keep = [j for j, tok in enumerate(next_tokens.tolist()) if not replies.add(alive[j], tok)]
        if not keep:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention, next_tokens, last_pos = attention[index], next_tokens[index], last_pos[index]
            alive = [alive[j] for j in keep]
        attention[:, width + step] = 1  # the mask is allocated once; each step uses one more column
        last_pos = last_pos + 1
        out = model(input_ids=next_tokens[:, None], attention_mask=attention[:, :width + step + 1],
                    position_ids=last_pos[:, None], past_key_values=cache, use_cache=True)
        next_tokens = pick(out.logits[:, -1], alive)
    return replies.ids


def generate_batch(model, tokenizer, prompt_ids: list[list[int]], cfg: DecodeConfig,
                   on_done: OnDone | None = None) -> tuple[list[str], int]:
    """Greedy-decode one batch; returns the replies (special tokens removed) and new-token count."""
    generated = decode_token_ids(model, tokenizer, prompt_ids, cfg, on_done)
    n_new = sum(len(ids) for ids in generated)
    texts = []
    for ids in generated:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        texts.append(_cut_at_stop(text, cfg.stop)[0].strip())
    return texts, n_new


def tokenize_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    # Rendered chat prompts already hold any BOS the template wants; don't add another.
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def iter_generate(model, tokenizer, prompts: list[str], cfg: DecodeConfig, skip: frozenset[int] = frozenset(),
                  desc: str = "generate", progress: bool = True) -> Iterator[tuple[int, list[int], list[str]]]:
    """Yield (batch number, prompt indices, replies) batch by batch; batches in `skip` are not run.

    The progress bar moves as each prompt's reply finishes, not per batch (a batch can take minutes),
    with the new tokens per second of the finished replies; a line at the end sums the run up."""
    prompt_ids = tokenize_prompts(tokenizer, prompts)
    batches = plan_generation(prompt_ids, cfg)
    todo = sum(len(b) for n, b in enumerate(batches) if n not in skip)
    bar = tqdm(total=todo, desc=desc, unit="prompt", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    tokens = finished = 0

    def on_done(_: int, n_tokens: int) -> None:
        nonlocal tokens, finished
        tokens, finished = tokens + n_tokens, finished + 1
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - started, 1e-9):.0f}", refresh=False)
        bar.update(1)

    try:
        for number, batch in enumerate(batches):
            if number in skip:
                continue
            texts, _ = generate_batch(model, tokenizer, [prompt_ids[i] for i in batch], cfg, on_done=on_done)
            yield number, batch, texts
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if progress and todo:
        print(f"{desc}: {finished} prompts, {tokens} new tokens in {seconds:.1f} s "
              f"({tokens / max(seconds, 1e-9):.1f} tok/s)", file=sys.stderr, flush=True)


def generate(model, tokenizer, prompts: list[str], cfg: DecodeConfig, desc: str = "generate",
             progress: bool = True) -> list[str]:
    """Replies to rendered prompts, in input order."""
    replies: list[str] = [""] * len(prompts)
    for _, batch, texts in iter_generate(model, tokenizer, prompts, cfg, desc=desc, progress=progress):
        for i, text in zip(batch, texts):
            replies[i] = text
    return replies
