#!/usr/bin/env bash
# Runs the Gateway API conformance suite (test/conformance/gatewayapi) on a
# local cluster and prints one line per test. The full `go test -v` log is
# kept in .cache/logs/gateway-conformance.log; on failure its end is
# printed too. The report goes to docs/conformance/.
set -uo pipefail
cd "$(dirname "$0")/.."
log=.cache/logs/gateway-conformance.log
mkdir -p "$(dirname "$log")"
echo "[gateway-conformance] running the Gateway API conformance suite; full log: $log"
start=$SECONDS
# shellcheck disable=SC2086
go test ${GOTESTFLAGS:-} -count=1 -timeout 40m -v ./test/conformance/gatewayapi/ ${GATEWAY_CONFORMANCE_ARGS:-} >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' INT TERM
n=0
while kill -0 "$pid" 2>/dev/null; do
	sleep 1
	if ((++n % 30 == 0)); then
		echo "[gateway-conformance] $((SECONDS - start))s: $(grep -c '^=== RUN   TestGatewayAPIConformance/' "$log") (sub)tests started"
	fi
done
wait "$pid"
rc=$?
grep -E '^ *--- (PASS|FAIL|SKIP): TestGatewayAPIConformance/[^/ ]+ ' "$log" | sed 's/^ *//' | sort -k3 || true
grep -E '^(ok|FAIL|PASS)' "$log" || true
if ((rc != 0)); then
	echo "[gateway-conformance] FAILED (exit $rc); the last 300 lines of $log:"
	tail -n 300 "$log"
fi
echo "[gateway-conformance] done in $((SECONDS - start))s"
exit "$rc"
