# The two set-up commands of the README are `make demo` and `make test`; both start from nothing but Python 3.11.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install lock demo test lint system-deps bench ui clean

UV_VERSION := 0.13.10

# Installs exactly requirements.lock (every package pinned with its hashes) with uv, then the project itself without
# resolving again. uv because a cold install takes 19 s with it and 51 s with pip from the same lock (docs/operations.md,
# "Installing"); pip stays the fallback: `$(PY) -m pip install -r requirements.lock && $(PY) -m pip install --no-deps -e .`
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --require-hashes -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $@

install: $(VENV)/.installed

lock:  ## re-resolve requirements.lock after changing a pin in pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet -o requirements.lock

demo: install  ## generate 90 days of GTM exports and materialize the whole asset graph in DuckDB
	$(VENV)/bin/gtm-pipeline demo

system-deps:  ## Debian packages the end-to-end tests run for real (needs root; skipped when already present)
	bash scripts/install-system-deps.sh

lint: install  ## ruff and mypy (configured in pyproject.toml); part of `make test`
	$(VENV)/bin/ruff check gtm_pipeline gtm_pipeline_tests
	$(VENV)/bin/mypy

test: install system-deps lint  ## lint and types, then the full suite, end-to-end tests with real servers included
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install  ## throughput, memory and incremental cost at three sizes
	$(VENV)/bin/gtm-pipeline bench

ui: install  ## the Dagster UI on http://127.0.0.1:3000 over the demo's instance
	DAGSTER_HOME=$(CURDIR)/data/dagster_home $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data build artifacts
