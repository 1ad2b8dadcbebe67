#!/usr/bin/env bash
# The prepared GPU check: one script, under 9 minutes, on the lent GPU machine.
#
# Here:   make gpu-wheels        (wheels for the GPU image's Python 3.12, in three parts)
# There:  two device runs (each may carry 64 MiB):
#           carrying build/gpu-wheels/common and build/gpu-wheels/tts:  bash benchmarks/gpu_check.sh tts
#           carrying build/gpu-wheels/common and build/gpu-wheels/rvc:  bash benchmarks/gpu_check.sh rvc
#
# tts: 1. the CUDA residency tests, 2. the residency benchmark on real VRAM, 3. `voicedrop
# selftest --engines xtts,f5tts` on CUDA (tiny models, LOW and NORMAL), 4. the engines
# benchmark on the libraries' published-size architectures (random weights), 5. the
# throughput benchmark (naive LOW, voicedrop LOW, NORMAL) on real VRAM, TTS jobs only.
# rvc: 3 and 4 for rvc. Figures go to $OUT (or
# benchmarks/results/). The image has torch, torchaudio and transformers but not
# voicedrop's other dependencies: they come from the carried wheels, into a scratch folder.
# A failing step is a finding to bring back, not a reason to skip the next one.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
part="${1:-tts}"
engines=$([ "$part" = rvc ] && echo rvc || echo xtts,f5tts)
if [ -d build/gpu-wheels/common ]; then
  site="$(mktemp -d)"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
    build/gpu-wheels/common/*.whl build/gpu-wheels/"$part"/*.whl \
    || echo "wheel install failed" | tee "$out/wheels-failed.txt"
  export PYTHONPATH="$PYTHONPATH:$site"
fi
card="$(python3 -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "-"))')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
if [ "$part" = tts ]; then
  timeout 100 python3 -m pytest -q --noconftest -p no:cacheprovider \
    tests/engine/test_residency_cuda.py 2>&1 | tee "$out/residency-cuda-tests-$card.txt"
  timeout 150 python3 benchmarks/residency.py --device cuda --jobs 16 \
    --json "$out/residency-$card.json" 2>&1 | tee "$out/residency-$card.txt"
fi
VOICEDROP_DEVICE=cuda timeout 100 python3 -m voicedrop selftest --json --engines "$engines" \
  >"$out/selftest-$part-$card.json" 2>"$out/selftest-$part-$card.err"; echo "selftest rc=$?"
timeout 150 python3 benchmarks/engines.py --size real --device cuda --engines "$engines" \
  --json "$out/engines-$part-$card.json" 2>"$out/engines-$part-$card.err" \
  | tee "$out/engines-$part-$card.txt"
if [ "$part" = tts ]; then
  timeout 200 python3 benchmarks/throughput.py --device cuda --no-rvc --jobs 6 --json \
    2>"$out/throughput-$card.err" | tee "$out/throughput-$card.txt"
fi
