// Package re2size owns Weir's bound on the size of the RE2 program Envoy
// compiles for a regex. Envoy refuses a regex whose program is larger than
// the runtime value re2.max_program_size.error_level, and with it the
// whole route configuration; translate leaves such a regex out, and
// weir-proxy refuses it as Envoy does. RE2 itself cannot be linked into
// Weir's static binaries, so this is an upper bound computed from Go's
// parse of the same syntax, checked against the real RE2 by the re2
// build-tagged test (make unit runs it).
package re2size

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxProgramSize is the RE2 program size above which Envoy refuses a
// regex, with the whole route configuration: the runtime value
// re2.max_program_size.error_level that the release bootstrap sets
// (config/500-gateway.yaml), as Istio does. Envoy's own default is 100,
// which "^/api/v[0-9]{1,3}/users/[a-z0-9-]{1,64}$" (271) already exceeds.
const MaxProgramSize = 32768

// Bound returns a number at least as large as the size of the RE2 program
// Envoy compiles for re (RE2::ProgramSize), without RE2: Go's parser gives
// the same tree, and each node is costed as RE2's compiler emits it, with
// UTF-8 character classes as a byte-range trie that shares prefixes but
// not suffixes (RE2 shares both), and twice the total for the Nop
// instructions RE2's flattening adds. It is 1.1 to 5 times the real size.
func Bound(re string) (int, error) {
	if _, err := syntax.Parse(re, syntax.Perl); err != nil {
		return 0, err
	}
	t, err := syntax.Parse(unmerged(re), syntax.Perl)
	if err != nil {
		return 0, err
	}
	// The unanchored ".*?" prefix, Match and Fail, then the tree. Repeats
	// are costed as RE2 expands them, not as Go's Simplify, which folds
	// "(a+){2,10}" into less than RE2 compiles.
	return 2*(3+instructions(t)) + 4, nil
}

// unmerged returns re with an empty group "(?:)" ending every
// alternative. Go's parser merges single-character alternatives into one
// class (".|\pL" becomes "[^\n]"), which can cost far less than what RE2
// compiles for them (1,212 instructions); an alternative that ends in an
// empty group is no longer a single character, so each is costed alone,
// and never for less than a merged class.
func unmerged(re string) string {
	var b strings.Builder
	b.Grow(len(re) + 16)
	inClass, quoted := false, false
	for i := 0; i < len(re); i++ {
		c := re[i]
		switch {
		case quoted:
			if c == '\\' && i+1 < len(re) && re[i+1] == 'E' {
				quoted = false
				b.WriteString(re[i : i+2])
				i++
				continue
			}
		case c == '\\' && i+1 < len(re):
			if re[i+1] == 'Q' {
				quoted = true
			}
			b.WriteString(re[i : i+2])
			i++
			continue
		case inClass:
			if c == '[' && i+1 < len(re) && re[i+1] == ':' {
				// A named class such as [:alpha:] inside a class; as in
				// Go's parser, its closing ":]" comes after the "[:".
				if j := strings.Index(re[i+2:], ":]"); j >= 0 {
					end := i + 2 + j + 2
					b.WriteString(re[i:end])
					i = end - 1
					continue
				}
			}
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			b.WriteByte(c)
			// A ']' first in the class, after an optional '^', is literal.
			if i+1 < len(re) && re[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(re) && re[i+1] == ']' {
				b.WriteByte(']')
				i++
			}
			continue
		case c == '(' && flagGroup.MatchString(re[i:]):
			// "(?i)" and the like hold no alternatives.
			j := strings.IndexByte(re[i:], ')')
			b.WriteString(re[i : i+j+1])
			i += j
			continue
		case c == '|' || c == ')':
			b.WriteString("(?:)")
		}
		b.WriteByte(c)
	}
	if !quoted && !inClass {
		b.WriteString("(?:)")
	}
	return b.String()
}

var flagGroup = regexp.MustCompile(`^\(\?[imsU-]*\)`)

// instructions bounds the non-Alt instructions RE2 compiles t into.
func instructions(t *syntax.Regexp) int {
	n := 0
	switch t.Op {
	case syntax.OpNoMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		n = 1
	case syntax.OpLiteral:
		for _, r := range t.Rune {
			if t.Flags&syntax.FoldCase != 0 {
				n += classInstructions(foldRanges(r))
			} else {
				n += utf8.RuneLen(r)
			}
		}
	case syntax.OpCharClass:
		n = classInstructions(t.Rune)
	case syntax.OpAnyCharNotNL:
		n = classInstructions([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune})
	case syntax.OpAnyChar:
		n = classInstructions([]rune{0, unicode.MaxRune})
	case syntax.OpCapture:
		n = 2
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpAlternate:
		// Each loop or choice may cost a Nop once flattened.
		n = 1
	case syntax.OpRepeat:
		// x{n,m} is n copies of x and m-n nested optional ones; x{n,} is
		// n copies, the last one looped.
		copies := t.Max
		if copies < 0 {
			copies = max(t.Min, 1)
		}
		return copies * (1 + instructions(t.Sub[0]))
	}
	for _, s := range t.Sub {
		n += instructions(s)
	}
	return n
}

// foldRanges returns r and the runes it folds to, as a class. A letter
// whose folds are all ASCII is one instruction in RE2; "k" also folds to
// the Kelvin sign, and "s" to the long s, which take a class.
func foldRanges(r rune) []rune {
	out := []rune{r, r}
	ascii := r < utf8.RuneSelf
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		out = append(out, f, f)
		ascii = ascii && f < utf8.RuneSelf
	}
	if ascii {
		return []rune{r, r}
	}
	return out
}

// classInstructions counts the nodes of the trie of UTF-8 byte-range
// sequences that match the class's rune ranges (pairs, inclusive).
func classInstructions(ranges []rune) int {
	var seqs [][]byteRange
	for i := 0; i+1 < len(ranges); i += 2 {
		seqs = utf8Sequences(ranges[i], ranges[i+1], seqs)
	}
	slices.SortFunc(seqs, func(a, b []byteRange) int {
		return slices.CompareFunc(a, b, func(x, y byteRange) int {
			if x.lo != y.lo {
				return int(x.lo) - int(y.lo)
			}
			return int(x.hi) - int(y.hi)
		})
	})
	// Sequences sharing a prefix share its nodes; sorted, a sequence
	// shares at most what it has in common with the one before.
	n := 0
	for i, s := range seqs {
		common := 0
		if i > 0 {
			p := seqs[i-1]
			for common < len(s) && common < len(p) && s[common] == p[common] {
				common++
			}
		}
		n += len(s) - common
	}
	return n
}

type byteRange struct{ lo, hi byte }

// utf8Sequences appends the byte-range sequences whose concatenations are
// exactly the UTF-8 encodings of the runes lo..hi: split at the encoded
// length boundaries, then wherever the continuation bytes do not cover
// their whole range.
func utf8Sequences(lo, hi rune, out [][]byteRange) [][]byteRange {
	if lo > hi {
		return out
	}
	for _, max := range []rune{0x7f, 0x7ff, 0xffff} {
		if lo <= max && hi > max {
			out = utf8Sequences(lo, max, out)
			return utf8Sequences(max+1, hi, out)
		}
	}
	if hi < utf8.RuneSelf {
		return append(out, []byteRange{{byte(lo), byte(hi)}})
	}
	n := utf8.RuneLen(hi)
	if n < 0 { // surrogates: RE2 compiles them as 3-byte sequences too
		n = 3
	}
	for i := 1; i < n; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				out = utf8Sequences(lo, lo|m, out)
				return utf8Sequences((lo|m)+1, hi, out)
			}
			if hi&m != m {
				out = utf8Sequences(lo, (hi&^m)-1, out)
				return utf8Sequences(hi&^m, hi, out)
			}
		}
	}
	a, b := encode(lo, n), encode(hi, n)
	seq := make([]byteRange, n)
	for i := range seq {
		seq[i] = byteRange{a[i], b[i]}
	}
	return append(out, seq)
}

// encode is UTF-8 encoding that also takes surrogates.
func encode(r rune, n int) []byte {
	switch n {
	case 2:
		return []byte{0xc0 | byte(r>>6), 0x80 | byte(r)&0x3f}
	case 3:
		return []byte{0xe0 | byte(r>>12), 0x80 | byte(r>>6)&0x3f, 0x80 | byte(r)&0x3f}
	default:
		return []byte{0xf0 | byte(r>>18), 0x80 | byte(r>>12)&0x3f, 0x80 | byte(r>>6)&0x3f, 0x80 | byte(r)&0x3f}
	}
}
