package translate

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestUnresolvedShares: an unresolved backend's share goes to
// UnavailableCluster (503), or on a Gateway's own listener with
// UnresolvedStatus 500 to InvalidBackendCluster with
// cluster_not_found_response_code; either way the result is valid for
// Envoy, at weight 0 too, and only the latter skips validate_clusters.
func TestUnresolvedShares(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	route := func(name string, status int, unresolvedWeight uint32) *ir.Route {
		return &ir.Route{
			Name: name, Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathExact, Value: "/" + name}}, UnresolvedStatus: status,
			Backends: []ir.WeightedBackend{
				{BackendName: "ns/svc:80", Weight: 1},
				{BackendName: "spec.rules[0].backendRefs[1]", Weight: unresolvedWeight, Unresolved: true},
			},
		}
	}
	for _, tc := range []struct {
		name         string
		route        *ir.Route
		wantCluster  string
		wantValidate bool
		wantCode     routev3.RouteAction_ClusterNotFoundResponseCode
	}{
		{"grpc", route("grpc", 0, 1), UnavailableCluster, true, routev3.RouteAction_SERVICE_UNAVAILABLE},
		{"grpc-weight-0", route("grpc0", 0, 0), UnavailableCluster, true, routev3.RouteAction_SERVICE_UNAVAILABLE},
		{"http", route("http", 500, 1), InvalidBackendCluster, false, routev3.RouteAction_INTERNAL_SERVER_ERROR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &ir.Fragment{
				Source:    gw,
				Listeners: []*ir.Listener{{Name: "http", Port: 9000, Protocol: ir.ProtocolHTTP, Provenance: ir.Provenance{gw}}},
				Backends: []*ir.Backend{{Name: "ns/svc:80", Service: ir.ServiceRef{Namespace: "ns", Name: "svc", Port: 80},
					Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}},
				VirtualHosts: []*ir.VirtualHost{{Name: "vh", Domains: []string{"a.example.com"}, Listener: "http",
					Routes: []*ir.Route{tc.route}, Provenance: ir.Provenance{gw}}},
			}
			res := mustTranslate(t, []*ir.Fragment{f}) // Validate: every named cluster exists unless not validated
			for _, rc := range res.Routes {
				if rc.GetName() != "gateway/ns/gw/9000" {
					continue
				}
				if rc.GetValidateClusters().GetValue() != tc.wantValidate {
					t.Errorf("validate_clusters = %v, want %v", rc.GetValidateClusters().GetValue(), tc.wantValidate)
				}
				a := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
				if got := a.GetWeightedClusters().GetClusters()[1].GetName(); got != tc.wantCluster {
					t.Errorf("the unresolved share goes to %q, want %q", got, tc.wantCluster)
				}
				if tc.route.Backends[1].Weight > 0 && a.GetClusterNotFoundResponseCode() != tc.wantCode {
					t.Errorf("cluster_not_found_response_code = %v, want %v", a.GetClusterNotFoundResponseCode(), tc.wantCode)
				}
				return
			}
			t.Fatal("no route configuration for the Gateway's port")
		})
	}
}
