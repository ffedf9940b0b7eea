package translate

import (
	"math"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// globalLimitFragment is a KIngress whose one route has g.
func globalLimitFragment(g *ir.GlobalRateLimit) *ir.Fragment {
	ref := ir.ObjectRef{Kind: "KIngress", Namespace: "ns", Name: "k"}
	return &ir.Fragment{
		Source:   ref,
		Backends: []*ir.Backend{{Name: "ns/svc:80", Service: ir.ServiceRef{Namespace: "ns", Name: "svc", Port: 80}, Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}},
		VirtualHosts: []*ir.VirtualHost{{Name: "k", Domains: []string{"k.example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTP), Provenance: ir.Provenance{ref},
			Routes: []*ir.Route{{Name: "r", Filters: []ir.HTTPFilter{g}, Backends: []ir.WeightedBackend{{BackendName: "ns/svc:80", Weight: 1}}, Provenance: ir.Provenance{ref}}}}},
	}
}

// TestGlobalRateLimitRoute: a route's limit becomes the descriptor Weir's
// rate limit service reads, on the filter of its failure mode, and the
// service's cluster is HTTP/2 at its address, LOGICAL_DNS for a name.
func TestGlobalRateLimitRoute(t *testing.T) {
	for _, tc := range []struct {
		addr, filter string
		g            *ir.GlobalRateLimit
		keys         string
		discovery    clusterv3.Cluster_DiscoveryType
	}{
		{"127.0.0.1:9000", globalRateLimitFilter, &ir.GlobalRateLimit{Name: "ns/p#KIngress/k", QPS: 1}, "generic_key", clusterv3.Cluster_STATIC},
		{"ratelimit.weir-system.svc:9000", globalRateLimitFailClosedFilter, &ir.GlobalRateLimit{Name: "n", QPS: 1, FailClosed: true, PartitionBy: ir.PartitionClient}, "generic_key,remote_address", clusterv3.Cluster_LOGICAL_DNS},
		{"[::1]:9000", globalRateLimitFilter, &ir.GlobalRateLimit{Name: "n", QPS: 1, PartitionBy: ir.PartitionHeader, Header: "X-Tenant"}, "generic_key,request_headers:x-tenant", clusterv3.Cluster_STATIC},
	} {
		opts := DefaultOptions()
		opts.RateLimitService = tc.addr
		res, err := New(opts).Translate([]*ir.Fragment{globalLimitFragment(tc.g)})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) > 0 {
			t.Fatalf("%s: warnings %v", tc.addr, res.Warnings)
		}
		var cluster *clusterv3.Cluster
		for _, c := range res.Clusters {
			if c.GetName() == RateLimitCluster {
				cluster = c
			}
		}
		if cluster == nil || cluster.GetType() != tc.discovery || cluster.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey] == nil {
			t.Errorf("%s: cluster %v, want %v over HTTP/2", tc.addr, cluster, tc.discovery)
		}
		r := res.Routes[0].GetVirtualHosts()[0].GetRoutes()[0]
		cfg := r.GetTypedPerFilterConfig()[tc.filter]
		var pr ratelimitv3.RateLimitPerRoute
		if cfg == nil || cfg.UnmarshalTo(&pr) != nil {
			t.Fatalf("%s: route %v has no %s config", tc.addr, r, tc.filter)
		}
		var keys []string
		for _, a := range pr.GetRateLimits()[0].GetActions() {
			switch {
			case a.GetGenericKey() != nil:
				if a.GetGenericKey().GetDescriptorKey() != ir.RateLimitNameKey || a.GetGenericKey().GetDescriptorValue() != tc.g.Name {
					t.Errorf("generic key %v", a.GetGenericKey())
				}
				keys = append(keys, "generic_key")
			case a.GetRemoteAddress() != nil:
				keys = append(keys, "remote_address")
			case a.GetRequestHeaders() != nil:
				if a.GetRequestHeaders().GetDescriptorKey() != ir.RateLimitHeaderKey {
					t.Errorf("header action %v", a.GetRequestHeaders())
				}
				keys = append(keys, "request_headers:"+a.GetRequestHeaders().GetHeaderName())
			}
		}
		if got := strings.Join(keys, ","); got != tc.keys {
			t.Errorf("%s: actions %s, want %s", tc.addr, got, tc.keys)
		}
	}
}

// TestGlobalRateLimitWithoutService: without a service, or with an
// address that is not one, the route is left out and says why, and no
// cluster is made for it.
func TestGlobalRateLimitWithoutService(t *testing.T) {
	for addr, want := range map[string]string{
		"":                "no rate limit service is configured",
		"localhost":       "missing port",
		"127.0.0.1:99999": "port",
	} {
		opts := DefaultOptions()
		opts.RateLimitService = addr
		res, err := New(opts).Translate([]*ir.Fragment{globalLimitFragment(&ir.GlobalRateLimit{Name: "n", QPS: 1})})
		if err != nil {
			t.Fatal(err)
		}
		if !hasWarning(res, want) {
			t.Errorf("%q: warnings %v, want one saying %q", addr, res.Warnings, want)
		}
		for _, c := range res.Clusters {
			if c.GetName() == RateLimitCluster {
				t.Errorf("%q: a rate limit cluster without a service", addr)
			}
		}
	}
}

// TestBackendMaxRequestsChanges: a backend's bound is its cluster's
// circuit breaker, and a change of it alone reaches the cluster on the
// next translation, as does its removal.
func TestBackendMaxRequestsChanges(t *testing.T) {
	tr := New(DefaultOptions())
	bound := func(n uint32) uint32 {
		t.Helper()
		f := globalLimitFragment(&ir.GlobalRateLimit{Name: "n", QPS: 1})
		f.VirtualHosts[0].Routes[0].Filters = nil
		f.Backends[0].MaxRequests = n
		res, err := tr.Translate([]*ir.Fragment{f})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Clusters {
			if c.GetName() == "ns/svc:80" {
				ths := c.GetCircuitBreakers().GetThresholds()
				if len(ths) != 1 || ths[0].GetMaxConnections().GetValue() != math.MaxUint32 || ths[0].GetMaxRetries().GetValue() != math.MaxUint32 || ths[0].GetMaxPendingRequests().GetValue() != math.MaxUint32 {
					t.Fatalf("thresholds %v, want one that bounds nothing but requests", ths)
				}
				return ths[0].GetMaxRequests().GetValue()
			}
		}
		t.Fatal("no cluster")
		return 0
	}
	for _, n := range []uint32{0, 5, 7, 0} {
		want := n
		if n == 0 {
			want = math.MaxUint32
		}
		if got := bound(n); got != want {
			t.Errorf("MaxRequests %d: max_requests %d, want %d", n, got, want)
		}
	}
}
