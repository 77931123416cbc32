# Two entry points for a fresh machine (Python 3.11): `make demo` and `make test`.
# torch 2.13.0 (CPU) is installed first so that `torch>=2.4` in pyproject pulls nothing more.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/torchkeep: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: demo test bench
demo: $(BIN)/torchkeep
	$(BIN)/torchkeep train

test: $(BIN)/torchkeep
	$(BIN)/python -m pytest

bench: $(BIN)/torchkeep
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/loader.py && $(BIN)/python bench/train.py && $(BIN)/python bench/quality.py
