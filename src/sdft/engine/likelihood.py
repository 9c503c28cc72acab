"""How likely a model finds a given reply: summed and per-token log-probabilities of response tokens.

Used wherever a suite scores text instead of generating it: the train/target gap (NLL of training
targets), retention (NLL of the seed's replies) and multiple choice (log-likelihood of each choice).

The prompt goes through the model's chat template and the response is tokenized on its own and
appended, exactly as training tokenizes a (prompt, response) pair, so the numbers are comparable with
the training loss. Only response tokens are scored (the closing end-of-turn marker is not), and the
vocabulary projection is computed only from the first response position on (`logits_to_keep`).

The same forward pass can also give a model's top-k tokens at every response position (`score_with_topk`),
and another model's log-probabilities of those tokens (`logprobs_at`): with `bucket_kl`, how far one model's
next-token distributions moved from another's along a given reply (retention's kl_from_seed). It can also
give the model's predictive entropy at every response position (`score_with_entropy`): the surprise the
model expects there, against which a reply's actual surprise is read (the gap suite's surprise excess).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from sdft.core.chat import render_chat
from sdft.engine.decode import plan_batches

Prompt = list[dict] | str  # chat messages, or a prompt already rendered with the chat template

# The logits of one scoring batch (rows x positions x vocabulary) dwarf everything else a forward
# pass allocates; batches are sized so that they stay within this many bytes.
LOGITS_BUDGET = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


@dataclass
class Encoded:
    ids: list[int]
    start: int  # index of the first response token in `ids`


@dataclass
class ResponseScore:
    logprob: float  # sum of log p(token | everything before it) over response tokens
    n_tokens: int

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood; NaN for an empty response (nothing to score)."""
        return -self.logprob / self.n_tokens if self.n_tokens else math.nan


def encode_pair(tokenizer, prompt: Prompt, response: str, max_length: int | None = None) -> Encoded:
    text = prompt if isinstance(prompt, str) else render_chat(tokenizer, prompt)
    # Rendered chat prompts already hold any BOS the template wants; don't add another.
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
    ids = prompt_ids + response_ids
    if max_length is not None:
        ids = ids[:max_length]
    # Position 0 has nothing before it to predict it from, so a response can start at 1 at the earliest.
    return Encoded(ids, max(len(prompt_ids), 1))


def _context_limit(model, tokenizer) -> int | None:
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]
    return min(limits) if limits else None


def _forward_logits(model, input_ids: torch.Tensor, attention: torch.Tensor, keep: int) -> torch.Tensor:
    try:
        return model(input_ids=input_ids, attention_mask=attention, use_cache=False, logits_to_keep=keep).logits
    except TypeError:  # a model whose forward has no logits_to_keep: compute all positions
        return model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits


def _padded(rows: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r.ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        attention[b, : len(r.ids)] = 1
    return input_ids, attention


def _response_logprobs(model, rows: list[Encoded], pad_id: int) -> Iterator[torch.Tensor | None]:
    """For each row, the fp32 log-softmax over the vocabulary at its response positions (n x vocab), or
    None for a row with no response token; one right-padded forward pass for the whole batch.

    Rows are yielded one at a time so that only one row's fp32 copy of the logits is alive at once.
    """
    if all(len(r.ids) <= r.start for r in rows):
        yield from (None for _ in rows)
        return
    device = next(model.parameters()).device
    input_ids, attention = _padded(rows, pad_id)
    width = input_ids.shape[1]
    # Position t predicts token t+1: logits are needed from the earliest response start - 1 on.
    first = min(r.start for r in rows)
    logits = _forward_logits(model, input_ids.to(device), attention.to(device), width - first + 1)
    offset = width - logits.shape[1]  # sequence position of logits[:, 0]
    for b, r in enumerate(rows):
        if len(r.ids) <= r.start:
            yield None
            continue
        # fp32 log-softmax on this row's response positions only: small, and exact under bf16 models.
        yield logits[b, r.start - 1 - offset : len(r.ids) - 1 - offset].float().log_softmax(-1)


def _targets(row: Encoded, logprobs: torch.Tensor) -> torch.Tensor:
    return torch.tensor(row.ids[row.start:], device=logprobs.device)


def _score(row: Encoded, logprobs: torch.Tensor | None) -> ResponseScore:
    if logprobs is None:
        return ResponseScore(0.0, 0)
    return ResponseScore(float(logprobs.gather(-1, _targets(row, logprobs)[:, None]).sum()), len(row.ids) - row.start)


@dataclass
class EntropyScore(ResponseScore):
    """A ResponseScore with the model's own uncertainty at the same positions: the entropy of its
    next-token distribution, summed over the response positions (nats)."""

    entropy: float

    @property
    def mean_entropy(self) -> float:
        return self.entropy / self.n_tokens if self.n_tokens else math.nan

    @property
    def surprise_excess(self) -> float:
        """Mean per-token surprise (-log p of the token) minus the entropy at its position.

        At each position the entropy is the surprise the model expects of a token it samples itself, so
        this is 0 on average for the model's own samples (temperature 1), however long or predictable
        they are, and above 0 for text it would not write; NaN for an empty response."""
        return (-self.logprob - self.entropy) / self.n_tokens if self.n_tokens else math.nan


def entropy_per_position(logprobs: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the vocabulary at each position (fp32 log-probabilities in, nats out); a token of
    probability 0 (log-probability -inf) adds 0 rather than 0 x -inf = NaN."""
    return -torch.where(logprobs > -math.inf, logprobs.exp() * logprobs, 0.0).sum(-1)


def remaining_log_mass(logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log(1 - sum of the probabilities at `ids`) per position, summed over the other tokens instead of
    subtracted from 1, which loses nothing to cancellation when `ids` hold almost all the mass.
    -inf where `ids` cover the whole vocabulary."""
    return logprobs.scatter(-1, ids, -math.inf).logsumexp(-1)


@torch.inference_mode()
def score_batch(model, rows: list[Encoded], pad_id: int) -> list[ResponseScore]:
    """Score one batch of encoded pairs with a single right-padded forward pass."""
    return [_score(r, lp) for r, lp in zip(rows, _response_logprobs(model, rows, pad_id))]


@torch.inference_mode()
def score_entropy_batch(model, rows: list[Encoded], pad_id: int) -> list[EntropyScore]:
    """score_batch, plus each row's summed predictive entropy, from the same forward pass."""
    out = []
    for r, logprobs in zip(rows, _response_logprobs(model, rows, pad_id)):
        score = _score(r, logprobs)
        entropy = 0.0 if logprobs is None else float(entropy_per_position(logprobs).double().sum())
        out.append(EntropyScore(score.logprob, score.n_tokens, entropy))
    return out


@dataclass
class TopK:
    """A model's most likely next tokens at each response position (rows of `ids` most likely first)."""

    ids: torch.Tensor  # positions x k, int64
    logprobs: torch.Tensor  # positions x k, fp32 log-probabilities of those tokens
    tail: torch.Tensor  # positions, fp32 log of the probability left to all other tokens


def _empty_topk(k: int) -> TopK:
    return TopK(torch.zeros((0, k), dtype=torch.long), torch.zeros((0, k)), torch.zeros(0))


@torch.inference_mode()
def topk_batch(model, rows: list[Encoded], pad_id: int, k: int) -> list[tuple[ResponseScore, TopK]]:
    """Each row's score and, at each response position, the model's k most likely tokens; one forward pass."""
    out = []
    for r, logprobs in zip(rows, _response_logprobs(model, rows, pad_id)):
        if logprobs is None:
            out.append((_score(r, None), _empty_topk(k)))
            continue
        # topk breaks ties by index on CPU and CUDA alike, so the saved ids are deterministic.
        values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
        top = TopK(ids.cpu(), values.cpu(), remaining_log_mass(logprobs, ids).cpu())
        out.append((_score(r, logprobs), top))
    return out


@torch.inference_mode()
def logprobs_at_batch(model, rows: list[Encoded], pad_id: int,
                      ids: list[torch.Tensor | None]) -> list[tuple[ResponseScore, TopK | None]]:
    """Each row's score, and this model's log-probabilities of the given token ids at its response
    positions (ids[i] is positions x k), with the log of the mass on all other tokens, from one forward
    pass. The TopK is None where ids[i] is None, or where a row's positions differ in number from its ids
    (another tokenizer, another context length) and nothing lines up."""
    out = []
    for r, want, logprobs in zip(rows, ids, _response_logprobs(model, rows, pad_id)):
        n = 0 if logprobs is None else logprobs.shape[0]
        if want is None or n != want.shape[0]:
            top = None
        elif logprobs is None:
            top = TopK(want, torch.zeros(want.shape), torch.zeros(0))
        else:
            at = want.to(logprobs.device)
            top = TopK(want, logprobs.gather(-1, at).cpu(), remaining_log_mass(logprobs, at).cpu())
        out.append((_score(r, logprobs), top))
    return out


# Log of a probability too small to matter (e^-80 is about 2e-35): a tail bucket is floored here so that an
# empty one (k covering the whole vocabulary: log 0 = -inf) adds 0 instead of -inf - -inf = NaN.
TAIL_FLOOR = -80.0


def tail_from_topk(logprobs: torch.Tensor) -> torch.Tensor:
    """log(1 - sum of the given probabilities) per position, for a distribution known only by its top-k;
    a sum that rounds to 1 or above gives an empty tail (-inf)."""
    mass = logprobs.double().exp().sum(-1)
    return torch.log1p(-mass.clamp(max=1.0))


def bucket_kl(p: TopK, q: TopK) -> torch.Tensor:
    """KL(p || q) per position, over p's top-k token ids plus one bucket holding every other token:

        sum_i p_i (log p_i - log q_i) + p_tail (log p_tail - log q_tail)

    with q read at p's ids (q.ids == p.ids) and each tail the mass left outside those ids. Merging tokens
    into one bucket can only lose divergence, so this is a lower bound of the full KL, exact when p's top-k
    covers all of p's mass (k = vocabulary size, or p puts nothing elsewhere). Computed in float64.
    """
    p_top, q_top = p.logprobs.double(), q.logprobs.double()
    p_tail, q_tail = p.tail.double().clamp(min=TAIL_FLOOR), q.tail.double().clamp(min=TAIL_FLOOR)
    return (p_top.exp() * (p_top - q_top)).sum(-1) + p_tail.exp() * (p_tail - q_tail)


def default_batch_tokens(model, tokenizer) -> int:
    """Tokens per scoring batch that keep its logits within LOGITS_BUDGET."""
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    weight = next(model.parameters())
    bytes_per_logit = 4 if weight.dtype == torch.float32 else 2
    return max(256, LOGITS_BUDGET.get(weight.device.type, LOGITS_BUDGET["cpu"]) // (bytes_per_logit * vocab))


def _in_batches(model, tokenizer, prompts: list[Prompt], responses: list[str], batch_size: int,
                max_batch_tokens: int | None, score: Callable[[list[Encoded], int, list[int]], list]) -> list:
    """Encode the pairs, sort them by length into batches, and run `score(rows, pad_id, indices)` on each;
    the results come back in input order."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
    if max_batch_tokens is None:
        max_batch_tokens = default_batch_tokens(model, tokenizer)
    limit = _context_limit(model, tokenizer)
    encoded = [encode_pair(tokenizer, p, r, limit) for p, r in zip(prompts, responses)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = plan_batches([len(e.ids) for e in encoded], batch_size, 0, max_batch_tokens)
    results: list = [None] * len(encoded)
    for batch in batches:
        for i, result in zip(batch, score([encoded[i] for i in batch], pad_id, batch)):
            results[i] = result
    return results


def score_responses(model, tokenizer, prompts: list[Prompt], responses: list[str], batch_size: int = 16,
                    max_batch_tokens: int | None = None) -> list[ResponseScore]:
    """Log-likelihood of each response given its prompt, in input order.

    Pairs are sorted by length into batches (rows x longest sequence <= max_batch_tokens, by default
    what keeps the logits tensor within LOGITS_BUDGET); a pair longer than the model's context is cut,
    scoring the tokens that fit.
    """
    return _in_batches(model, tokenizer, prompts, responses, batch_size, max_batch_tokens,
                       lambda rows, pad_id, _: score_batch(model, rows, pad_id))


def score_with_topk(model, tokenizer, prompts: list[Prompt], responses: list[str], k: int, batch_size: int = 16,
                    max_batch_tokens: int | None = None) -> list[tuple[ResponseScore, TopK]]:
    """score_responses, plus the model's top-k tokens at every response position (from the same forward
    pass, so position j of a TopK is the prediction of the response's token j)."""
    return _in_batches(model, tokenizer, prompts, responses, batch_size, max_batch_tokens,
                       lambda rows, pad_id, _: topk_batch(model, rows, pad_id, k))


def score_with_entropy(model, tokenizer, prompts: list[Prompt], responses: list[str], batch_size: int = 16,
                       max_batch_tokens: int | None = None) -> list[EntropyScore]:
    """score_responses, plus the model's predictive entropy at each response position, summed per
    response (same forward pass, same batching, so the log-probabilities equal score_responses')."""
    return _in_batches(model, tokenizer, prompts, responses, batch_size, max_batch_tokens,
                       lambda rows, pad_id, _: score_entropy_batch(model, rows, pad_id))


def logprobs_at(model, tokenizer, prompts: list[Prompt], responses: list[str], ids: list[torch.Tensor | None],
                batch_size: int = 16, max_batch_tokens: int | None = None) -> list[tuple[ResponseScore, TopK | None]]:
    """score_responses, plus this model's log-probabilities of `ids[i]` (positions x k, e.g. another
    model's top-k) at each response position of pair i, with the log of its remaining mass, from the same
    forward pass; see logprobs_at_batch."""
    if len(ids) != len(prompts):
        raise ValueError(f"ids and prompts differ in length: {len(ids)} vs {len(prompts)}")
    return _in_batches(model, tokenizer, prompts, responses, batch_size, max_batch_tokens,
                       lambda rows, pad_id, batch: logprobs_at_batch(model, rows, pad_id, [ids[i] for i in batch]))


def response_nll(model, tokenizer, prompts_messages: list[Prompt], responses: list[str],
                 batch_size: int = 16) -> list[float]:
    """Mean per-token NLL of each response given its chat prompt (NaN where a response is empty)."""
    return [s.nll for s in score_responses(model, tokenizer, prompts_messages, responses, batch_size)]
