# keras-batch-score: the two commands are `make demo` and `make test`.
# Both create .venv on first use with nothing but a Python 3.10-3.12 interpreter.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.10 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint format bench bench-quick bench-gpu lock clean airflow-venv flex-metadata docs-flags

install: $(STAMP)

$(STAMP): pyproject.toml setup.py requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" setuptools wheel
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo --workdir .demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint airflow-venv
	$(BIN)/python -m pytest

# The inner loop: everything but the end-to-end and deploy tests marked `slow`.
# `make test-fast PYTHON=python3.12 VENV=.venv-py312` runs it on another interpreter.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Airflow + its Beam/Google providers + this project, in their own venv so the
# main install stays lean; tests/deploy/test_airflow.py runs the DAG with it.
AIRFLOW_VENV := .venv-airflow
$(AIRFLOW_VENV)/.installed: pyproject.toml setup.py requirements/airflow.txt requirements/airflow-constraints.txt
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c requirements/airflow-constraints.txt -r requirements/airflow.txt -e .
	@touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed

# The Flex Template's parameters, one per `batch-score score` flag; rerun after
# changing a flag (tests/deploy/test_templates.py fails until metadata.json matches).
flex-metadata: $(STAMP)
	$(BIN)/python -m keras_batch_score.pipelines.flex_metadata --output templates/dataflow/metadata.json

# The flag tables of docs/usage.md, from the option schema (tests/unit/test_options.py checks them).
docs-flags: $(STAMP)
	$(BIN)/python -m keras_batch_score.pipelines.options --docs docs/usage.md

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench --workdir .bench

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench --workdir .bench --quick

# W1 and W2 against the GPU compute limit; stops with an error where TensorFlow sees no GPU.
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu --workdir .bench

# Re-resolve the transitive pin set after editing pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q '.[test]'
	( echo '# Full transitive pin set resolved by `make install` on Python 3.11 (pip freeze).'; \
	  echo '# Regenerate with `make lock` after changing pyproject.toml.'; \
	  .venv-lock/bin/python -m pip freeze --exclude keras-batch-score ) > requirements/constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .demo .bench *.egg-info .pytest_cache .ruff_cache
