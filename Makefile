# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clip-har-installed

# All local state under one directory; telemetry off everywhere.
export CLIP_HAR_HOME ?= $(CURDIR)/.clip-har
export PREFECT_HOME ?= $(CLIP_HAR_HOME)/prefect
export BENTOML_HOME ?= $(CLIP_HAR_HOME)/bentoml
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export GIT_PYTHON_REFRESH := quiet

.PHONY: install chromium demo test test-fast test-gpu serve up down loop-demo bench lint format status clean-state images

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,scale]'
	touch $(STAMP)

install: $(STAMP)

# The web app's browser test (tests/test_ui.py) drives Debian's Chromium: installed here when it is
# missing and we are root with apt-get; never fails the build (without it, that test skips).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
			>/dev/null 2>&1 || echo "make: apt-get could not install chromium; tests/test_ui.py will skip"; \
	fi

demo: install
	$(BIN)/clip-har pipeline run --profile demo

test: install chromium
	$(BIN)/python -m pytest

# The tests marked `gpu` (they skip without CUDA); their modules import without the MLOps stack,
# so `python3 -m pytest -m gpu $(GPU_TESTS)` also runs on a stock PyTorch image (README, "GPUs").
GPU_TESTS := tests/test_training.py tests/test_train_paths.py tests/test_backends.py
test-gpu: install
	$(BIN)/python -m pytest -m gpu $(GPU_TESTS)

# The inner-loop lane: the suite without the `slow` and `integration` tests (`make test` runs all).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration"

# The current champion on 127.0.0.1:$CLIP_HAR_PORT (default 3000).
serve: install
	$(BIN)/clip-har serve

# The local stack: Prefect server + worker (all deployments), MLflow UI, the champion's service.
up: install
	$(BIN)/clip-har up

down: install
	$(BIN)/clip-har down

# The closed loop on the stack (started if needed; trains a first champion if there is none):
# normal → night traffic → drift + labelled data → retraining → gate → promotion → live switch.
loop-demo: install
	$(BIN)/clip-har loop-demo

# Benchmarks: JSON under bench/results/ plus a printed table (the serving one needs a champion).
bench: install
	$(BIN)/python bench/synth.py
	$(BIN)/python bench/serving.py --model demo
	$(BIN)/python bench/serving.py --model ViT-B-32 --requests 300

# Container images for Kubernetes (deployments/k8s): the pipeline image (Prefect server and worker,
# flow runs, MLflow) and the service (the champion's Bento, `bentoml containerize`; `make demo` first).
IMAGE_TAG ?= latest
CONTAINER_ENGINE ?= $(shell for e in docker podman; do $$e info >/dev/null 2>&1 && echo $$e && break; done)
images: install
	@if [ -z "$(CONTAINER_ENGINE)" ]; then echo "make images: no container engine running (docker or podman)" >&2; exit 1; fi
	@bento=$$($(BIN)/clip-har status --json | $(BIN)/python -c 'import json, sys; b = (json.load(sys.stdin).get("lineage") or {}).get("bento"); print(b) if b else sys.exit("make images: no packaged champion; run make demo")') && set -x \
		&& $(CONTAINER_ENGINE) build -f deployments/docker/worker.Dockerfile -t clip-har-worker:$(IMAGE_TAG) \
			$(if $(filter podman,$(CONTAINER_ENGINE)),--ignorefile deployments/docker/worker.Dockerfile.dockerignore) . \
		&& $(BIN)/bentoml containerize "$$bento" --backend $(CONTAINER_ENGINE) -t clip-har-service:$(IMAGE_TAG)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

status: install
	$(BIN)/clip-har status

clean-state:
	rm -rf $(CLIP_HAR_HOME)
