# Each target sets up what it needs: a newcomer types one word.
PY ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup demo test test-fast bench lint format dist

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.8

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

setup: $(VENV)/.synced

demo: setup
	bash scripts/demo.sh

test: setup
	$(VENV)/bin/python -m pytest

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow"

# The wheel and the sdist in dist/, with uv's build frontend (offline: hatchling is in uv's cache).
dist: | $(UV)
	$(UV) build --out-dir dist

bench: setup
	$(VENV)/bin/python benchmarks/run.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks
