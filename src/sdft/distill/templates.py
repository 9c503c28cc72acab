"""Distillation prompts: the seed model is shown the task and the reference answer and asked to answer
in its own words. Every template is rendered through the model's own chat template (sdft.core.chat).

The example's own system prompt and chat history are part of the task, so the prompt carries them as
training does: history as earlier turns, and the system prompt as the system turn, followed by the
template's instructions after a blank line (the example's persona and rules first, then what to do
with the reference). Templates without a system role get that text folded into the first user turn.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from sdft.core.chat import chat_messages, render_chat
from sdft.data.example import Example
from sdft.core.errors import InputError

_FIRST = "Below are an instruction that describes a task along with a reference answer."


@dataclass(frozen=True)
class DistillTemplate:
    name: str
    system: str | None
    user: str  # format string over PLACEHOLDERS
    assistant_prefix: str = ""  # opens the assistant turn; steers the reply, not part of it

    def user_text(self, example: Example) -> str:
        # "### Input:" appears only when an example has one, so no prompt carries an empty section.
        section = f"### Input:\n{example.input}\n\n" if example.input.strip() else ""
        return self.user.format(
            instruction=example.instruction,
            input=example.input,
            input_section=section,
            prompt=example.prompt,
            reference=example.response,
        )

    def system_text(self, example: Example) -> str | None:
        """The example's own system prompt, then the template's instructions (either may be absent)."""
        parts = [t for t in (example.system, self.system) if t and t.strip()]
        return "\n\n".join(parts) or None


# {prompt} is the user turn exactly as training shows it: the instruction, then the input if any.
PLACEHOLDERS = ("instruction", "input", "input_section", "prompt", "reference")


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
        "{prompt}\n\n{reference}",
        assistant_prefix="Great! Let's think step by step. ",
    ),
}

# The paper used "using" for general instruction data and "refer" for function calling and code.
TASK_TEMPLATE = {"math": "math", "function": "refer", "code": "refer", "general": "using"}
TASKS = tuple(TASK_TEMPLATE)


def get_template(name_or_file: str | None, task: str) -> DistillTemplate:
    """A built-in template by name, a user file, or the task's default.

    A user file is either YAML with keys `system`, `user`, `assistant_prefix`, or plain text used as the
    user turn; both may use {instruction}, {input}, {input_section}, {prompt} and {reference}.
    """
    if task not in TASK_TEMPLATE:
        raise InputError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if not name_or_file:
        return TEMPLATES[TASK_TEMPLATE[task]]
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise InputError(f"template '{name_or_file}' is neither a built-in ({', '.join(TEMPLATES)}) nor a file")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        spec = yaml.safe_load(text) or {}
        unknown = set(spec) - {"system", "user", "assistant_prefix"}
        if unknown or "user" not in spec:
            raise InputError(f"{path}: a template needs a 'user' key and only system/user/assistant_prefix")
        template = DistillTemplate(path.stem, spec.get("system"), spec["user"], spec.get("assistant_prefix") or "")
    else:
        template = DistillTemplate(path.stem, None, text)
    if "{reference}" not in template.user:
        raise InputError(f"{path}: the template's user turn must contain {{reference}}")
    _check_placeholders(path, template.user)
    return template


def _check_placeholders(path: Path, user: str) -> None:
    """Refuse a user turn that rendering could not fill, before any example is rendered with it."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(user) if field is not None]
    except ValueError as e:  # a lone brace
        raise InputError(f"{path}: {e}; write a literal brace as {{{{ or }}}}") from e
    unknown = [field for field in fields if field not in PLACEHOLDERS]
    if unknown:
        allowed = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        raise InputError(f"{path}: unknown placeholder {{{unknown[0]}}}; use {allowed}")
    try:  # what the names alone don't show, e.g. a bad conversion such as {prompt!z}
        user.format(**dict.fromkeys(PLACEHOLDERS, ""))
    except ValueError as e:
        raise InputError(f"{path}: the template's user turn does not render: {e}") from e


def render_distill_prompt(tokenizer, template: DistillTemplate, example: Example) -> str:
    """The distillation prompt of one example through the model's chat template: system turn, the
    example's history, the template's user turn, and the template's assistant prefix."""
    messages = chat_messages(template.user_text(example), template.system_text(example), example.history)
    return render_chat(tokenizer, messages, template.assistant_prefix)
