#!/usr/bin/env bash
# Fuzzes each fuzz target for a bounded time (FUZZTIME, 20s by default).
# go test already replays every seed corpus; this looks for new failures.
# A failing input is written under the package's testdata/fuzz/: commit it.
# Minimizing a large new input (the YAML seeds are kilobytes) would take
# the whole budget, so it is capped at 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
grep -rl --include='*_test.go' '^func Fuzz' pkg cmd | xargs -n1 dirname | sort -u | while read -r dir; do
	for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		echo "fuzz: ./$dir $target for $FUZZTIME"
		log=$(mktemp)
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 2s "./$dir" >"$log" 2>&1; then
			tail -40 "$log"
			echo "fuzz: $target failed; the input is under ./$dir/testdata/fuzz/$target"
			exit 1
		fi
		rm -f "$log"
	done
done
