package dataplane

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weir-dev/weir/pkg/xds/ratelimit"
)

// rateLimitService serves Weir's rate limit service with limits on addr
// ("127.0.0.1:0" for any port) until stop is called or the test ends.
func rateLimitService(t *testing.T, addr string, limits ...ratelimit.Limit) (bound string, stop func()) {
	t.Helper()
	svc, err := ratelimit.New(zap.NewNop().Sugar(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	svc.Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String(), g.Stop
}

func rateLimitFilter(name, cluster string, failClosed bool) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&ratelimitv3.RateLimit{
		Domain: ratelimit.Domain, Timeout: durationpb.New(time.Second), FailureModeDeny: failClosed,
		RateLimitService: &ratelimitconfigv3.RateLimitServiceConfig{
			GrpcService:         &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	})}}
}

func limitedRoute(r *routev3.Route, filter, limit string, more ...*routev3.RateLimit_Action) *routev3.Route {
	actions := append([]*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: ratelimit.LimitKey, DescriptorValue: limit},
	}}}, more...)
	r.TypedPerFilterConfig = map[string]*anypb.Any{filter: mustAny(&ratelimitv3.RateLimitPerRoute{RateLimits: []*routev3.RateLimit{{Actions: actions}}})}
	return r
}

// globalLimitResources is a listener "l" whose routes ask the service at
// rls: /limited the limit "l", /user the limit "per-user" per X-User,
// /closed the limit "l" through the filter that fails closed, / nothing.
func globalLimitResources(b *backend, rls string) *Resources {
	vh := virtualHost("vh", []string{"*"},
		limitedRoute(routeTo(prefixMatch("/limited"), b.name), "rl", "l"),
		limitedRoute(routeTo(prefixMatch("/user"), b.name), "rl", "per-user", &routev3.RateLimit_Action{
			ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: "x-user", DescriptorKey: "header"}},
		}),
		limitedRoute(routeTo(prefixMatch("/closed"), b.name), "rl-closed", "l"),
		// Envoy asks only for routes that forward.
		limitedRoute(&routev3.Route{Match: prefixMatch("/redirect"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "elsewhere.example.com"}}}, "rl", "l"),
		routeTo(prefixMatch("/"), b.name),
	)
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(rateLimitFilter("rl", "rls", false), rateLimitFilter("rl-closed", "rls", true)))},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", vh)},
	}
	addBackends(res, false, b)
	res.Clusters = append(res.Clusters, edsCluster("rls", true))
	res.Endpoints = append(res.Endpoints, cla("rls", rls))
	return res
}

// TestGlobalRateLimit checks Envoy's ratelimit filter semantics on real
// sockets against Weir's rate limit service: a route's limit, the
// service's body and headers on a refusal with x-envoy-ratelimited, a
// limit per header value, a route without a limit, and both failure
// modes while the service is down, then its return. A refused request
// never reaches the backend.
func TestGlobalRateLimit(t *testing.T) {
	b, _ := bodyBackend(t)
	rls, stop := rateLimitService(t, "127.0.0.1:0",
		ratelimit.Limit{Name: "l", QPS: 3, Block: ratelimit.Block{Body: "slow down", Headers: []ratelimit.Header{{Name: "Retry-After", Value: "1"}}}},
		ratelimit.Limit{Name: "per-user", QPS: 2, PartitionKey: "header"},
	)
	p := newTestProxy(t, Options{})
	mustApply(t, p, globalLimitResources(b, rls))

	get := func(path, user string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
		if user != "" {
			req.Header.Set("X-User", user)
		}
		before := b.hits.Load()
		resp, body := do(t, req)
		if forwarded := b.hits.Load() != before; forwarded != (resp.StatusCode == 200) {
			t.Fatalf("%s: %d, forwarded %v", path, resp.StatusCode, forwarded)
		}
		return resp.StatusCode, body, resp.Header
	}
	count := func(path, user string, n int) int {
		t.Helper()
		ok := 0
		for range n {
			if code, _, _ := get(path, user); code == 200 {
				ok++
			}
		}
		return ok
	}

	if ok := count("/limited", "", 10); ok != 3 {
		t.Errorf("/limited: %d of a burst of 10 passed a limit of 3 a second", ok)
	}
	code, body, h := get("/limited", "")
	if code != http.StatusTooManyRequests || body != "slow down" || h.Get("Retry-After") != "1" || h.Get("X-Envoy-Ratelimited") != "true" {
		t.Errorf("a refusal: %d %q %v; want 429 with the service's body and headers and x-envoy-ratelimited", code, body, h)
	}
	if ok := count("/user", "alice", 5); ok != 2 {
		t.Errorf("alice: %d of 5 passed a limit of 2 a second per user", ok)
	}
	if ok := count("/user", "bob", 5); ok != 2 {
		t.Errorf("bob: %d of 5 passed, want 2 of his own", ok)
	}
	if ok := count("/user", "", 5); ok != 5 {
		t.Errorf("without X-User: %d of 5 passed; a descriptor without its header is not sent", ok)
	}
	if ok := count("/", "", 10); ok != 10 {
		t.Errorf("a route without a limit: %d of 10 passed", ok)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range 5 {
		resp, err := noFollow.Get(proxyURL(t, p, "l") + "/redirect")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently {
			t.Fatalf("a redirect route with an exhausted limit: %d, want its 301", resp.StatusCode)
		}
	}

	// The service goes away: the route that fails open lets requests
	// pass, the one that fails closed answers 500.
	stop()
	if ok := count("/limited", "", 10); ok != 10 {
		t.Errorf("without the service, failing open: %d of 10 passed", ok)
	}
	if code, _, _ := get("/closed", ""); code != http.StatusInternalServerError {
		t.Errorf("without the service, failing closed: %d, want 500", code)
	}

	// It comes back at the same address: the proxy finds it again.
	rateLimitService(t, rls, ratelimit.Limit{Name: "l", QPS: 1})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _, _ := get("/closed", ""); code == http.StatusTooManyRequests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not find the service again within 10s")
		}
	}
}

// TestGlobalRateLimitHoldsAcrossProxies: three proxies that share one
// service admit the limit between them, not three times it, under a load
// of three times the limit spread over them.
func TestGlobalRateLimitHoldsAcrossProxies(t *testing.T) {
	const (
		qps      = 40
		duration = 4 * time.Second
		proxies  = 3
	)
	b := startBackend(t, "b")
	rls, _ := rateLimitService(t, "127.0.0.1:0", ratelimit.Limit{Name: "l", QPS: qps})
	var urls []string
	for range proxies {
		p := newTestProxy(t, Options{})
		mustApply(t, p, globalLimitResources(b, rls))
		urls = append(urls, proxyURL(t, p, "l")+"/limited")
	}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each proxy gets the limit's own rate: three times it in all.
			tick := time.NewTicker(time.Second / qps)
			defer tick.Stop()
			for time.Since(start) < duration {
				<-tick.C
				resp, err := http.Get(u)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					admitted.Add(1)
				case 429:
					refused.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	want := qps * elapsed.Seconds()
	got := float64(admitted.Load())
	t.Logf("%d proxies, %.0f requests a second offered for %v: %.0f admitted (%.1f a second), %d refused",
		proxies, float64(admitted.Load()+refused.Load())/elapsed.Seconds(), elapsed.Round(time.Millisecond), got, got/elapsed.Seconds(), refused.Load())
	if got < want*0.9 || got > want*1.1 {
		t.Errorf("admitted %.0f in %v at a limit of %d a second, want %.0f ± 10%%", got, elapsed.Round(time.Millisecond), qps, want)
	}
	if refused.Load() < int64(want) {
		t.Errorf("only %d refused: the load was not over the limit", refused.Load())
	}
}

// TestGlobalRateLimitRefusesWhatItCannotHonour: configs weir-proxy cannot
// serve as Envoy would are NACKed, naming the field.
func TestGlobalRateLimitRefusesWhatItCannotHonour(t *testing.T) {
	b := startBackend(t, "b")
	p := newTestProxy(t, Options{})
	for name, mutate := range map[string]func(*ratelimitv3.RateLimit){
		"stage: only 0":                    func(r *ratelimitv3.RateLimit) { r.Stage = 1 },
		"enable_x_ratelimit_headers":       func(r *ratelimitv3.RateLimit) { r.EnableXRatelimitHeaders = ratelimitv3.RateLimit_DRAFT_VERSION_03 },
		"rate_limited_as_resource_exhaust": func(r *ratelimitv3.RateLimit) { r.RateLimitedAsResourceExhausted = true },
		"RateLimit.Domain":                 func(r *ratelimitv3.RateLimit) { r.Domain = "" },
		"transport_api_version":            func(r *ratelimitv3.RateLimit) { r.RateLimitService.TransportApiVersion = corev3.ApiVersion_AUTO },
		"grpc_service.google_grpc": func(r *ratelimitv3.RateLimit) {
			r.RateLimitService.GrpcService.TargetSpecifier = &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x", StatPrefix: "x"}}
		},
	} {
		f := rateLimitFilter("rl", "rls", false)
		var rl ratelimitv3.RateLimit
		if err := f.GetTypedConfig().UnmarshalTo(&rl); err != nil {
			t.Fatal(err)
		}
		mutate(&rl)
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rl)}
		res := &Resources{
			Listeners: []*listenerv3.Listener{plainListener("l", withFilters(f))},
			Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, routeTo(prefixMatch("/"), b.name)))},
		}
		addBackends(res, false, b)
		if err := p.Apply(res); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Apply = %v, want a NACK naming it", name, err)
		}
	}
}
