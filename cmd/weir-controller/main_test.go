package main

import (
	"math"
	"os"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimitFromTheContainerLimit(t *testing.T) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		t.Skip("GOMEMLIMIT is set for this test process")
	}
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })

	t.Setenv("MEMORY_LIMIT", "1073741824") // limits.memory: 1Gi
	setMemoryLimit()
	if got, want := debug.SetMemoryLimit(-1), int64(1073741824/10*9); got != want {
		t.Errorf("soft limit %d, want %d (90 %% of the container's)", got, want)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "512MiB") // the operator's own choice wins
	setMemoryLimit()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the limit was changed to %d", got)
	}
}
