# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates its own virtual environment in .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: test test-sqlite test-postgres demo lint type docs bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[emulator,test,lint,type,docs]'
	rm -f $(VENV)/.installed-* && touch $@

## Run the whole test suite on SQLite, then the database tests on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: $(STAMP)
	CLOUDTASKS_TEST_DATABASE=sqlite $(PY) -m pytest -q

test-postgres: $(STAMP)
	CLOUDTASKS_TEST_DATABASE=postgres $(PY) -m pytest -q tests/django_cloudtasks tests/celery_suite

DEMO_STAMP := $(VENV)/.demo-$(shell cksum pyproject.toml | cut -d' ' -f1)

# The demo needs the package and its emulator extra only: no test, lint or docs tools.
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[emulator]'
	rm -f $(VENV)/.demo-* && touch $@

## Run the showcase against the local emulator, a real HTTP server and SQLite.
demo: $(DEMO_STAMP)
	$(PY) -m demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

type: $(STAMP)
	$(VENV)/bin/mypy

## Build the documentation site (warnings are errors).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

## End-to-end benchmark: the emulator, gunicorn and PostgreSQL (127.0.0.1:5432), against
## Celery on Redis (127.0.0.1:6379). Not part of `make test`. BENCH_ARGS="--scaling --markdown".
bench: $(BENCH_STAMP)
	$(PY) benchmarks/compile_group.py
	$(PY) -m benchmarks.run --celery $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tox .pytest_cache .mypy_cache .ruff_cache
