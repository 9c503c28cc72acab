"""Chat rendering on the common chat-template styles: Llama-2 ([INST], <<SYS>> inside the first turn),
Llama-3 (header ids), ChatML (Qwen), Mistral (no system role: raises) and Gemma (no system role,
`model` as the assistant role). Each template is written in the style of the model family's own and set
on a byte-level tokenizer built here; distillation, training and evaluation run on rows with a system
prompt and chat history through tiny random models."""

from __future__ import annotations

import json

import pytest
import torch

from sdft.core.chat import render_chat, split_for_training, supports_system
from sdft.data.example import Example

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
LLAMA3 = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML = (  # Qwen2.5: a default system turn when the chat has none
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# style: (chat template, BOS, EOS: the token that ends a reply)
STYLES = {
    "llama2": (LLAMA2, "<s>", "</s>"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "chatml": (CHATML, "<|endoftext|>", "<|im_end|>"),
    "mistral": (MISTRAL, "<s>", "</s>"),
    "gemma": (GEMMA, "<bos>", "<end_of_turn>"),
}
SPECIALS = ["<pad>", "<s>", "</s>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]

# One row with a system prompt and history; its rendered training text is asserted for every style.
ROW = Example(id="r1", instruction="Add 2 and 3.", response="2 + 3 = 5. The answer is 5.", system="Be brief.",
              history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
TRAINING_TEXT = {
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Add 2 and 3. [/INST]"
              "| 2 + 3 = 5. The answer is 5. </s>",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3.<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n|2 + 3 = 5. The answer is 5.<|eot_id|>",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
              "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAdd 2 and 3.<|im_end|>\n"
              "<|im_start|>assistant\n|2 + 3 = 5. The answer is 5.<|im_end|>\n",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Add 2 and 3. [/INST]|2 + 3 = 5. The answer is 5.</s>",
    "gemma": "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
             "<start_of_turn>user\nAdd 2 and 3.<end_of_turn>\n<start_of_turn>model\n"
             "|2 + 3 = 5. The answer is 5.<end_of_turn>\n",
}


def make_tokenizer(style: str):
    """A byte-level tokenizer (every text round-trips exactly) with the style's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template, bos, eos = STYLES[style]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    core = Tokenizer(models.BPE({c: i for i, c in enumerate(sorted(alphabet))}, []))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token="<pad>",
                                  additional_special_tokens=[t for t in SPECIALS if t not in (bos, eos, "<pad>")])
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module", params=list(STYLES))
def styled_model(request, tmp_path_factory):
    """(style, model folder, model, tokenizer): a tiny random Llama saved with the style's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(request.param)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    root = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return request.param, str(root), model, tok


@pytest.mark.parametrize("style", list(STYLES))
def test_training_text_and_labels(style):
    from sdft.train.data import IGNORE, tokenize_example

    tok = make_tokenizer(style)
    prompt, completion = split_for_training(tok, ROW.messages(), ROW.response)
    assert f"{prompt}|{completion}" == TRAINING_TEXT[style]
    t = tokenize_example(tok, ROW, ROW.response, max_length=1024)
    n = t.labels.count(IGNORE)
    assert t.labels[:n] == [IGNORE] * n and IGNORE not in t.labels[n:]
    # Earlier assistant turns are context: only the final reply and its end-of-turn carry a loss.
    assert tok.decode(t.input_ids[:n]) == prompt
    assert tok.decode(t.labels[n:]) == completion
    assert prompt == render_chat(tok, ROW.messages())  # trained on exactly the prompt generation sees


def test_system_role_detected_per_template():
    found = {style: supports_system(make_tokenizer(style)) for style in STYLES}
    assert found == {"llama2": True, "llama3": True, "chatml": True, "mistral": False, "gemma": False}
    silent = make_tokenizer("chatml")  # a template that drops system turns without complaint
    silent.chat_template = ("{% for m in messages if m['role'] != 'system' %}<{{ m['role'] }}>{{ m['content'] }}"
                            "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    assert not supports_system(silent)
    assert render_chat(silent, ROW.messages()) == "<user>Be brief.\n\nHi<assistant>Hello!<user>Add 2 and 3.<assistant>"
    # Errors that have nothing to do with the system role are not taken for a missing one.
    broken = make_tokenizer("chatml")
    broken.chat_template = "{{ messages[0]['content'] | no_such_filter }}"
    with pytest.raises(Exception, match="no_such_filter"):
        render_chat(broken, ROW.messages())


def test_distill_prompt_shows_row_system_input_and_history():
    from sdft.distill.templates import get_template, render_distill_prompt

    ex = Example(id="m1", instruction="Add the numbers.", input="2 and 3", response="5", system="Be brief.",
                 history=ROW.history)
    gemma = render_distill_prompt(make_tokenizer("gemma"), get_template(None, "math"), ex)
    assert gemma == (
        "<bos><start_of_turn>user\nBe brief.\n\nYou are an expert in math. Below are a math question and its "
        "reference answer. Refer to the reference answer and write a response that appropriately answers the "
        "question.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nAdd the numbers.\n\n2 and 3\n\n5<end_of_turn>\n"
        "<start_of_turn>model\nGreat! Let's think step by step. "
    )
    chatml = render_distill_prompt(make_tokenizer("chatml"), get_template(None, "general"), ex)
    assert chatml.startswith("<|im_start|>system\nBe brief.\n\nBelow are an instruction that describes a task")
    assert "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n" in chatml


def test_distill_train_eval_on_system_and_history_rows(styled_model, tmp_path):
    """Each stage runs on every style: distillation and training on rows with a system prompt and
    history, the math suite (its own system prompt) and the gap suite on the distilled file."""
    from sdft.core.config import EvalConfig
    from sdft.data.load import load_examples
    from sdft.distill.stage import distill
    from sdft.core.config import DistillConfig
    from sdft.evaluate.suites import run_suites
    from sdft.core.config import ModelSpec
    from sdft.core.layout import distilled_columns
    from sdft.train.trainer import train
    from sdft.core.config import TrainConfig

    style, path, model, tok = styled_model
    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"What is {a} + {b}?", "input": "Show the sum.", "output": f"{a + b}",
             "system": "Answer with a number.",
             "history": [{"role": "user", "content": "Ready?"}, {"role": "assistant", "content": "Yes."}]}
            for a, b in [(1, 2), (3, 4)]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(str(data))
    assert examples[0].history and examples[0].system == "Answer with a number."

    out = tmp_path / "distilled.jsonl"
    summary = distill(model, tok, path, examples, "math", out,
                      DistillConfig(batch_size=2, max_new_tokens=4, max_rows=2), progress=False)
    assert summary["rows"] == 2
    distilled = load_examples(str(out), distilled_columns("response"))
    assert [(e.system, e.history, e.input) for e in distilled] == [(e.system, e.history, e.input) for e in examples]

    result = train(path, distilled, tmp_path / "train",
                   TrainConfig(max_steps=1, batch_size=2, max_length=256, save_steps=1000, target_modules=["q_proj"]),
                   progress=False)
    assert result["rows"] == 2 and result["steps"] == 1

    cfg = EvalConfig(suites=["math", "gap"], limit=2, batch_size=2, max_new_tokens=4)
    metrics = run_suites(ModelSpec(path), None, cfg, tmp_path / "eval", train_data=str(out), model=model,
                         tokenizer=tok, progress=False)
    assert {m["name"] for m in metrics["gap"]} >= {"nll_original"}
    assert metrics["math"][0]["n"] == 2
