package translate

import (
	"testing"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestPathRewrite: how a path modifier becomes prefix_rewrite or
// regex_rewrite, so the result has Gateway API's semantics in Envoy.
func TestPathRewrite(t *testing.T) {
	seg := func(v string) ir.PathMatch { return ir.PathMatch{Kind: ir.PathSegmentPrefix, Value: v} }
	prefix := func(v string) *ir.PathModifier { return &ir.PathModifier{Kind: ir.ReplacePrefixMatch, Value: v} }
	for _, tc := range []struct {
		name                    string
		mod                     *ir.PathModifier
		match                   ir.PathMatch
		wantPrefix              string
		wantPattern, wantSubsti string
		wantErr                 bool
	}{
		{name: "segment prefix to another", mod: prefix("/v2"), match: seg("/v1"), wantPrefix: "/v2"},
		{name: "strip a prefix", mod: prefix("/"), match: seg("/strip"), wantPattern: "^/strip/*", wantSubsti: "/"},
		{name: "trailing slash in the match", mod: prefix("/x/"), match: seg("/a/"), wantPattern: "^/a/*", wantSubsti: "/x/"},
		// Every path matches "/": the replacement goes in front, so
		// "/users" becomes "/api/users", not "/apiusers".
		{name: "prefix onto a match of every path", mod: prefix("/api"), match: seg("/"), wantPattern: "^/+", wantSubsti: "/api/"},
		{name: "full path", mod: &ir.PathModifier{Kind: ir.ReplaceFullPath, Value: `/a\b`}, match: seg("/"), wantPattern: "^/.*$", wantSubsti: `/a\\b`},
		{name: "prefix on an exact match", mod: prefix("/x"), match: ir.PathMatch{Kind: ir.PathExact, Value: "/a"}, wantErr: true},
		{name: "relative replacement", mod: prefix("x"), match: seg("/a"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, re, err := pathRewrite(tc.mod, tc.match)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if p != tc.wantPrefix || re.GetPattern().GetRegex() != tc.wantPattern || re.GetSubstitution() != tc.wantSubsti {
				t.Errorf("got prefix %q regex %q -> %q", p, re.GetPattern().GetRegex(), re.GetSubstitution())
			}
		})
	}
}
