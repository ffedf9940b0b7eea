package dataplane

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCircuitBreakerMaxRequests: with max_requests in flight to a
// cluster, the next request is answered 503 with x-envoy-overloaded and
// never sent, as Envoy's circuit breaker does; once one finishes, requests
// pass again. A threshold weir-proxy cannot honour is refused.
func TestCircuitBreakerMaxRequests(t *testing.T) {
	var inFlight atomic.Int64
	release := make(chan struct{})
	arrived := make(chan struct{}, 16)
	b := &backend{name: "slow"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if r.URL.Path == "/hold" {
			inFlight.Add(1)
			arrived <- struct{}{}
			<-release
			inFlight.Add(-1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	p := newTestProxy(t, Options{})
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, routeTo(prefixMatch("/"), b.name)))},
	}
	addBackends(res, false, b)
	res.Clusters[0].CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRequests: wrapperspb.UInt32(2), MaxConnections: wrapperspb.UInt32(^uint32(0)), MaxPendingRequests: wrapperspb.UInt32(^uint32(0)), MaxRetries: wrapperspb.UInt32(^uint32(0)),
	}, {
		// Envoy takes the first DEFAULT threshold; this one is ignored.
		MaxRequests: wrapperspb.UInt32(100), MaxConnections: wrapperspb.UInt32(5),
	}}}
	mustApply(t, p, res)
	url := proxyURL(t, p, "l")

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(url + "/hold")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("a held request: %d", resp.StatusCode)
			}
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the held requests did not reach the backend")
		}
	}
	hits := b.hits.Load()
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Envoy-Overloaded") != "true" || b.hits.Load() != hits {
		t.Errorf("with 2 in flight at max_requests 2: %d %q %v, sent %v; want 503 with x-envoy-overloaded, not sent", resp.StatusCode, body, resp.Header, b.hits.Load() != hits)
	}
	close(release)
	wg.Wait()
	if resp, _ := do(t, req); resp.StatusCode != http.StatusOK {
		t.Errorf("after the held requests ended: %d, want 200", resp.StatusCode)
	}

	// A new proto, as the xDS client hands over.
	bad := proto.Clone(res.Clusters[0]).(*clusterv3.Cluster)
	bad.CircuitBreakers.Thresholds[0].MaxPendingRequests = wrapperspb.UInt32(10)
	res.Clusters[0] = bad
	if err := p.Apply(res); err == nil {
		t.Error("max_pending_requests 10 was accepted; weir-proxy does not bound pending requests")
	}
	unset := proto.Clone(bad).(*clusterv3.Cluster)
	unset.CircuitBreakers.Thresholds[0].MaxPendingRequests = nil // Envoy's default, 1,024
	res.Clusters[0] = unset
	if err := p.Apply(res); err == nil {
		t.Error("a threshold without max_pending_requests was accepted; Envoy's default of 1,024 is not kept")
	}
}
