# The two commands a fresh clone needs: `make demo` (set up, then run the quickstart end to end) and
# `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SPECRUN_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint bench clean

$(BIN)/specrun: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU wheel of torch lies on local disk; installing it first keeps pip from pulling a CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/specrun

install: $(BIN)/specrun

demo: install
	$(BIN)/specrun apply specs/quickstart.toml
	$(BIN)/specrun sql "SELECT run_id, method, seed, round(accuracy, 4) AS accuracy, round(f1, 4) AS f1, round(train_seconds, 1) AS train_s FROM run_summary WHERE run_id IN (SELECT run_id FROM current_runs WHERE experiment = 'quickstart') ORDER BY seed"

# the import contracts first (docs/architecture.md: the layers), then the tests
# the layers (import-linter contracts), lint and format (ruff), then the suite
test: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# fix what ruff can fix and format the code (what `make test` checks)
lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# every performance target of issue 13 in one run (benchmarks/README.md); ~15-25 min on an idle machine.
# `make bench BENCH_ARGS=--quick` is the smoke test; any bench_all.py option goes in BENCH_ARGS.
BENCH_ARGS ?= --json benchmarks/results-all.json
bench: install
	$(BIN)/python benchmarks/bench_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) specrun.duckdb specrun-artifacts .pytest_cache
