# Switchboard: `make run` starts the embedded default, `make test` runs everything CI runs.
# Both work from a fresh clone: they create .venv, install the pinned dependencies, and fetch
# Apache Kafka's jars from Maven Central into .cache/ on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help install run test lint typecheck unit kafka browser bench soak clean distclean

help:
	@echo "make run    start Kafka and a worker with sandbox channels on http://127.0.0.1:6066"
	@echo "make test   lint, type-check and run the whole test suite against a real broker"
	@echo "make bench  the pipeline benchmark (prints figures; not part of make test)"
	@echo "make soak   two workers under load through SIGTERMs and kill -9s (minutes; not part of make test)"
	@echo "make unit   only the tests that need no broker (fast)"
	@echo "make browser  Debian's chromium and chromium-driver for the console's browser test"
	@echo "make clean  remove local broker and worker state (.switchboard/)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

kafka: install
	$(BIN)/switchboard kafka fetch

# Debian's chromium and chromium-driver, for the console's browser test (tests/integration/
# test_console.py): installed with apt-get when missing (as root, or through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  echo "installing chromium and chromium-driver (Debian packages) for the browser test"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

run: install
	$(BIN)/switchboard dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not kafka and not registry" $(PYTEST_ARGS)

test: lint typecheck kafka browser
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install kafka
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)

# SOAK_SECONDS (default 120) of load at SOAK_RATE sessions/s (default 30); figures printed, and
# written to SOAK_REPORT (JSON) when it is set.
soak: install kafka
	$(BIN)/pytest -m soak -s -p no:cacheprovider tests/integration/test_crashes.py $(PYTEST_ARGS)

clean:
	rm -rf .switchboard

distclean: clean
	rm -rf $(VENV) .cache
