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

# The service install, redone only when pyproject.toml changes (a stamp file in the venv).
$(VENV)/.service-installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q -e .
	touch $@

## serve: install the service's dependencies (no torch) if pyproject.toml changed, and start it on the default
## model in models/. Ctrl-C or SIGTERM stops it quietly: the server drains and exits, and neither make nor the
## shell reports the signal (Ctrl-C reaches the server directly; a SIGTERM to make or this shell is passed on,
## once). Any other exit status of the server is still an error.
serve: $(VENV)/.service-installed
	@$(PY) -m service --host $(HOST) --port $(PORT) & pid=$$!; \
	trap ':' INT; trap 'kill -TERM $$pid 2>/dev/null' TERM; \
	wait $$pid 2>/dev/null; status=$$?; \
	while kill -0 $$pid 2>/dev/null; do wait $$pid 2>/dev/null; status=$$?; done; \
	[ $$status -eq 0 ] || [ $$status -gt 128 ] || exit $$status

## test: install everything (CPU torch) and run the whole test suite
test: install-dev
	$(PY) -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check training service tests benchmarks scripts
	$(VENV)/bin/ruff format --check training service tests benchmarks scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
