# The two newcomer commands: `make run` and `make test`. Each builds its own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An editable install compiles no bytecode, and where PYTHONDONTWRITEBYTECODE is set (as in
# containers) every start of parley compiled its modules again: about 0.1 s of CPU.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q src
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,clickhouse]"
	$(BIN)/python -m compileall -q src
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	PARLEY_PORT=$(PORT) $(BIN)/parley demo
	PARLEY_PORT=$(PORT) $(BIN)/parley serve

# The suite runs in two processes (pytest-xdist): much of it waits on the servers and loads it
# starts, so on the 2-core machine it took 518 s rather than 837. `pytest` alone runs it serially.
test: $(VENV)/.installed-dev chromium
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/python -m pytest -n 2

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed and cannot be here: the browser tests will be skipped"

clean:
	rm -rf $(VENV) parley-data
