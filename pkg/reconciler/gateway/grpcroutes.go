package gateway

import (
	"fmt"
	"regexp"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
)

// buildGRPCRoute translates the rules of a GRPCRoute. A gRPC method is the
// HTTP/2 path /service/method, so its matches become path matches; its
// backends are spoken to over HTTP/2.
func (b *builder) buildGRPCRoute(r *gwv1.GRPCRoute) *builtRoute {
	out := &builtRoute{resolved: true, reason: string(gwv1.RouteReasonResolvedRefs), msg: "every backend resolved"}
	src := ir.ObjectRef{Kind: GRPCRouteKind, Namespace: r.Namespace, Name: r.Name}
	seen := map[string]bool{}
	for ri := range r.Spec.Rules {
		rule := &r.Spec.Rules[ri]
		field := fmt.Sprintf("spec.rules[%d]", ri)
		base := &ir.Route{Provenance: ir.Provenance{src}}
		if msg := applyGRPCFilters(base, rule.Filters, field); msg != "" {
			out.unsupported = msg
			return out
		}
		if rule.SessionPersistence != nil {
			out.unsupported = field + ".sessionPersistence is not supported yet"
			return out
		}
		var invalid bool
		for bi := range rule.BackendRefs {
			br := &rule.BackendRefs[bi]
			bfield := fmt.Sprintf("%s.backendRefs[%d]", field, bi)
			// An unresolved backend's share answers UNAVAILABLE, as the
			// spec asks (the default for UnresolvedStatus).
			resolved, ok := b.addBackend(out, base, GRPCRouteKind, r.Namespace, br.BackendRef, bfield, seen,
				func(scratch *ir.Route) string { return applyGRPCFilters(scratch, br.Filters, bfield) })
			if !ok {
				return out
			}
			invalid = invalid || !resolved
		}
		if len(base.Backends) == 0 || invalid && resolvedWeight(base.Backends) == 0 {
			// The spec: UNAVAILABLE. A 503 is a gRPC local reply with
			// grpc-status 14, in Envoy as in weir-proxy.
			base.Backends = nil
			base.DirectResponse = &ir.DirectResponse{StatusCode: 503}
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for mi := range matches {
			rt := *base
			rt.Name = fmt.Sprintf("%s/%s/rule/%d/match/%d", r.Namespace, r.Name, ri, mi)
			m, method, err := convertGRPCMatch(&matches[mi])
			if err != nil {
				out.unsupported = fmt.Sprintf("%s.matches[%d]: %v", field, mi, err)
				return out
			}
			rt.Match = m
			out.rules = append(out.rules, ir.RankedRoute{Route: &rt, Created: r.CreationTimestamp.Time, Source: src, Rule: ri, Match: mi, GRPC: method})
		}
	}
	return out
}

// convertGRPCMatch maps a GRPCRoute match onto the request path, as Envoy
// Gateway does: service and method exactly is an exact path, a service
// alone a prefix, anything else a regular expression over /service/method.
func convertGRPCMatch(m *gwv1.GRPCRouteMatch) (ir.Match, ir.GRPCMethod, error) {
	out := ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}}
	var method ir.GRPCMethod
	if mm := m.Method; mm != nil {
		if mm.Service != nil {
			method.Service = *mm.Service
		}
		if mm.Method != nil {
			method.Method = *mm.Method
		}
		if method.Service == "" && method.Method == "" {
			return out, method, fmt.Errorf("method: one of service and method is required")
		}
		exact := mm.Type == nil || *mm.Type == gwv1.GRPCMethodMatchExact
		part := func(v string) string {
			if v == "" {
				return "[^/]+"
			}
			if exact {
				return regexp.QuoteMeta(v)
			}
			return v
		}
		switch {
		case exact && method.Service != "" && method.Method != "":
			out.Path = ir.PathMatch{Kind: ir.PathExact, Value: "/" + method.Service + "/" + method.Method}
		case exact && method.Method == "":
			out.Path = ir.PathMatch{Kind: ir.PathPrefix, Value: "/" + method.Service + "/"}
		default:
			// Grouped: Envoy matches the whole path, and "a|b" must not
			// split it.
			out.Path = ir.PathMatch{Kind: ir.PathRegex, Value: "/(?:" + part(method.Service) + ")/(?:" + part(method.Method) + ")"}
			if err := checkRegex(out.Path.Value); err != nil {
				return out, method, fmt.Errorf("method: %w", err)
			}
			if !exact {
				for _, v := range []string{method.Service, method.Method} {
					if v != "" {
						if _, err := regexp.Compile(v); err != nil {
							return out, method, fmt.Errorf("method: regex %q is not valid RE2: %v", v, err)
						}
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		// Only the first match of a name counts, as the spec says.
		name := ir.LowerASCII(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		hm := ir.HeaderMatch{Name: string(h.Name), Value: h.Value, Kind: ir.HeaderExact}
		if h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression {
			hm.Kind = ir.HeaderRegex
			if err := checkRegex(h.Value); err != nil {
				return out, method, fmt.Errorf("header %s: %w", h.Name, err)
			}
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, method, nil
}

// applyGRPCFilters applies a GRPCRoute rule's filters to r. It returns why
// a filter cannot be served, or "".
func applyGRPCFilters(r *ir.Route, filters []gwv1.GRPCRouteFilter, field string) string {
	for fi := range filters {
		f := &filters[fi]
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier != nil {
				r.RequestHeaders = headerMutation(f.RequestHeaderModifier)
			}
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier != nil {
				r.ResponseHeaders = headerMutation(f.ResponseHeaderModifier)
			}
		default:
			return fmt.Sprintf("%s.filters[%d]: filter type %s is not supported yet", field, fi, f.Type)
		}
	}
	return ""
}
