"""What each number an evaluation suite reports means: the declarations the report reads.

Each `suite_*.py` module declares its metrics once, in a `METRICS` tuple of `MetricSpec`s, and
`sdft.evaluate.suites.metric_spec(suite, name)` finds the one for a metrics.json entry. The report's
table (its headings, units, which value is bold), its figures and its verdict read nothing else, so a
new metric is described in one place, next to the code that computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

# What the fine-tuning is meant to teach; what it may break on the way; or neither (figures that
# describe the training data rather than a skill).
ROLES = ("task", "forgetting", "other")


@dataclass(frozen=True)
class Verdict:
    """How the report's verdict line reads when it compares two models on a metric prompt by prompt."""

    label: str  # how the line names the difference, e.g. "refusal rate"
    better: str  # "{m} ... than {b}": the method did better than the baseline
    worse: str  # the same when it did worse
    about: str  # what was compared, for "no difference detected in ..."


@dataclass(frozen=True)
class MetricSpec:
    """One metric a suite reports in metrics.json."""

    name: str  # as in metrics.json; a pattern such as "*/acc" covers a metric named per task (lm-eval)
    label: str  # how the report's table heads the column, after the suite's name
    unit: str | None  # "%" (a proportion, stored as 0-1), "0-100", "nats/token", "words"; None: a plain score
    direction: int  # +1: higher is better, -1: lower is better, 0: descriptive, never called better
    role: str  # one of ROLES
    meaning: str  # one line, for the report's "How to read"
    # The metric's value for each prompt in predictions.jsonl; a row is read by the first of these it
    # has (older results may use another name). Empty where the metric has no per-prompt value.
    per_prompt: tuple[str, ...] = ()
    verdict: Verdict | None = None  # set where the verdict compares models on it prompt by prompt

    def __post_init__(self):
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"metric {self.name}: direction must be +1, -1 or 0, not {self.direction!r}")
        if self.role not in ROLES:
            raise ValueError(f"metric {self.name}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.verdict is not None and (self.direction == 0 or not self.per_prompt):
            raise ValueError(f"metric {self.name}: a verdict needs a better direction and a per-prompt field")

    @property
    def is_pattern(self) -> bool:
        return any(c in self.name for c in "*?[")

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.name) if self.is_pattern else name == self.name

    def heading(self, name: str) -> str:
        """The column's heading for the reported `name`: the label, or for a pattern the name itself,
        which says which task it is."""
        return name if self.is_pattern else self.label
