#!/usr/bin/env bash
# Builds CoreDNS, the DNS server the Gateway API conformance suite's base
# manifests run (registry.k8s.io/coredns/coredns), from the Go module
# proxy into .cache/coredns/<version>/bin/coredns, in a wrapper module of
# its own so the project's go.mod never sees it. A second run returns at
# once. Prints the binary on its last line.
set -euo pipefail

COREDNS_VERSION=${COREDNS_VERSION:-v1.12.2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/.cache/coredns/$COREDNS_VERSION
BIN=$OUT/bin/coredns
export GOFLAGS="-mod=mod -buildvcs=false" GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[build-coredns %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT"
exec 9>"$OUT/lock"
flock 9
if [[ -x $BIN ]]; then
	log "cached: $BIN"
	echo "$BIN"
	exit 0
fi
start=$SECONDS
log "building CoreDNS $COREDNS_VERSION (a few minutes cold)"
cd "$OUT"
if [[ ! -f go.mod ]]; then
	go mod init weir.local/coredns-wrapper >/dev/null 2>&1
fi
if ! go get "github.com/coredns/coredns@$COREDNS_VERSION" >"$OUT/get.log" 2>&1; then
	log "ERROR: cannot get github.com/coredns/coredns@$COREDNS_VERSION from the Go module proxy ($(go env GOPROXY)); see $OUT/get.log"
	tail -20 "$OUT/get.log" >&2
	exit 1
fi
if ! go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" github.com/coredns/coredns >"$OUT/build.log" 2>&1; then
	log "ERROR: building CoreDNS failed; see $OUT/build.log"
	tail -20 "$OUT/build.log" >&2
	exit 1
fi
mv "$BIN.tmp" "$BIN"
log "built in $((SECONDS - start))s: $BIN"
echo "$BIN"
