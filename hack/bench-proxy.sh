#!/usr/bin/env bash
# The data-plane load benchmark: direct vs weir-proxy vs Debian's nginx,
# with wrk, on this machine, in one run. Installs nginx and wrk from Debian
# if they are missing (root), builds weir, and prints markdown tables for
# docs/benchmarks.md. Flags go to test/bench/proxybench (-duration, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
	echo "[bench-proxy] installing nginx-light and wrk from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends nginx-light wrk >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx-light wrk >/dev/null; }
	# The package starts the system nginx on port 80; the benchmark runs
	# its own, and port 80 must stay free for test/cluster.
	service nginx stop >/dev/null 2>&1 || true
fi
mkdir -p bin
go build -o bin/weir ./cmd/weir
go build -o bin/proxybench ./test/bench/proxybench
exec bin/proxybench -weir bin/weir "$@"
