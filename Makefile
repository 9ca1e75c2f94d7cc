# Shortcuts for developers; CI runs `bash .ci/run`. Everything uses the project's .venv.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bench help install demo test test-postgres lint format type docs docs-serve packaging tox screenshots clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

install: $(PY)  ## install the package with every development extra into .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"

demo:  ## run the example project (sandbox, worker, dev server)
	bash example_project/run.sh

test:  ## the test suite on SQLite
	$(PY) -m pytest -q -p no:cacheprovider

test-postgres:  ## the test suite on PostgreSQL (127.0.0.1:5432)
	DJANGO_PAUBOX_TEST_DB=postgres $(PY) -m pytest -q -p no:cacheprovider

lint:  ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:  ## ruff format and the fixes ruff can make
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

type:  ## mypy on django_paubox
	$(PY) -m mypy

docs:  ## build the documentation site into site/ (strict, offline)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve:  ## serve the documentation on http://127.0.0.1:8001/
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

packaging:  ## build sdist and wheel, twine check, install the wheel in a clean venv
	$(PY) -m pytest -q -p no:cacheprovider -m packaging tests/test_packaging.py

tox:  ## every tox environment this machine has Pythons for
	$(VENV)/bin/tox -p auto

bench:  ## the benchmarks (bench/results/latest.md; QUICK=1 smoke-sized, ONLY=a,b, PROFILE=1)
	$(PY) -m pip install -q -e ".[dev,bench]"
	@command -v wrk >/dev/null || echo "wrk is missing (apt-get install wrk): the webhooks benchmark will fail"
	$(PY) -m bench $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),) $(if $(PROFILE),--profile,)

screenshots:  ## refresh docs/img/ from the browser test
	DJANGO_PAUBOX_SCREENSHOTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_browser.py

clean:  ## remove build and cache artefacts
	rm -rf build dist site .tox .mypy_cache .ruff_cache .pytest_cache *.egg-info
