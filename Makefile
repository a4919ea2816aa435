# Every target that runs code depends on the virtual environment, so the README's
# two commands (make demo, make test) work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-full test-dogbreed test-deploy test-ami test-aws integ-deploy lint format bench clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project with its dev extras (tracking included)

demo: $(STAMP) ## Train on generated images, then package, serve locally and query through the Lambda handler
	$(PY) train.py experiment=demo hydra.run.dir=outputs/demo
	$(PY) -m deploy demo outputs/demo

# Test files are shared out between this many processes (pytest-xdist; a file's tests stay together,
# so its module fixtures are built once). `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2

test: $(STAMP) ## Run the default (fast) test suite
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-full: $(STAMP) ## Run every test that can run here, slow ones included
	$(PY) -m pytest -m "not gpu and not integ"

test-dogbreed: $(STAMP) ## Tests of the library: data, training, resume, S3 storage, the shipped serving code
	$(PY) -m pytest tests/dogbreed

test-deploy: $(STAMP) ## Tests of deploy/: packaging, local endpoint, Lambda handler, AWS against moto
	$(PY) -m pytest tests/deploy

test-ami: $(STAMP) ## Tests of ami/: EC2 launch and teardown against moto, bootstrap, choose
	$(PY) -m pytest tests/ami

test-aws: $(STAMP) ## Every test that runs against the local moto server (no AWS account needed)
	$(PY) -m pytest -m "aws and not slow and not gpu and not integ"

integ-deploy: $(STAMP) ## Deploy flow on real AWS (costs money): DOGBREED_INTEG_S3_URI=s3://bucket/prefix
	DOGBREED_INTEG=1 $(PY) -m pytest -m integ tests/deploy

bench: $(STAMP) ## Speed benchmarks on generated dogImages-sized data, then their goals together (~20 min, quiet machine)
	$(PY) -m benchmarks.all

lint: $(STAMP) ## ruff, the import contracts (pyproject.toml), shellcheck and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/shellcheck ami/bootstrap.sh
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove generated data, outputs and caches (keeps .venv)
	rm -rf outputs multirun data/synthetic .pytest_cache .ruff_cache
