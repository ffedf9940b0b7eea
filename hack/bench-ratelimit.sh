#!/usr/bin/env bash
# The global rate limit benchmark: one limit shared by 1, 3 and 5
# weir-proxy gateways through Weir's rate limit service, against as many
# Debian nginx instances with limit_req, under three times the limit.
# Installs nginx from Debian if missing (root). Flags go to
# test/bench/ratelimitbench (-limit, -load, -duration, -gateways).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null; then
	echo "[bench-ratelimit] installing nginx-light from Debian" >&2
	apt-get install -y --no-install-recommends nginx-light >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx-light >/dev/null; }
	service nginx stop >/dev/null 2>&1 || true
fi
mkdir -p bin
go build -o bin/ratelimitbench ./test/bench/ratelimitbench
exec bin/ratelimitbench "$@"
