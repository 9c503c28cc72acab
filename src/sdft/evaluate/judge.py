"""Optional pairwise judge: an LLM behind any OpenAI-compatible endpoint picks the better of two replies.

Configured only through the environment, so no key ever lands in a config file or run folder:
SDFT_JUDGE_URL (e.g. https://host/v1), SDFT_JUDGE_MODEL and optionally SDFT_JUDGE_API_KEY. Plain
urllib keeps it free of extra dependencies. Which reply is shown first is randomized with a fixed seed
(judges favour one position), so a rerun asks the same questions.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

JUDGE_SYSTEM = "You are a careful, impartial judge of AI assistant replies."
JUDGE_TEMPLATE = (
    "Which response follows the user's instruction better: more helpful, accurate and relevant?\n"
    "Answer with a single letter: A or B.\n\n"
    "[Instruction]\n{instruction}\n\n[Response A]\n{a}\n\n[Response B]\n{b}"
)


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or answered something unusable."""


@dataclass
class JudgeConfig:
    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 2

    @classmethod
    def from_env(cls) -> JudgeConfig | None:
        url, model = os.environ.get("SDFT_JUDGE_URL"), os.environ.get("SDFT_JUDGE_MODEL")
        if not url or not model:
            return None
        return cls(url=url, model=model, api_key=os.environ.get("SDFT_JUDGE_API_KEY") or None)


def chat_completion(cfg: JudgeConfig, messages: list[dict], max_tokens: int = 8) -> str:
    """POST {url}/chat/completions and return the first choice's text; retries with backoff."""
    body = json.dumps({"model": cfg.model, "messages": messages, "temperature": 0,
                       "max_tokens": max_tokens}).encode()
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    url = cfg.url.rstrip("/") + "/chat/completions"
    last: Exception | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
            return payload["choices"][0]["message"]["content"] or ""
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError,
                KeyError, IndexError, TypeError) as e:
            last = e
    raise JudgeError(f"judge at {url} failed after {cfg.retries + 1} attempts: {last}")


# The letter must be upper case: a lower-case "a" at the start is an article, not a verdict.
_LEADING_VERDICT = re.compile(r"^[\s*_`'\"(\[]*(?:(?i:response|assistant|output)\s*)?([AB])\b")
_NAMED_VERDICT = re.compile(r"\b(?i:response|assistant|output)\s*\(?([AB])\b")


def parse_verdict(text: str) -> str | None:
    """'A' or 'B' from the judge's answer ('A', '**B**', 'Response A is better.'), else None."""
    m = _LEADING_VERDICT.match(text) or _NAMED_VERDICT.search(text)
    return m.group(1) if m else None


def judge_pair(cfg: JudgeConfig, instruction: str, a: str, b: str) -> str | None:
    prompt = JUDGE_TEMPLATE.format(instruction=instruction, a=a, b=b)
    answer = chat_completion(cfg, [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}])
    return parse_verdict(answer)


def compare_to_seed(cfg: JudgeConfig, instructions: list[str], outputs: list[str], seed_outputs: list[str],
                    seed: int = 0) -> list[dict]:
    """Per item: which position the model's reply had, the verdict, and its score.

    score: 1 the model's reply won, 0 the seed's won, 0.5 identical replies (not sent to the judge),
    None when the verdict could not be read.
    """
    rng = random.Random(seed)
    rows = []
    for instruction, ours, theirs in zip(instructions, outputs, seed_outputs, strict=True):
        model_first = rng.random() < 0.5  # drawn for every item, so the order doesn't depend on skips
        if ours.strip() == theirs.strip():
            rows.append({"model_position": None, "verdict": None, "score": 0.5})
            continue
        a, b = (ours, theirs) if model_first else (theirs, ours)
        verdict = judge_pair(cfg, instruction, a, b)
        mine = "A" if model_first else "B"
        score = None if verdict is None else float(verdict == mine)
        rows.append({"model_position": mine, "verdict": verdict, "score": score})
    return rows
