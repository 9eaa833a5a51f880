# The two commands a fresh clone needs: `make demo` (set up, then run the quickstart end to end) and
# `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SPECRUN_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test bench clean

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

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_trainer.py

clean:
	rm -rf $(VENV) specrun.duckdb specrun-artifacts .pytest_cache
