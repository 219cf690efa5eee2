# `make repro` and `make test` are the two commands a fresh clone needs (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
# DVC stages run `python -m pipeline.…`: the virtual environment's python must come first.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test
.DEFAULT_GOAL := repro

setup: $(VENV)/.installed

# Reinstalls only when requirements.txt (the full pinned set) changes.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest
