# Two entry points (see README.md):
#   make demo  — install kaic into .venv and run an example on the embedded local center
#   make test  — install kaic with its test dependencies into .venv and run lint, types and tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   := $(CURDIR)/.kaic-demo

.PHONY: demo test lint unit install completions openapi bench-start clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

KAIC_DEMO := KAIC_CONFIG_DIR=$(DEMO)/config KAIC_STATE_DIR=$(DEMO)/state $(VENV)/bin/kaic

demo: $(VENV)/.installed
	@echo "== who am I on the embedded local center (state in $(DEMO)) =="
	$(KAIC_DEMO) whoami
	@echo "== submit examples/hello.yaml, follow its output, exit with its code =="
	$(KAIC_DEMO) submit examples/hello.yaml --follow; code=$$?; \
	  if [ $$code -eq 0 ]; then \
	    echo "== submit examples/staged/job.yaml: push its data, run, pull its results =="; \
	    $(KAIC_DEMO) submit examples/staged/job.yaml --wait >/dev/null; code=$$?; \
	    [ $$code -eq 0 ] && cat examples/staged/results/summary.txt; \
	  fi; \
	  $(KAIC_DEMO) jobs --all --limit 3; \
	  $(KAIC_DEMO) center stop; exit $$code

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The suite runs in parallel: most tests wait on real servers (a center, sshd, Slurm), so
# three workers keep two cores busy; tests that share something machine-wide are grouped
# onto one worker (SERIAL_GROUPS in tests/conftest.py). PYTEST_WORKERS=0 runs it serially.
PYTEST_WORKERS ?= 3

unit: $(VENV)/.installed
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

test: lint unit

completions: $(VENV)/.installed
	$(PY) scripts/gen_completions.py completions

openapi: $(VENV)/.installed
	$(PY) scripts/gen_openapi.py docs/openapi.json

bench-start: $(VENV)/.installed
	$(PY) benchmarks/bench_start.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
