"""Whether two `sdft run` folders hold the same results: a check that a change of code changed no behaviour.

Compares, byte for byte, the distilled file and every suite's predictions, and value for value every
metrics.json and each training run's logged losses. Timings, paths and library versions are not
compared. Exit 0 when all agree, 1 with the differences listed.

  sdft run --preset demo --set model.dtype=float32 --out runs/before   # on the old code
  sdft run --preset demo --set model.dtype=float32 --out runs/after    # on the new code
  python benchmarks/compare_runs.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

LOSS_KEYS = ("loss", "grad_norm", "learning_rate", "step", "epoch")


def same_number(a, b, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b if rel == 0 else math.isclose(a, b, rel_tol=rel, abs_tol=rel)
    return a == b


def compare(a: Path, b: Path, rel: float = 0.0) -> list[str]:
    problems = []

    def in_both(pattern: str):
        """(name, first path, second path) of each file matching `pattern` that both runs have."""
        found = {str(p.relative_to(a)) for p in a.glob(pattern)} | {str(p.relative_to(b)) for p in b.glob(pattern)}
        for name in sorted(found):
            pa, pb = a / name, b / name
            if pa.is_file() and pb.is_file():
                yield name, pa, pb
            else:
                problems.append(f"{name}: only in {'the first' if pa.is_file() else 'the second'} run")

    for pattern in ("distilled.jsonl", "eval/**/predictions.jsonl"):
        for name, pa, pb in in_both(pattern):
            if pa.read_bytes() != pb.read_bytes():
                problems.append(f"{name}: differs")
    for name, pa, pb in in_both("eval/**/metrics.json"):
        ma = {m["name"]: m for m in json.loads(pa.read_text())}
        mb = {m["name"]: m for m in json.loads(pb.read_text())}
        if set(ma) != set(mb):
            problems.append(f"{name}: metrics {sorted(ma)} vs {sorted(mb)}")
        for metric in sorted(set(ma) & set(mb)):
            for key in ("value", "low", "high", "n"):
                if not same_number(ma[metric].get(key), mb[metric].get(key), rel):
                    problems.append(f"{name}: {metric}.{key} {ma[metric].get(key)} vs {mb[metric].get(key)}")
    for name, pa, pb in in_both("train/*/seed-*/train_log.jsonl"):
        la = [{k: r[k] for k in LOSS_KEYS if k in r} for r in map(json.loads, pa.read_text().splitlines())]
        lb = [{k: r[k] for k in LOSS_KEYS if k in r} for r in map(json.loads, pb.read_text().splitlines())]
        if len(la) != len(lb) or any(set(x) != set(y) or not all(same_number(x[k], y[k], rel) for k in x)
                                     for x, y in zip(la, lb)):
            problems.append(f"{name}: logged losses differ")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--rel", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    args = p.parse_args()
    problems = compare(args.first, args.second, args.rel)
    for line in problems:
        print(line)
    print("same results" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
