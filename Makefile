# kyphofhir: the two commands of the README.
#   make serve   install into .venv and run the server on the embedded default (SQLite),
#                with the synthetic demo cohort loaded into an empty store
#   make test    install into .venv (with dev tools) and run lint, type checks and the tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: serve test lint typecheck pytest bench bench-search clean

$(BIN)/kyphofhir: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# --demo: the synthetic demo cohort is loaded on first start (into an empty store only)
serve: $(BIN)/kyphofhir
	$(BIN)/kyphofhir serve --demo

lint: $(BIN)/kyphofhir
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

typecheck: $(BIN)/kyphofhir
	$(BIN)/mypy

pytest: $(BIN)/kyphofhir
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(BIN)/kyphofhir
	$(BIN)/python -m benchmarks.run

# search at scale (issue #4); ARGS="--patients 10000 --backend postgres" for the 1M run
bench-search: $(BIN)/kyphofhir
	$(BIN)/python -m benchmarks.search $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
