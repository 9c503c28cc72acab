"""How likely a model finds a given reply: summed and per-token log-probabilities of response tokens.

Used wherever a suite scores text instead of generating it: the train/target gap (NLL of training
targets), retention (NLL of the seed's replies) and multiple choice (log-likelihood of each choice).

The prompt goes through the model's chat template and the response is tokenized on its own and
appended, exactly as training tokenizes a (prompt, response) pair, so the numbers are comparable with
the training loss. Only response tokens are scored (the closing end-of-turn marker is not), and the
vocabulary projection is computed only from the first response position on (`logits_to_keep`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@torch.inference_mode()
def score_batch(model, rows: list[Encoded], pad_id: int) -> list[ResponseScore]:
    """Score one batch of encoded pairs with a single right-padded forward pass."""
    if all(len(r.ids) <= r.start for r in rows):
        return [ResponseScore(0.0, 0) for _ in rows]
    device = next(model.parameters()).device
    width = max(len(r.ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        attention[b, : len(r.ids)] = 1
    # Position t predicts token t+1: logits are needed from the earliest response start - 1 on.
    first = min(r.start for r in rows)
    logits = _forward_logits(model, input_ids.to(device), attention.to(device), width - first + 1)
    offset = width - logits.shape[1]  # sequence position of logits[:, 0]
    scores = []
    for b, r in enumerate(rows):
        n = len(r.ids) - r.start
        if n <= 0:
            scores.append(ResponseScore(0.0, 0))
            continue
        # fp32 log-softmax on this row's response positions only: small, and exact under bf16 models.
        row_logits = logits[b, r.start - 1 - offset : len(r.ids) - 1 - offset].float()
        targets = torch.tensor(r.ids[r.start:], device=row_logits.device)
        logprobs = row_logits.log_softmax(-1).gather(-1, targets[:, None])
        scores.append(ResponseScore(float(logprobs.sum()), n))
    return scores


def default_batch_tokens(model, tokenizer) -> int:
    """Tokens per scoring batch that keep its logits within LOGITS_BUDGET."""
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    weight = next(model.parameters())
    bytes_per_logit = 4 if weight.dtype == torch.float32 else 2
    return max(256, LOGITS_BUDGET.get(weight.device.type, LOGITS_BUDGET["cpu"]) // (bytes_per_logit * vocab))


def score_responses(model, tokenizer, prompts: list[Prompt], responses: list[str], batch_size: int = 16,
                    max_batch_tokens: int | None = None) -> list[ResponseScore]:
    """Log-likelihood of each response given its prompt, in input order.

    Pairs are sorted by length into batches (rows x longest sequence <= max_batch_tokens, by default
    what keeps the logits tensor within LOGITS_BUDGET); a pair longer than the model's context is cut,
    scoring the tokens that fit.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
    if max_batch_tokens is None:
        max_batch_tokens = default_batch_tokens(model, tokenizer)
    limit = _context_limit(model, tokenizer)
    encoded = [encode_pair(tokenizer, p, r, limit) for p, r in zip(prompts, responses)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = plan_batches([len(e.ids) for e in encoded], batch_size, 0, max_batch_tokens)
    scores: list[ResponseScore | None] = [None] * len(encoded)
    for batch in batches:
        for i, score in zip(batch, score_batch(model, [encoded[i] for i in batch], pad_id)):
            scores[i] = score
    return scores  # type: ignore[return-value]


def response_nll(model, tokenizer, prompts_messages: list[Prompt], responses: list[str],
                 batch_size: int = 16) -> list[float]:
    """Mean per-token NLL of each response given its chat prompt (NaN where a response is empty)."""
    return [s.nll for s in score_responses(model, tokenizer, prompts_messages, responses, batch_size)]
