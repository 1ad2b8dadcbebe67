#!/usr/bin/env bash
# The prepared GPU check: one script, under 9 minutes, on the lent GPU machine.
#
# Here:   make gpu-wheels        (core + engine wheels for the GPU image's Python 3.12)
# There:  device run, carrying build/gpu-wheels:  bash benchmarks/gpu_check.sh
#
# 1. the CUDA residency tests, 2. the residency benchmark on real VRAM, 3. `voicedrop
# selftest` on CUDA (tiny models, every engine, LOW and NORMAL), 4. the engines benchmark
# on the libraries' published-size architectures (random weights). Figures go to $OUT (or
# benchmarks/results/). The image has torch, torchaudio and transformers but not
# voicedrop's other dependencies: they come from the carried wheels, into a scratch folder.
# A failing step is a finding to bring back, not a reason to skip the next one.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d build/gpu-wheels ]; then
  site="$(mktemp -d)"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" build/gpu-wheels/*.whl \
    || echo "wheel install failed" | tee "$out/wheels-failed.txt"
  export PYTHONPATH="$PYTHONPATH:$site"
fi
card="$(python3 -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "-"))')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
timeout 100 python3 -m pytest -q --noconftest -p no:cacheprovider \
  tests/engine/test_residency_cuda.py 2>&1 | tee "$out/residency-cuda-tests-$card.txt"
timeout 150 python3 benchmarks/residency.py --device cuda --jobs 16 \
  --json "$out/residency-$card.json" 2>&1 | tee "$out/residency-$card.txt"
VOICEDROP_DEVICE=cuda timeout 100 python3 -m voicedrop selftest --json \
  >"$out/selftest-$card.json" 2>"$out/selftest-$card.err"; echo "selftest rc=$?"
timeout 150 python3 benchmarks/engines.py --size real --device cuda \
  --json "$out/engines-$card.json" 2>"$out/engines-$card.err" | tee "$out/engines-$card.txt"
