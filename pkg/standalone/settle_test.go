package standalone

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestInputsSettle: a file is loaded only once it has been left alone for
// settleTime, and an empty one only after emptySettleTime, so an in-place
// save caught between truncate and write is not served.
func TestInputsSettle(t *testing.T) {
	dir := t.TempDir()
	g := &Gateway{opts: Options{Paths: []string{dir}}}
	path := filepath.Join(dir, "a.yaml")
	age := func(d time.Duration) {
		t.Helper()
		at := time.Now().Add(-d)
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	settled := func() bool {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		_, ok, err := g.read(path, st)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	write(t, dir, "a.yaml", "apiVersion: v1\nkind: Service\n")
	if settled() {
		t.Error("a file written just now counts as settled")
	}
	age(settleTime + 10*time.Millisecond)
	if !settled() {
		t.Errorf("a file untouched for %v does not count as settled", settleTime)
	}

	write(t, dir, "a.yaml", "")
	age(settleTime + 10*time.Millisecond)
	if settled() {
		t.Errorf("an empty file counts as settled after %v", settleTime)
	}
	age(emptySettleTime + 10*time.Millisecond)
	if settled() {
		t.Errorf("a file first read empty just now counts as settled, though its modification time is %v old", emptySettleTime)
	}
	// As if the first empty reading had been emptySettleTime ago.
	g.emptySince[path] = time.Now().Add(-emptySettleTime - 10*time.Millisecond)
	if !settled() {
		t.Errorf("an empty file read empty for %v does not count as settled", emptySettleTime)
	}

	// Content again resets the empty clock.
	write(t, dir, "a.yaml", "apiVersion: v1\nkind: Service\n")
	settled()
	if _, ok := g.emptySince[path]; ok {
		t.Error("a file with content still has its empty time")
	}
}
