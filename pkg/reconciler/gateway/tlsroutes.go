package gateway

import (
	"fmt"

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
				// A name no backend has: translate sends its share to a
				// cluster without endpoints.
				tr.Backends = append(tr.Backends, ir.WeightedBackend{BackendName: "unresolved/" + field, Weight: weight})
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

// tlsRoutes gives each TLS listener of g the TLSRoutes attached to it, one
// ir.TLSRoute each with the hostnames it serves there. A hostname two
// routes ask for goes to the older (attachments are in age order), since
// a ClientHello can only be forwarded to one.
func (b *builder) tlsRoutes(g *gatewayState) {
	for _, ls := range g.listeners {
		if !ls.valid || ls.spec.Protocol != gwv1.TLSProtocolType {
			continue
		}
		taken := map[string]bool{}
		for _, a := range g.attachments[string(ls.spec.Name)] {
			if a.tls == nil {
				continue
			}
			var names []string
			for _, h := range a.hosts {
				if !taken[h] {
					taken[h] = true
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
