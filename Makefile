# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= postgres,dev
comma := ,
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))

.PHONY: install run test lint typecheck check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	exec $(BIN)/python -m api

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check api supervisor workers tests bench
	$(BIN)/ruff format --check api supervisor workers tests bench

typecheck: install
	$(BIN)/mypy api supervisor workers

check: lint typecheck test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
