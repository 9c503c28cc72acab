"""The whole demo pipeline, timed and measured: `sdft run --preset demo` in a fresh run folder.

Prints each stage's wall time and the peak resident memory reached by its end (from the run's
stages.json), the whole run's wall time and peak resident memory (of the `sdft` process, measured
by the OS), and both against the targets: under 5 minutes (`make demo` with setup) and under 3 GB on 2 CPU cores.
Decoding workers are processes of their own, sharing the parent's pages: the peak of the machine's
memory in use (MemTotal - MemAvailable, sampled 5 times a second, above its value at the start)
counts them too, and the memory target is checked against the larger of the two figures.

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
import threading
import time
from pathlib import Path

TARGET_SECONDS = 5 * 60  # includes setup on a fresh machine, which this script does not time
TARGET_RSS_MB = 3 * 1024


def memory_in_use_mb() -> float | None:
    """The machine's memory in use (MemTotal - MemAvailable), in MB; None without /proc/meminfo."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return None
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) / 1024


class MemoryPeak(threading.Thread):
    """Samples memory_in_use_mb() until stopped; `rise` is the peak above the first sample."""

    def __init__(self):
        super().__init__(daemon=True)
        self.start_mb = self.peak_mb = memory_in_use_mb()
        self.done = threading.Event()

    def run(self) -> None:
        while self.start_mb is not None and not self.done.wait(0.2):
            self.peak_mb = max(self.peak_mb, memory_in_use_mb())

    @property
    def rise(self) -> float | None:
        return None if self.start_mb is None else self.peak_mb - self.start_mb


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
    machine = MemoryPeak()
    machine.start()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    machine.done.set()
    machine.join()
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
    if machine.rise is not None:
        print(f"| machine memory in use, peak rise (the run and its workers) | | {machine.rise / 1024:.2f} GB |")
    print()
    print(f"target: make demo under {TARGET_SECONDS // 60} min with setup; the run alone: "
          f"{'met' if seconds < TARGET_SECONDS else 'MISSED'} ({seconds / 60:.1f} min, setup not timed here)")
    memory = max(peak_mb, machine.rise or 0)
    print(f"target: under {TARGET_RSS_MB / 1024:.0f} GB of memory: "
          f"{'met' if memory < TARGET_RSS_MB else 'MISSED'} ({memory / 1024:.2f} GB, the larger of the two above)")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
