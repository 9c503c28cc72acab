"""Distillation stage: fallback to the original, provenance on every row, summary, reuse of finished output."""

import dataclasses
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdft.data.example import Example
from sdft.distill.stage import build_rows, distill, summarize
from sdft.core.config import DistillConfig
from sdft.distill.templates import TEMPLATES
from sdft.core.runstate import StaleStateError


def test_fallback_and_provenance():
    examples = [
        Example(id="a", instruction="2+2?", response="2+2=4. The answer is 4.", row=1),
        Example(id="b", instruction="3+3?", response="3+3=6. The answer is 6.", row=2),
        Example(id="c", instruction="5+5?", response="5+5=10. The answer is 10.", row=3),
        Example(id="d", instruction="1+1?", response="1+1=2. The answer is 2.", row=4),
    ]
    replies = [
        "Adding two and two gives 4. The answer is 4.",  # same answer: kept
        "3 plus 3 is 7. The answer is 7.",  # wrong answer: original kept
        "As the reference answer says, 10.",  # talks about the prompt: original kept
        None,  # too long for the model: never generated
    ]
    rows = build_rows(examples, replies, "math", TEMPLATES["math"], too_long={3})
    assert [r["accepted"] for r in rows] == [True, False, False, False]
    assert [r["reject_reason"] for r in rows] == [None, "answer_mismatch", "ban_phrase", "too_long"]
    assert rows[0]["response"] == replies[0]
    assert [r["response"] for r in rows[1:]] == [e.response for e in examples[1:]]
    for r, e, reply in zip(rows, examples, replies):
        assert (r["id"], r["row"], r["original"], r["distilled"], r["template"]) == (e.id, e.row, e.response, reply, "math")
    s = summarize(rows, "math")
    assert s["accepted"] == 1 and s["accepted_pct"] == 25.0
    assert s["reject_reasons"] == {"answer_mismatch": 1, "ban_phrase": 1, "too_long": 1}


def test_distill_with_a_model_writes_every_row_in_order(tiny_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    examples = [Example(id=str(i), instruction=f"Q{i}: " + "more " * (i % 4), response=f"The answer is {i}.", row=i + 1)
                for i in range(7)]
    out = tmp_path / "d.jsonl"
    cfg = DistillConfig(batch_size=3, max_new_tokens=6)
    summary = distill(model, tok, tiny_model, examples, "math", out, cfg, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [e.id for e in examples]
    assert summary["rows"] == 7 and summary["accepted"] == sum(r["accepted"] for r in rows)
    for r in rows:  # a random model's reply carries no answer: every row falls back
        assert r["response"] == (r["distilled"] if r["accepted"] else r["original"])
    assert not (tmp_path / "d.jsonl.parts").exists()

    # finished output is reused as is; other settings on the same output are refused
    assert distill(model, tok, tiny_model, examples, "math", out, cfg, progress=False) == summary
    with pytest.raises(StaleStateError, match="--force"):
        distill(model, tok, tiny_model, examples, "math", out, DistillConfig(batch_size=3, max_new_tokens=7),
                progress=False)

    # rows whose prompt plus reply can't fit the context are not generated and keep the original
    short = distill(model, tok, tiny_model, examples, "math", tmp_path / "ctx.jsonl",
                    dataclasses.replace(cfg, max_context=60), progress=False)
    assert short["reject_reasons"].get("too_long", 0) >= 1
