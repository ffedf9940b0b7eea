#!/usr/bin/env bash
# The scale benchmark: `weir run` (or, with -cluster, weir-controller and a
# gateway on test/cluster; needs root) serving N Knative-shaped KIngresses
# (default 10,000). Builds weir and test/bench/scalebench and prints a
# markdown row for docs/benchmarks.md. Flags go to scalebench (-n, -rest, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/weir ./cmd/weir
go build -o bin/scalebench ./test/bench/scalebench
exec bin/scalebench -weir bin/weir "$@"
