# stockops: the two commands of the Quickstart are `make up` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := 3.11
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: up test sync uv lint typecheck services clean-services browser

uv:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || python3.11 -m pip install --user --quiet uv

sync: uv
	$(UV) sync --all-packages --frozen

## Run the main job on this machine with embedded defaults.
up: sync
	$(UV) run stockops up -f examples/local/

## Install what is missing (Python packages, Kafka, Azurite, MLflow, kube-apiserver, helm, Chromium), start the services, run every test.
test: sync services browser
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports
	$(UV) run pytest $(PYTEST_ARGS)

## Install Chromium for the scoring page's browser test (Debian package, as root) when no chromium binary exists.
## Playwright drives this system binary; its own browser download is never used.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

## Download and build every service the tests use into the cache (idempotent).
services: sync
	$(UV) run python -m stockops_model.testing.services install

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports

typecheck: sync
	$(UV) run mypy
