#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the Go module
# proxy and caches them in .cache/k8s/<version>/bin. A second run with the
# same versions returns at once. test/cluster runs these binaries.
#
# Environment: K8S_VERSION (default v1.35.4), K8S_CACHE (default
# <repo>/.cache/k8s). Prints the bin directory on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${K8S_CACHE:-$ROOT/.cache/k8s}
OUT=$CACHE/$K8S_VERSION
BIN=$OUT/bin
STAMP=$OUT/stamp
# Bump when the build recipe changes, so cached binaries are rebuilt.
RECIPE=1

# The wrappers are modules of their own: the project's go.mod never sees
# k8s.io/kubernetes. GOWORK=off keeps a go.work file from pulling them in.
export GOFLAGS="-mod=mod -buildvcs=false" GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$OUT"
# Tests and make may ask at the same time; one builds, the others wait.
exec 9>"$OUT/lock"
flock 9

binaries=(etcd kube-apiserver kube-controller-manager)
cached() {
	[[ -f $STAMP && $(head -n1 "$STAMP") == "recipe=$RECIPE k8s=$K8S_VERSION" ]] || return 1
	for b in "${binaries[@]}"; do [[ -x $BIN/$b ]] || return 1; done
}
if cached; then
	log "cached: $(tr '\n' ' ' <"$STAMP")"
	echo "$BIN"
	exit 0
fi

start=$SECONDS
log "building Kubernetes $K8S_VERSION into $OUT (about 7 to 8 minutes on 2 cores when idle)"

# go mod download failures are nearly always the network; say so plainly.
download() {
	local out
	if ! out=$(cd "$OUT" && go mod download -json "$1" 2>&1); then
		local msg
		msg=$(jq -r '.Error // empty' <<<"$out" 2>/dev/null || true)
		die "cannot download $1 from the Go module proxy ($(go env GOPROXY)): ${msg:-$out}"
	fi
	echo "$out"
}

# Runs a long go build with its output in a log, printing a line every 30 s.
build() {
	local name=$1 dir=$2
	shift 2
	local logf=$OUT/$name.log
	log "$name: go build $* (log: $logf)"
	(cd "$dir" && nice -n 10 go build -p 2 -v "$@") >"$logf" 2>&1 &
	local pid=$! t0=$SECONDS n=0
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if ((++n % 30 == 0)); then
			log "$name: $((SECONDS - t0))s, $(grep -cv '^#' "$logf" || true) packages compiled"
		fi
	done
	if ! wait "$pid"; then
		tail -n 40 "$logf" >&2
		die "$name: go build failed after $((SECONDS - t0))s; full log in $logf"
	fi
	log "$name: done in $((SECONDS - t0))s"
}

log "reading k8s.io/kubernetes@$K8S_VERSION's go.mod"
kmod=$(download "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
[[ -f $kmod ]] || die "the module proxy returned no go.mod for k8s.io/kubernetes@$K8S_VERSION"
kjson=$(go mod edit -json "$kmod")
# Staging modules are replaced with ./staging/... upstream; their published
# versions are v0.<minor>.<patch> of the same release.
staging_version=v0.${K8S_VERSION#v1.}
mapfile -t staging < <(jq -r '.Replace[] | select(.New.Path | startswith("./staging/")) | .Old.Path' <<<"$kjson")
((${#staging[@]} > 0)) || die "found no ./staging replaces in $kmod"
etcd_version=$(jq -r '.Require[] | select(.Path == "go.etcd.io/etcd/server/v3") | .Version' <<<"$kjson")
[[ $etcd_version == v3.* ]] || die "k8s.io/kubernetes@$K8S_VERSION does not pin go.etcd.io/etcd/server/v3"
log "${#staging[@]} staging modules at $staging_version; etcd $etcd_version"

gover=$(go env GOVERSION)
gover=${gover#go}

# kube-apiserver and kube-controller-manager.
kw=$OUT/wrapper-kubernetes
rm -rf "$kw" && mkdir -p "$kw"
{
	echo "module weir.local/k8s-wrapper"
	echo
	echo "go ${gover%.*}"
	echo
	echo "require k8s.io/kubernetes $K8S_VERSION"
	echo
	echo "replace ("
	for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
	echo ")"
} >"$kw/go.mod"
cat >"$kw/tools.go" <<'EOF'
//go:build tools

// Package tools records the commands this wrapper builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)
EOF

minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

# etcd, in a wrapper of its own so its requirements cannot move
# Kubernetes' dependency versions (or the reverse).
ew=$OUT/wrapper-etcd
rm -rf "$ew" && mkdir -p "$ew"
cat >"$ew/go.mod" <<EOF
module weir.local/etcd-wrapper

go ${gover%.*}

require go.etcd.io/etcd/server/v3 $etcd_version
EOF
cat >"$ew/tools.go" <<'EOF'
//go:build tools

// Package tools records the command this wrapper builds.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
EOF

mkdir -p "$BIN.tmp"
build etcd "$ew" -trimpath -ldflags "-s -w" -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3
build kubernetes "$kw" -trimpath -ldflags "$ldflags" -o "$BIN.tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager

rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version >&2
printf 'recipe=%s k8s=%s\netcd=%s\n' "$RECIPE" "$K8S_VERSION" "$etcd_version" >"$STAMP"
log "built in $((SECONDS - start))s: $(du -sh "$BIN" | cut -f1) in $BIN"
echo "$BIN"
