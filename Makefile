# The two commands of the README: `make demo` (the study's main job) and `make test`.
# Both run the idempotent set-up first (system packages, .venv, pinned Python packages).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/lmc demo

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf results .numba_cache .pytest_cache
