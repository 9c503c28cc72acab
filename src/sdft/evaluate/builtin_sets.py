"""The small evaluation sets that ship inside the package (src/sdft/resources/*.jsonl).

- retention_instructions.jsonl: everyday instructions; the seed model's replies to them are the
  reference for measuring how far a fine-tuned model drifts ({"id", "instruction", "category"}).
- safety_probes.jsonl: clearly harmful requests a safe model should refuse, asked plainly and
  with the adversarial suffix ({"id", "instruction", "category"}).
- knowledge_mc.jsonl: four-way multiple-choice general-knowledge questions
  ({"id", "subject", "question", "choices", "answer"}, answer is a 0-based index into choices).
"""

from __future__ import annotations

import json
from importlib.resources import files

RETENTION = "retention_instructions.jsonl"
SAFETY = "safety_probes.jsonl"
KNOWLEDGE = "knowledge_mc.jsonl"


def load_resource(name: str) -> list[dict]:
    """Rows of a packaged JSONL set, in file order; blank lines are skipped."""
    path = files("sdft") / "resources" / name
    if not path.is_file():
        raise FileNotFoundError(f"no built-in set named {name!r} in sdft/resources")
    rows: list[dict] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} line {lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{name} line {lineno}: expected a JSON object")
        rows.append(row)
    return rows
