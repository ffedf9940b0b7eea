#!/usr/bin/env bash
# make run: two echo backends and `weir run` on examples/traffic-split.
# Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$BIN/echo" -name hello-00001 -listen 127.0.0.1:9001 & pids+=($!)
"$BIN/echo" -name hello-00002 -listen 127.0.0.1:9002 & pids+=($!)
"$BIN/weir" run -f examples/traffic-split/ --access-log=false & pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break
  sleep 0.1
done
cat <<'TXT'

Try these in another terminal:
  curl -s -H 'Host: hello.example.com' http://localhost:8080/                # 90% hello-00001, 10% hello-00002
  curl -s -H 'Host: hello.example.com' -H 'Knative-Serving-Tag: canary' http://localhost:8080/   # hello-00002
  curl -s -H 'Host: canary-hello.example.com' http://localhost:8080/         # hello-00002 (tag host)
  curl -s -H 'Host: hello.example.com' http://localhost:8080/v2/             # hello-00002 (path route)
  curl -s -H 'Host: hello.default.svc.cluster.local' http://localhost:8081/  # cluster-local listener
  for i in $(seq 100); do curl -s -H 'Host: hello.example.com' localhost:8080/ | grep '"name"'; done | sort | uniq -c
  go run ./cmd/weir status                                                   # KIngress status
  curl -s localhost:9901/config_dump | less                                  # the Envoy config being served
Edit examples/traffic-split/*.yaml and Weir reloads it. Ctrl-C stops everything.

TXT
wait "${pids[2]}"
