# make demo   — set up .venv, generate the embedded dataset, train ResNet101 on CPU, test the best checkpoint
# make test   — set up everything the tests need (venv, chromium + chromedriver) and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: demo test test-fast lint format browser venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sweeps,slurm]'
	touch $(STAMP)

# Debian packages for the Selenium browser backend and its tests
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium and chromedriver present"; \
	else \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

demo: venv
	$(BIN)/python train.py $(ARGS)

test: venv browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(ARGS)

# the edit-test loop: everything but the tests that train or run the CLI (make test runs all)
test-fast: venv browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# each benchmark prints JSON; docs/benchmarks.md records the figures
bench: venv
	for b in loop flops input gradcam downloader scale workers; do $(BIN)/python -m bench.bench_$$b || exit 1; done

clean:
	rm -rf logs .pytest_cache .ruff_cache
