"""Distillation prompts: the seed model is shown the task and the reference answer and asked to answer
in its own words. Every template is rendered through the model's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sdft.data.example import Example

_FIRST = "Below are an instruction that describes a task along with a reference answer."


@dataclass(frozen=True)
class DistillTemplate:
    name: str
    system: str | None
    user: str  # format string over {instruction}, {input}, {input_section}, {reference}
    assistant_prefix: str = ""  # opens the assistant turn; steers the reply, not part of it

    def user_text(self, example: Example) -> str:
        # "### Input:" appears only when an example has one, so no prompt carries an empty section.
        section = f"### Input:\n{example.input}\n\n" if example.input.strip() else ""
        return self.user.format(
            instruction=example.instruction,
            input=example.input,
            input_section=section,
            reference=example.response,
        )


_SECTIONS = "### Instruction:\n{instruction}\n\n{input_section}### Reference Answer:\n{reference}"

TEMPLATES: dict[str, DistillTemplate] = {
    "using": DistillTemplate(
        "using",
        f"{_FIRST} Using the reference answer as a guide, write your own response.",
        _SECTIONS,
    ),
    "refer": DistillTemplate(
        "refer",
        f"{_FIRST} Refer to the reference answer and write your own response.",
        _SECTIONS,
    ),
    "math": DistillTemplate(
        "math",
        "You are an expert in math. Below are a math question and its reference answer. Refer to the "
        "reference answer and write a response that appropriately answers the question.",
        "{instruction}\n\n{reference}",
        assistant_prefix="Great! Let's think step by step. ",
    ),
}

# The paper used "using" for general instruction data and "refer" for function calling and code.
TASK_TEMPLATE = {"math": "math", "function": "refer", "code": "refer", "general": "using"}
TASKS = tuple(TASK_TEMPLATE)


def get_template(name_or_file: str | None, task: str) -> DistillTemplate:
    """A built-in template by name, a user file, or the task's default.

    A user file is either YAML with keys `system`, `user`, `assistant_prefix`, or plain text used as the
    user turn; both may use {instruction}, {input}, {input_section} and {reference}.
    """
    if task not in TASK_TEMPLATE:
        raise ValueError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if not name_or_file:
        return TEMPLATES[TASK_TEMPLATE[task]]
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise ValueError(f"template '{name_or_file}' is neither a built-in ({', '.join(TEMPLATES)}) nor a file")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        spec = yaml.safe_load(text) or {}
        unknown = set(spec) - {"system", "user", "assistant_prefix"}
        if unknown or "user" not in spec:
            raise ValueError(f"{path}: a template needs a 'user' key and only system/user/assistant_prefix")
        template = DistillTemplate(path.stem, spec.get("system"), spec["user"], spec.get("assistant_prefix") or "")
    else:
        template = DistillTemplate(path.stem, None, text)
    if "{reference}" not in template.user:
        raise ValueError(f"{path}: the template's user turn must contain {{reference}}")
    try:
        template.user.format(instruction="", input="", input_section="", reference="")
    except (KeyError, IndexError) as e:
        raise ValueError(f"{path}: unknown placeholder {e}; use {{instruction}}, {{input}}, {{input_section}}, {{reference}}") from e
    return template


def render_chat(tokenizer, messages: list[dict], assistant_prefix: str = "") -> str:
    """Render messages with the model's chat template, ready for the assistant's reply.

    Some chat templates reject a system turn; then the system text is folded into the first user turn.
    """
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:
        if not messages or messages[0]["role"] != "system":
            raise
        system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        text = tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)
    return text + assistant_prefix


def render_distill_prompt(tokenizer, template: DistillTemplate, example: Example) -> str:
    messages = []
    if template.system:
        messages.append({"role": "system", "content": template.system})
    messages.extend(example.history)
    messages.append({"role": "user", "content": template.user_text(example)})
    return render_chat(tokenizer, messages, template.assistant_prefix)
