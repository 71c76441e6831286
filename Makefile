# plausibility-recipes — set-up and main jobs. Two commands matter on a fresh machine:
#   make demo   create .venv if missing, install, run the recipe end to end on the embedded demo (CPU), into build/
#   make test   the test suite (same .venv)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PLAUSIBILITY_BUILD_DIR ?= $(CURDIR)/build

.PHONY: venv demo test test-fast lint lab docs bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 is needed); run 'make PYTHON=python3 ...'"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,cosmos,ray]'
	$(PY) -m ipykernel install --sys-prefix --name plausibility-recipes --display-name "Python (plausibility-recipes)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plausibility demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check recipe_lib tests benchmarks notebooks
	$(VENV)/bin/ruff format --check recipe_lib tests benchmarks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

docs: $(STAMP)
	$(VENV)/bin/plausibility notebooks run
	$(VENV)/bin/plausibility docs --check

bench: $(STAMP)
	$(PY) benchmarks/bench_scoring.py

bench-quick: $(STAMP)
	$(PY) benchmarks/bench_scoring.py --quick

clean:
	rm -rf build
