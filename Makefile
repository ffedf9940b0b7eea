# Weir's build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
# Tools and cluster binaries built by hack/ scripts live here; git ignores it.
CACHE := $(CURDIR)/.cache
GOTESTFLAGS ?=

.PHONY: all build test unit lint vet fmt bench run clean k8s cluster-up

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/echo

## run: the traffic-split demo with two local echo backends (Ctrl-C stops it).
run: build
	BIN=$(BIN) hack/run-example.sh

## test: everything CI runs: lint, then unit and integration tests.
test: lint unit

# test/cluster runs a real kube-apiserver: build it first (cached after).
unit: k8s
	$(GO) test $(GOTESTFLAGS) ./...

## k8s: build etcd, kube-apiserver and kube-controller-manager into
## .cache/k8s (about 8 min cold, instant when cached).
k8s:
	@hack/build-k8s.sh >/dev/null

## cluster-up: a local cluster with Weir (test/cluster); prints the
## kubeconfig, Ctrl-C stops it. Needs root. CLUSTER_FLAGS=-gateways=2 etc.
cluster-up: k8s
	$(GO) build -o $(BIN)/cluster-up ./test/cluster/cmd/cluster-up
	$(BIN)/cluster-up $(CLUSTER_FLAGS)

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
