"""Decoding a batch in forked single-threaded processes (sdft.engine.workers)."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sdft.engine.workers as gw
from sdft.core.chat import render_chat
from sdft.core.errors import InputError
from sdft.engine.decode import DecodeConfig, decode_token_ids, tokenize_prompts

pytestmark = pytest.mark.skipif(not gw.fork_available(), reason="decoding workers are forked (Linux)")


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def _ids(tok, n):
    questions = [f"Question {i}: " + "tell me more " * (i % 7) for i in range(n)]
    return tokenize_prompts(tok, [render_chat(tok, [{"role": "user", "content": q}]) for q in questions])


def test_workers_give_each_prompt_its_own_reply(model_tok, tmp_path, monkeypatch):
    """Two workers decode the batch (in processes other than this one, one thread each), and every
    prompt gets back the reply one process gives it; progress is reported here, once per prompt."""
    model, tok = model_tok
    ids = _ids(tok, 20)
    one = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=10, max_rows=4, workers=1))
    log = tmp_path / "forwards"
    forward = model.forward

    def logged(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {torch.get_num_threads()}\n")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", logged)
    done = []
    two = decode_token_ids(model, tok, ids, DecodeConfig(max_new_tokens=10, max_rows=4, workers=2),
                           on_done=lambda i, n: done.append((i, n)))
    assert two == one
    assert len({r[0] for r in one}) > 3  # distinct replies: a mix-up of prompts would show
    calls = [line.split() for line in log.read_text().splitlines()]
    assert len({pid for pid, _ in calls}) == 2 and str(os.getpid()) not in {pid for pid, _ in calls}
    assert {threads for _, threads in calls} == {"1"}
    assert sorted(i for i, _ in done) == list(range(len(ids)))
    assert all(n == len(two[i]) for i, n in done)


def test_sampled_and_bf16_replies_do_not_depend_on_the_workers(model_tok):
    """Each row samples from its own generator (seeded by its prompt), so a row's tokens do not depend
    on which worker decodes it; a bf16 model decodes in workers too."""
    import copy

    model, tok = model_tok
    ids = _ids(tok, 16)
    sampled = DecodeConfig(max_new_tokens=8, max_rows=4, temperature=1.0, top_k=20, seed=3)
    assert (decode_token_ids(model, tok, ids, DecodeConfig(**{**sampled.__dict__, "workers": 2}))
            == decode_token_ids(model, tok, ids, DecodeConfig(**{**sampled.__dict__, "workers": 1})))
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    out = decode_token_ids(bf16, tok, ids, DecodeConfig(max_new_tokens=8, max_rows=4, workers=2))
    assert [len(r) for r in out] == [8] * len(ids)


def test_a_failing_worker_fails_the_call(model_tok, monkeypatch):
    """An exception in a worker comes back with its traceback; a worker that dies outright (killed,
    out of memory) is noticed instead of waited for."""
    model, tok = model_tok
    ids = _ids(tok, 16)
    cfg = DecodeConfig(max_new_tokens=4, workers=2)

    def broken(*args, **kwargs):
        raise ValueError("a broken forward")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.raises(RuntimeError, match="(?s)decoding worker . failed.*ValueError: a broken forward"):
        decode_token_ids(model, tok, ids, cfg)
    monkeypatch.setattr(model, "forward", lambda *a, **k: os._exit(9))
    with pytest.raises(RuntimeError, match="exited with code 9"):
        decode_token_ids(model, tok, ids, cfg)


def test_how_many_workers(model_tok, monkeypatch):
    model, _ = model_tok
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert gw.decode_workers(model, 0, 128) == 2  # auto: one per thread on a 2-core CPU
    assert gw.decode_workers(model, 0, 95) == 1  # too few prompts to fill two workers' rows
    assert gw.decode_workers(model, 1, 128) == 1
    assert gw.decode_workers(model, 3, 16) == 3  # asked for: as many as asked, more than the threads too
    assert gw.decode_workers(model, 3, 2) == 2  # but never more than there are prompts
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert gw.decode_workers(model, 0, 128) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert gw.decode_workers(model, 0, 512) == 1  # many threads: one process uses them
    with pytest.raises(InputError, match="workers must be 0"):
        gw.decode_workers(model, -1, 64)
    on_meta = torch.nn.Linear(2, 2, device="meta")
    assert gw.decode_workers(on_meta, 0, 128) == 1  # not a CPU model: never forked
    with pytest.raises(InputError, match="need a CPU model"):
        gw.decode_workers(on_meta, 2, 64)


def test_shares_deal_prompts_out_in_turn():
    assert gw.shares(7, 2) == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(i for s in gw.shares(10, 3) for i in s) == list(range(10))
