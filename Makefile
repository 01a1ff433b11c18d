# Every target bootstraps .venv on a machine that has only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck compose-check compose-smoke clean chaos

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e clients/python  # the typed client (clients/python), which the tests use
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dispatcher demo

# Two processes (pytest-xdist), a test file to each at a time: most tests wait on real servers, workers and
# subprocesses, so the second core halves the wall time; a file's module fixtures stay in one process.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/plan_throughput.py
	$(BIN)/python benchmarks/dispatch_throughput.py
	$(BIN)/python benchmarks/rate_limit_accuracy.py
	$(BIN)/python benchmarks/api_throughput.py
	$(BIN)/python benchmarks/redis_memory.py
	$(BIN)/python benchmarks/callbacks_throughput.py

# Real processes under real faults (docs/reliability.md); several minutes; exit 1 if any goal is missed.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# No incremental cache: a stale cache once hid an error that a fresh checkout (CI) reports.
typecheck: $(STAMP)
	$(BIN)/mypy --no-incremental

# docker-compose's own validation of docker-compose.yml, both profiles, as `cp .env.example .env` would
# leave it (a .env made here is removed again). No engine needed; skipped where compose is not installed.
compose-check:
	@if docker compose version >/dev/null 2>&1; then compose="docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then compose=docker-compose; \
	else echo "compose-check: SKIPPED: neither 'docker compose' nor 'docker-compose' is installed" \
	     "(Debian: apt-get install docker-compose)"; exit 0; fi; \
	made=; [ -f .env ] || { cp .env.example .env; made=1; }; \
	$$compose -f docker-compose.yml config -q && $$compose -f docker-compose.yml --profile staging config -q; \
	status=$$?; [ -z "$$made" ] || rm -f .env; \
	[ $$status -eq 0 ] && echo "compose-check: docker-compose.yml is valid ($$compose, default and staging profiles)"; \
	exit $$status

# The compose deployment started for real on this host's Docker engine, with base images built from Debian's
# packages (no registry needed): scripts/compose_smoke.py says what it checks; docs/operations.md how to run it.
compose-smoke:
	python3 scripts/compose_smoke.py

clean:
	rm -rf $(VENV) .dispatcher-state .pytest_cache .hypothesis
