#!/usr/bin/env bash
# The GPU check, prepared to run on the lent machine in two device calls (one per part):
#
# Here, once:  make gpu-wheels   (wheels the GPU image lacks, for its Python 3.12, in three
#                                 folders so that a call carries under 64 MiB with the tree)
# There:       carrying build/gpu-wheels/common and build/gpu-wheels/tts:
#                  bash benchmarks/gpu_check.sh tts      (about 7 minutes)
#              carrying build/gpu-wheels/common and build/gpu-wheels/rvc:
#                  bash benchmarks/gpu_check.sh rvc      (about 6 minutes)
#
# Each part writes two files to $OUT: gpu-check-PART.json (every step's result) and
# gpu-check-PART-logs.tar.gz (every step's output); benchmarks/gpu_check.py says what the
# steps are. A step that fails is a finding and the next one runs. CI runs the same steps
# on the CPU in a venv of the image's packages and these wheels (make gpu-dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:?name a part: tts or rvc}"
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if [ -d build/gpu-wheels/common ]; then
  site="$(mktemp -d)"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" build/gpu-wheels/common/*.whl build/gpu-wheels/"$part"/*.whl \
    || echo "the carried wheels did not install" >&2
  export PYTHONPATH="$PWD:$site"
else
  export PYTHONPATH="$PWD"
fi
exec python3 benchmarks/gpu_check.py "$part" --device cuda --out "$out" --budget-s 440
