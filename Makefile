# Two commands on a fresh clone: `make demo` (the main job) and `make test` (the tests).
# Each creates or refreshes the virtualenv .venv/ by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(TEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline scripts tests benchmarks

clean:
	rm -rf runs outputs data/synth
