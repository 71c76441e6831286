# plausibility-recipes — set-up and main jobs. Two commands matter on a fresh machine:
#   make demo   create .venv if missing, install, run the recipe end to end on the embedded demo (CPU), into build/;
#               the documentation site lands in build/site
#   make test   the test suite (same .venv)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_STAMP := $(VENV)/.installed-lab
export PLAUSIBILITY_BUILD_DIR ?= $(CURDIR)/build

.PHONY: venv demo test test-all test-fast lint lab docs bench bench-quick bench-training gpu-venv gpu-resolve gpu-bundle gpu-plan clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 is needed); run 'make PYTHON=python3 ...'"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,cosmos,ray,docs]'
	$(VENV)/bin/plausibility notebooks kernel
	touch $(STAMP)

# JupyterLab is not a dependency of the library: `make lab` (and the tests, which start a Jupyter server) add it.
$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[lab]'
	touch $(LAB_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plausibility demo

# Tests run on 2 processes (pytest-xdist; one file per process at a time, so a file's fixtures are made once; the
# longest files first, HEAVY_FIRST in tests/conftest.py, and torch on one thread per process), then the tests that
# start Ray clusters in one process (CLUSTER in tests/conftest.py). Exit status: the first failure's.
# make test       the CI gate: everything but the longest end-to-end runs (LONG in tests/conftest.py); < 15 min
# make test-all   everything, LONG included
# make test-fast  without the tests marked slow (notebooks, training runs, end-to-end commands, Ray clusters,
#                 the wheel install; SLOW in tests/conftest.py)
PYTEST := $(PY) -m pytest -q
PARALLEL := -n 2 --dist loadfile --no-loadscope-reorder
define two_phases
	$(PYTEST) $(PARALLEL) -m "not cluster$(1)"; a=$$?; \
	$(PYTEST) -m "cluster$(1)"; b=$$?; [ $$b -eq 5 ] && b=0; \
	[ $$a -ne 0 ] && exit $$a; exit $$b
endef

test: $(LAB_STAMP)
	$(call two_phases, and not long)

test-all: $(LAB_STAMP)
	$(call two_phases,)

test-fast: $(LAB_STAMP)
	$(PYTEST) $(PARALLEL) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check recipe_lib tests benchmarks notebooks
	$(VENV)/bin/ruff format --check recipe_lib tests benchmarks

# JupyterLab on notebooks/ on 127.0.0.1, the project's kernel registered, kernels on encrypted channels.
lab: $(LAB_STAMP)
	$(VENV)/bin/plausibility notebooks lab

# Re-execute the notebooks, then build the site into build/site (mkdocs strict, then every page's links and images
# checked, then every page opened in headless Chromium).
docs: $(STAMP)
	$(VENV)/bin/plausibility notebooks run
	$(VENV)/bin/plausibility docs --check

bench: $(STAMP)
	$(PY) benchmarks/bench_scoring.py

bench-quick: $(STAMP)
	$(PY) benchmarks/bench_scoring.py --quick

bench-training: $(STAMP)
	$(PY) benchmarks/bench_training.py

# GPU machines (CUDA 13 driver): torch 2.11.0 + vLLM 0.22.1 + transformers 4.57.6 (constraints-gpu.txt).
GPU_PLATFORMS := $(foreach n,$(shell seq 17 39),--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64

gpu-venv:
	test -x .venv-gpu/bin/python || $(PYTHON) -m venv .venv-gpu
	.venv-gpu/bin/python -m pip install -q --upgrade pip
	.venv-gpu/bin/python -m pip install -q -c constraints-gpu.txt -e '.[gpu,dev]'

# The offline bundle for a GPU machine without network (benchmarks/gpu_bundle.py; needs network here): what vLLM,
# cosmos-rl and recipe_lib need there and benchmarks/gpu-machine-packages.txt lacks, in pieces of at most PIECE_MIB
# (.gpu/p1 ... .gpu/p4, each with the manifest and SHA256SUMS), and the device calls that carry them.
PIECE_MIB ?= 58
gpu-bundle: $(STAMP)
	$(PY) benchmarks/gpu_bundle.py build --out .gpu --piece-mib $(PIECE_MIB)

gpu-plan:
	$(PY) benchmarks/gpu_bundle.py plan --out .gpu

# Show that the GPU set resolves for Python 3.12 on manylinux x86-64 without installing anything (downloads wheels).
gpu-resolve:
	mkdir -p build
	python3 -m pip install --dry-run --ignore-installed --quiet --report build/gpu-resolve.json --target build/gpu-resolve \
	  --python-version 3.12 --implementation cp $(GPU_PLATFORMS) --only-binary=:all: -c constraints-gpu.txt '.[gpu]'
	python3 -c "import json; r = json.load(open('build/gpu-resolve.json'))['install']; \
	  print(len(r), 'packages:', ', '.join(f\"{p['metadata']['name']} {p['metadata']['version']}\" for p in r \
	  if p['metadata']['name'] in ('torch', 'torchvision', 'vllm', 'transformers', 'tokenizers')))"

clean:
	rm -rf build
