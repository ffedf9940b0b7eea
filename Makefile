# Weir's build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
# Tools and cluster binaries built by hack/ scripts live here; git ignores it.
CACHE := $(CURDIR)/.cache
GOTESTFLAGS ?=

.PHONY: all build test unit lint vet fmt bench run clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/echo

## run: the traffic-split demo with two local echo backends (Ctrl-C stops it).
run: build
	BIN=$(BIN) hack/run-example.sh

## test: everything CI runs: lint, then unit and integration tests.
test: lint unit

unit:
	$(GO) test $(GOTESTFLAGS) ./...

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '^third_party/')

## bench: Go benchmarks; figures go to docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

clean:
	rm -rf $(BIN)
