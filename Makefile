# Two entry points: `make demo` (the main job) and `make test`. Both create .venv on first use, installing torch
# first (TORCH: pass the CPU build where pip's index serves CUDA) so that the project's torch requirement does not
# pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q hatchling editables
	$(PY) -m pip install -q --no-build-isolation -e '.[dev]'
	touch $@

.PHONY: demo test lint
demo: $(VENV)/.installed
	$(VENV)/bin/specdiag demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check specdiag replay tests benchmarks
	$(VENV)/bin/ruff format --check specdiag replay tests benchmarks
	$(VENV)/bin/mypy specdiag replay

test: lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# Benchmarks are scripts in benchmarks/ (each says how to run it); their figures are in docs/benchmarks.md.
