"""Row status (accepted / accepted_unverified / rejected), truncated replies, and where the counts show."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from sdft.cli import _print_summary
from sdft.data.example import Example
from sdft.distill.candidates import hit_token_limit
from sdft.distill.stage import build_rows, distill, summarize
from sdft.core.config import DistillConfig
from sdft.distill.templates import TEMPLATES
from sdft.report.build import distill_section

REF = "48/2 = 24 and 48 + 24 = 72.\nThe answer is 72."


def _rows():
    examples = [
        Example(id="checked", instruction="q", response=REF, row=1),
        Example(id="no-answer-in-reference", instruction="q", response="Sell them all.", row=2),
        Example(id="wrong-work", instruction="q", response=REF, row=3),
        Example(id="cut-off", instruction="q", response=REF, row=4),
        Example(id="loop", instruction="q", response=REF, row=5),
    ]
    replies = [
        "Half of 48 is 48/2 = 24, and 48 + 24 = 72. The answer is 72.",
        "She sells 72. The answer is 72.",
        "Half of 48 is 48/2 = 25, and 48 + 24 = 72. The answer is 72.",
        "Half of 48 is 48/2 = 24, and 48 + 24 = 72. The answer is 72.",
        "Half of 48 is 24 and so on.\n" * 4 + "The answer is 72.",
    ]
    return examples, build_rows(examples, replies, "math", TEMPLATES["math"], too_long=set(), truncated={3})


def test_status_on_every_row_and_counted():
    examples, rows = _rows()
    assert [r["status"] for r in rows] == ["accepted", "accepted_unverified", "rejected", "rejected", "rejected"]
    assert [r["reject_reason"] for r in rows] == [None, None, "wrong_step", "truncated", "repetition"]
    # accepted_unverified rows do train on the rewrite, like accepted ones
    assert [r["accepted"] for r in rows] == [True, True, False, False, False]
    assert rows[1]["response"] == rows[1]["distilled"] and rows[2]["response"] == examples[2].response

    s = summarize(rows, "math")
    assert (s["accepted"], s["accepted_unverified"]) == (2, 1)
    assert s["reject_reasons"] == {"wrong_step": 1, "truncated": 1, "repetition": 1}


def test_unverified_count_printed_and_reported(capsys):
    _, rows = _rows()
    s = summarize(rows, "math")
    _print_summary(s, "out.jsonl")
    printed = capsys.readouterr().out
    assert "accepted 2/5 (40.0%; 1 of them unverified" in printed
    assert "wrong_step: 1" in printed

    text = json.dumps([getattr(b, "__dict__", b) for b in distill_section(s).blocks], default=str)
    assert "1 of the accepted rewrites are unverified" in text

    none_unverified = summarize(rows[:1], "math")
    _print_summary(none_unverified, "out.jsonl")
    assert "unverified" not in capsys.readouterr().out
    assert "unverified" not in json.dumps([getattr(b, "__dict__", b) for b in distill_section(none_unverified).blocks],
                                          default=str)


def test_hit_token_limit(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = "Natalia sold forty-eight clips in April and half as many in May, so seventy-two in all."
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert hit_token_limit(tok, [text, None, ""], n) == {0}
    assert hit_token_limit(tok, [text], n + 20) == set()
    assert hit_token_limit(tok, [None], 4) == set()


def test_distill_rejects_replies_cut_at_the_limit(tiny_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    examples = [Example(id=str(i), instruction=f"Q{i}: what is {i} + {i}?", response=f"The answer is {2 * i}.",
                        row=i + 1) for i in range(4)]
    cfg = DistillConfig(batch_size=4, max_new_tokens=5)
    distill(model, tok, tiny_model, examples, "general", tmp_path / "d.jsonl", cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    for r in rows:
        cut = r["distilled"] and len(tok(r["distilled"], add_special_tokens=False)["input_ids"]) >= 4
        assert r["status"] in ("accepted", "rejected")  # general: nothing to verify against
        if cut:
            assert r["status"] == "rejected" and r["reject_reason"] in ("truncated", "repetition"), r
    assert any(r["reject_reason"] == "truncated" for r in rows)  # a random model rarely stops on its own
