# One command to run the gateway, one to run the whole test suite (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/policy-config.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up the virtualenv and start the gateway on the embedded defaults
run: $(STAMP)
	$(BIN)/kt gateway run --policy-config $(CONFIG)

## test: lint, type-check and run the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check ktproxy tests benchmarks setup.py
	$(BIN)/ruff format --check ktproxy tests benchmarks setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: gateway vs direct upstream, same run (loopback only, bounded)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_proxy

clean:
	rm -rf $(VENV) build *.egg-info ktproxy/*.so
