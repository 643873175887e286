# Every target creates the virtualenv itself (idempotent: reinstalls only when the
# package metadata changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# A pip constraints file for the install (make test-lowest sets the lowest allowed versions).
CONSTRAINTS ?=

.PHONY: venv migrate test test-lowest test-containers demo lint bench bench-quick soak clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test,dev,bench]'
	touch $(STAMP)

migrate: venv
	$(VENV)/bin/reqspec migrate

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole suite on the lowest versions setup.cfg allows, in a virtualenv of its own.
test-lowest:
	$(MAKE) test VENV=.venv-lowest CONSTRAINTS=constraints/lowest.txt

# The whole suite against PostgreSQL in containers: own Docker engine, image built from
# Debian packages (no registry); see .ci/test-containers.
test-containers: venv
	.ci/test-containers $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/reqspec demo

lint: venv
	$(VENV)/bin/ruff check reqspec_repo tests bench
	$(VENV)/bin/mypy --strict reqspec_repo

bench: venv
	$(PY) -m bench

bench-quick: venv
	$(PY) -m bench --quick

soak: venv
	REQSPEC_SOAK_SECONDS=$${REQSPEC_SOAK_SECONDS:-300} $(PY) -m pytest -m soak -p no:randomly tests

clean:
	rm -rf $(VENV) .venv-lowest build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
