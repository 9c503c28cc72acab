#!/usr/bin/env bash
# The GPU check as one command: install the wheels that benchmarks/gpu_prepare.py fetched into a
# temporary site folder (nothing is installed into the machine's Python), then run gpu_check.py.
#
#   bash benchmarks/gpu_run.sh --wheels .gpu/wheels OUT_DIR   # on the GPU machine
#   bash benchmarks/gpu_run.sh --tiny OUT_DIR                  # anywhere: a 2-layer model, seconds
#
# PYTHON picks the interpreter (default python3). Other options go to gpu_check.py.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -ge 1 ] || { echo "usage: gpu_run.sh [--wheels DIR] [--tiny] OUT_DIR" >&2; exit 2; }
out=${args[-1]}
unset 'args[-1]'

path="$repo/src"
if [ -n "$wheels" ]; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
  path="$site:$(dirname "$wheels")/site:$path"  # the bundle's site/: packages without their weights
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" "$repo/benchmarks/gpu_check.py" ${args[@]+"${args[@]}"} --out "$out"
