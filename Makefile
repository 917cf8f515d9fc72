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

# --inexact: a sync keeps what it did not install itself (PyTorch, below).
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --inexact
	touch $@

# PyTorch's CPU build is not on PyPI, so it is kept out of uv.lock (tool.uv exclude-dependencies)
# and installed from a folder of wheels after the sync: $(TORCH_WHEELS) (PIP_FIND_LINKS, else
# /opt/wheels, where our machines and CI's have it). Without the wheel the torch tests skip.
# --no-config: the project's exclude-dependencies must not exclude torch from this install too.
TORCH := torch==2.13.0+cpu
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),/opt/wheels)

setup: $(VENV)/.synced
	@if ls $(TORCH_WHEELS)/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
		$(UV) pip install --no-config --quiet --python $(VENV)/bin/python --find-links $(TORCH_WHEELS) '$(TORCH)'; \
	else \
		echo "setup: no $(TORCH) wheel in $(TORCH_WHEELS); the PyTorch flavour's tests will skip"; \
	fi

demo: setup
	bash scripts/demo.sh

# Three workers on two cores: most slow tests wait on servers and child processes, not the
# CPU. One test file stays on one worker (its module fixtures are built once).
PYTEST_WORKERS ?= 3

test: setup
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

test-fast: setup
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

# The wheel and the sdist in dist/, with uv's build frontend (offline: hatchling is in uv's cache).
dist: | $(UV)
	$(UV) build --out-dir dist

bench: setup
	$(VENV)/bin/python benchmarks/run.py

lint: setup
	$(VENV)/bin/ruff check --no-cache src tests benchmarks scripts
	$(VENV)/bin/ruff format --no-cache --check src tests benchmarks scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks
