package ir

import (
	"testing"
	"time"
)

func TestGatewayAPIPrecedence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prefix := func(v string) Match { return Match{Path: PathMatch{Kind: PathSegmentPrefix, Value: v}} }
	route := func(name string, m Match) *Route { return &Route{Name: name, Match: m} }
	a := ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "a"}
	b := ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "b"}
	other := ObjectRef{Kind: "HTTPRoute", Namespace: "aaa", Name: "z"}

	tests := []struct {
		name string
		in   []RankedRoute
		want []string
	}{{
		name: "exact before any prefix, however long",
		in: []RankedRoute{
			{Route: route("long-prefix", prefix("/a/b/c/d")), Source: a},
			{Route: route("exact", Match{Path: PathMatch{Kind: PathExact, Value: "/a"}}), Source: b},
		},
		want: []string{"exact", "long-prefix"},
	}, {
		name: "longest prefix first; a trailing slash does not make a prefix longer",
		in: []RankedRoute{
			{Route: route("root", prefix("/")), Source: a},
			{Route: route("a-slash", prefix("/ab/")), Source: a, Rule: 1},
			{Route: route("abc", prefix("/abc")), Source: a, Rule: 2},
			{Route: route("ab", prefix("/ab")), Source: a, Rule: 3},
		},
		want: []string{"abc", "a-slash", "ab", "root"},
	}, {
		name: "regex between exact and prefix",
		in: []RankedRoute{
			{Route: route("prefix", prefix("/x")), Source: a},
			{Route: route("regex", Match{Path: PathMatch{Kind: PathRegex, Value: "/x.*"}}), Source: a, Rule: 1},
			{Route: route("exact", Match{Path: PathMatch{Kind: PathExact, Value: "/x"}}), Source: a, Rule: 2},
		},
		want: []string{"exact", "regex", "prefix"},
	}, {
		name: "same path: method, then more headers, then more query params",
		in: []RankedRoute{
			{Route: route("query", Match{Path: prefix("/").Path, QueryParams: []QueryParamMatch{{Name: "q"}, {Name: "r"}}}), Source: a},
			{Route: route("headers", Match{Path: prefix("/").Path, Headers: []HeaderMatch{{Name: "h"}}}), Source: a, Rule: 1},
			{Route: route("method", Match{Path: prefix("/").Path, Method: "GET"}), Source: a, Rule: 2},
			{Route: route("two-headers", Match{Path: prefix("/").Path, Headers: []HeaderMatch{{Name: "h"}, {Name: "i"}}}), Source: a, Rule: 3},
			{Route: route("plain", prefix("/")), Source: a, Rule: 4},
		},
		want: []string{"method", "two-headers", "headers", "query", "plain"},
	}, {
		name: "equal matches: oldest object, then namespace/name, then rule and match order",
		in: []RankedRoute{
			{Route: route("b-new", prefix("/")), Source: b, Created: t0.Add(time.Hour)},
			{Route: route("b-old-rule1", prefix("/")), Source: b, Created: t0, Rule: 1},
			{Route: route("b-old-rule0-match1", prefix("/")), Source: b, Created: t0, Match: 1},
			{Route: route("a-new", prefix("/")), Source: a, Created: t0.Add(time.Hour)},
			{Route: route("b-old-rule0", prefix("/")), Source: b, Created: t0},
			{Route: route("other-ns", prefix("/")), Source: other, Created: t0.Add(time.Hour)},
		},
		want: []string{"b-old-rule0", "b-old-rule0-match1", "b-old-rule1", "other-ns", "a-new", "b-new"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := MergeRoutes(tc.in, GatewayAPIPrecedence)
			var names []string
			for _, r := range got {
				names = append(names, r.Name)
			}
			if len(names) != len(tc.want) {
				t.Fatalf("got %v, want %v", names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", names, tc.want)
				}
			}
		})
	}
}

func TestGRPCRoutePrecedence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := ObjectRef{Kind: "GRPCRoute", Namespace: "ns", Name: "a"}
	b := ObjectRef{Kind: "GRPCRoute", Namespace: "ns", Name: "b"}
	rank := func(name string, src ObjectRef, created time.Time, rule int, m GRPCMethod, headers int) RankedRoute {
		r := &Route{Name: name}
		for range headers {
			r.Match.Headers = append(r.Match.Headers, HeaderMatch{Name: "h"})
		}
		return RankedRoute{Route: r, Source: src, Created: created, Rule: rule, GRPC: m}
	}
	in := []RankedRoute{
		rank("any", a, t0, 0, GRPCMethod{}, 0),
		rank("method-only", a, t0, 1, GRPCMethod{Method: "Echo"}, 0),
		rank("service-with-headers", a, t0, 2, GRPCMethod{Service: "pkg.Svc"}, 2),
		rank("longer-service", b, t0.Add(time.Hour), 0, GRPCMethod{Service: "pkg.Svc2"}, 0),
		rank("service-and-method", b, t0.Add(time.Hour), 1, GRPCMethod{Service: "pkg.Svc", Method: "Echo"}, 0),
		rank("headers-only", b, t0.Add(time.Hour), 2, GRPCMethod{}, 1),
		rank("service-older", a, t0, 3, GRPCMethod{Service: "pkg.Svc", Method: "Echo"}, 0),
	}
	want := []string{"longer-service", "service-older", "service-and-method", "service-with-headers", "method-only", "headers-only", "any"}
	got := MergeRoutes(in, GRPCRoutePrecedence)
	for i := range want {
		if got[i].Name != want[i] {
			var names []string
			for _, r := range got {
				names = append(names, r.Name)
			}
			t.Fatalf("got %v, want %v", names, want)
		}
	}
}
