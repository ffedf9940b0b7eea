package ir

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// RankedRoute is a route with what orders it among the routes that several
// sources contribute to one virtual host. Each front end supplies its own
// precedence over these.
type RankedRoute struct {
	Route *Route
	// Created and Source order routes of different objects: older first,
	// then by namespace and name.
	Created time.Time
	Source  ObjectRef
	// Rule and Match are the route's position within its source.
	Rule, Match int
	// GRPC is what a GRPCRoute match names, which orders GRPCRoute rules.
	GRPC GRPCMethod
}

// GRPCMethod is the service and method of a GRPCRoute match ("" for any);
// for a regular expression match, the expressions.
type GRPCMethod struct{ Service, Method string }

// MergeRoutes returns the routes ordered by precedence, first match first.
// Equal routes keep their input order.
func MergeRoutes(in []RankedRoute, precedence func(a, b RankedRoute) int) []*Route {
	sorted := slices.Clone(in)
	slices.SortStableFunc(sorted, precedence)
	out := make([]*Route, len(sorted))
	for i, r := range sorted {
		out[i] = r.Route
	}
	return out
}

// GatewayAPIPrecedence orders routes as the HTTPRoute spec does: an exact
// path, then the longest prefix, then a method match, then the most header
// matches, then the most query parameter matches; then the oldest object,
// then namespace/name, then rule and match order. The spec leaves regular
// expressions to the implementation: they come after exact paths and
// before prefixes, longest first, as in Envoy Gateway.
func GatewayAPIPrecedence(a, b RankedRoute) int {
	ma, mb := a.Route.Match, b.Route.Match
	return cmp.Or(
		cmp.Compare(pathRank(ma.Path.Kind), pathRank(mb.Path.Kind)),
		-cmp.Compare(pathLength(ma.Path), pathLength(mb.Path)),
		-cmp.Compare(boolRank(ma.Method != ""), boolRank(mb.Method != "")),
		-cmp.Compare(len(ma.Headers), len(mb.Headers)),
		-cmp.Compare(len(ma.QueryParams), len(mb.QueryParams)),
		a.Created.Compare(b.Created),
		strings.Compare(a.Source.Namespace, b.Source.Namespace),
		strings.Compare(a.Source.Name, b.Source.Name),
		cmp.Compare(a.Rule, b.Rule),
		cmp.Compare(a.Match, b.Match),
	)
}

// GRPCRoutePrecedence orders routes as the GRPCRoute spec does, once the
// hostname has chosen the virtual host: the most characters in the matching
// service, then in the method, then the most header matches; then the
// oldest object, then namespace/name, then rule and match order.
func GRPCRoutePrecedence(a, b RankedRoute) int {
	return cmp.Or(
		-cmp.Compare(len(a.GRPC.Service), len(b.GRPC.Service)),
		-cmp.Compare(len(a.GRPC.Method), len(b.GRPC.Method)),
		-cmp.Compare(len(a.Route.Match.Headers), len(b.Route.Match.Headers)),
		a.Created.Compare(b.Created),
		strings.Compare(a.Source.Namespace, b.Source.Namespace),
		strings.Compare(a.Source.Name, b.Source.Name),
		cmp.Compare(a.Rule, b.Rule),
		cmp.Compare(a.Match, b.Match),
	)
}

func pathRank(k PathMatchKind) int {
	switch k {
	case PathExact:
		return 0
	case PathRegex:
		return 1
	}
	return 2
}

// pathLength is the length that orders prefixes: "" is "/", and a segment
// prefix's trailing "/" does not count, since "/a/" and "/a" match alike.
func pathLength(p PathMatch) int {
	v := p.Value
	if p.Kind == PathSegmentPrefix && len(v) > 1 {
		v = strings.TrimSuffix(v, "/")
	}
	if v == "" {
		return 1
	}
	return len(v)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}
