"""The one place chats are rendered with a model's chat template: distillation prompts, training
text, generation prompts and likelihood scoring all go through here, so a model sees the same prompt
in every stage.

Messages are plain {"role", "content"} dicts with roles system / user / assistant (templates that name
the assistant differently, e.g. Gemma's `model`, map it themselves). Handled here:
  - system prompts on templates without a system role (Gemma, early Mistral): the system text is put
    in front of the first user turn, separated by a blank line. Whether a template has a system role
    is found once per template by rendering a probe system turn (see `supports_system`);
  - history: earlier user/assistant turns go before the final user turn and are prompt, never target;
  - generation prompts, optionally with text that opens the assistant turn (`assistant_prefix`);
  - the (prompt, completion) split used for response-only training targets.
"""

from __future__ import annotations

from typing import Iterable

_PROBE = "sdft-system-probe-7f3a"
_SYSTEM_ROLE: dict[str, bool] = {}  # chat template text -> whether it renders a system turn


def chat_messages(user: str, system: str | None = None, history: Iterable[dict] = ()) -> list[dict]:
    """A prompt as chat messages: optional system turn, earlier turns, then the user turn."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    return messages + [{"role": "user", "content": user}]


def _template_key(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else repr(template)


def supports_system(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system turn.

    Decided once per template: a probe system turn is rendered; a template without a system role
    either raises a TemplateError (Gemma, early Mistral: `raise_exception(...)`) or drops the text.
    Any other error (no chat template at all, a broken one) is not about the system role and propagates.
    """
    key = _template_key(tokenizer)
    if key not in _SYSTEM_ROLE:
        from jinja2.exceptions import TemplateError

        probe = [{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}]
        try:
            text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
            _SYSTEM_ROLE[key] = _PROBE in text
        except TemplateError:
            _SYSTEM_ROLE[key] = False
    return _SYSTEM_ROLE[key]


def fold_system(tokenizer, messages: list[dict]) -> list[dict]:
    """The messages as the template can take them: a leading system turn is moved into the first user
    turn when the template has no system role; otherwise the messages are returned unchanged."""
    if not messages or messages[0]["role"] != "system" or supports_system(tokenizer):
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    first_user = next((m for m in rest if m["role"] == "user"), None)
    if first_user is None:
        raise ValueError("a chat needs a user turn to carry the system prompt of a template without a system role")
    first_user["content"] = f"{system}\n\n{first_user['content']}"
    return rest


def render_chat(tokenizer, messages: list[dict], assistant_prefix: str = "") -> str:
    """The prompt text for the assistant's next reply (`assistant_prefix` opens that reply)."""
    text = tokenizer.apply_chat_template(fold_system(tokenizer, messages), tokenize=False,
                                         add_generation_prompt=True)
    return text + assistant_prefix


def split_for_training(tokenizer, messages: list[dict], response: str) -> tuple[str, str]:
    """(prompt, completion) texts for training on `response` as the reply to `messages`.

    The prompt is exactly the generation prompt (what the model sees when it answers), history
    included; the completion is the reply closed the way the template closes an assistant turn (end of
    turn marker / EOS), so the model learns to stop. Only the completion is a training target.
    """
    prompt = render_chat(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        fold_system(tokenizer, messages) + [{"role": "assistant", "content": response}], tokenize=False)
    if full.startswith(prompt):
        return prompt, full[len(prompt):]
    # A template that renders the last turn differently once a reply follows (e.g. one that strips
    # reasoning from it): keep the generation prompt and close the reply with EOS.
    return prompt, response + (tokenizer.eos_token or "")
