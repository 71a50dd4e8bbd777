# One command surface for people, CI and pre-commit alike.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
#: `make test` runs everything but the slow part of the fault suite; `make chaos` runs all of it.
TEST_MARKERS ?= not chaos or ci

.PHONY: install run test test-unit chaos lint fmt bench clean readme constraints

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## Migrate the database, then run the edge and INGEST_WORKERS workers, supervised.
run: install
	$(BIN)/ingest run

## The whole test suite against the local Postgres and RabbitMQ.
test: install
	$(BIN)/pytest -m "$(TEST_MARKERS)" $(PYTEST_ARGS)

## The unit tests alone: pure modules, no Postgres or RabbitMQ needed, in seconds.
test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

## The whole fault suite: private Postgres and RabbitMQ, kills, restarts, cuts (several minutes).
chaos: install
	$(BIN)/pytest -m chaos -v $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check ingest worker tests
	$(BIN)/ruff format --check ingest worker tests
	$(BIN)/mypy ingest worker

fmt: install
	$(BIN)/ruff format ingest worker tests
	$(BIN)/ruff check --fix ingest worker tests

## Benchmarks: ingest beside the naive direct upsert and a bare aiohttp server, as `make run` runs it.
bench: install
	command -v wrk >/dev/null || (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk))
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Pin the image's dependencies: what `pip install .` resolves to today, in a fresh venv.
constraints:
	rm -rf /tmp/ingest-constraints && $(PYTHON) -m venv /tmp/ingest-constraints
	/tmp/ingest-constraints/bin/pip install --quiet .
	(echo "# Exact versions the Docker image installs (regenerate: make constraints)."; \
	 /tmp/ingest-constraints/bin/pip freeze --exclude ingest) > constraints.txt

## Regenerate the README's settings table from the Settings class.
readme: install
	$(BIN)/python -c "import re, pathlib; from ingest.settings import settings_table as t; \
	p = pathlib.Path('README.md'); s = p.read_text(); \
	p.write_text(re.sub(r'\| variable \| default \|.*?(?=\n\n)', lambda m: t(), s, flags=re.S))"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
