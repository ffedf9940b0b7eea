package gateway

import (
	"fmt"
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
)

// buildTLSRoute resolves a TLSRoute's backends. Its connections are
// forwarded by SNI as they came (TLS passthrough): a backend that does not
// resolve keeps its weight and its share of connections is refused, as the
// spec asks.
func (b *builder) buildTLSRoute(r *gwv1.TLSRoute) *builtRoute {
	out := &builtRoute{resolved: true, reason: string(gwv1.RouteReasonResolvedRefs), msg: "every backend resolved"}
	src := ir.ObjectRef{Kind: TLSRouteKind, Namespace: r.Namespace, Name: r.Name}
	tr := &ir.TLSRoute{Provenance: ir.Provenance{src}, Field: "spec.rules[0]"}
	seen := map[string]bool{}
	for ri := range r.Spec.Rules {
		for bi, ref := range r.Spec.Rules[ri].BackendRefs {
			field := fmt.Sprintf("spec.rules[%d].backendRefs[%d]", ri, bi)
			weight := uint32(1)
			if ref.Weight != nil {
				weight = uint32(max(*ref.Weight, 0)) //nolint:gosec // clamped
			}
			be, reason, msg := b.resolveBackend(TLSRouteKind, r.Namespace, ref, field)
			if be == nil {
				if out.resolved {
					out.resolved, out.reason, out.msg = false, reason, msg
				}
				tr.Backends = append(tr.Backends, ir.WeightedBackend{BackendName: field, Weight: weight, Unresolved: true})
				continue
			}
			tr.Backends = append(tr.Backends, ir.WeightedBackend{BackendName: be.Name, Weight: weight})
			if !seen[be.Name] {
				seen[be.Name] = true
				out.backends = append(out.backends, be)
			}
		}
	}
	out.tls = tr
	return out
}

// tlsHostsTaken returns an older TLSRoute that already serves every one of
// hosts on ls's port, or nil when some host is free or r's own (through
// another of its parentRefs).
func tlsHostsTaken(g *gatewayState, ls *listenerState, r *routeSource, hosts []string) *routeSource {
	var owner *routeSource
	for _, h := range hosts {
		o := tlsHostOwner(g, ls, h)
		if o == nil || o == r {
			return nil
		}
		owner = o
	}
	return owner
}

// tlsHostOwner is the TLSRoute that serves host on ls's port: the oldest
// one attached to the port's most specific listener for host.
func tlsHostOwner(g *gatewayState, ls *listenerState, host string) *routeSource {
	best := bestListener(g, ls, host)
	for _, a := range g.attachments[string(best.spec.Name)] {
		if a.tls != nil && slices.Contains(a.hosts, host) {
			return a.src
		}
	}
	return nil
}

// tlsRoutes gives each TLS listener of g the TLSRoutes attached to it, one
// ir.TLSRoute each with the hostnames it serves there. A hostname belongs
// to the most specific listener of its port that takes it (listener
// isolation, as for HTTP), and there to the oldest route, since a
// ClientHello can go to one chain only.
func (b *builder) tlsRoutes(g *gatewayState) {
	// A route attached twice (two parentRefs naming one listener) asks
	// for its hostnames twice; each is one chain.
	emitted := map[string]bool{}
	for _, ls := range g.listeners {
		if !ls.valid || ls.spec.Protocol != gwv1.TLSProtocolType {
			continue
		}
		for _, a := range g.attachments[string(ls.spec.Name)] {
			if a.tls == nil {
				continue
			}
			var names []string
			for _, h := range a.hosts {
				key := fmt.Sprintf("%d/%s", ls.spec.Port, h)
				if !emitted[key] && tlsHostOwner(g, ls, h) == a.src && bestListener(g, ls, h) == ls {
					emitted[key] = true
					names = append(names, h)
				}
			}
			if len(names) == 0 {
				continue
			}
			tr := *a.tls
			tr.Listener, tr.ServerNames = string(ls.spec.Name), names
			g.frag.TLSRoutes = append(g.frag.TLSRoutes, &tr)
		}
	}
}
