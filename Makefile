# One command sets up and runs the demo, one sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first, so the range in pyproject.toml is already met and
# pip does not pull a multi-GB CUDA build. On a GPU machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

# Test files run in parallel, one file per worker at a time (module fixtures stay shared); up to 4 workers.
# One OpenMP thread per process: the tiny models gain nothing from more, and workers' threads would contend.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

.PHONY: setup demo lint test test-fast bench clean

# setuptools explains its editable-install finder at length on every install (a note, not a problem): filtered, so
# setup says nothing unless something is wrong.

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/diffsweep

# ruff (import order, bugbear, pyupgrade, simplify, complexity, function-level imports) and mypy on src
lint: setup
	$(BIN)/ruff check src tests bench docs
	$(BIN)/mypy

test: setup
	$(PYTEST)

# Unit tests and one end-to-end run per output kind (image, video, audio, video with sound): the quick check.
test-fast: setup
	$(PYTEST) -m "quick and not slow"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis
