# The two newcomer commands: `make run` and `make test`. Each builds its own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,clickhouse]"
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	PARLEY_PORT=$(PORT) $(BIN)/parley demo
	PARLEY_PORT=$(PORT) $(BIN)/parley serve

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) parley-data
