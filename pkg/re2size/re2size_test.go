package re2size

import (
	"strings"
	"testing"
)

// TestBoundKnownSizes: sizes RE2 reports (measured with libre2 and quoted
// in docs/envoy-compat.md) are never above the bound.
func TestBoundKnownSizes(t *testing.T) {
	for re, size := range map[string]int{
		`^/api/v[0-9]{1,3}/users/[a-z0-9-]{1,64}$`: 271,
		`\pL+`:                   1198,
		`\pL{3}`:                 3583,
		`x{1000}`:                1004,
		`a`:                      5,
		`.*`:                     12,
		strings.Repeat("a?", 50): 104,
	} {
		b, err := Bound(re)
		if err != nil {
			t.Fatalf("%s: %v", re, err)
		}
		if b < size {
			t.Errorf("Bound(%q) = %d, below RE2's %d", re, b, size)
		}
		if b > 5*size {
			t.Errorf("Bound(%q) = %d, over 5 times RE2's %d: too loose to be useful", re, b, size)
		}
	}
	// "[[:]" is a class of '[' and ':', like "[\[:]", not the start of a
	// named class: taking it for one would stop keeping the alternatives
	// after it apart, and let a large program through (it did: 62).
	a, _ := Bound(`[[:]x|.|\pL`)
	b, _ := Bound(`[\[:]x|.|\pL`)
	if a != b || a < 1198 {
		t.Errorf("Bound([[:]x|.|\\pL) = %d, Bound([\\[:]x|.|\\pL) = %d: want equal, and at least \\pL's 1,198", a, b)
	}
	if _, err := Bound(`a(`); err == nil {
		t.Error("Bound accepted an invalid regex")
	}
}
