#!/usr/bin/env bash
# Fuzzes each fuzz target for a bounded number of executions, sized to
# about 20 s each on the 2-core CI machine (FUZZEXECS overrides them all).
# go test already replays every seed corpus; this looks for new failures.
# A failing input is written under the package's testdata/fuzz/: commit it.
# Minimizing a large new input (the YAML seeds are kilobytes) would take
# the whole budget, so it is capped at 2 s.
#
# Budgets are counts, not durations: with a duration, Go 1.26's fuzzing
# coordinator can report the end of -fuzztime as a failure ("context
# deadline exceeded", no input written; golang/go#75804, fixed in 1.27).
set -euo pipefail
cd "$(dirname "$0")/.."
budget() {
	if [[ -n "${FUZZEXECS:-}" ]]; then echo "$FUZZEXECS"; return; fi
	case "$1" in
	FuzzRequestHead) echo 100000x ;;          # ~5,000 execs/s
	FuzzTranslate) echo 20000x ;;             # ~2,000 execs/s
	FuzzKIngressesThroughTranslate) echo 6000x ;; # ~700 execs/s after 13 s of baseline
	FuzzYAMLThroughTranslate) echo 1500x ;;   # ~150 execs/s
	FuzzIngressAnnotations) echo 20000x ;;    # ~1,200 execs/s
	*) echo 5000x ;;
	esac
}
grep -rl --include='*_test.go' '^func Fuzz' pkg cmd | xargs -n1 dirname | sort -u | while read -r dir; do
	for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		n=$(budget "$target")
		echo "fuzz: ./$dir $target for $n"
		log=$(mktemp)
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$n" -fuzzminimizetime 2s "./$dir" >"$log" 2>&1; then
			tail -40 "$log"
			echo "fuzz: $target failed; the input is under ./$dir/testdata/fuzz/$target"
			exit 1
		fi
		rm -f "$log"
	done
done
