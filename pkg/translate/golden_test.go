package translate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.json from the current output")

// TestGolden translates every testdata/*.in.yaml and compares the result with
// the .out.json next to it. Run with -update to regenerate, then read the
// diff: the goldens are the reviewable form of docs/xds-shape.md.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			res := mustTranslate(t, loadFragments(t, in))
			got := goldenJSON(t, res)
			out := strings.TrimSuffix(in, ".in.yaml") + ".out.json"
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; run go test ./pkg/translate -run TestGolden -update and review the diff.\ngot:\n%s", out, got)
			}
		})
	}
}
