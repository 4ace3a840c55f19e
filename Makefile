# Two entry points for people: `make demo` and `make test`. Both build .venv from
# nothing; a stamp file makes reruns instant until pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test screenshots bench bench-quick clean

# setuptools is needed only to build tally, which pip does in an isolated environment.
# Left in the venv (Python 3.11's venv installs it), its distutils-precedence.pth
# imports a module and adds an import hook at every interpreter start: ~3 ms of CPU
# that every `tally run` would pay.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes setuptools

# editable_mode=compat: a plain path entry in a .pth file. setuptools' default editable
# finder imports pathlib and importlib.util at every interpreter start (~20 ms here),
# which `tally run` would pay on every experiment (tests/test_import_budget.py).
EDITABLE := --config-settings editable_mode=compat

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(EDITABLE) -e .
	touch $@

# dvclive (test extras) brings dvc, whose zc.lockfile declares setuptools though its
# namespace package needs none: uninstalled again, for the reason above.
$(TEST_STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(EDITABLE) -e '.[test]'
	$(BIN)/python -m pip uninstall --quiet --yes setuptools
	touch $@ $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# The layer contract (pyproject.toml, [tool.importlinter]) first: a layering mistake
# is reported in a second, before the suite runs.
test: $(TEST_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The README's pictures of `tally ui` and `tally plots diff`, made by the browser tests.
screenshots: $(TEST_STAMP)
	TALLY_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser -q

# Each run is appended to bench/RESULTS.md as a dated section: the file is the record.
bench: $(STAMP)
	$(BIN)/python -m bench.run --append "$$(date -u '+%Y-%m-%d %H:%M UTC'): make bench"

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick --append "$$(date -u '+%Y-%m-%d %H:%M UTC'): make bench-quick (reduced sizes)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
