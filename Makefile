# DAL — every user-facing task. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
LINT_VENV ?= .venv-lint
BIN := $(VENV)/bin
LINT_BIN := $(LINT_VENV)/bin
# Where `make run` and friends write (data, models, features, MLflow store); ignored by git.
WORK ?= $(CURDIR)/work
PYTEST_ARGS ?=

.PHONY: help setup test test-fast lint format run bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/dal: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c requirements/constraints.txt -e ".[dev]"
	@touch $@

$(LINT_BIN)/hadolint: requirements/lint.txt requirements/lint-constraints.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_BIN)/pip install -c requirements/lint-constraints.txt -r requirements/lint.txt
	@touch $@

setup: $(BIN)/dal $(LINT_BIN)/hadolint ## create .venv (everything) and .venv-lint (static checkers)

test: setup lint ## the whole test suite (unit + integration with real S3/MLflow servers) and linters
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## only the tests that start no servers and run no pipelines
	$(BIN)/python -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

lint: setup ## ruff on the Python sources
	$(BIN)/ruff check components pipelines tests scripts
	$(BIN)/ruff format --check components pipelines tests scripts

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix components pipelines tests scripts
	$(BIN)/ruff format components pipelines tests scripts

run: setup ## the main job on the embedded synthetic default (synth -> ingest for now)
	$(BIN)/dal synth --layout mars --output $(WORK)/raw/mars
	$(BIN)/dal ingest --dataset mars --source $(WORK)/raw/mars --output $(WORK)/datasets/mars

bench: setup ## speed and memory benchmarks (scripts, not tests)
	$(BIN)/python scripts/bench_ingest.py

clean: ## remove what make run and the tests wrote (keeps the venvs)
	rm -rf $(WORK) .pytest_cache
