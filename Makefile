# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/optsuite compare pipelines/configs/demo.toml

# ruff and mypy (configured in pyproject.toml) before the suite: an unclean tree fails the build.
lint: $(STAMP)
	$(VENV)/bin/ruff check keras_optsuite callbacks pipelines
	.ci/typecheck

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
