"""Distillation prompts rendered through a real chat template."""

import pytest
from transformers import AutoTokenizer

from sdft.data.example import Example
from sdft.core.chat import render_chat
from sdft.distill.templates import TEMPLATES, get_template, render_distill_prompt


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_using_template_through_chat_template(tok):
    ex = Example(id="1", instruction="Name a colour.", response="Blue is a colour.")
    text = render_distill_prompt(tok, get_template(None, "general"), ex)
    assert text == (
        "<|im_start|>system\nBelow are an instruction that describes a task along with a reference answer. "
        "Using the reference answer as a guide, write your own response.<|im_end|>\n"
        "<|im_start|>user\n### Instruction:\nName a colour.\n\n### Reference Answer:\nBlue is a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_input_section_only_when_present(tok):
    with_input = Example(id="1", instruction="Summarise.", input="A long text.", response="Short.")
    text = render_distill_prompt(tok, TEMPLATES["refer"], with_input)
    assert "### Input:\nA long text.\n\n### Reference Answer:" in text
    assert "Refer to the reference answer and write your own response." in text
    without = Example(id="2", instruction="Summarise.", response="Short.")
    assert "### Input:" not in render_distill_prompt(tok, TEMPLATES["refer"], without)


def test_math_template_opens_assistant_turn(tok):
    ex = Example(id="1", instruction="What is 2+2?", response="2+2=4. The answer is 4.")
    text = render_distill_prompt(tok, get_template(None, "math"), ex)
    assert text.endswith("<|im_start|>assistant\nGreat! Let's think step by step. ")
    assert "<|im_start|>user\nWhat is 2+2?\n\n2+2=4. The answer is 4.<|im_end|>" in text
    assert text.startswith("<|im_start|>system\nYou are an expert in math.")


def test_task_defaults():
    assert get_template(None, "function").name == "refer"
    assert get_template(None, "code").name == "refer"
    assert get_template(None, "general").name == "using"
    with pytest.raises(ValueError, match="unknown task"):
        get_template(None, "poetry")


def test_user_template_files(tmp_path, tok):
    plain = tmp_path / "mine.txt"
    plain.write_text("Q: {instruction}\nA (reference): {reference}\nYour answer:")
    ex = Example(id="1", instruction="Hi?", response="Hello.")
    assert "<|im_start|>user\nQ: Hi?\nA (reference): Hello.\nYour answer:<|im_end|>" in render_distill_prompt(
        tok, get_template(str(plain), "general"), ex)
    spec = tmp_path / "mine.yaml"
    spec.write_text("system: Be brief.\nuser: '{instruction} / {reference}'\nassistant_prefix: 'Sure. '\n")
    text = render_distill_prompt(tok, get_template(str(spec), "general"), ex)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("Sure. ")
    bad = tmp_path / "bad.txt"
    bad.write_text("{instruction} {answer} {reference}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        get_template(str(bad), "general")
    noref = tmp_path / "noref.txt"
    noref.write_text("{instruction}")
    with pytest.raises(ValueError, match="reference"):
        get_template(str(noref), "general")


def test_user_template_file_with_prompt_placeholder(tmp_path, tok):
    # {prompt} is one of PLACEHOLDERS and the built-in math template uses it, so a user file may too.
    mine = tmp_path / "mine.txt"
    mine.write_text("Task:\n{prompt}\n\nReference:\n{reference}")
    ex = Example(id="1", instruction="Add the numbers.", input="2 and 3", response="5")
    text = render_distill_prompt(tok, get_template(str(mine), "general"), ex)
    assert "<|im_start|>user\nTask:\nAdd the numbers.\n\n2 and 3\n\nReference:\n5<|im_end|>" in text


def test_user_template_file_unknown_placeholder_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: '{prompt} {question} {reference}'\n")
    with pytest.raises(ValueError, match=r"unknown placeholder \{question\}; use .*\{prompt\}"):
        get_template(str(bad), "general")
    lone = tmp_path / "lone.txt"
    lone.write_text("{prompt} { {reference}")
    with pytest.raises(ValueError, match="literal brace"):
        get_template(str(lone), "general")


def test_system_folded_when_template_rejects_it(tok):
    strict = AutoTokenizer.from_pretrained(tok.name_or_path)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    text = render_chat(strict, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "[user]S\n\nU[assistant]"


def test_math_template_shows_input_and_row_system(tok):
    ex = Example(id="1", instruction="Add the numbers.", input="2 and 3", response="5", system="Be brief.")
    text = render_distill_prompt(tok, get_template(None, "math"), ex)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou are an expert in math.")
    assert "<|im_start|>user\nAdd the numbers.\n\n2 and 3\n\n5<|im_end|>" in text
