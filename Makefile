# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint install-service install-dev clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install-service: $(VENV)/bin/activate
	$(PIP) install -q -e .

install-dev: $(VENV)/bin/activate
	$(PIP) install -q -c constraints/cpu.txt -e '.[training,dev]'

## serve: install the service's dependencies (no torch) and start it on the default model in models/
serve: install-service
	$(PY) -m service --host $(HOST) --port $(PORT)

## test: install everything (CPU torch) and run the whole test suite
test: install-dev
	$(PY) -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check training service tests benchmarks scripts
	$(VENV)/bin/ruff format --check training service tests benchmarks scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
