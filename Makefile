# The two commands that do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs jifang with all extras (editable).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jifang-installed
PIP_QUIET ?= -qq

.PHONY: demo test test-fast lint format bench sysdeps venv schema clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo "installing jifang[all] into $(VENV) (first run takes a few minutes: torch is large)"
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip setuptools wheel
	$(PY) -m pip install $(PIP_QUIET) -e '.[all]'
	@touch $@

venv: $(STAMP)

sysdeps:
	@./scripts/sysdeps.sh

# Builds the open default pack when missing, then server + cab on generated clips (Ctrl-C stops).
demo: sysdeps venv
	$(VENV)/bin/jifang demo

test: sysdeps venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

# Format, lint rules and strict typing; .ci/run runs this before the tests.
lint: venv
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy contract models edge_agent server training calibration jifang

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: venv
	@mkdir -p bench/results
	@set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script; done

schema: venv
	$(PY) -m contract.schema docs/contract

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
