#!/usr/bin/env bash
# Checks pkg/re2size's bound against the real RE2 (Debian's libre2-dev):
# the bound must never be below RE2's program size, or translate could emit
# a regex that Envoy refuses. Installs libre2-dev if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -e /usr/include/re2/re2.h ]]; then
	echo "Installing libre2-dev for the RE2 program size check..."
	apt-get install -y --no-install-recommends libre2-dev >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends libre2-dev >/dev/null; }
fi
CGO_ENABLED=1 go test -count=1 -tags re2 ./pkg/re2size/
