package httpfilter

import (
	"fmt"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// CompileStringMatcher compiles an Envoy StringMatcher: exact, prefix,
// suffix, contains (each with ignore_case) or safe_regex, which must
// match the whole string. Errors name the field relative to path.
func CompileStringMatcher(m *matcherv3.StringMatcher, path string) (func(string) bool, error) {
	if bad := UnsupportedField(m, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	fold := m.GetIgnoreCase()
	norm := func(s string) string {
		if fold {
			return strings.ToLower(s)
		}
		return s
	}
	switch pat := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := norm(pat.Exact)
		return func(s string) bool { return norm(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := norm(pat.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := norm(pat.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := norm(pat.Contains)
		return func(s string) bool { return strings.Contains(norm(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		if bad := UnsupportedField(pat.SafeRegex, "regex", "google_re2"); bad != "" {
			return nil, fmt.Errorf("%s.safe_regex.%s: not supported by weir-proxy", path, bad)
		}
		if pat.SafeRegex.GetGoogleRe2().GetMaxProgramSize() != nil {
			return nil, fmt.Errorf("%s.safe_regex.google_re2.max_program_size: not supported by weir-proxy", path)
		}
		re, err := regexp.Compile(`^(?:` + pat.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%s.safe_regex.regex: %v", path, err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("%s: a pattern is required", path)
}
