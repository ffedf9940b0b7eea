package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const listenerName = "external-http"

func singleRoute(routes ...*routev3.Route) *Resources {
	return &Resources{
		Listeners: []*listenerv3.Listener{plainListener(listenerName)},
		Routes:    []*routev3.RouteConfiguration{routeConfig(listenerName, virtualHost("all", []string{"*"}, routes...))},
	}
}

func keepAliveClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func TestSplitAccuracy(t *testing.T) {
	t.Parallel()
	a, b, c, z := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c"), startBackend(t, "zero")
	res := singleRoute(routeSplit(prefixMatch("/"),
		split{cluster: "a", weight: 60}, split{cluster: "b", weight: 30},
		split{cluster: "c", weight: 10}, split{cluster: "zero", weight: 0}))
	addBackends(res, false, a, b, c, z)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)

	const total, workers = 10000, 8
	client := keepAliveClient()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			for i := 0; i < total/workers; i++ {
				resp, err := client.Get(base + "/split")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local[resp.Header.Get("X-Backend")]++
			}
			mu.Lock()
			for k, v := range local {
				counts[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, want := range map[string]float64{"a": 60, "b": 30, "c": 10} {
		got := float64(counts[name]) * 100 / total
		if got < want-3 || got > want+3 {
			t.Errorf("backend %s got %.1f%%, want %.0f%% ±3", name, got, want)
		}
	}
	if counts["zero"] != 0 || z.hits.Load() != 0 {
		t.Errorf("0%% split received %d requests", counts["zero"])
	}
	t.Logf("split counts: %v", counts)
}

func TestMatching(t *testing.T) {
	t.Parallel()
	bs := map[string]*backend{}
	for _, n := range []string{"exact", "canary", "regex", "post", "fallback", "host", "wild", "rewrite"} {
		bs[n] = startBackend(t, n)
	}
	setRoute := routeTo(prefixMatch("/set"), "fallback")
	setRoute.RequestHeadersToAdd = append(setHeaders(map[string]string{"x-set": "route"}), &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: "x-append", Value: "route"},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	})
	setRoute.RequestHeadersToRemove = []string{"x-remove-me"}

	specific := routeSplit(prefixMatch("/specific"), split{cluster: "fallback", weight: 1, headers: map[string]string{"x-who": "split"}})
	specific.RequestHeadersToAdd = setHeaders(map[string]string{"x-who": "route"})

	rewrite := routeTo(prefixMatch("/rewrite"), "rewrite")
	action(rewrite).HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"}

	rc := routeConfig(listenerName,
		virtualHost("host", []string{"example.com", "example.com:*"}, routeTo(prefixMatch("/"), "host")),
		virtualHost("wild", []string{"*.wild.test"}, routeTo(prefixMatch("/"), "wild")),
		virtualHost("all", []string{"*"},
			routeTo(pathMatch("/exact"), "exact"),
			routeTo(withHeader(prefixMatch("/"), "x-canary", "1"), "canary"),
			routeTo(regexMatch(`/re/[0-9]+`), "regex"),
			routeTo(withHeader(prefixMatch("/api"), ":method", "POST"), "post"),
			routeTo(withHeaderRegex(withPresent(prefixMatch("/hdr"), "x-present"), "x-version", `v[0-9]+`), "canary"),
			setRoute, specific, rewrite,
			routeTo(prefixMatch("/"), "fallback"),
		),
	)
	res := &Resources{Listeners: []*listenerv3.Listener{plainListener(listenerName)}, Routes: []*routev3.RouteConfiguration{rc}}
	for _, b := range bs {
		addBackends(res, false, b)
	}
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)
	client := keepAliveClient()

	type tc struct {
		method, host, path string
		headers            map[string]string
		want               string
	}
	for _, c := range []tc{
		{path: "/exact", want: "exact"},
		{path: "/exact?x=1", want: "exact"}, // path match ignores the query
		{path: "/exact/more", want: "fallback"},
		{path: "/exact", headers: map[string]string{"x-canary": "1"}, want: "exact"}, // first match wins
		{path: "/anything", headers: map[string]string{"x-canary": "1"}, want: "canary"},
		{path: "/anything", headers: map[string]string{"x-canary": "2"}, want: "fallback"},
		{path: "/re/123", want: "regex"},
		{path: "/re/123x", want: "fallback"}, // regex is a full match
		{method: "POST", path: "/api/x", want: "post"},
		{method: "GET", path: "/api/x", want: "fallback"},
		{path: "/hdr", headers: map[string]string{"x-present": "", "x-version": "v2"}, want: "canary"},
		{path: "/hdr", headers: map[string]string{"x-version": "v2"}, want: "fallback"},
		{path: "/hdr", headers: map[string]string{"x-present": "1", "x-version": "2"}, want: "fallback"},
		{path: "/a/../exact", want: "exact"}, // normalize_path
		{host: "example.com", path: "/", want: "host"},
		{host: "example.com:8080", path: "/", want: "host"},
		{host: "EXAMPLE.COM", path: "/", want: "host"},
		{host: "a.wild.test", path: "/", want: "wild"},
		{host: "a.wild.test:80", path: "/", want: "fallback"},
		{host: "wild.test", path: "/", want: "fallback"},
	} {
		method := c.method
		if method == "" {
			method = "GET"
		}
		req, _ := http.NewRequest(method, base+c.path, nil)
		if c.path == "/a/../exact" {
			req.URL.Opaque = "/a/../exact" // keep the client from cleaning it
		}
		if c.host != "" {
			req.Host = c.host
		}
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		e, resp := getEcho(t, client, req)
		if resp.StatusCode != 200 || e.Backend != c.want {
			t.Errorf("%s %s host=%q headers=%v: got %d from %q, want %q", method, c.path, c.host, c.headers, resp.StatusCode, e.Backend, c.want)
		}
	}

	t.Run("set header overwrites the client's", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/set", nil)
		req.Header.Set("X-Set", "client")
		req.Header.Set("X-Append", "client")
		req.Header.Set("X-Remove-Me", "1")
		e, _ := getEcho(t, client, req)
		if got := e.Headers["X-Set"]; len(got) != 1 || got[0] != "route" {
			t.Errorf("x-set = %v, want [route]", got)
		}
		if got := e.Headers["X-Append"]; len(got) != 2 || got[0] != "client" || got[1] != "route" {
			t.Errorf("x-append = %v, want [client route]", got)
		}
		if _, ok := e.Headers["X-Remove-Me"]; ok {
			t.Errorf("x-remove-me was not removed")
		}
		if got := e.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("x-forwarded-for = %v", got)
		}
		if got := e.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
			t.Errorf("x-forwarded-proto = %v", got)
		}
		if len(e.Headers["X-Request-Id"]) != 1 {
			t.Errorf("x-request-id not generated")
		}
	})
	t.Run("most specific header mutation wins", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/specific", nil)
		req.Header.Set("X-Who", "client")
		e, _ := getEcho(t, client, req)
		if got := e.Headers["X-Who"]; len(got) != 1 || got[0] != "split" {
			t.Errorf("x-who = %v, want [split]", got)
		}
	})
	t.Run("host rewrite", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/rewrite", nil)
		e, _ := getEcho(t, client, req)
		if e.Backend != "rewrite" || e.Host != "internal.example" {
			t.Errorf("got backend %q host %q", e.Backend, e.Host)
		}
	})
}

func TestHTTPSRedirect(t *testing.T) {
	t.Parallel()
	redirect := &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
		ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
	}}}
	moved := &routev3.Route{Match: prefixMatch("/old"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		HostRedirect: "new.example", PortRedirect: 8443, PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"},
		ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT,
	}}}
	p := newTestProxy(t, Options{})
	mustApply(t, p, singleRoute(moved, redirect))
	base := proxyURL(t, p, listenerName)
	client := keepAliveClient()
	for _, c := range []struct {
		host, path, want string
		code             int
	}{
		{"example.com", "/p?q=1", "https://example.com/p?q=1", 301},
		{"example.com:80", "/p", "https://example.com/p", 301}, // default port of the old scheme dropped
		{"example.com:8080", "/p", "https://example.com:8080/p", 301},
		{"example.com", "/old?x=1", "http://new.example:8443/new?x=1", 307},
	} {
		req, _ := http.NewRequest("GET", base+c.path, nil)
		req.Host = c.host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code || resp.Header.Get("Location") != c.want {
			t.Errorf("%s%s: got %d %q, want %d %q", c.host, c.path, resp.StatusCode, resp.Header.Get("Location"), c.code, c.want)
		}
	}
}

func slowDelay() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("WEIR_SLOW_BACKEND_DELAY")); err == nil {
		return d
	}
	// Longer than Envoy's default route timeout (15 s), which an explicit
	// timeout of 0s must turn off.
	return 20 * time.Second
}

func TestNoDefaultTimeout(t *testing.T) {
	t.Parallel()
	slow := startBackend(t, "slow")
	short := routeTo(prefixMatch("/short"), "slow")
	action(short).Timeout = durationpb.New(300 * time.Millisecond)
	noField := routeTo(prefixMatch("/default"), "slow")
	action(noField).Timeout = nil
	res := singleRoute(short, noField, routeTo(prefixMatch("/"), "slow"))
	addBackends(res, false, slow)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := http.Get(base + "/short?sleep=2s")
		if err != nil {
			t.Error(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 504 || string(body) != "upstream request timeout" {
			t.Errorf("short timeout: got %d %q, want 504", resp.StatusCode, body)
		}
	}()
	// A request body arms the route timeout only at its end; a fast
	// backend is unaffected.
	resp, err := http.Post(base+"/short", "text/plain", strings.NewReader("some body"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("POST with a 300ms route timeout: %d", resp.StatusCode)
	}

	d := slowDelay()
	// Without a timeout field, Envoy's default of 15 s applies: the same
	// slow request gets a 504, so the 0s case below is not passing by luck.
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		resp, err := http.Get(base + "/default?sleep=" + d.String())
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != 504 || time.Since(start) < envoyDefaultRouteTimeout {
			t.Errorf("no timeout field: got %d after %v, want 504 after Envoy's default %v", resp.StatusCode, time.Since(start), envoyDefaultRouteTimeout)
		}
	}()
	start := time.Now()
	resp, err = http.Get(base + "/slow?sleep=" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || time.Since(start) < d {
		t.Fatalf("timeout 0s: got %d after %v, want 200 after >= %v", resp.StatusCode, time.Since(start), d)
	}
	wg.Wait()
}

// flakyBackend answers 503 to the first request and 200 afterwards.
func flakyBackend(t *testing.T) (*backend, *atomic.Int64) {
	var n atomic.Int64
	b := &backend{name: "flaky"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if n.Add(1) == 1 {
			w.WriteHeader(503)
			io.WriteString(w, "backend says no")
			return
		}
		fmt.Fprintf(w, "ok %d", len(body))
	}))
	return b, &n
}

func TestRetries(t *testing.T) {
	t.Parallel()
	t.Run("503 without retry policy is returned as is", func(t *testing.T) {
		b, n := flakyBackend(t)
		res := singleRoute(routeTo(prefixMatch("/"), "flaky"))
		addBackends(res, false, b)
		p := newTestProxy(t, Options{})
		mustApply(t, p, res)
		resp, err := http.Get(proxyURL(t, p, listenerName) + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || string(body) != "backend says no" || n.Load() != 1 {
			t.Fatalf("got %d %q after %d upstream requests", resp.StatusCode, body, n.Load())
		}
	})
	// What translate emits for nginx's proxy-next-upstream without
	// non_idempotent: POST, LOCK and PATCH are never retried.
	for _, tc := range []struct {
		method string
		want   int
		tries  int64
	}{
		{http.MethodGet, 200, 2},
		{http.MethodPut, 200, 2},
		{http.MethodPost, 503, 1},
		{"PATCH", 503, 1},
	} {
		t.Run("retriable_request_headers "+tc.method, func(t *testing.T) {
			b, n := flakyBackend(t)
			r := routeTo(prefixMatch("/"), "flaky")
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "retriable-status-codes", NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503},
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
				RetriableRequestHeaders: []*routev3.HeaderMatcher{{Name: ":method", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "POST|LOCK|PATCH"}},
				}}}}}
			res := singleRoute(r)
			addBackends(res, false, b)
			p := newTestProxy(t, Options{})
			mustApply(t, p, res)
			req, _ := http.NewRequest(tc.method, proxyURL(t, p, listenerName)+"/", strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || n.Load() != tc.tries {
				t.Errorf("%s: %d after %d upstream requests, want %d after %d", tc.method, resp.StatusCode, n.Load(), tc.want, tc.tries)
			}
		})
	}
	t.Run("retry_policy 5xx retries with the body replayed", func(t *testing.T) {
		b, n := flakyBackend(t)
		r := routeTo(prefixMatch("/"), "flaky")
		action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(2 * time.Second)}
		res := singleRoute(r)
		addBackends(res, false, b)
		p := newTestProxy(t, Options{})
		mustApply(t, p, res)
		resp, err := http.Post(proxyURL(t, p, listenerName)+"/", "text/plain", strings.NewReader(strings.Repeat("x", 100000)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok 100000" || n.Load() != 2 {
			t.Fatalf("got %d %q after %d upstream requests", resp.StatusCode, body, n.Load())
		}
	})
	// What translate emits for an HTTPRoute's retry stanza.
	for _, tc := range []struct {
		name  string
		codes []uint32
		want  int
		tries int64
	}{
		{"retriable-status-codes retries a listed status", []uint32{500, 503}, 200, 2},
		{"retriable-status-codes leaves others alone", []uint32{500}, 503, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, n := flakyBackend(t)
			r := routeTo(prefixMatch("/"), "flaky")
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure,reset,retriable-status-codes", NumRetries: wrapperspb.UInt32(2),
				RetriableStatusCodes: tc.codes, RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)}}
			res := singleRoute(r)
			addBackends(res, false, b)
			p := newTestProxy(t, Options{})
			mustApply(t, p, res)
			resp, err := http.Get(proxyURL(t, p, listenerName) + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || n.Load() != tc.tries {
				t.Fatalf("got %d after %d upstream requests, want %d after %d", resp.StatusCode, n.Load(), tc.want, tc.tries)
			}
		})
	}
	t.Run("retry_back_off is refused as Envoy refuses it", func(t *testing.T) {
		for _, bo := range []*routev3.RetryPolicy_RetryBackOff{
			{BaseInterval: durationpb.New(0)},
			{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)},
		} {
			r := routeTo(prefixMatch("/"), "flaky")
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: bo}
			res := singleRoute(r)
			res.Clusters = append(res.Clusters, edsCluster("flaky", false))
			res.Endpoints = append(res.Endpoints, cla("flaky", "127.0.0.1:1"))
			// PGV's message names RetryBackOff, weir-proxy's retry_back_off.
			if err := newTestProxy(t, Options{}).Apply(res); err == nil || !strings.Contains(strings.ReplaceAll(strings.ToLower(err.Error()), "_", ""), "retrybackoff") {
				t.Errorf("retry_back_off %v: Apply = %v", bo, err)
			}
		}
	})
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	res := singleRoute(routeTo(prefixMatch("/dead"), "dead"), routeTo(prefixMatch("/empty"), "empty"))
	res.Clusters = append(res.Clusters, edsCluster("dead", false), edsCluster("empty", false))
	res.Endpoints = append(res.Endpoints, cla("dead", dead)) // "empty" has no assignment yet
	reg := prometheus.NewRegistry()
	p := newTestProxy(t, Options{Registerer: reg})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)

	resp, err := http.Get(base + "/empty")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != "no healthy upstream" {
		t.Errorf("no endpoints: got %d %q", resp.StatusCode, body)
	}
	resp, err = http.Get(base + "/dead")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "connection failure") {
		t.Errorf("connect failure: got %d %q", resp.StatusCode, body)
	}
	if got := metricValue(t, reg, "weir_proxy_upstream_connect_errors_total", map[string]string{"cluster": "dead"}); got != 1 {
		t.Errorf("connect errors metric = %v", got)
	}
	if got := metricValue(t, reg, "weir_proxy_requests_total", map[string]string{"listener": listenerName, "code": "503"}); got != 2 {
		t.Errorf("requests_total{code=503} = %v", got)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func startWSBackend(t *testing.T, name string) *backend {
	up := websocket.Upgrader{}
	b := &backend{name: name}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, http.Header{"X-Backend": {name}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	}))
	return b
}

func TestWebsocketEcho(t *testing.T) {
	t.Parallel()
	ws := startWSBackend(t, "ws")
	plain := startBackend(t, "plain")
	noUpgrade := routeTo(prefixMatch("/noupgrade"), "ws")
	action(noUpgrade).UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
	res := singleRoute(noUpgrade, routeTo(prefixMatch("/ws"), "ws"), routeTo(prefixMatch("/"), "plain"))
	addBackends(res, false, ws, plain)
	var logBuf syncBuffer
	p := newTestProxy(t, Options{AccessLog: &logBuf})
	mustApply(t, p, res)
	addr := p.ListenerAddr(listenerName).String()

	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp.Header.Get("X-Backend") != "ws" {
		t.Errorf("101 headers not forwarded: %v", resp.Header)
	}
	for i := 0; i < 50; i++ {
		msg := fmt.Sprintf("hello %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != msg {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))

	_, resp, err = websocket.DefaultDialer.Dial("ws://"+addr+"/noupgrade", nil)
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade disabled on the route: want 403, got %v %v", resp, err)
	}

	// The access log has one JSON line per request, written when the
	// stream ends, which can be just after the client saw the response.
	entries := map[string]map[string]any{}
	for deadline := time.Now().Add(10 * time.Second); ; {
		for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("access log line %q: %v", line, err)
			}
			entries[entry["path"].(string)] = entry
		}
		if (entries["/ws"] != nil && entries["/noupgrade"] != nil) || time.Now().After(deadline) {
			break
		}
		logBuf.waitWrite()
	}
	if e := entries["/noupgrade"]; e["method"] != "GET" || e["code"] != float64(403) || e["flags"] != "UPE" {
		t.Errorf("access log entry %v", e)
	}
	if e := entries["/ws"]; e["code"] != float64(101) || e["upstream_cluster"] != "ws" || e["bytes_sent"].(float64) < 50*7 {
		t.Errorf("access log entry %v", e)
	}
}

type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // signalled after each write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil {
		s.written = make(chan struct{}, 1)
	}
	select {
	case s.written <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

// waitWrite blocks until the next write, for at most a second.
func (s *syncBuffer) waitWrite() {
	s.mu.Lock()
	if s.written == nil {
		s.written = make(chan struct{}, 1)
	}
	ch := s.written
	s.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(time.Second):
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTLSSNIAndHTTP2(t *testing.T) {
	t.Parallel()
	certA := newCert(t, "a.example.com", "a.example.com")
	certB := newCert(t, "*.b.example.com", "*.b.example.com")
	a, b := startBackend(t, "a"), startBackend(t, "b")
	const name = "external-https"
	res := &Resources{
		Listeners: []*listenerv3.Listener{tlsListener(name,
			sniChain{names: []string{"a.example.com"}, secret: "default/a-tls"},
			sniChain{names: []string{"*.b.example.com"}, secret: "default/b-tls"})},
		Routes: []*routev3.RouteConfiguration{routeConfig(name,
			virtualHost("a", []string{"a.example.com", "a.example.com:*"}, routeTo(prefixMatch("/"), "a")),
			virtualHost("b", []string{"*.b.example.com", "*.b.example.com:*"}, routeTo(prefixMatch("/"), "b")))},
		Secrets: []*tlsv3.Secret{secret("default/a-tls", certA), secret("default/b-tls", certB)},
	}
	addBackends(res, false, a, b)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	addr := p.ListenerAddr(name).String()

	clientFor := func(protos ...string) *http.Client {
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: certPool(certA, certB), NextProtos: protos},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			ForceAttemptHTTP2: len(protos) == 0 || protos[0] == "h2",
		}
		return &http.Client{Transport: tr}
	}
	h2 := clientFor()
	for host, want := range map[string]string{"a.example.com": "a", "x.b.example.com": "b", "y.b.example.com": "b"} {
		e, resp := getEcho(t, h2, mustReq("GET", "https://"+host+"/x"))
		if resp.ProtoMajor != 2 || e.Backend != want {
			t.Errorf("%s: proto %s backend %q, want HTTP/2 and %q", host, resp.Proto, e.Backend, want)
		}
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != map[string]string{"a": "a.example.com", "b": "*.b.example.com"}[want] {
			t.Errorf("%s: served certificate %q", host, cn)
		}
		if got := e.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
			t.Errorf("x-forwarded-proto = %v", got)
		}
	}
	// HTTP/1.1 via ALPN works too.
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: certPool(certA, certB)},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	if e, resp := getEcho(t, h1, mustReq("GET", "https://a.example.com/")); resp.ProtoMajor != 1 || e.Backend != "a" {
		t.Errorf("http/1.1 over TLS: %s %q", resp.Proto, e.Backend)
	}
	// An SNI that matches no filter chain is closed during the handshake.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "c.example.com", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Errorf("unknown SNI: handshake succeeded")
	}
}

func mustReq(method, url string) *http.Request {
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return r
}

func TestH2CDownstream(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	res := singleRoute(routeTo(prefixMatch("/"), "a"))
	addBackends(res, false, a)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	e, resp := getEcho(t, c, mustReq("GET", proxyURL(t, p, listenerName)+"/h2c"))
	if resp.ProtoMajor != 2 || e.Backend != "a" {
		t.Fatalf("h2c prior knowledge: %s %q", resp.Proto, e.Backend)
	}
}

func TestBadConfigKeepsServing(t *testing.T) {
	t.Parallel()
	good := startBackend(t, "good")
	other := startBackend(t, "other")
	mk := func(cluster string) *Resources {
		res := singleRoute(routeTo(prefixMatch("/"), cluster))
		addBackends(res, false, good, other)
		return res
	}
	p := newTestProxy(t, Options{})
	if p.Ready() {
		t.Fatal("ready before the first Apply")
	}
	if err := p.Apply(&Resources{Listeners: []*listenerv3.Listener{plainListener(listenerName)}}); err == nil || !errors.Is(err, ErrMissingResource) {
		t.Fatalf("listener without its route configuration: %v", err)
	}
	if p.Ready() {
		t.Fatal("ready after a failed Apply")
	}
	mustApply(t, p, mk("good"))
	if !p.Ready() {
		t.Fatal("not ready after Apply")
	}
	base := proxyURL(t, p, listenerName)
	addrBefore := p.ListenerAddr(listenerName).String()

	cases := map[string]func(res *Resources){
		`route_configuration "external-http": virtual_hosts[0].routes[0].route.hash_policy[0].filter_state`: func(res *Resources) {
			action(res.Routes[0].VirtualHosts[0].Routes[0]).HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "x"}}}}
		},
		`listener "external-http": filter_chains[0].filters[0].typed_config.http_filters`: func(res *Resources) {
			h := &hcmv3.HttpConnectionManager{}
			_ = res.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h)
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routev3.CorsPolicy{})}}}, h.HttpFilters...)
			res.Listeners[0].FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
		},
		`listener "external-http": filter_chains[0].filters[0].typed_config.access_log`: func(res *Resources) {
			h := &hcmv3.HttpConnectionManager{}
			_ = res.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h)
			h.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.stdout"}}
			res.Listeners[0].FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
		},
		`listener "external-http": per_connection_buffer_limit_bytes`: func(res *Resources) {
			res.Listeners[0].PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024)
		},
		`cluster "good": lb_policy`: func(res *Resources) {
			res.Clusters[0].LbPolicy = clusterv3.Cluster_MAGLEV
		},
		`cluster "good": circuit_breakers.thresholds[0].max_connections`: func(res *Resources) {
			res.Clusters[0].CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(10)}}}
			// (max_connections is the first field checked.)
		},
		`route_configuration "external-http": virtual_hosts[0].routes[0].route.cluster: unknown cluster "nope"`: func(res *Resources) {
			action(res.Routes[0].VirtualHosts[0].Routes[0]).ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nope"}
		},
		`listener "external-http": listener_filters[0].name`: func(res *Resources) {
			res.Listeners[0].ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
		},
	}
	for want, mutate := range cases {
		res := mk("other")
		mutate(res)
		err := p.Apply(res)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want error containing %q, got %v", want, err)
		}
		e, resp := getEcho(t, http.DefaultClient, mustReq("GET", base+"/"))
		if resp.StatusCode != 200 || e.Backend != "good" {
			t.Fatalf("after rejected config: got %d from %q, want the old config (good)", resp.StatusCode, e.Backend)
		}
	}
	if p.ListenerAddr(listenerName).String() != addrBefore {
		t.Errorf("listener was re-bound")
	}
	mustApply(t, p, mk("other"))
	if e, _ := getEcho(t, http.DefaultClient, mustReq("GET", base+"/")); e.Backend != "other" {
		t.Errorf("valid config after rejections not applied: %q", e.Backend)
	}
}

func TestStreamIdleTimeout(t *testing.T) {
	t.Parallel()
	slow := startBackend(t, "slow")
	ws := startWSBackend(t, "ws")
	res := singleRoute(routeTo(prefixMatch("/ws"), "ws"), routeTo(prefixMatch("/"), "slow"))
	res.Listeners[0] = plainListener(listenerName, func(h *hcmv3.HttpConnectionManager) {
		h.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
	})
	addBackends(res, false, slow, ws)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	addr := p.ListenerAddr(listenerName).String()

	resp, err := http.Get("http://" + addr + "/?sleep=2s")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 408 || string(body) != "stream timeout" {
		t.Errorf("idle stream before response: got %d %q, want 408 stream timeout", resp.StatusCode, body)
	}

	// An active websocket outlives the idle timeout; an idle one is closed.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 8; i++ {
		time.Sleep(100 * time.Millisecond)
		if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatalf("active websocket closed after %d messages: %v", i, err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("active websocket closed after %d messages: %v", i, err)
		}
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("idle websocket was not closed by the proxy: %v", err)
	}
}

// TestRouteIdleTimeout: a route's idle_timeout replaces the connection
// manager's stream_idle_timeout, as in Envoy: a shorter one times out a
// stalled response with 408, and 0 turns the idle timeout off.
func TestRouteIdleTimeout(t *testing.T) {
	t.Parallel()
	slow := startBackend(t, "slow")
	get := func(p *Proxy, path string) (int, string) {
		resp, err := http.Get("http://" + p.ListenerAddr(listenerName).String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	withIdle := func(listenerIdle time.Duration, routes ...*routev3.Route) *Proxy {
		res := singleRoute(routes...)
		res.Listeners[0] = plainListener(listenerName, func(h *hcmv3.HttpConnectionManager) {
			h.StreamIdleTimeout = durationpb.New(listenerIdle)
		})
		addBackends(res, false, slow)
		p := newTestProxy(t, Options{})
		mustApply(t, p, res)
		return p
	}

	// A long listener timeout: only the route's short one can fire.
	short := routeTo(prefixMatch("/short"), "slow")
	short.GetRoute().IdleTimeout = durationpb.New(200 * time.Millisecond)
	long := withIdle(time.Minute, short, routeTo(prefixMatch("/"), "slow"))
	if code, body := get(long, "/short?sleep=3s"); code != 408 || body != "stream timeout" {
		t.Errorf("/short: %d %q; want the route's 408 stream timeout", code, body)
	}
	if code, _ := get(long, "/?sleep=500ms"); code != 200 {
		t.Errorf("/ under the listener's minute: %d, want 200", code)
	}

	// A short listener timeout: a route's 0 turns it off.
	off := routeTo(prefixMatch("/off"), "slow")
	off.GetRoute().IdleTimeout = durationpb.New(0)
	quick := withIdle(200*time.Millisecond, off, routeTo(prefixMatch("/"), "slow"))
	if code, _ := get(quick, "/off?sleep=1s"); code != 200 {
		t.Errorf("/off: %d; want the slow answer, with no idle timeout", code)
	}
	if code, body := get(quick, "/?sleep=3s"); code != 408 || body != "stream timeout" {
		t.Errorf("/: %d %q; want the listener's 408 stream timeout", code, body)
	}
}

func TestListenerLifecycle(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	const internal = "internal-http"
	mk := func(port uint32, withInternal bool) *Resources {
		res := singleRoute(routeTo(prefixMatch("/"), "a"))
		res.Listeners[0].Address = socketAddr("0.0.0.0", port)
		if withInternal {
			res.Listeners = append(res.Listeners, plainListener(internal))
			res.Routes = append(res.Routes, routeConfig(internal, virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "a"))))
		}
		addBackends(res, false, a)
		return res
	}
	p := newTestProxy(t, Options{DrainTimeout: time.Second})
	mustApply(t, p, mk(0, true))
	internalAddr := p.ListenerAddr(internal).String()
	if e, _ := getEcho(t, http.DefaultClient, mustReq("GET", "http://"+internalAddr+"/")); e.Backend != "a" {
		t.Fatalf("internal listener not serving")
	}

	// A port that is taken makes Apply fail and changes nothing.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := uint32(busy.Addr().(*net.TCPAddr).Port)
	if err := p.Apply(mk(busyPort, false)); err == nil || !strings.Contains(err.Error(), `listener "external-http": address`) {
		t.Fatalf("bind failure: %v", err)
	}
	if p.ListenerAddr(internal) == nil {
		t.Fatalf("failed Apply removed a listener")
	}

	// Removing a listener closes its socket; moving one re-binds it.
	busy.Close()
	mustApply(t, p, mk(busyPort, false))
	if p.ListenerAddr(internal) != nil {
		t.Errorf("removed listener still reported")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := net.Dial("tcp", internalAddr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("removed listener still accepts connections")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := p.ListenerAddr(listenerName).(*net.TCPAddr).Port; got != int(busyPort) {
		t.Errorf("listener bound to port %d, want %d", got, busyPort)
	}
	if e, _ := getEcho(t, http.DefaultClient, mustReq("GET", fmt.Sprintf("http://127.0.0.1:%d/", busyPort))); e.Backend != "a" {
		t.Errorf("moved listener not serving")
	}
}

func TestClusterTypes(t *testing.T) {
	t.Parallel()
	a1, a2, ext := startBackend(t, "a1"), startBackend(t, "a2"), startBackend(t, "external")
	_, extPort, _ := net.SplitHostPort(ext.addr)
	port, _ := strconv.Atoi(extPort)
	dns := &clusterv3.Cluster{
		Name:                 "default/external:80",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "default/external:80", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddr("localhost", uint32(port)),
			}}}},
		}}},
	}
	lr := edsCluster("lr", false)
	lr.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	ext1 := routeTo(prefixMatch("/external"), "default/external:80")
	action(ext1).HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "external.example.org"}
	res := singleRoute(ext1, routeTo(prefixMatch("/"), "lr"))
	res.Clusters = append(res.Clusters, dns, lr)
	res.Endpoints = append(res.Endpoints, cla("lr", a1.addr, a2.addr))
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)
	client := keepAliveClient()

	e, resp := getEcho(t, client, mustReq("GET", base+"/external"))
	if resp.StatusCode != 200 || e.Backend != "external" || e.Host != "external.example.org" {
		t.Errorf("LOGICAL_DNS: %d %q host %q", resp.StatusCode, e.Backend, e.Host)
	}
	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		e, _ := getEcho(t, client, mustReq("GET", base+"/lr"))
		seen[e.Backend]++
	}
	if seen["a1"] == 0 || seen["a2"] == 0 {
		t.Errorf("LEAST_REQUEST used one endpoint only: %v", seen)
	}
}

// TestClusterRemovedUnderUnchangedRoutes follows Envoy: validate_clusters
// is checked when a route configuration is loaded, so removing a cluster
// that an unchanged route configuration still names is accepted (its routes
// answer 503) and does not block the update, while a new or changed route
// configuration naming an unknown cluster is rejected.
func TestClusterRemovedUnderUnchangedRoutes(t *testing.T) {
	t.Parallel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	res := singleRoute(routeTo(prefixMatch("/a"), "a"), routeTo(prefixMatch("/b"), "b"))
	addBackends(res, false, a, b)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)

	without := &Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters[1:], Endpoints: res.Endpoints[1:]}
	if res.Clusters[0].GetName() != "a" {
		t.Fatalf("fixture order: %s", res.Clusters[0].GetName())
	}
	mustApply(t, p, without)
	if _, resp := getEcho(t, http.DefaultClient, mustReq("GET", base+"/a")); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("route to the removed cluster: %d, want 503", resp.StatusCode)
	}
	if e, _ := getEcho(t, http.DefaultClient, mustReq("GET", base+"/b")); e.Backend != "b" {
		t.Errorf("route to the remaining cluster answered by %q", e.Backend)
	}

	changed := singleRoute(routeTo(prefixMatch("/a2"), "a"), routeTo(prefixMatch("/b"), "b"))
	changed.Clusters, changed.Endpoints = without.Clusters, without.Endpoints
	if err := p.Apply(changed); err == nil || !strings.Contains(err.Error(), `unknown cluster "a"`) {
		t.Errorf("a changed route configuration naming an unknown cluster: %v", err)
	}
}
