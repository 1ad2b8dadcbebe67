#!/usr/bin/env bash
# The prepared GPU check (issue 3): one script, under 8 minutes, on the lent GPU machine.
#
# Here:   make gpu-wheels        (pydantic + structlog wheels for the GPU image's Python)
# There:  device run, carrying build/gpu-wheels:  bash benchmarks/gpu_check.sh
#
# It runs the CUDA residency tests and the residency benchmark on real VRAM and
# writes the figures to $OUT (or benchmarks/results/) as residency-<card>.{txt,json}.
# The GPU image has torch and pytest but not voicedrop's pure-Python dependencies:
# they are installed from the carried wheels into a scratch folder, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pydantic, structlog" 2>/dev/null; then
  site="$(mktemp -d)"
  python3 -m pip install --quiet --no-index --find-links build/gpu-wheels --target "$site" \
    pydantic structlog
  export PYTHONPATH="$PYTHONPATH:$site"
fi
card="$(python3 -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "-"))')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# a failing test is a finding to bring back, not a reason to skip the benchmark
timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider \
  tests/engine/test_residency_cuda.py 2>&1 | tee "$out/residency-cuda-tests-$card.txt" || true
timeout 360 python3 benchmarks/residency.py --device cuda --jobs 16 \
  --json "$out/residency-$card.json" 2>&1 | tee "$out/residency-$card.txt"
