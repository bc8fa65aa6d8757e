# The two commands of the README:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast bench setup clean

run:            ## set up (first time) and start the appliance on the embedded default model
	@scripts/setup.sh
	$(PY) scripts/run_appliance.py

test:           ## set up (first time) and run the whole test suite
	@scripts/setup.sh --test
	$(PY) -m pytest

test-fast:      ## unit tests only (no model, no servers)
	$(PY) -m pytest -m "not slow"

bench:          ## benchmark the server (see docs/benchmarks.md)
	$(PY) scripts/bench.py --help

clean:
	rm -rf $(VENV) .pytest_cache
