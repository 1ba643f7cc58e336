# Switchyard: `make run` serves the gateway on its embedded relay simulator;
# `make test` runs every check CI runs. Both create the virtualenv they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
GEN ?= gen
PROTOS := proto/switchyard/v1/gateway.proto proto/switchyard/admin/v1/admin.proto
PYTEST_ARGS ?=

# Node and Go: the toolchains the generated stubs and the example clients need.
# Node packages are pinned by package-lock.json; Go and its gRPC libraries are
# Debian's packages, built offline in GOPATH mode (there is no module proxy).
NODE_STAMP := node_modules/.installed
GO_PACKAGES := golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev \
	golang-google-protobuf-dev golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev
# The plugin versions gen/go was made with; another version would write other code.
PROTOC_GEN_GO_VERSION := protoc-gen-go v1.28.1
PROTOC_GEN_GO_GRPC_VERSION := protoc-gen-go-grpc 1.0
GO_SYSTEM_PATH ?= /usr/share/gocode
GO_ENV := GO111MODULE=off GOFLAGS= GOPATH=$(CURDIR)/.build/gopath:$(GO_SYSTEM_PATH) \
	GOCACHE=$(CURDIR)/.build/go-cache
GO_EXAMPLE := .build/bin/switchyard-go-example

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt proto clean node-deps go-deps pg-deps redis-deps \
	lb-deps node-example go-example breaking release-contract

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Switchyard needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,report]'
	@touch $@

install: $(STAMP) ## create .venv and install Switchyard with its dev tools

run: $(STAMP) ## serve Switchyard on 127.0.0.1:50051 against the embedded relay simulator
	$(BIN)/switchyard serve

test: lint node-deps go-deps pg-deps redis-deps lb-deps ## lint, type-check and run the whole test suite (Node and Go examples included)
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite fuzzes for 60 s (tests/fuzz); this runs the same fuzzer longer, printing what
# each RPC answered. SWITCHYARD_FUZZ_SEED=<the seed a run printed> replays its inputs.
FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: $(STAMP) ## fuzz every RPC of a real gateway for FUZZ_SECONDS (600; SWITCHYARD_FUZZ_SEED replays)
	SWITCHYARD_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -p no:cacheprovider -s \
		tests/fuzz/test_fuzz_gateway.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy (strict) and buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP) node-deps go-deps ## regenerate gen/ for Python, Go and Node from proto/ (GEN=dir writes elsewhere)
	rm -rf $(GEN)/python/switchyard $(GEN)/go $(GEN)/node
	mkdir -p $(GEN)/python/switchyard/v1 $(GEN)/python/switchyard/admin/v1
	$(PY) -m grpc_tools.protoc -Iproto \
		--python_out=$(GEN)/python --grpc_python_out=$(GEN)/python \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$(GEN)/python \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN)/python \
		--include_source_info --descriptor_set_out=$(GEN)/python/switchyard/v1/gateway.binpb \
		$(PROTOS)
	touch $(GEN)/python/switchyard/__init__.py $(GEN)/python/switchyard/v1/__init__.py \
		$(GEN)/python/switchyard/admin/__init__.py $(GEN)/python/switchyard/admin/v1/__init__.py
	$(BIN)/buf generate --template buf.gen.go.yaml -o $(GEN)
	$(BIN)/buf generate --template buf.gen.node.yaml -o $(GEN)

node-deps: $(NODE_STAMP) ## install the pinned Node packages (protoc-gen-es, grpc-js, TypeScript)

$(NODE_STAMP): package.json package-lock.json clients/node/package.json
	@command -v npm >/dev/null || { echo "Switchyard's Node stubs need Node.js 20+ and npm"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# $(call apt_install,TARGET,PACKAGES): install Debian packages as root, or with sudo; one
# shell command, for a recipe that has found PACKAGES missing (PACKAGES may be a shell word).
apt_install = command -v apt-get >/dev/null || { echo "$(1) needs Debian's apt-get for" $(2); exit 1; }; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "$(1) must install" $(2) "as root"; exit 1; fi; \
	echo "installing" $(2); \
	$$sudo apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(2) >/dev/null

go-deps: ## install Go, its gRPC libraries and protoc plugins from Debian (as root or with sudo)
	@missing=$$(for package in $(GO_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Abbrev}' $$package 2>/dev/null | grep -q '^ii' || echo $$package; \
	done); \
	if [ -n "$$missing" ]; then $(call apt_install,go-deps,$$missing); fi
	@[ "$$(protoc-gen-go --version)" = "$(PROTOC_GEN_GO_VERSION)" ] \
		|| { echo "gen/go needs $(PROTOC_GEN_GO_VERSION), found $$(protoc-gen-go --version)"; exit 1; }
	@[ "$$(protoc-gen-go-grpc --version)" = "$(PROTOC_GEN_GO_GRPC_VERSION)" ] \
		|| { echo "gen/go needs $(PROTOC_GEN_GO_GRPC_VERSION), found $$(protoc-gen-go-grpc --version)"; exit 1; }

pg-deps: ## install PostgreSQL's server binaries from Debian (the tests start their own clusters)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
		$(call apt_install,pg-deps,postgresql); \
	}

redis-deps: ## install Debian's redis-server (the tests start their own, on free ports)
	@command -v redis-server >/dev/null 2>&1 || { \
		$(call apt_install,redis-deps,redis-server); \
	}

lb-deps: ## install Debian's nginx (the tests run it as a gRPC load balancer, grpc_pass)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		$(call apt_install,lb-deps,nginx); \
	}

node-example: node-deps ## build the Node example client (clients/node) into clients/node/dist
	node_modules/.bin/tsc -p clients/node

go-example: go-deps ## build the Go example client (clients/go) into .build/bin
	@mkdir -p .build/gopath/src .build/bin
	@# GOPATH mode finds this repository as the import path "switchyard".
	@ln -sfn ../../.. .build/gopath/src/switchyard
	$(GO_ENV) go build -o $(GO_EXAMPLE) switchyard/clients/go/example

breaking: $(STAMP) ## check proto/ against the released contract (buf breaking, WIRE_JSON)
	$(BIN)/buf breaking --against proto/released/switchyard-v1.binpb

release-contract: $(STAMP) ## record proto/ as the released contract: run only when cutting a release
	mkdir -p proto/released
	$(BIN)/buf build -o proto/released/switchyard-v1.binpb

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info node_modules .build clients/node/dist
	@echo "kept .switchyard/ (make run's ledger and journal); remove it to forget its spend"

# ---- benchmark harness (issue 3) ------------------------------------------------------
# `make bench` measures the relay, the floors, Switchyard (and PEERS=litellm) in one run;
# SOAK=1 adds the 5-minute RSS soak; PROFILE (default switchyard) names the rows py-spy
# profiles, which is how the share of CPU in telemetry code is measured (PROFILE= skips).
# `make bench-smoke` proves the harness runs (seconds).
# Neither fails on a missed target. Bench-only packages come from the `bench` extra;
# LiteLLM gets its own virtualenv under bench/.peers/, created only when asked for.
BENCH_STAMP := $(VENV)/.installed-bench
LITELLM_VERSION ?= 1.108.0
LITELLM_STAMP := bench/.peers/litellm/.installed-$(LITELLM_VERSION)
SOAK_SECONDS ?= 300
PROFILE ?= switchyard
BENCH_ARGS ?=
.PHONY: bench bench-smoke bench-instructions

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

$(LITELLM_STAMP):
	$(PYTHON) -m venv bench/.peers/litellm
	bench/.peers/litellm/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	@touch $@

bench: $(BENCH_STAMP) $(if $(findstring litellm,$(PEERS)),$(LITELLM_STAMP)) ## benchmark vs the floor (PEERS=litellm, SOAK=1)
	$(PY) -m bench $(if $(PEERS),--peers $(PEERS)) $(if $(SOAK),--soak $(SOAK_SECONDS)) \
		$(if $(PROFILE),--profile $(PROFILE)) $(BENCH_ARGS)

bench-smoke: $(BENCH_STAMP) ## run the benchmark harness with tiny counts (seconds)
	$(PY) -m bench --smoke $(BENCH_ARGS)

bench-instructions: $(BENCH_STAMP) ## instructions per call of the floor and Switchyard, under callgrind
	@command -v valgrind >/dev/null 2>&1 || { \
		$(call apt_install,bench-instructions,valgrind); \
	}
	$(PY) -m bench.instructions $(BENCH_ARGS)
# ---- end of benchmark harness ----------------------------------------------------------
