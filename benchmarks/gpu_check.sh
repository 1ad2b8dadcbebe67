#!/usr/bin/env bash
# The GPU check on a lent machine, in at most two device calls (benchmarks/gpu_check.py
# plans them and says what each step measures):
#
# Here, once:  make gpu-wheels     (the wheels the GPU image lacks, for its Python 3.12:
#                                   about 45 MB, carried with the tree under 60 MiB)
# There:       carrying build/gpu-wheels, with timeout_s 420:
#                  bash benchmarks/gpu_check.sh first
#              then, with timeout_s 360 (the machine still warm, or a fresh one):
#                  bash benchmarks/gpu_check.sh second
#
# Each call writes two files to $OUT, again after every step: gpu-check-CALL.json and
# gpu-check-CALL-logs.tar.gz. The install of the carried wheels counts in the call's
# budget. Options after CALL go to gpu_check.py (`--steps a,b` runs what a cut call
# left; `--device cpu --budget-s N` is the dry run: make gpu-dry-run).
set -uo pipefail
since=$(date +%s)
cd "$(dirname "$0")/.."
call="${1:?name a call: first, second or all}"
shift
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if compgen -G "build/gpu-wheels/*/*.whl" >/dev/null; then
  site="$(mktemp -d)"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" build/gpu-wheels/*/*.whl \
    || echo "the carried wheels did not install" >&2
  export PYTHONPATH="$PWD:$site"
else
  echo "no carried wheels (build/gpu-wheels): the image's packages alone" >&2
  export PYTHONPATH="$PWD"
fi
export FAISS_OPT_LEVEL=generic  # the carried faiss keeps only its generic build
exec python3 benchmarks/gpu_check.py "$call" --device cuda --out "$out" --since "$since" "$@"
