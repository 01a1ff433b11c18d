# Every target bootstraps .venv on a machine that has only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck compose-check clean chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dispatcher demo

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/plan_throughput.py
	$(BIN)/python benchmarks/dispatch_throughput.py
	$(BIN)/python benchmarks/rate_limit_accuracy.py
	$(BIN)/python benchmarks/api_throughput.py

# Real processes under real faults (docs/reliability.md); several minutes; exit 1 if any goal is missed.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Needs Debian's docker-compose (or Docker Compose v2); no engine is needed to validate the file.
compose-check:
	[ -f .env ] || cp .env.example .env  # every line of it is a comment: nothing changes
	FLOWER_PASSWORD=check docker-compose -f docker-compose.yml config -q

clean:
	rm -rf $(VENV) .dispatcher-state .pytest_cache .hypothesis
