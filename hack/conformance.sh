#!/usr/bin/env bash
# Runs Knative's ingress conformance suite (test/conformance) on a local
# cluster and prints one line per test. The full `go test -v` log is kept
# in .cache/logs/conformance.log; on failure its end is printed too.
set -uo pipefail
cd "$(dirname "$0")/.."
log=.cache/logs/conformance.log
mkdir -p "$(dirname "$log")"
echo "[conformance] running Knative's ingress conformance suite; full log: $log"
start=$SECONDS
# shellcheck disable=SC2086
go test ${GOTESTFLAGS:-} -count=1 -timeout 30m -v ./test/conformance/ >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' INT TERM
n=0
while kill -0 "$pid" 2>/dev/null; do
	sleep 1
	if ((++n % 30 == 0)); then
		# Parallel subtests report PASS/FAIL only when all are done.
		echo "[conformance] $((SECONDS - start))s: $(grep -c '^=== RUN   TestIngressConformance/' "$log") (sub)tests started"
	fi
done
wait "$pid"
rc=$?
grep -E '^ *--- (PASS|FAIL|SKIP): TestIngressConformance/[^/]+(/[^/ ]+)? ' "$log" | sed 's/^ *//' | sort -k3 || true
grep -E '^(ok|FAIL|PASS)' "$log" || true
if ((rc != 0)); then
	echo "[conformance] FAILED (exit $rc); the last 300 lines of $log:"
	tail -n 300 "$log"
fi
echo "[conformance] done in $((SECONDS - start))s"
exit "$rc"
