# xomni: two commands on a fresh machine: `make demo` and `make test`.
# Both set everything up first (Debian packages when missing, .venv, pip install -e '.[dev]'); both are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PKGS := tesseract-ocr tesseract-ocr-eng fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf wamerican chromium
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup deps sysdeps demo test test-fast test-slow clean

setup: sysdeps $(STAMP)

sysdeps:
	@bash scripts/install_sysdeps.sh $(APT_PKGS)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	@# torch first, pinned, so that no other package pulls a CUDA build
	@$(BIN)/python -m pip install -q torch==2.13.0
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	@$(BIN)/xomni demo

test: setup
	@$(BIN)/python -m pytest -q -x -m "not slow" --durations=15 tests
	@$(BIN)/python -m pytest -q -m "slow and smoke" --durations=5 tests

test-slow: setup
	@$(BIN)/python -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
