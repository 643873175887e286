# Every target creates the virtualenv itself (idempotent: reinstalls only when the
# package metadata changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# A pip constraints file for the install (make test-lowest sets the lowest allowed versions).
CONSTRAINTS ?=

.PHONY: venv migrate test test-lowest test-containers demo lint bench bench-quick soak clean nova-compat

# The reference Nova for `make nova-compat` (a throwaway virtualenv, kept between runs).
NOVA_VERSION := 34.0.0
NOVA_VENV    ?= .nova-venv
NOVA_STAMP   := $(NOVA_VENV)/.nova-$(NOVA_VERSION)-stamp
NOVA_FIXTURES := tests/fixtures/nova

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

$(NOVA_STAMP):
	rm -rf $(NOVA_VENV)
	$(PYTHON) -m venv $(NOVA_VENV)
	$(NOVA_VENV)/bin/pip install --quiet --disable-pip-version-check nova==$(NOVA_VERSION)
	touch $(NOVA_STAMP)

# Specs built only by Nova's code -> import -> export -> loaded by Nova, field by field.
# Also checks that the committed fixtures are exactly what Nova builds.
nova-compat: venv $(NOVA_STAMP)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	$(NOVA_VENV)/bin/python $(NOVA_FIXTURES)/generate.py --check $(NOVA_FIXTURES) && \
	$(NOVA_VENV)/bin/python $(NOVA_FIXTURES)/generate.py --out "$$out" && \
	REQSPEC_NOVA_COMPAT_DIR="$$out" $(PY) -m pytest -q -p no:randomly tests/test_nova_compat.py && \
	$(NOVA_VENV)/bin/python $(NOVA_FIXTURES)/compare.py "$$out"

clean:
	rm -rf $(VENV) .venv-lowest $(NOVA_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
