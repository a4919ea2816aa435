# Every target that runs code depends on the virtual environment, so the README's
# two commands (make demo, make test) work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help docs setup setup-dlami demo test test-full test-dogbreed test-deploy test-ami test-aws integ integ-deploy lint format bench gpu-wheels clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project with its dev extras (tracking included)

# A machine that has PyTorch already (a Deep Learning AMI's /opt/pytorch venv, a conda env called
# pytorch): the project goes into that environment, pinned to its torch and torchvision, which are
# the builds matched to the machine's driver; pip adds what is missing and never swaps those two.
# The pins are the installed distributions' versions (torch.__version__ may add a local tag they lack).
# ami/bootstrap.sh runs this on every instance it starts.
ENV_PYTHON ?= /opt/pytorch/bin/python

setup-dlami: ## Install the project into the image's PyTorch environment (ENV_PYTHON=/opt/pytorch/bin/python), keeping its torch
	@pins=$$(mktemp) && \
	$(ENV_PYTHON) -c 'import importlib.metadata as m; print(*(n + "==" + m.version(n) for n in ("torch", "torchvision")), sep=chr(10))' >"$$pins" && \
	echo "keeping $$(tr '\n' ' ' <"$$pins")from $(ENV_PYTHON)" && \
	$(ENV_PYTHON) -m pip install --quiet --constraint "$$pins" -e ".[tracking]"; \
	status=$$?; rm -f "$$pins"; exit $$status

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

integ: $(STAMP) ## Acceptance run of every flow on a real account (costs cents): DOGBREED_INTEG_S3_URI, --yes in INTEG_ARGS
	$(PY) -m acceptance $(INTEG_ARGS)

integ-deploy: $(STAMP) ## Deploy flow on real AWS (costs money): DOGBREED_INTEG_S3_URI=s3://bucket/prefix
	DOGBREED_INTEG=1 $(PY) -m pytest -m integ tests/deploy

bench: $(STAMP) ## Speed benchmarks on generated dogImages-sized data, then their goals together (~20 min, quiet machine)
	$(PY) -m benchmarks.all

lint: $(STAMP) ## ruff, the import contracts (pyproject.toml), shellcheck, mypy and the docs' strict build
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/shellcheck ami/bootstrap.sh benchmarks/gpu.sh
	$(VENV)/bin/mypy
	$(MAKE) docs

docs: $(STAMP) ## Build the documentation site into site/, offline; any warning (a broken link, a page off the nav) fails it
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# What benchmarks/gpu.sh needs that the GPU machine's image (Python 3.12, torch) lacks, as wheels in .whl/.
GPU_WHEELS := hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 PyYAML==6.0.2 boto3==1.43.68 \
	botocore==1.43.68 s3transfer==0.16.0 jmespath==1.0.1 python-dateutil==2.9.0.post0 six==1.17.0 urllib3==2.5.0 tqdm==4.67.1

gpu-wheels: $(STAMP) ## Download the wheels benchmarks/gpu.sh installs on a GPU machine (Python 3.12) into .whl/
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl $(GPU_WHEELS)

clean: ## Remove generated data, outputs and caches (keeps .venv)
	rm -rf outputs multirun data/synthetic .pytest_cache .ruff_cache
