package dataplane

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// shadowSeen is what a mirror backend received.
type shadowSeen struct{ host, path, body, tier string }

// mirrorBackend reports each request it gets on its channel; it answers
// only once release is closed (nil: at once).
func mirrorBackend(t *testing.T, name string, release chan struct{}) (*backend, chan shadowSeen) {
	seen := make(chan shadowSeen, 16)
	b := &backend{name: name}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- shadowSeen{r.Host, r.URL.Path, string(body), r.Header.Get("X-Tier")}
		if release != nil {
			<-release
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	return b, seen
}

func waitShadow(t *testing.T, name string, ch chan shadowSeen) shadowSeen {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got no mirrored request", name)
		return shadowSeen{}
	}
}

// TestRequestMirrors: each mirror gets a copy of the request as it goes
// upstream (route header mutations applied, body included), with
// "-shadow" added to the host unless disable_shadow_host_suffix_append;
// its answer is dropped, and a mirror that does not answer does not hold
// up the request.
func TestRequestMirrors(t *testing.T) {
	main, _ := bodyBackend(t)
	release := make(chan struct{})
	defer close(release)
	slow, slowSeen := mirrorBackend(t, "slow", release)
	keep, keepSeen := mirrorBackend(t, "keep", nil)
	rt := routeTo(prefixMatch("/"), main.name)
	rt.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-tier", Value: "gold"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	rt.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{
		{Cluster: slow.name},
		{Cluster: keep.name, DisableShadowHostSuffixAppend: true,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}},
	}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, rt))},
	}
	addBackends(res, false, main, slow, keep)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)

	req, _ := http.NewRequest("POST", proxyURL(t, p, "l")+"/orders", strings.NewReader("hello mirror"))
	req.Host = "shop.example.com:8080"
	resp, body := do(t, req)
	if resp.StatusCode != 200 || body != "len=12 body=hello mirror" {
		t.Fatalf("main request: %d %q", resp.StatusCode, body)
	}
	// The slow mirror has not answered: the response above came anyway.
	got := waitShadow(t, "slow", slowSeen)
	want := shadowSeen{"shop.example.com-shadow:8080", "/orders", "hello mirror", "gold"}
	if got != want {
		t.Errorf("slow mirror got %+v, want %+v", got, want)
	}
	got = waitShadow(t, "keep", keepSeen)
	if want.host = "shop.example.com:8080"; got != want {
		t.Errorf("mirror with the host kept got %+v, want %+v", got, want)
	}
}

func TestMirrorSamplingAndRefusals(t *testing.T) {
	c := &cluster{name: "m"}
	lookup := func(string, string) (*cluster, error) { return c, nil }
	frac := func(n uint32, d typev3.FractionalPercent_DenominatorType) *routev3.RouteAction_RequestMirrorPolicy {
		return &routev3.RouteAction_RequestMirrorPolicy{Cluster: "m",
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n, Denominator: d}}}
	}
	ms, err := compileMirrors([]*routev3.RouteAction_RequestMirrorPolicy{
		{Cluster: "m"}, frac(0, typev3.FractionalPercent_HUNDRED), frac(5000, typev3.FractionalPercent_TEN_THOUSAND),
	}, "request_mirror_policies", lookup)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, len(ms))
	const draws = 10000
	for range draws {
		for i, m := range ms {
			if m.sampled() {
				counts[i]++
			}
		}
	}
	if counts[0] != draws || counts[1] != 0 || counts[2] < 4000 || counts[2] > 6000 {
		t.Errorf("sampled %v of %d for 100%%, 0%% and 50%%", counts, draws)
	}
	for name, p := range map[string]*routev3.RouteAction_RequestMirrorPolicy{
		"cluster_header": {ClusterHeader: "x-mirror"},
		"runtime_key":    {Cluster: "m", RuntimeFraction: &corev3.RuntimeFractionalPercent{RuntimeKey: "k", DefaultValue: &typev3.FractionalPercent{Numerator: 1}}},
	} {
		if _, err := compileMirrors([]*routev3.RouteAction_RequestMirrorPolicy{p}, "request_mirror_policies", lookup); err == nil ||
			!strings.Contains(err.Error(), "request_mirror_policies[0]") {
			t.Errorf("%s: %v, want a refusal naming the policy", name, err)
		}
	}
}

// shadowsInFlight is how many copies to cluster are in flight.
func shadowsInFlight(p *Proxy, cluster string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pools[cluster].shadows.Load()
}

// TestMirrorFollowsItsClusterAndEndsWithTheStream: a copy whose body the
// main upstream never read is reset when the stream ends, with a retry
// policy too, so no shadow is left waiting; and an endpoint change of the
// mirror cluster alone moves the copies (the compiled host is not reused
// with the old cluster).
func TestMirrorFollowsItsClusterAndEndsWithTheStream(t *testing.T) {
	// main answers without reading the body.
	main := &backend{name: "main"}
	main.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	m1, seen1 := mirrorBackend(t, "m1", nil)
	m2, seen2 := mirrorBackend(t, "m2", nil)
	rt := routeTo(prefixMatch("/"), main.name)
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"}
	rt.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: m1.name}}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, rt))},
	}
	addBackends(res, false, main, m1)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)

	// The main upstream answers before it has read the body, so the
	// transport stops reading it; the copy then ends only by being reset
	// when the stream ends (the mirror backend reads until then).
	req, _ := http.NewRequest("POST", proxyURL(t, p, "l")+"/partial", strings.NewReader(strings.Repeat("x", 600<<10)))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	if got := waitShadow(t, "m1", seen1); got.path != "/partial" {
		t.Errorf("the copy went to %q", got.path)
	}
	deadline := time.Now().Add(10 * time.Second)
	for shadowsInFlight(p, m1.name) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d shadows still in flight after the stream ended", shadowsInFlight(p, m1.name))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Move the mirror cluster's endpoint to the second mirror backend;
	// nothing else changes.
	for i, c := range res.Endpoints {
		if c.GetClusterName() == m1.name {
			res.Endpoints[i] = cla(m1.name, m2.addr)
		}
	}
	mustApply(t, p, res)
	req, _ = http.NewRequest("GET", proxyURL(t, p, "l")+"/after", nil)
	do(t, req)
	if got := waitShadow(t, "m2", seen2); got.path != "/after" {
		t.Errorf("after the endpoint change the copy went to %+v", got)
	}
}

func TestShadowHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":      "example.com-shadow",
		"example.com:8080": "example.com-shadow:8080",
		"[::1]:80":         "[::1]-shadow:80",
		"[::1]":            "[::1]-shadow",
		"10.0.0.1:80":      "10.0.0.1-shadow:80",
	} {
		if got := shadowHost(in); got != want {
			t.Errorf("shadowHost(%q) = %q, want %q", in, got, want)
		}
	}
}
