# Every target that runs code depends on the virtual environment, so the README's
# two commands (make demo, make test) work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-full lint format bench clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project with its dev extras

demo: $(STAMP) ## Train on a generated sample dataset and print where the weights are
	$(PY) train.py experiment=demo

test: $(STAMP) ## Run the default (fast) test suite
	$(PY) -m pytest

test-full: $(STAMP) ## Run every test that can run here, slow ones included
	$(PY) -m pytest -m "not gpu and not integ"

bench: $(STAMP) ## Speed benchmarks against the course recipe on generated dogImages-sized data (~30 min)
	$(PY) -m benchmarks.training_speed
	$(PY) -m benchmarks.extraction

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove generated data, outputs and caches (keeps .venv)
	rm -rf outputs multirun data/synthetic .pytest_cache .ruff_cache
