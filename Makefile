# The two commands of the README: `make demo` (the main job end to end) and `make test`.
# Each installs what is missing (scripts/bootstrap.sh) and starts the local services first.
SHELL := /bin/bash
FP := .venv/bin/finpass-pipeline

.PHONY: bootstrap up down status demo test test-unit lint bench

bootstrap:
	@bash scripts/bootstrap.sh

up: bootstrap
	@$(FP) dev up

down:
	@$(FP) dev down

status:
	@$(FP) dev status

demo: up
	@bash scripts/demo.sh

# Every tier (tests/README.md), with the full-depth schema-driven search (100 messages per type).
test: up
	@WIRE_VALIDITY_EXAMPLES=$${WIRE_VALIDITY_EXAMPLES:-100} .venv/bin/pytest

# The unit tier only: no PostgreSQL, no Kafka, so no `up`.
test-unit: bootstrap
	@.venv/bin/pytest tests/unit

# Lint, types, and the contract gate: the models must accept what docs/schemas/ publishes.
lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/mypy && $(FP) schema check docs/schemas && (cd tests/verifier && go vet ./...)

bench: up
	@$(FP) bench
