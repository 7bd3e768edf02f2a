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
	@# LM decoding (optional): kenlm compiles from source; pyctcdecode goes in without its stale numpy<2 pin.
	$(PY) -c "import kenlm, pyctcdecode" 2>/dev/null || { \
	  $(PY) -m pip install --quiet --disable-pip-version-check -e '.[lm]' && \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps 'pyctcdecode==0.5.0'; } || \
	  echo "warning: LM decoding extras (kenlm, pyctcdecode) did not install; beam search + LM is skipped"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo $(DEMO_ARGS)

# Most tests run scripts in one-thread subprocesses: one pytest worker per core (pytest-xdist) keeps every core
# busy (on 2 AVX2 cores: 9.4 instead of ~14 minutes; 6.5 since scripts fork from a server with torch imported,
# tests/_script_runner.py). `make test TEST_ARGS="-n 0"` runs them one at a time.
test: $(STAMP)
	$(PY) -m pytest -q -n auto $(TEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline scripts tests benchmarks

clean:
	rm -rf runs outputs data/synth
