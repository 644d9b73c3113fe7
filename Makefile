# kyphofhir: the two commands of the README.
#   make serve   install into .venv and run the server on the embedded default (SQLite)
#   make test    install into .venv (with dev tools) and run lint, type checks and the tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: serve test lint typecheck pytest bench clean

$(BIN)/kyphofhir: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

serve: $(BIN)/kyphofhir
	$(BIN)/kyphofhir serve

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
