# omnistage: `make run` sets up on first use and runs the main job; `make test` runs the test suite.
# `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
AF_VENV := .venv-airflow
UV := $(VENV)/bin/uv
OMNI := $(VENV)/bin/omnistage
WHEELS ?= /opt/wheels
TORCH := torch==2.13.0+cpu
# Use the CPU torch wheel from local disk when this machine has one, else PyTorch's CPU index.
TORCH_SRC := $(if $(wildcard $(WHEELS)/torch-2.13.0+cpu*.whl),--find-links $(WHEELS),--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1
WORKERS ?= 2
# Precompiled bytecode: machines that set PYTHONDONTWRITEBYTECODE (these do) would otherwise recompile
# torch, megatron and MLflow (~6,800 modules, ~18 CPU-s) in every command and every pipeline subprocess.
# uv compiles only what it installs in that call, so every install step carries the flag and a venv is
# rebuilt from scratch (from uv's cache) when its recipe or pyproject.toml changes.
COMPILE := --compile-bytecode

.PHONY: help setup system-deps run test test-fast lint ui airflow clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

system-deps: ## Install ffmpeg, espeak-ng and chromium (UI screenshots) with apt when missing (root only)
	@missing=""; for t in ffmpeg espeak-ng git chromium; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 $$missing; \
	  else echo "missing:$$missing. Install them (Debian: sudo apt-get install$$missing) and run make again." >&2; exit 1; fi; \
	fi

$(VENV)/.stamp: pyproject.toml Makefile  # the recipe is part of the environment
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "omnistage needs Python 3.11 (set PYTHON=...)"'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV) || { echo "python venv failed: on Debian run apt-get install python3.11-venv" >&2; exit 1; }
	$(VENV)/bin/python -m pip install -q uv
	$(UV) pip install -q -p $(VENV)/bin/python $(TORCH_SRC) $(COMPILE) "$(TORCH)"
	$(UV) pip install -q -p $(VENV)/bin/python $(TORCH_SRC) $(COMPILE) -e '.[dev]' av megatron-energon
	touch $@

$(AF_VENV)/.stamp: pyproject.toml Makefile $(VENV)/.stamp
	rm -rf $(AF_VENV)
	$(UV) venv -q -p $(PYTHON) $(AF_VENV)
	$(UV) pip install -q -p $(AF_VENV)/bin/python $(COMPILE) "apache-airflow==3.3.2" apache-airflow-providers-cncf-kubernetes
	# The project itself without its dependencies: DAGs import only the light runner seam.
	$(UV) pip install -q -p $(AF_VENV)/bin/python $(COMPILE) --no-deps -e .
	touch $@

setup: system-deps $(VENV)/.stamp $(AF_VENV)/.stamp ## Create both environments (first use only)

run: setup ## Demo corpus -> ingest + DVC -> tiny curriculum (kfp.local) -> evaluate -> gate -> promote
	$(OMNI) run --workers $(WORKERS)

test: setup ## The whole test suite (what CI runs)
	$(VENV)/bin/pytest -q --durations=25 tests; rc=$$?; if [ $$rc = 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: setup ## Tests without the slow tier
	$(VENV)/bin/pytest -q -m "not slow" tests

UI_PORT ?= 5000
ui: setup ## MLflow UI for the embedded store on http://127.0.0.1:$(UI_PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --host 127.0.0.1 --port $(UI_PORT) \
	  --backend-store-uri sqlite:///$(CURDIR)/work/mlflow.db --default-artifact-root $(CURDIR)/work/mlartifacts

AIRFLOW_PORT ?= 8080
airflow: setup ## Airflow (SQLite home work/airflow) on http://127.0.0.1:$(AIRFLOW_PORT); Ctrl-C stops it all
	AIRFLOW_PORT=$(AIRFLOW_PORT) AF_VENV=$(AF_VENV) infra/local/airflow.sh

lint: setup ## ruff
	$(VENV)/bin/ruff check components model dags tests

clean: ## Remove generated data (keeps the environments)
	rm -rf work
