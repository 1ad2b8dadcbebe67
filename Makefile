# Two commands on a fresh machine with Python 3.11:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := demo/spool

.PHONY: demo test lint bench gpu-wheels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The core install: no torch, no GPU, no weights.
$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

# Tests also need torch (CPU build, pinned in requirements/torch-cpu.txt) for the
# residency manager's real-module tests, and the lint/type tools.
$(VENV)/.test: $(VENV)/.core requirements/torch-cpu.txt
	$(BIN)/pip install --quiet -e '.[test]' -r requirements/torch-cpu.txt
	touch $@

demo: $(VENV)/.core
	rm -rf $(DEMO) && mkdir -p $(DEMO)/inbox
	cp -p sample_inbox/*.json $(DEMO)/inbox/
	$(BIN)/voicedrop --config config.toml --spool $(DEMO) run --once
	@echo "Results: $(DEMO)/outbox/<job>/ (audio + report.json), $(DEMO)/failed/<job>/report.json"

lint: $(VENV)/.test
	$(BIN)/ruff check voicedrop tests benchmarks
	$(BIN)/ruff format --check voicedrop tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Wheels the GPU image lacks (benchmarks/gpu_check.sh): its python3 is 3.12 on x86_64.
gpu-wheels: $(BIN)/python
	$(BIN)/pip download --quiet --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  --dest build/gpu-wheels pydantic structlog

bench: $(VENV)/.test
	$(BIN)/python benchmarks/daemon.py
	$(BIN)/python benchmarks/residency.py

clean:
	rm -rf $(VENV) demo .mypy_cache .ruff_cache
