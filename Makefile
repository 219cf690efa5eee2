# `make repro` and `make test` are the two commands a fresh clone needs (see README.md).
# The interpreter the virtual environment is made with: PYTHON if given, else the first of these that
# runs as Python 3.11-3.13 (the pinned requirements: numpy 2.4 and pandas 3 need 3.11, TensorFlow 2.21 stops at 3.13).
PYTHON_CANDIDATES := python3.11 python3.12 python3.13 python3
SUPPORTED := 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'
PYTHON ?= $(shell for p in $(PYTHON_CANDIDATES); do $$p -c $(SUPPORTED) 2>/dev/null && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The deterministic matrix product's TensorFlow op (pipeline/model/detgemm.py), built from its C++ sources again
# whenever they or the installed packages (TensorFlow's headers) change. `python -m pipeline.model.detgemm`
# prints TensorFlow's compile and link flags and what the library records (the sources' digest, TensorFlow's
# version: checked when it loads). No -march: the kernel picks AVX-512, AVX2 or scalar code by cpuid.
# -ffp-contract=off: no multiply-add fused where the source does not say so.
DETGEMM := pipeline/model/native/_detgemm.so
DETGEMM_SOURCES := $(sort $(wildcard pipeline/model/native/detgemm_*.cc pipeline/model/native/detgemm_*.h))
# DVC stages run `python -m pipeline.…`: the virtual environment's python must come first.
export PATH := $(BIN):$(PATH)

.PHONY: setup python repro test lint browser qemu compiler bench team-up team-down team-status team-user team-backup team-restore sweep sweep-show
.DEFAULT_GOAL := repro

setup: $(VENV)/.installed $(DETGEMM)

# The MLflow UI test drives Debian's headless Chromium; installed once, only for tests.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Reinstalls only when requirements.txt (the full pinned set) changes.
$(VENV)/.installed: requirements.txt
	@$(MAKE) --no-print-directory python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Each source compiled in a process of its own, side by side (the two with TensorFlow's headers take 5-9 s each),
# then linked; a failed compile fails the rule.
$(DETGEMM): $(DETGEMM_SOURCES) $(VENV)/.installed | compiler
	flags="$$($(BIN)/python -m pipeline.model.detgemm)" && objects="$$(mktemp -d)" && pids="" && \
	  for source in $(filter %.cc,$^); do \
	    g++ -O3 -ffp-contract=off -fPIC -Wall -Wextra -Wno-unused-parameter -Wno-psabi -c $$source \
	      $$(printf '%s\n' $$flags | grep -v '^-[lL]') -o "$$objects/$$(basename $$source .cc).o" & pids="$$pids $$!"; \
	  done && \
	  status=0 && for pid in $$pids; do wait $$pid || status=1; done && \
	  if [ $$status = 0 ]; then g++ -shared "$$objects"/*.o $$(printf '%s\n' $$flags | grep '^-[lL]') -o $@.tmp || status=1; fi; \
	  rm -rf "$$objects"; exit $$status
	mv $@.tmp $@

compiler:
	@command -v g++ >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends g++ >/dev/null; }

# Which interpreter `make setup` uses, or one line saying why none fits.
python:
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11-3.13 found (tried $(PYTHON_CANDIDATES)); install one, or make PYTHON=/path/to/python3.x" >&2; exit 1; }
	@$(PYTHON) -c $(SUPPORTED) 2>/dev/null || { echo "make: PYTHON=$(PYTHON) is not a Python 3.11-3.13 (the pinned requirements need one)" >&2; exit 1; }
	@echo "make: Python $$($(PYTHON) -c 'import platform; print(platform.python_version())') at $(PYTHON)"

repro: setup
	dvc repro

# qemu-user emulates other x86-64 CPUs (Intel Haswell, AMD EPYC) for the cross-CPU byte-identity tests.
qemu:
	@command -v qemu-x86_64 >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends qemu-user >/dev/null; }

# ruff's lint and format check (pyproject.toml's [tool.ruff]); `ruff format .` and `ruff check --fix .` mend most.
lint: setup
	ruff check .
	ruff format --check .

# One pytest-xdist worker per core and two more: the tests wait for servers, subprocesses and sleeps about a
# quarter of the time (2 workers on 2 cores kept them 74% busy; a fresh clone's `bash .ci/run` on a 2-core AMD EPYC
# Zen 4 took 13:25 and 14:06 on 3 workers, 12:58 and 13:14 on 4); tests that share a server stay on one worker
# (xdist_group).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: setup browser qemu lint
	python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# Throughput of both numerics modes against PyTorch, and the pipeline's costs (torch: benchmark only).
# BENCH_ARGS: its options, e.g. make bench BENCH_ARGS="--skip repro" offline without PIPELINE_MIRROR.
bench: setup
	python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	python -m bench.benchmark $(BENCH_ARGS)

# The team stack (pipeline/team/, docs/team.md): PostgreSQL, an S3 server, `mlflow server` with basic-auth, over
# TLS, on 127.0.0.1 unless PIPELINE_TEAM_BIND says otherwise; state, data and secrets in .team/ (or
# $$PIPELINE_TEAM_DIR). Then: source .team/env (or a person's .team/users/NAME.env).
team-up: setup
	python -m pipeline.team up

team-down: setup
	python -m pipeline.team down

team-status: setup
	python -m pipeline.team status

# make team-user NAME=alice ROLE=viewer|trainer; NAME and ROLE reach the command through the environment
# (make exports command-line variables), never through the shell's parsing.
team-user: setup
	python -m pipeline.team user "$$NAME" "$$ROLE"

# A snapshot under .team/backups/ (its path on the last line); make team-restore BACKUP=<path> with the stack down.
team-backup: setup
	python -m pipeline.team backup

team-restore: setup
	python -m pipeline.team restore "$$BACKUP"

# A sweep worker (pipeline/sweeps/, docs/sweeps.md): make sweep SPEC=sweeps/fable-units.yaml, as many at once as you
# like, on any machine with a clone (and the team's environment sourced, for a shared study).
sweep: setup
	python -m pipeline.sweeps run "$$SPEC"

# The sweep's trials, its best and how to restore it; ARGS=--md for a pull request.
sweep-show: setup
	python -m pipeline.sweeps show "$$SPEC" $(ARGS)
