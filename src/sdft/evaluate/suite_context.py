"""What every evaluation suite gets (the model, settings, its output folder) and what it hands back.

A suite is a plain function `run(ctx) -> SuiteResult`; `sdft.evaluate.suites` writes the result to
disk. Generation goes through `ctx.generate`, which saves replies batch by batch so a suite that is
killed halfway resumes instead of starting over. A generating suite also names its prompts in a
`conversations(ctx)` function, so that `sdft.evaluate.suites` can decode the prompts of several suites
together beforehand (`decoded`); `ctx.generate` then hands back those replies.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sdft.core.chat import chat_messages, render_chat
from sdft.core.config import EvalConfig
from sdft.evaluate.stats import Metric, mean_metric
from sdft.core.config import ModelSpec


@dataclass
class SuiteResult:
    metrics: list[Metric]
    rows: list[dict]  # one per evaluated item, written to predictions.jsonl
    notes: list[dict] = field(default_factory=list)  # metrics.json entries without a number (e.g. a skipped judge)


@dataclass
class SuiteContext:
    name: str
    model: Any
    tokenizer: Any
    cfg: EvalConfig
    spec: ModelSpec
    adapter: str | None
    suite_dir: Path
    train_data: str | None = None
    seed_dir: Path | None = None
    force: bool = False
    progress: bool = True
    parts: list[Path] = field(default_factory=list)
    decoded: dict[str, str] = field(default_factory=dict)  # rendered prompt -> reply, decoded with other suites

    @property
    def generator(self) -> str:
        """A readable name of the evaluated model, e.g. 'default' or 'default+sdft/seed-42'."""
        if not self.adapter:
            return self.spec.name
        path = Path(self.adapter)
        # Run folders keep adapters at <method>/seed-N/adapter; the folder names say more than 'adapter'.
        label = "/".join(path.parts[-3:-1]) if path.name == "adapter" and len(path.parts) >= 3 else path.name
        return f"{self.spec.name}+{label}"

    def generate(self, conversations: list[list[dict]], part: str = "replies") -> list[str]:
        """Greedy replies to chat conversations, resumable under `<suite_dir>/<part>.parts/`."""
        from sdft.evaluate.replies import eval_generation, generation_key
        from sdft.engine.resumable import generate_resumable

        prompts = [render_chat(self.tokenizer, messages) for messages in conversations]
        if not prompts:
            return []
        if all(p in self.decoded for p in prompts):
            return [self.decoded[p] for p in prompts]
        gen = eval_generation(self.cfg.max_new_tokens, self.cfg.batch_size)
        key = generation_key(self.spec, self.adapter, prompts, gen, self.model)
        parts = self.suite_dir / f"{part}.parts"
        self.parts.append(parts)
        return generate_resumable(self.model, self.tokenizer, prompts, gen, parts, key, force=self.force,
                                  desc=self.name, progress=self.progress)

    def cleanup(self) -> None:
        """Drop saved partial replies once the suite's files are written."""
        for parts in self.parts:
            shutil.rmtree(parts, ignore_errors=True)


def user_turn(text: str, system: str | None = None) -> list[dict]:
    return chat_messages(text, system)


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: per-row values that could not be computed are written as null."""
    return value if value is not None and math.isfinite(value) else None


def mean_of_finite(name: str, values: Iterable[float | None]) -> Metric | None:
    """mean_metric over the values that exist (None when none do, e.g. every reply was empty)."""
    x = finite(values)
    return mean_metric(name, x) if x else None


def note(name: str, text: str) -> dict:
    """A metrics.json entry for a metric that was not computed, saying why."""
    return {"name": name, "value": None, "n": 0, "low": None, "high": None, "note": text}
