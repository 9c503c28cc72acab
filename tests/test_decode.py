"""The batched generation engine against one-prompt-at-a-time greedy decoding."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdft.core.chat import render_chat
from sdft.engine.decode import (
    DecodeConfig,
    generate,
    generate_batch,
    decode_token_ids,
    plan_batches,
    plan_generation,
    rows_at_once,
    tokenize_prompts,
)


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def _prompts(tok, n=12):
    questions = [f"Question {i}: " + "tell me more " * (i % 5) for i in range(n)]
    return [render_chat(tok, [{"role": "user", "content": q}]) for q in questions]


def test_plan_batches_sorted_complete_and_bounded():
    lengths = [5, 50, 7, 49, 6, 51, 8]
    batches = plan_batches(lengths, batch_size=3, max_new_tokens=10, max_batch_tokens=10**6)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5, 1, 3]  # longest first
    assert all(len(b) <= 3 for b in batches)
    tight = plan_batches(lengths, batch_size=8, max_new_tokens=10, max_batch_tokens=130)
    assert all(len(b) * (max(lengths[i] for i in b) + 10) <= 130 for b in tight)


def test_generation_batches_keep_their_size_and_bound_rows_instead():
    prompts = [[1] * n for n in (5, 50, 7, 49, 6, 51, 8)]
    cfg = DecodeConfig(max_new_tokens=10, batch_size=4, max_batch_tokens=130, max_rows=3)
    assert [len(b) for b in plan_generation(prompts, cfg)] == [4, 3]  # the token cap does not cut batches
    assert rows_at_once(prompts[:4], cfg) == 2  # 2 x (51 + 10) <= 130 < 3 x 61
    assert rows_at_once([[1] * 5] * 4, cfg) == 3  # max_rows
    assert rows_at_once([[1] * 200], cfg) == 1  # always at least one


def test_batched_matches_unbatched_greedy(model_tok):
    model, tok = model_tok
    prompts = _prompts(tok)
    cfg = DecodeConfig(max_new_tokens=12, batch_size=6)
    batched = generate(model, tok, prompts, cfg, progress=False)
    single = [generate_batch(model, tok, tokenize_prompts(tok, [p]), cfg)[0][0] for p in prompts]
    reference = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        reference.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert single == reference  # our decoder is plain greedy decoding
    same = sum(a == b for a, b in zip(batched, single))
    assert same / len(prompts) >= 0.95


def test_stop_strings_cut_the_reply(model_tok):
    model, tok = model_tok
    prompts = _prompts(tok, 4)
    free = generate(model, tok, prompts, DecodeConfig(max_new_tokens=16), progress=False)
    # stop at the second character of each free reply: every reply must end before it
    for prompt, text in zip(prompts, free):
        if len(text) < 3:
            continue
        stop = text[1:3]
        cut = generate(model, tok, [prompt], DecodeConfig(max_new_tokens=16, stop=(stop,)), progress=False)[0]
        assert stop not in cut
        assert text.startswith(cut)


def test_finished_rows_leave_the_batch(model_tok):
    """A row that ends early is dropped from the batch; the rows that go on are unaffected."""
    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 6))
    cfg = DecodeConfig(max_new_tokens=10, batch_size=6)
    full = decode_token_ids(model, tok, ids, cfg)
    assert [len(r) for r in full] == [10] * 6  # a random model never emits EOS here
    # make some row's first token that differs from its first one an end-of-reply token
    row, k = next((r, i) for r in range(6) for i, t in enumerate(full[r]) if t != full[r][0])
    stopper = full[row][k]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, stopper]
    try:
        early = decode_token_ids(model, tok, ids, cfg)
    finally:
        model.generation_config.eos_token_id = saved
    assert early[row] == full[row][:k]
    assert sum(map(len, early)) < sum(map(len, full))
    for before, after in zip(full, early):
        cut = before.index(stopper) if stopper in before else len(before)
        assert after == before[:cut]


def _single(model, tok, ids, cfg):
    """Reference: transformers generate, one prompt at a time (end-of-reply id dropped)."""
    import torch

    from sdft.engine.decode import stop_token_ids

    eos = sorted(stop_token_ids(model, tok))
    out = []
    for p in ids:
        new = model.generate(torch.tensor([p]), max_new_tokens=cfg.max_new_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        out.append(new[:-1] if new and new[-1] in eos else new)
    return out


def test_refilled_rows_match_unbatched(model_tok, monkeypatch):
    """Few rows, many prompts: rows are refilled one at a time and the KV window is shifted; the
    replies are still those of one-prompt-at-a-time decoding."""
    import sdft.engine.decode as gen

    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 14))
    cfg = DecodeConfig(max_new_tokens=24, max_rows=3, prefill_tokens=1)
    shifts = []
    make_room = gen._Rows.make_room

    def counting(self, need=1):
        shifts.append(self.hi + need > self.mask.shape[1])
        make_room(self, need)

    monkeypatch.setattr(gen._Rows, "make_room", counting)
    refilled = decode_token_ids(model, tok, ids, cfg)
    assert any(shifts)  # the window really moved
    whole = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=24, max_rows=0))
    single = _single(model, tok, ids, cfg)
    assert sum(a == b for a, b in zip(refilled, single)) / len(ids) >= 0.95
    assert sum(a == b for a, b in zip(whole, single)) / len(ids) >= 0.95


def test_refill_with_early_endings_and_no_shared_prefix(model_tok):
    """Rows end at different steps (an extra end-of-reply id) and the prompts share no prefix."""
    model, tok = model_tok
    ids = [tok(f"{i} " + "word " * (i % 6), add_special_tokens=False)["input_ids"] for i in range(10)]
    cfg = DecodeConfig(max_new_tokens=16, max_rows=4)
    free = decode_token_ids(model, tok, ids, cfg)
    stopper = sorted({t for r in free for t in r[2:]}, key=lambda t: -sum(r.count(t) for r in free))[0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, stopper]
    try:
        early = decode_token_ids(model, tok, ids, cfg)
        single = _single(model, tok, ids, cfg)
    finally:
        model.generation_config.eos_token_id = saved
    assert len({len(r) for r in early}) > 1
    assert sum(a == b for a, b in zip(early, single)) / len(ids) >= 0.95
    for before, after in zip(free, early):
        cut = before.index(stopper) if stopper in before else len(before)
        assert after == before[:cut]


def test_padded_path_for_special_caches(model_tok, monkeypatch):
    """Models whose cache the slot buffer can't hold (sliding windows, ...) take the padded path."""
    import sdft.engine.decode as gen

    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 6))
    cfg = DecodeConfig(max_new_tokens=10)
    fast = decode_token_ids(model, tok, ids, cfg)
    monkeypatch.setattr(gen, "_plain_layers", lambda m: False)
    assert decode_token_ids(model, tok, ids, cfg) == fast


def test_a_batch_does_not_depend_on_the_others(model_tok):
    """What resume and sharding rely on: a batch's replies are the same whichever batches run."""
    from sdft.engine.decode import iter_generate

    model, tok = model_tok
    prompts = _prompts(tok, 10)
    cfg = DecodeConfig(max_new_tokens=8, batch_size=4, max_rows=2)
    everything = {n: texts for n, _, texts in iter_generate(model, tok, prompts, cfg, progress=False)}
    alone = {n: texts for n, _, texts in iter_generate(model, tok, prompts, cfg, skip=frozenset({0, 2}),
                                                      progress=False)}
    assert list(alone) == [1]
    assert alone[1] == everything[1]


def _oracle(reference: dict[tuple, list[int]], wrong_after: int | None):
    """A drafter that knows each reply (keyed by prompt) and turns wrong after `wrong_after` tokens."""

    def draft(context, k):
        for prompt, reply in reference.items():
            if tuple(context[:len(prompt)]) == prompt:
                done = len(context) - len(prompt)
                right = reply[done:done + k]
                if wrong_after is not None:
                    right = right[:wrong_after] + [0] * (k - min(wrong_after, len(right)))
                return right
        return []

    return draft


@pytest.mark.parametrize("wrong_after", [None, 2, 0])
def test_draft_verification_keeps_greedy_output(model_tok, monkeypatch, wrong_after):
    """Few rows left: drafts are verified in one step. Right drafts save steps; wrong ones leave masked
    holes that are packed away when the buffer fills; the replies stay the greedy ones."""
    import sdft.engine.decode as gen

    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 3))
    plain = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=40, draft_budget=0))
    monkeypatch.setattr(gen, "_draft", _oracle({tuple(p): r for p, r in zip(ids, plain)}, wrong_after))
    packs = []
    repack = gen._Rows.repack
    monkeypatch.setattr(gen._Rows, "repack", lambda self: (packs.append(1), repack(self)))
    forward = model.forward
    calls = []
    monkeypatch.setattr(model, "forward", lambda *a, **k: (calls.append(1), forward(*a, **k))[1])
    drafted = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=40, draft_budget=30))
    assert sum(a == b for a, b in zip(drafted, plain)) / len(ids) >= 0.95
    if wrong_after is None:
        assert len(calls) < 10  # ~4 steps of 9 verified tokens instead of 40 single ones
    if wrong_after == 0:
        assert packs  # every step left 9 masked columns


def test_progress_moves_per_finished_prompt(model_tok, monkeypatch):
    """Each prompt reports as soon as its reply ends (one call per prompt, while decoding still runs),
    and iter_generate's bar advances per prompt, not per batch."""
    import sdft.engine.decode as gen

    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 10))
    cfg = DecodeConfig(max_new_tokens=12, max_rows=3)
    free = decode_token_ids(model, tok, ids, cfg)
    stopper = sorted({t for r in free for t in r[1:]}, key=lambda t: -sum(r.count(t) for r in free))[0]
    forward = model.forward
    steps, done = [], []
    monkeypatch.setattr(model, "forward", lambda *a, **k: (steps.append(1), forward(*a, **k))[1])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, stopper]  # replies end at different steps
    try:
        out = decode_token_ids(model, tok, ids, cfg, on_done=lambda i, n: done.append((i, n, len(steps))))
    finally:
        model.generation_config.eos_token_id = saved
    assert sorted(i for i, _, _ in done) == list(range(len(ids)))  # once per prompt
    assert all(n == len(out[i]) for i, n, _ in done)
    assert done[0][2] < len(steps)  # the first reply was reported long before the batch ended
    assert len({at for _, _, at in done}) > 2

    class Recording(gen.tqdm):
        updates: list[tuple[int, int]] = []

        def update(self, n=1):
            Recording.updates.append((n, yielded))
            return super().update(n)

    monkeypatch.setattr(gen, "tqdm", Recording)
    yielded = 0
    for _, batch, _ in gen.iter_generate(model, tok, _prompts(tok, 10), DecodeConfig(max_new_tokens=6,
                                         batch_size=5, max_rows=2), progress=True):
        yielded += 1
    assert [n for n, _ in Recording.updates] == [1] * 10
    assert [at for _, at in Recording.updates[:5]] == [0] * 5  # the first batch's prompts before it is yielded


def test_engine_in_bfloat16(model_tok):
    """The engine runs a bfloat16 model (bf16 KV buffers, masks, argmax): every token it picks is the
    bf16 model's own greedy choice, read back in one unbatched forward over prompt + reply. Exact
    equality with batch-1 decoding is too much to ask of bf16: other batch shapes round differently,
    and a near-tie can then go the other way, so a pick may trail the top logit by rounding noise."""
    import copy

    import torch

    model, tok = model_tok
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ids = tokenize_prompts(tok, _prompts(tok, 6))
    out = decode_token_ids(bf16, tok, ids, DecodeConfig(max_new_tokens=12, max_rows=3))
    assert [len(r) for r in out] == [12] * 6
    gaps = []
    with torch.inference_mode():
        for prompt, reply in zip(ids, out):
            logits = bf16(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1:-1].float()
            top = logits.max(1).values
            picked = logits.gather(1, torch.tensor(reply)[:, None])[:, 0]
            gaps += ((top - picked) / (top - logits.min(1).values)).tolist()  # 0: the argmax itself
    assert max(gaps) < 0.01  # a wrong cache or mask gives picks far down the distribution (~0.7)
    assert sum(g == 0 for g in gaps) >= 0.9 * len(gaps)


def test_prefill_groups_stay_within_prefill_tokens_in_any_prompt_order(model_tok):
    """A group of prompts is prefilled padded to its widest prompt, so the token budget must count that
    width, not the first prompt's: short prompts first and a long one later once made a group of many
    rows all padded to the long one."""
    model, tok = model_tok
    ids = tokenize_prompts(tok, _prompts(tok, 12))
    ids = sorted(ids, key=len)  # shortest first: the engine's own batches come longest first
    budget = 3 * len(ids[-1])
    widths = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        replies = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=4, max_rows=12, draft_budget=0,
                                                                     prefill_tokens=budget))
    finally:
        handle.remove()
    prefills = [shape for shape in widths if shape[1] > 1]  # decoding (no drafts) feeds one token a row
    assert prefills and all(rows * width <= budget for rows, width in prefills)
    assert len(replies) == len(ids)


def test_exact_argmax_decides_bf16_ties_in_float32():
    """Two tokens whose scores differ by less than bf16 can show at that size tie in bf16 logits; plain
    argmax hands the tie to the lower id, exact_argmax rescores them in float32 and picks the higher."""
    import torch

    from sdft.engine.decode import exact_argmax

    head = torch.nn.Linear(2, 10, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[3] = torch.tensor([15.0, 15.0])     # score 30.0
        head.weight[7] = torch.tensor([15.0, 15.0625])  # score 30.0625: bf16 steps are 0.125 there
        head.weight[5] = torch.tensor([10.0, 10.0])     # far below: never a candidate
    head = head.to(torch.bfloat16)
    hidden = torch.ones(1, 2, dtype=torch.bfloat16)
    with torch.inference_mode():
        logits = head(hidden)
        assert logits[0, 3] == logits[0, 7] and int(logits.argmax(-1)) == 3  # the tie, as bf16 rounds it
        assert exact_argmax(logits, hidden, head).tolist() == [7]
        # rows x positions, as a speculative step checks drafts; a row without a tie keeps plain argmax
        clear = torch.tensor([[1.0, -1.0]], dtype=torch.bfloat16)
        both = torch.stack([hidden, clear], dim=1)  # (1, 2 positions, 2)
        assert exact_argmax(head(both), both, head).tolist() == [[7, int(head(clear).argmax(-1))]]
        # float32 logits are exact already: plain argmax, whatever the hidden states say
        assert exact_argmax(logits.float(), hidden, head).tolist() == [3]
