//go:build re2

package re2size

import (
	"fmt"
	"math/rand/v2"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"

	"github.com/weir-dev/weir/pkg/re2size/internal/re2prog"
)

// TestBoundAboveRealRE2 compares Bound with the real RE2 on thousands of
// random regexes from fixed seeds: it must never be below, or translate
// could emit a regex that Envoy refuses. It also reports how loose it is.
func TestBoundAboveRealRE2(t *testing.T) {
	var ratios []float64
	checked, loosest, loosestRatio := 0, "", 0.0
	for seed := uint64(1); seed <= 5000; seed++ {
		g := &regexGen{r: rand.New(rand.NewPCG(seed, 42))}
		re := g.regex(3)
		if _, err := syntax.Parse(re, syntax.Perl); err != nil {
			continue
		}
		real := re2prog.ProgramSize(re)
		if real < 0 {
			continue
		}
		b, err := Bound(re)
		if err != nil {
			t.Fatalf("seed %d: Bound(%q): %v", seed, re, err)
		}
		if b < real {
			t.Errorf("seed %d: Bound(%q) = %d, below RE2's %d", seed, re, b, real)
		}
		ratio := float64(b) / float64(real)
		if ratio > loosestRatio {
			loosest, loosestRatio = fmt.Sprintf("%q (%d for RE2's %d)", re, b, real), ratio
		}
		ratios = append(ratios, ratio)
		checked++
	}
	if checked < 3000 {
		t.Fatalf("only %d of 5000 random regexes were valid; the generator is broken", checked)
	}
	slices.Sort(ratios)
	t.Logf("%d regexes: Bound/RE2 median %.2f, p99 %.2f, max %.2f: %s", checked,
		ratios[len(ratios)/2], ratios[len(ratios)*99/100], ratios[len(ratios)-1], loosest)
}

type regexGen struct{ r *rand.Rand }

func (g *regexGen) pick(opts ...string) string { return opts[g.r.IntN(len(opts))] }

func (g *regexGen) regex(depth int) string {
	n := 1 + g.r.IntN(4)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = g.term(depth)
	}
	if g.r.IntN(4) == 0 {
		return strings.Join(parts, "|")
	}
	return strings.Join(parts, "")
}

func (g *regexGen) term(depth int) string {
	var atom string
	switch k := g.r.IntN(10); {
	case k < 3:
		atom = g.pick("a", "/", "x", "é", "日", "\U0001F600", `\.`, "api", "K", "ß")
	case k < 6:
		atom = g.pick(`[a-z]`, `[^/]`, `\d`, `\w`, `\s`, `\pL`, `\p{Greek}`, `[0-9a-fA-F]`, `[\x{100}-\x{2000}]`,
			`[^a]`, `.`, `\PL`, `[[:alpha:]]`, `[[:]`, `[a[:]`, `[\]]`, `\Q|\E`, fmt.Sprintf(`[\x{%x}-\x{%x}]`, g.r.IntN(0x800), 0x800+g.r.IntN(0x10000)))
	case k < 7:
		atom = g.pick("^", "$", `\b`, `\A`, `\z`, `\B`)
	default:
		if depth == 0 {
			atom = "b"
		} else {
			atom = g.pick("(", "(?:", "(?i:", "(?s:") + g.regex(depth-1) + ")"
		}
	}
	switch g.r.IntN(8) {
	case 0:
		atom += "*"
	case 1:
		atom += "+"
	case 2:
		atom += "?"
	case 3:
		atom += fmt.Sprintf("{%d,%d}", g.r.IntN(4), 4+g.r.IntN(8))
	case 4:
		atom += fmt.Sprintf("{%d}", 1+g.r.IntN(5))
	}
	return atom
}
