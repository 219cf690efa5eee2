# `make repro` and `make test` are the two commands a fresh clone needs (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
# DVC stages run `python -m pipeline.…`: the virtual environment's python must come first.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test browser qemu bench
.DEFAULT_GOAL := repro

setup: $(VENV)/.installed

# The MLflow UI test drives Debian's headless Chromium; installed once, only for tests.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Reinstalls only when requirements.txt (the full pinned set) changes.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

repro: setup
	dvc repro

# qemu-user emulates other x86-64 CPUs (Intel Haswell, AMD EPYC) for the cross-CPU byte-identity tests.
qemu:
	@command -v qemu-x86_64 >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends qemu-user >/dev/null; }

test: setup browser qemu
	python -m pytest

# Issue 5's measurements: ours vs a PyTorch reference (torch is a benchmark-only dependency).
bench: setup
	python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	python -m bench.benchmark
