# Two commands set everything up on a fresh machine (see README.md):
#   make demo   — train on the embedded dataset, evaluate it, say where to look next
#   make test   — everything the tests need (venv, chromium + chromedriver), then the whole suite
# `make help` lists every target.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=
# pytest-xdist workers for `make test` (each gets cores/JOBS torch threads: tests/conftest.py)
JOBS   ?= 2
RUN    ?= logs

.PHONY: help demo test test-fast lint format browser slurm venv docs tensorboard bench bench-demo bench-discover clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

venv: $(STAMP)  ## create .venv and install the project (editable) with its extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true  # pins optuna<3; replaced by hydra_plugins/
	$(BIN)/python -m pip install --quiet -e '.[dev,sweeps,slurm,shards]'
	touch $(STAMP)

browser:  ## install Debian's chromium and chromium-driver (the Selenium backend and its tests)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium and chromedriver present"; \
	else \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

slurm:  ## bring up a single-node Slurm cluster with accounting (Debian's packages; the Slurm tests)
	@bash tests/cluster/slurm_up.sh

demo: venv  ## train ResNet18 on the embedded biased dataset, evaluate it, print the audit and where to look (ARGS=overrides)
	$(BIN)/python -m inat_lightning.demo $(ARGS)

test: venv browser slurm  ## lint, the docs site with warnings as errors, then the whole test suite (what CI runs; ARGS=pytest options, JOBS=workers)
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $$(mktemp -d)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal $(ARGS)

test-fast: venv browser  ## the edit-test loop: every test but the slow ones (training, CLI)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal -m "not slow" $(ARGS)

lint: venv  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv  ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: venv  ## build the docs site (user guide, config and API reference) into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

tensorboard: venv  ## TensorBoard on every run (RUN=<run folder> for one)
	$(BIN)/tensorboard --logdir $(RUN)

bench: venv  ## every benchmark (each prints JSON; docs/benchmarks.md records the figures)
	$(BIN)/python -m bench.bench_loop --steps 40 --rounds 3  # benchmark 1's recorded command
	for b in flops input gradcam downloader scale workers opendata predict detect classes near_duplicates shards; do $(BIN)/python -m bench.bench_$$b || exit 1; done

bench-demo: venv  ## the demo over several seeds: its audit verdict, mean and spread of its accuracy (~3 min a seed)
	$(BIN)/python -m bench.bench_demo $(ARGS)

bench-discover: venv  ## cue discovery on planted cues over 5 seeds: found, false alarms, precision@10 vs a baseline (~2.5 min a run)
	$(BIN)/python -m bench.bench_discover $(ARGS)

clean:  ## remove logs and caches (not data/ nor .venv)
	rm -rf logs site .pytest_cache .ruff_cache
