# The README's commands. `make demo` and `make test` create the environment when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the project folder: its dagster.yaml is the embedded default (storage in .dagster_home/)
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: demo test dev bench lint validate clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@mkdir -p .dagster_home
	@touch $(STAMP)

## make demo: install if needed, run the main job on the embedded default, print a summary
demo: $(STAMP)
	$(BIN)/risk-pipeline demo

## make test: install if needed, run every test (PostgreSQL tests need 127.0.0.1:5432; required when CI=true)
## in two worker processes (pytest-xdist), a test file per worker at a time; TEST_WORKERS=0 runs in one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

## make dev: the Dagster UI on the embedded default (http://127.0.0.1:3000)
dev: $(STAMP)
	$(BIN)/risk-pipeline init-home
	$(BIN)/dg dev --port 3000

## make bench: every benchmark of bench/ in turn (each prints ratios against a reference in the same process)
bench: $(STAMP)
	@set -e; for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: $(STAMP)
	$(BIN)/dg check defs

clean:
	rm -rf $(VENV) .dagster_home warehouse .pytest_cache .ruff_cache
