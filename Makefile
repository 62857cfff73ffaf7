# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# --strict: a broken link, a missing anchor or a page left out of the nav fails the build.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2.0, which is not a build problem.
DOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

.PHONY: demo test docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[sklearn]'
	touch $@

$(VENV)/.installed-docs: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/squall demo --dir demo-run

docs: $(VENV)/.installed-docs
	$(DOCS_BUILD)

# The docs build first, so that a broken link fails CI (.ci/run calls `make test`) before the suite runs.
test: $(VENV)/.installed-test
	$(DOCS_BUILD)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-run site
