# Weir's build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
# Tools, cluster binaries and test logs live here; git ignores it.
CACHE := $(CURDIR)/.cache
GOTESTFLAGS ?=
# One build configuration for tests, commands and test/cluster's pod images,
# so Go's build cache compiles each package once.
export CGO_ENABLED := 0

# Packages that need no cluster.
UNIT_PKGS = $$($(GO) list ./... | grep -v '/test/')

.PHONY: all build test unit e2e conformance gateway-conformance lint vet fmt bench bench-nginx bench-scale bench-scale-cluster bench-ratelimit run clean k8s cluster-up

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/echo

## run: the traffic-split demo with two local echo backends (Ctrl-C stops it).
run: build
	BIN=$(BIN) hack/run-example.sh

## test: everything CI runs: lint, unit tests, then the tests on a real
## Kubernetes API (test/cluster, test/e2e, Knative's conformance suite).
test: lint unit e2e conformance gateway-conformance

## unit: every package outside test/, with the race detector (it needs cgo;
## gcc is on the machine image), then pkg/re2size checked against libre2,
## then every fuzz target fuzzed for a count of executions (about 20 s
## each; FUZZEXECS=Nx overrides it; see hack/fuzz.sh).
unit:
	CGO_ENABLED=1 $(GO) test -race $(GOTESTFLAGS) $(UNIT_PKGS)
	hack/re2-check.sh
	hack/fuzz.sh

## e2e: test/cluster's own test and test/e2e, one cluster at a time;
## never cached, since the binaries they run are built at run time.
e2e: k8s
	$(GO) test $(GOTESTFLAGS) -count=1 -p 1 -timeout 30m ./test/cluster/ ./test/e2e/

## gateway-conformance: the Gateway API conformance suite (GATEWAY-HTTP, -GRPC, -TLS),
## unmodified; writes docs/conformance/gateway-api-<version>-report.yaml.
## GATEWAY_CONFORMANCE_ARGS="-run-test=HTTPRouteSimpleSameNamespace" runs one test.
gateway-conformance: k8s
	GOTESTFLAGS="$(GOTESTFLAGS)" hack/gateway-conformance.sh

## conformance: Knative's ingress conformance suite (stable, beta, alpha);
## prints one line per test, the full log is .cache/logs/conformance.log.
conformance: k8s
	GOTESTFLAGS="$(GOTESTFLAGS)" hack/conformance.sh

## k8s: build etcd, kube-apiserver and kube-controller-manager into
## .cache/k8s (about 7 to 8 min cold, instant when cached).
k8s:
	@hack/build-k8s.sh >/dev/null

## cluster-up: a local cluster with Weir (test/cluster); prints the
## kubeconfig, Ctrl-C stops it. Needs root. CLUSTER_FLAGS="-gateways=2 -controllers=2".
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

## bench-scale: `weir run` at N KIngresses (N=10000 by default): start to
## served and Ready, change latency, RSS, CPU at rest. bench-scale-cluster:
## the same through weir-controller and a gateway on test/cluster (root).
N ?= 10000
bench-scale:
	hack/bench-scale.sh -n $(N)

bench-scale-cluster: k8s
	hack/bench-scale.sh -cluster -n $(N)

## bench-ratelimit: one global limit over 1, 3 and 5 weir-proxy gateways
## against nginx limit_req per instance (installs Debian's nginx; root).
bench-ratelimit:
	hack/bench-ratelimit.sh

clean:
	rm -rf $(BIN)
