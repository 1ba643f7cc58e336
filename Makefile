# Switchyard: `make run` serves the gateway on its embedded relay simulator;
# `make test` runs every check CI runs. Both create the virtualenv they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
GEN ?= gen
PROTOS := proto/switchyard/v1/gateway.proto
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt proto clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Switchyard needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,report]'
	@touch $@

install: $(STAMP) ## create .venv and install Switchyard with its dev tools

run: $(STAMP) ## serve Switchyard on 127.0.0.1:50051 against the embedded relay simulator
	$(PY) -m server

test: lint ## lint, type-check and run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy (strict) and buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP) ## regenerate gen/ from proto/ (GEN=dir writes elsewhere)
	rm -rf $(GEN)/python/switchyard
	mkdir -p $(GEN)/python/switchyard/v1
	$(PY) -m grpc_tools.protoc -Iproto \
		--python_out=$(GEN)/python --grpc_python_out=$(GEN)/python \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$(GEN)/python \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN)/python \
		--include_source_info --descriptor_set_out=$(GEN)/python/switchyard/v1/gateway.binpb \
		$(PROTOS)
	touch $(GEN)/python/switchyard/__init__.py $(GEN)/python/switchyard/v1/__init__.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
