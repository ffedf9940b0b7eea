package dataplane

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRingHashAffinity checks Envoy's consistent hashing on real sockets: a
// cookie policy with a ttl makes up a cookie for a request without one and
// sets it on the response, and the requests that carry it all reach one
// endpoint; a header policy sends each value to one endpoint and spreads
// values over several; source_ip keeps one client on one endpoint.
func TestRingHashAffinity(t *testing.T) {
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p := newTestProxy(t, Options{})
	c := edsCluster("ring", false)
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	hashed := func(path string, hp ...*routev3.RouteAction_HashPolicy) *routev3.Route {
		r := routeTo(prefixMatch(path), "ring")
		r.GetRoute().HashPolicy = hp
		return r
	}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"},
			hashed("/cookie", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{
				Name: "sticky", Ttl: durationpb.New(time.Hour), Path: "/cookie",
				Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "SameSite", Value: "Lax"}, {Name: "Secure"}},
			}}}),
			hashed("/header", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}),
			hashed("/ip", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}),
		))},
		Clusters:  []*clusterv3.Cluster{c},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("ring", bs[0].addr, bs[1].addr, bs[2].addr)},
	}
	mustApply(t, p, res)
	base := proxyURL(t, p, "l")
	send := func(path string, set func(*http.Request)) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if set != nil {
			set(req)
		}
		resp, _ := do(t, req)
		return resp
	}

	resp := send("/cookie", nil)
	cookie := resp.Header.Get("Set-Cookie")
	value, attrs, _ := strings.Cut(cookie, ";")
	if !strings.HasPrefix(value, `sticky="`) || len(value) != len(`sticky=""`)+16 || attrs != " Max-Age=3600; Path=/cookie; SameSite=Lax; Secure; HttpOnly" {
		t.Fatalf("Set-Cookie %q, want Envoy's made-up sticky cookie", cookie)
	}
	first := resp.Header.Get("X-Backend")
	for range 20 {
		r := send("/cookie", func(r *http.Request) { r.Header.Set("Cookie", value) })
		if got := r.Header.Get("X-Backend"); got != first {
			t.Fatalf("with the cookie the gateway set, a request reached %s, the first %s", got, first)
		}
		if r.Header.Get("Set-Cookie") != "" {
			t.Fatalf("a request with the cookie was given another: %q", r.Header.Get("Set-Cookie"))
		}
	}

	seen := map[string]bool{}
	for i := range 30 {
		user := fmt.Sprintf("user-%d", i)
		want := send("/header", func(r *http.Request) { r.Header.Set("X-User", user) }).Header.Get("X-Backend")
		for range 3 {
			if got := send("/header", func(r *http.Request) { r.Header.Set("X-User", user) }).Header.Get("X-Backend"); got != want {
				t.Fatalf("%s reached %s and %s", user, want, got)
			}
		}
		seen[want] = true
	}
	if len(seen) < 2 {
		t.Errorf("30 header values all reached %v; the ring does not spread them", seen)
	}

	ip := send("/ip", nil).Header.Get("X-Backend")
	for range 10 {
		if got := send("/ip", nil).Header.Get("X-Backend"); got != ip {
			t.Fatalf("one client reached %s and %s", ip, got)
		}
	}
}

// TestHashRingMovesFewKeys checks the ring's point: when one endpoint of
// four goes, its keys move and most others stay. As in Envoy, the ring is
// rebuilt to its minimum size, so the other endpoints gain entries and
// take some keys from each other: about a quarter here, where hashing
// modulo the number of endpoints would move three in four.
func TestHashRingMovesFewKeys(t *testing.T) {
	eps := []*endpoint{{addr: "10.0.0.1:80"}, {addr: "10.0.0.2:80"}, {addr: "10.0.0.3:80"}, {addr: "10.0.0.4:80"}}
	cfg := ringConfig{min: 1024, max: 8 << 20}
	before, after := buildRing(eps, cfg), buildRing(eps[:3], cfg)
	held := map[string]int{}
	stayed, kept := 0, 0
	for k := range uint64(10000) {
		key := k * 0x9E3779B97F4A7C15
		was, is := before.lookup(key), after.lookup(key)
		held[was.addr]++
		if is == eps[3] {
			t.Fatalf("key %d still reaches the endpoint that went", k)
		}
		if was != eps[3] {
			kept++
			if was == is {
				stayed++
			}
		}
	}
	t.Logf("%d of %d keys whose endpoint stayed kept it", stayed, kept)
	if stayed*100 < kept*65 {
		t.Errorf("only %d of %d keys whose endpoint stayed kept it", stayed, kept)
	}
	for _, ep := range eps {
		if n := held[ep.addr]; n < 1500 || n > 3500 {
			t.Errorf("%s holds %d of 10000 keys; the ring is lopsided: %v", ep.addr, n, held)
		}
	}
}

// TestHashPolicyEdges: a cookie path may hold "=" (RFC 6265 forbids only
// controls and ";"), a ring sized 0 still holds every endpoint, and an
// empty ring answers no endpoint instead of panicking.
func TestHashPolicyEdges(t *testing.T) {
	cookie := func(name, path string) []*routev3.RouteAction_HashPolicy {
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: name, Path: path}}}}
	}
	if _, err := compileHashPolicies(cookie("c", "/a=b"), "hash_policy"); err != nil {
		t.Errorf("a path with \"=\": %v", err)
	}
	for _, bad := range [][2]string{{"c", "/a;b"}, {"c", "/a\nb"}, {"a=b", "/"}, {"", "/"}} {
		if _, err := compileHashPolicies(cookie(bad[0], bad[1]), "hash_policy"); err == nil {
			t.Errorf("cookie %q path %q was accepted", bad[0], bad[1])
		}
	}
	eps := []*endpoint{{addr: "10.0.0.1:80"}, {addr: "10.0.0.2:80"}}
	r := buildRing(eps, ringConfig{min: 0, max: 0})
	if len(r.hashes) != 2 || r.lookup(42) == nil {
		t.Errorf("a ring sized 0 has %d entries", len(r.hashes))
	}
	if (&hashRing{}).lookup(42) != nil {
		t.Error("an empty ring answered an endpoint")
	}
}

// TestRetryPreviousHosts checks Envoy's previous_hosts retry predicate on
// a ring: a key whose endpoint refuses connections is retried on the next
// endpoint of the ring, where without the predicate every retry goes back
// to the dead one.
func TestRetryPreviousHosts(t *testing.T) {
	live := startBackend(t, "live")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	p := newTestProxy(t, Options{})
	c := edsCluster("ring", false)
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	route := func(path string, predicate bool) *routev3.Route {
		r := routeTo(prefixMatch(path), "ring")
		r.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
		rp := &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(2)}
		if predicate {
			rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
				Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
			}}
			rp.HostSelectionRetryMaxAttempts = 5
		}
		r.GetRoute().RetryPolicy = rp
		return r
	}
	mustApply(t, p, &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, route("/other", true), route("/", false)))},
		Clusters:  []*clusterv3.Cluster{c},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("ring", live.addr, dead)},
	})
	failed := map[string]int{}
	for _, path := range []string{"/other", "/same"} {
		for i := range 30 {
			req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
			req.Header.Set("X-User", fmt.Sprintf("user-%d", i))
			if resp, _ := do(t, req); resp.StatusCode != 200 {
				failed[path]++
			}
		}
	}
	if failed["/other"] != 0 {
		t.Errorf("with previous_hosts, %d of 30 keys failed", failed["/other"])
	}
	if failed["/same"] == 0 {
		t.Errorf("without previous_hosts no key failed: the retries did not stay on the key's endpoint")
	}
}
