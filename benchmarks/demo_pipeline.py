"""The whole demo pipeline, timed and measured: `sdft run --preset demo` in a fresh run folder.

Prints each stage's wall time and the peak resident memory reached by its end (from the run's
stages.json), the whole run's wall time and peak resident memory (of the `sdft` process, measured
by the OS), and both against the targets: under 5 minutes (`make demo` with setup) and under 3 GB on 2 CPU cores.

  python benchmarks/demo_pipeline.py                 # about 5 minutes on 2 CPU cores
  python benchmarks/demo_pipeline.py --keep runs/x   # keep the run folder
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 5 * 60  # includes setup on a fresh machine, which this script does not time
TARGET_RSS_MB = 3 * 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", help="run folder to write and keep (default: a temporary one)")
    args = p.parse_args()

    tmp = None
    if args.keep:
        out = Path(args.keep)
        shutil.rmtree(out, ignore_errors=True)
    else:
        tmp = tempfile.mkdtemp(prefix="sdft-demo-")
        out = Path(tmp) / "run"
    sdft = Path(sys.executable).with_name("sdft")
    cmd = [str(sdft) if sdft.exists() else sys.executable, *([] if sdft.exists() else ["-m", "sdft.cli"]),
           "run", "--preset", "demo", "--out", str(out)]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        print(f"sdft run failed with exit code {proc.returncode}", file=sys.stderr)
        return 1

    stages = json.loads((out / "stages.json").read_text())
    summary = json.loads((out / "distilled.jsonl.summary.json").read_text())
    print(f"demo: {summary['rows']} rows, {summary['accepted']} distilled responses accepted "
          f"({summary['accepted_pct']:.1f}%), {os.cpu_count()} CPUs")
    print()
    print("| stage | seconds | peak RSS so far |")
    print("|---|---|---|")
    for s in stages:
        print(f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_rss_mb'] / 1024:.2f} GB |")
    print(f"| whole run (incl. loading, report) | {seconds:.1f} | {peak_mb / 1024:.2f} GB |")
    print()
    print(f"target: make demo under {TARGET_SECONDS // 60} min with setup; the run alone: "
          f"{'met' if seconds < TARGET_SECONDS else 'MISSED'} ({seconds / 60:.1f} min, setup not timed here)")
    print(f"target: under {TARGET_RSS_MB / 1024:.0f} GB peak resident memory: "
          f"{'met' if peak_mb < TARGET_RSS_MB else 'MISSED'} ({peak_mb / 1024:.2f} GB)")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
