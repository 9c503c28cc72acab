"""Which examples a benchmark runs on: GSM8K train from ../shared/data when asked for and present,
else the built-in arithmetic set, or any file or source sdft can load."""

from __future__ import annotations

from pathlib import Path

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "gsm8k_train.json"


def resolve_source(data: str, n: int) -> str:
    """`auto`: GSM8K if present, else the built-in set; `builtin:arithmetic`: n seeded problems."""
    source = data
    if source == "auto":
        source = str(GSM8K) if GSM8K.is_file() else "builtin:arithmetic"
    if source == "builtin:arithmetic":
        source = f"builtin:arithmetic?n={n}&seed=0"
    return source


def describe(source: str) -> str:
    return "GSM8K train (../shared/data/gsm8k)" if source == str(GSM8K) else source
