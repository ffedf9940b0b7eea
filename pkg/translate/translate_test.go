package translate

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// service returns a fragment like the KIngress front end makes for a
// Knative Service: one external and one cluster-local virtual host routing
// to a split over its revisions, each revision a backend with endpoints.
func service(ns, name string, weights ...uint32) *ir.Fragment {
	f := &ir.Fragment{Source: ir.ObjectRef{Kind: "KIngress", Namespace: ns, Name: name}}
	var split []ir.WeightedBackend
	for i, w := range weights {
		rev := fmt.Sprintf("%s-%05d", name, i+1)
		b := &ir.Backend{
			Name:      ir.BackendName(ns, rev, 80),
			Service:   ir.ServiceRef{Namespace: ns, Name: rev, Port: 80},
			Endpoints: []ir.Endpoint{{Address: fmt.Sprintf("10.%d.%d.%d", i, len(name)%250, len(ns)%250), Port: 8012}},
		}
		f.Backends = append(f.Backends, b)
		split = append(split, ir.WeightedBackend{
			BackendName:    b.Name,
			Weight:         w,
			RequestHeaders: ir.HeaderMutation{Set: []ir.Header{{Name: "Knative-Serving-Revision", Value: rev}}},
		})
	}
	route := func() []*ir.Route {
		return []*ir.Route{{Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}}, Backends: split}}
	}
	f.VirtualHosts = []*ir.VirtualHost{
		{
			Name:      ns + "/" + name + "/external",
			Domains:   []string{name + "." + ns + ".example.com"},
			Listeners: ir.ListenerSet(ir.ExternalHTTP).With(ir.InternalHTTP),
			Routes:    route(),
		},
		{
			Name:      ns + "/" + name + "/local",
			Domains:   []string{name + "." + ns + ".svc.cluster.local"},
			Listeners: ir.ListenerSet(ir.InternalHTTP),
			Routes:    route(),
		},
	}
	return f
}

func cert(name string, roles ir.ListenerSet, hosts ...string) *ir.Certificate {
	chain, key := testKeyPair(name)
	return &ir.Certificate{Name: name, Hosts: hosts, Listeners: roles, CertChain: chain, PrivateKey: key}
}

var externalHTTPS = ir.ListenerSet(ir.ExternalHTTPS)

func routeConfig(t *testing.T, res *Resources, name string) *routev3.RouteConfiguration {
	t.Helper()
	for _, rc := range res.Routes {
		if rc.GetName() == name {
			return rc
		}
	}
	t.Fatalf("no route configuration %q", name)
	return nil
}

func listener(res *Resources, name string) *listenerv3.Listener {
	for _, l := range res.Listeners {
		if l.GetName() == name {
			return l
		}
	}
	return nil
}

func vhostNames(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		out = append(out, vh.GetName())
	}
	return out
}

func names[M interface{ GetName() string }](ms []M) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GetName()
	}
	return out
}

func TestDefaultOptionsAndListeners(t *testing.T) {
	if got := DefaultOptions(); got.ExternalHTTPPort != 8080 || got.ExternalHTTPSPort != 8443 ||
		got.InternalHTTPPort != 8081 || got.InternalHTTPSPort != 8444 || got.StreamIdleTimeout != 0 {
		t.Errorf("DefaultOptions() = %+v", got)
	}

	// No fragment at all still yields both plain listeners and their routes.
	res := mustTranslate(t, nil)
	if got := names(res.Listeners); !slices.Equal(got, []string{"external-http", "internal-http"}) {
		t.Errorf("listeners = %v", got)
	}
	if got := names(res.Routes); !slices.Equal(got, []string{"external-http", "internal-http"}) {
		t.Errorf("routes = %v", got)
	}

	res, err := New(Options{InternalHTTPPort: 9000}).Translate(nil)
	if err != nil {
		t.Fatal(err)
	}
	l := listener(res, "internal-http")
	if got := l.GetAddress().GetSocketAddress().GetPortValue(); got != 9000 {
		t.Errorf("internal-http port = %d, want 9000", got)
	}
	if got := listener(res, "external-http").GetAddress().GetSocketAddress().GetPortValue(); got != 8080 {
		t.Errorf("external-http port = %d, want the default 8080", got)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if d := hcm.GetStreamIdleTimeout(); d == nil || d.AsDuration() != 0 {
		t.Errorf("stream_idle_timeout = %v, want an explicit 0s (disabled)", d)
	}
}

func TestKnativeRouteHasZeroTimeoutAndNoRetry(t *testing.T) {
	res := mustTranslate(t, []*ir.Fragment{service("default", "hello", 100)})
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				a := r.GetRoute()
				if a.GetTimeout() == nil || a.GetTimeout().AsDuration() != 0 {
					t.Errorf("%s %s: timeout = %v, want 0s", rc.GetName(), vh.GetName(), a.GetTimeout())
				}
				if a.GetRetryPolicy() != nil {
					t.Errorf("%s %s: unexpected retry policy", rc.GetName(), vh.GetName())
				}
			}
		}
	}
}

func TestDomainsAreCanonicalAndPortsIgnored(t *testing.T) {
	f := service("default", "hello", 100)
	f.VirtualHosts[0].Domains = []string{"Hello.Example.com", "hello.example.com", "*.wild.example.com"}
	res := mustTranslate(t, []*ir.Fragment{f})
	rc := routeConfig(t, res, "external-http")
	got := rc.GetVirtualHosts()[0].GetDomains()
	want := []string{"hello.example.com", "*.wild.example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("domains = %v, want %v", got, want)
	}
	// Without it, Envoy compares the port and "a.wild.example.com:8080"
	// misses "*.wild.example.com".
	if !rc.GetIgnorePortInHostMatching() {
		t.Error("ignore_port_in_host_matching is not set")
	}
}

func TestSplitShapes(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		check   func(t *testing.T, a *routev3.RouteAction)
	}{
		{"single backend with headers is a one-entry split", []uint32{100}, func(t *testing.T, a *routev3.RouteAction) {
			if wc := a.GetWeightedClusters(); len(wc.GetClusters()) != 1 {
				t.Errorf("route = %v, want one weighted cluster", a)
			}
		}},
		{"zero weights are listed", []uint32{100, 0}, func(t *testing.T, a *routev3.RouteAction) {
			var ws []uint32
			for _, c := range a.GetWeightedClusters().GetClusters() {
				ws = append(ws, c.GetWeight().GetValue())
			}
			if !slices.Equal(ws, []uint32{100, 0}) {
				t.Errorf("weights = %v, want [100 0]", ws)
			}
		}},
		{"all zero goes to the unavailable cluster", []uint32{0, 0}, func(t *testing.T, a *routev3.RouteAction) {
			if a.GetCluster() != UnavailableCluster {
				t.Errorf("route = %v, want cluster %s", a, UnavailableCluster)
			}
		}},
		{"weights beyond 2^32 are scaled", []uint32{math.MaxUint32, math.MaxUint32, 1}, func(t *testing.T, a *routev3.RouteAction) {
			var total uint64
			var ws []uint32
			for _, c := range a.GetWeightedClusters().GetClusters() {
				total += uint64(c.GetWeight().GetValue())
				ws = append(ws, c.GetWeight().GetValue())
			}
			if total == 0 || total > math.MaxUint32 || ws[0] != ws[1] || ws[0] < ws[2] {
				t.Errorf("weights = %v (total %d), want proportional and at most 2^32-1", ws, total)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustTranslate(t, []*ir.Fragment{service("default", "s", tt.weights...)})
			tt.check(t, routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes()[0].GetRoute())
		})
	}

	// A single backend without its own headers is a plain cluster.
	f := service("default", "plain", 100)
	f.VirtualHosts[0].Routes[0].Backends[0].RequestHeaders = ir.HeaderMutation{}
	res := mustTranslate(t, []*ir.Fragment{f})
	if got := routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != f.Backends[0].Name {
		t.Errorf("cluster = %q, want %q", got, f.Backends[0].Name)
	}
	if slices.Contains(names(res.Clusters), UnavailableCluster) {
		t.Errorf("%s emitted though no route needs it", UnavailableCluster)
	}
}

func TestHTTPSListenersOnlyWithCertificates(t *testing.T) {
	f := service("default", "hello", 100)
	f.VirtualHosts[0].Listeners = f.VirtualHosts[0].Listeners.With(ir.ExternalHTTPS)
	res := mustTranslate(t, []*ir.Fragment{f})
	if listener(res, "external-https") != nil || slices.Contains(names(res.Routes), "external-https") {
		t.Error("external-https emitted without a certificate")
	}

	f2 := service("default", "hello", 100)
	f2.VirtualHosts[0].Listeners = f.VirtualHosts[0].Listeners
	f2.Certificates = []*ir.Certificate{cert("default/hello-tls", externalHTTPS, "hello.default.example.com")}
	res = mustTranslate(t, []*ir.Fragment{f2})
	if got := names(res.Listeners); !slices.Equal(got, []string{"external-http", "external-https", "internal-http"}) {
		t.Errorf("listeners = %v", got)
	}
	if got := vhostNames(routeConfig(t, res, "external-https")); !slices.Equal(got, []string{"default/hello/external"}) {
		t.Errorf("external-https virtual hosts = %v", got)
	}
}

func TestDuplicateDomainKeepsFirstVirtualHostByName(t *testing.T) {
	a := service("default", "a", 100)
	b := service("default", "b", 100)
	b.VirtualHosts[0].Domains = []string{"b.default.example.com", "A.default.example.com"} // a's domain, other case
	res := mustTranslate(t, []*ir.Fragment{b, a})
	if got := vhostNames(routeConfig(t, res, "external-http")); !slices.Equal(got, []string{"default/a/external"}) {
		t.Errorf("external-http virtual hosts = %v, want only default/a/external", got)
	}
	if !hasWarning(res, `KIngress/default/b: external-http: virtual host "default/b/external" left out: domain "a.default.example.com" is already served by virtual host "default/a/external" of KIngress/default/a`) {
		t.Errorf("warnings = %q", res.Warnings)
	}
	// b's cluster-local host does not conflict and stays.
	if got := vhostNames(routeConfig(t, res, "internal-http")); !slices.Contains(got, "default/b/local") {
		t.Errorf("internal-http virtual hosts = %v, want default/b/local kept", got)
	}

	// Once a is gone, b serves the domain; the translator must notice.
	tr := New(DefaultOptions())
	if _, err := tr.Translate([]*ir.Fragment{a, b}); err != nil {
		t.Fatal(err)
	}
	res, err := tr.Translate([]*ir.Fragment{b})
	if err != nil {
		t.Fatal(err)
	}
	if got := vhostNames(routeConfig(t, res, "external-http")); !slices.Equal(got, []string{"default/b/external"}) {
		t.Errorf("after deleting a: external-http virtual hosts = %v", got)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("stale warnings: %q", res.Warnings)
	}
}

func TestDuplicateVirtualHostName(t *testing.T) {
	a := service("default", "a", 100)
	b := service("other", "b", 100)
	b.VirtualHosts[0].Name = a.VirtualHosts[0].Name
	res := mustTranslate(t, []*ir.Fragment{a, b})
	rc := routeConfig(t, res, "external-http")
	if got := vhostNames(rc); !slices.Equal(got, []string{"default/a/external"}) {
		t.Errorf("virtual hosts = %v", got)
	}
	if got := rc.GetVirtualHosts()[0].GetDomains()[0]; got != "a.default.example.com" {
		t.Errorf("kept the virtual host of the wrong source: %s", got)
	}
	if !hasWarning(res, "a virtual host of the same name comes from KIngress/default/a") {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

func TestSharedCertificateIsOneChainWithUnionOfHosts(t *testing.T) {
	a := service("default", "a", 100)
	a.Certificates = []*ir.Certificate{cert("default/shared", externalHTTPS, "a.example.com")}
	b := service("default", "b", 100)
	b.Certificates = []*ir.Certificate{cert("default/shared", externalHTTPS, "B.example.com", "a.example.com")}
	res := mustTranslate(t, []*ir.Fragment{a, b})
	if got := names(res.Secrets); !slices.Equal(got, []string{"default/shared"}) {
		t.Errorf("secrets = %v", got)
	}
	chains := listener(res, "external-https").GetFilterChains()
	if len(chains) != 1 {
		t.Fatalf("%d filter chains, want 1", len(chains))
	}
	if got := chains[0].GetFilterChainMatch().GetServerNames(); !slices.Equal(got, []string{"a.example.com", "b.example.com"}) {
		t.Errorf("server names = %v", got)
	}
	want := ir.Provenance{a.Source, b.Source}
	if got := res.Sources[SourceKey(resourcev3.SecretType, "default/shared")]; !slices.Equal(got, want) {
		t.Errorf("secret sources = %v, want %v", got, want)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

func TestServerNameInOneFilterChainOnly(t *testing.T) {
	a := service("default", "a", 100)
	a.Certificates = []*ir.Certificate{
		cert("default/c-dup", externalHTTPS, "b.example.com"),
		cert("default/b-tls", externalHTTPS, "a.example.com", "b.example.com"),
		cert("default/a-tls", externalHTTPS, "a.example.com"),
	}
	res := mustTranslate(t, []*ir.Fragment{a})
	got := chainServerNames(t, listener(res, "external-https"))
	want := map[string][]string{"default/a-tls": {"a.example.com"}, "default/b-tls": {"b.example.com"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("server names by secret = %v, want %v", got, want)
	}
	if !hasWarning(res, `server name "a.example.com" of certificate "default/b-tls" left out: certificate "default/a-tls" already serves it`) ||
		!hasWarning(res, `certificate "default/c-dup" left out: all its server names are served by other certificates`) {
		t.Errorf("warnings = %q", res.Warnings)
	}
	// Secrets are still one per certificate name.
	if got := names(res.Secrets); len(got) != 3 {
		t.Errorf("secrets = %v", got)
	}
}

func TestServerNameWildcards(t *testing.T) {
	a := service("default", "a", 100)
	a.Certificates = []*ir.Certificate{cert("default/wild", externalHTTPS, "*", "foo.*", "a.*.example.com", "*.OK.example.com", "a.example.com")}
	res := mustTranslate(t, []*ir.Fragment{a})
	got := chainServerNames(t, listener(res, "external-https"))["default/wild"]
	if want := []string{"*.ok.example.com", "a.example.com"}; !slices.Equal(got, want) {
		t.Errorf("server names = %v, want %v", got, want)
	}
	for _, h := range []string{`"*"`, `"foo.*"`, `"a.*.example.com"`} {
		if !hasWarning(res, "host "+h+" left out") {
			t.Errorf("no warning for %s in %q", h, res.Warnings)
		}
	}
}

// chainServerNames maps the secret of each filter chain of l to its server
// names.
func chainServerNames(t *testing.T, l *listenerv3.Listener) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, fc := range l.GetFilterChains() {
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		name := ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName()
		out[name] = fc.GetFilterChainMatch().GetServerNames()
	}
	return out
}

func TestSharedBackendIsOneCluster(t *testing.T) {
	a := service("default", "a", 100)
	b := service("default", "b", 100)
	b.Backends[0] = a.Backends[0]
	b.VirtualHosts[0].Routes[0].Backends[0].BackendName = a.Backends[0].Name
	b.VirtualHosts[1].Routes[0].Backends[0].BackendName = a.Backends[0].Name
	res := mustTranslate(t, []*ir.Fragment{a, b})
	if got := names(res.Clusters); !slices.Equal(got, []string{a.Backends[0].Name}) {
		t.Errorf("clusters = %v", got)
	}
	want := ir.Provenance{a.Source, b.Source}
	if got := res.Sources[SourceKey(resourcev3.ClusterType, a.Backends[0].Name)]; !slices.Equal(got, want) {
		t.Errorf("cluster sources = %v, want %v", got, want)
	}

	// Different definitions: the fragment first in the input wins, with a warning.
	c := service("default", "c", 100)
	c.Backends[0] = &ir.Backend{Name: a.Backends[0].Name, Service: a.Backends[0].Service, Protocol: ir.H2C}
	c.VirtualHosts[0].Routes[0].Backends[0].BackendName = a.Backends[0].Name
	c.VirtualHosts[1].Routes[0].Backends[0].BackendName = a.Backends[0].Name
	for _, order := range [][]*ir.Fragment{{c, a}, {a, c}} {
		res := mustTranslate(t, order)
		h2 := res.Clusters[0].GetTypedExtensionProtocolOptions() != nil
		if want := order[0] == c; h2 != want {
			t.Errorf("order %s first: h2 = %v, want %v", order[0].Source.Name, h2, want)
		}
		if !hasWarning(res, "is defined differently") {
			t.Errorf("warnings = %q", res.Warnings)
		}
	}
}

func TestRouteToUnknownBackendIsLeftOut(t *testing.T) {
	f := service("default", "a", 100)
	f.VirtualHosts[0].Routes = append([]*ir.Route{{
		Name:     "broken",
		Match:    ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/x"}},
		Backends: []ir.WeightedBackend{{BackendName: "default/nope:80", Weight: 1}},
	}}, f.VirtualHosts[0].Routes...)
	res := mustTranslate(t, []*ir.Fragment{f})
	if n := len(routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes()); n != 1 {
		t.Errorf("%d routes, want 1", n)
	}
	if !hasWarning(res, `route "broken" left out: backend "default/nope:80" has no cluster`) {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

// TestBadInputNeverBecomesInvalidConfig feeds input that Envoy would reject
// if passed through, and checks that it is left out instead.
func TestBadInputNeverBecomesInvalidConfig(t *testing.T) {
	f := service("default", "a", 100)
	ok := f.VirtualHosts[0].Routes[0]
	bad := func(name string, mutate func(r *ir.Route)) *ir.Route {
		r := *ok
		r.Name = name
		mutate(&r)
		return &r
	}
	f.VirtualHosts[0].Routes = []*ir.Route{
		bad("bad-regex", func(r *ir.Route) { r.Match.Path = ir.PathMatch{Kind: ir.PathRegex, Value: "(["} }),
		bad("bad-header-regex", func(r *ir.Route) {
			r.Match.Headers = []ir.HeaderMatch{{Name: "x", Kind: ir.HeaderRegex, Value: "a(b"}}
		}),
		bad("bad-header-value", func(r *ir.Route) {
			r.RequestHeaders = ir.HeaderMutation{Set: []ir.Header{{Name: "x", Value: "a\r\nb"}}}
		}),
		bad("pseudo-header", func(r *ir.Route) {
			r.RequestHeaders = ir.HeaderMutation{Set: []ir.Header{{Name: ":path", Value: "/"}, {Name: "Host", Value: "x"}}, Remove: []string{":authority"}}
		}),
		bad("negative-timeout", func(r *ir.Route) { d := -time.Second; r.Timeout = &d }),
		bad("bad-redirect", func(r *ir.Route) {
			r.Backends = nil
			r.Redirect = &ir.Redirect{Port: 70000, StatusCode: 200}
		}),
		bad("unknown-retry", func(r *ir.Route) {
			r.Retry = &ir.RetryPolicy{Attempts: 2, On: []string{"5xx", "sometimes", "retriable-status-codes"}}
		}),
		bad("not-utf8", func(r *ir.Route) {
			r.RequestHeaders = ir.HeaderMutation{Append: []ir.Header{{Name: "x", Value: "\xc3"}}}
		}),
		ok,
	}
	f.VirtualHosts[0].Domains = append(f.VirtualHosts[0].Domains, "\xff.example.com")
	f.VirtualHosts[1].Domains = []string{"", "bad\nhost"}
	f.Backends = append(f.Backends,
		&ir.Backend{Name: "", Service: ir.ServiceRef{Port: 80}},
		&ir.Backend{Name: UnavailableCluster},
		&ir.Backend{Name: "default/ext:0", ExternalName: "x.example.com"},
		&ir.Backend{Name: "default/\xff:80"},
	)
	f.Backends[0].Endpoints = append(f.Backends[0].Endpoints,
		ir.Endpoint{Address: "not-an-ip", Port: 80}, ir.Endpoint{Address: "10.1.1.1", Port: 0}, ir.Endpoint{Address: "10.1.1.1", Port: 70000})
	f.Certificates = []*ir.Certificate{
		{Name: "default/empty", Hosts: []string{"a"}, Listeners: externalHTTPS},
		cert("default/\xff", externalHTTPS, "a"),
		cert("default/bad-host", externalHTTPS, "\xff", "ok.example.com"),
		{Name: "default/garbage", Hosts: []string{"g.example.com"}, CertChain: []byte("x"), PrivateKey: []byte("y")},
	}

	res := mustTranslate(t, []*ir.Fragment{f})
	routes := routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 5 {
		t.Errorf("%d routes, want 5 (pseudo-header, negative-timeout, bad-redirect, unknown-retry, ok)", len(routes))
	}
	for _, want := range []string{
		`route "bad-regex" left out`, `route "bad-header-regex" left out`, `route "bad-header-value" left out`,
		`header ":path" cannot be set`, `header "Host" cannot be set`, `header ":authority" cannot be removed`,
		"negative timeout", "redirect port 70000 out of range", "redirect status 200", `unsupported retry condition "sometimes"`,
		`virtual host "default/a/local": left out`, `backend "" left out`, `backend "weir.unavailable" left out`,
		`backend "default/ext:0" left out`, "endpoint not-an-ip:80 left out", "endpoint 10.1.1.1:0 left out",
		`certificate "default/empty" left out`, `route "not-utf8" left out: "\xc3" is not valid UTF-8`,
		`domain "\xff.example.com" left out: not ASCII`, `backend "default/\xff:80" left out: not valid UTF-8`,
		"certificate without a valid name ignored", `certificate "default/garbage" left out: tls: failed to find any PEM data`,
	} {
		if !hasWarning(res, want) {
			t.Errorf("no warning containing %q in %q", want, res.Warnings)
		}
	}
}

func TestNilAndDuplicateFragments(t *testing.T) {
	a := service("default", "a", 100)
	a2 := service("default", "a", 50, 50)
	res := mustTranslate(t, []*ir.Fragment{nil, a, a2, {Source: ir.ObjectRef{Name: "nils"}, VirtualHosts: []*ir.VirtualHost{nil}, Backends: []*ir.Backend{nil}, Certificates: []*ir.Certificate{nil}}})
	if len(res.Clusters) != 1 {
		t.Errorf("clusters = %v, want only the first fragment of KIngress/default/a", names(res.Clusters))
	}
	for _, want := range []string{"nil fragment", "more than one fragment", "nil virtual host", "nil backend", "nil certificate"} {
		if !hasWarning(res, want) {
			t.Errorf("no warning containing %q in %q", want, res.Warnings)
		}
	}
}

func TestSources(t *testing.T) {
	a := service("default", "a", 100)
	a.Certificates = []*ir.Certificate{cert("default/a-tls", externalHTTPS, "a.example.com")}
	a.VirtualHosts[0].Provenance = ir.Provenance{{Kind: "Route", Namespace: "default", Name: "a"}}
	res := mustTranslate(t, []*ir.Fragment{a})
	for key, want := range map[string]ir.Provenance{
		SourceKey(resourcev3.ListenerType, "external-http"):           nil,
		SourceKey(resourcev3.ListenerType, "external-https"):          {a.Source},
		SourceKey(resourcev3.RouteType, "external-http"):              {{Kind: "Route", Namespace: "default", Name: "a"}},
		SourceKey(resourcev3.RouteType, "internal-http"):              {a.Source, {Kind: "Route", Namespace: "default", Name: "a"}},
		SourceKey(resourcev3.VirtualHostType, "default/a/external"):   {{Kind: "Route", Namespace: "default", Name: "a"}},
		SourceKey(resourcev3.VirtualHostType, "default/a/local"):      {a.Source},
		SourceKey(resourcev3.ClusterType, a.Backends[0].Name):         {a.Source},
		SourceKey(resourcev3.EndpointType, a.Backends[0].Name):        {a.Source},
		SourceKey(resourcev3.SecretType, "default/a-tls"):             {a.Source},
		SourceKey(resourcev3.RouteType, "external-https"):             {},
		SourceKey(resourcev3.ListenerType, "internal-http"):           nil,
		SourceKey(resourcev3.ClusterType, "default/not-a-cluster:80"): nil,
	} {
		got, ok := res.Sources[key]
		if wantOK := !strings.Contains(key, "not-a-cluster"); ok != wantOK {
			t.Errorf("Sources[%s] present = %v, want %v", key, ok, wantOK)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Sources[%s] = %v, want %v", key, got, want)
		}
	}
	if n := len(res.Listeners) + len(res.Routes) + len(res.Clusters) + len(res.Endpoints) + len(res.Secrets) + 2; len(res.Sources) != n {
		t.Errorf("%d sources, want %d (every resource and every virtual host)", len(res.Sources), n)
	}
}

func TestByType(t *testing.T) {
	res := mustTranslate(t, []*ir.Fragment{service("default", "a", 100)})
	bt := res.ByType()
	for typeURL, n := range map[string]int{
		resourcev3.ListenerType: 2, resourcev3.RouteType: 2, resourcev3.ClusterType: 1,
		resourcev3.EndpointType: 1, resourcev3.SecretType: 0,
	} {
		if len(bt[typeURL]) != n {
			t.Errorf("%s: %d resources, want %d", typeURL, len(bt[typeURL]), n)
		}
	}
	if c, ok := bt[resourcev3.ClusterType][0].(*clusterv3.Cluster); !ok || c != res.Clusters[0] {
		t.Error("ByType does not hand out the same protos")
	}
}

func TestValidateCatchesCrossResourceErrors(t *testing.T) {
	res := mustTranslate(t, []*ir.Fragment{service("default", "a", 100)})
	broken := *res
	broken.Clusters = nil
	err := broken.Validate()
	if err == nil || !strings.Contains(err.Error(), "unknown cluster") || !strings.Contains(err.Error(), `cluster load assignment "default/a-00001:80"`) {
		t.Errorf("Validate() = %v, want unknown cluster errors", err)
	}
	broken = *res
	broken.Routes = broken.Routes[:1]
	if err := broken.Validate(); err == nil || !strings.Contains(err.Error(), `listener "internal-http": unknown route configuration "internal-http"`) {
		t.Errorf("Validate() = %v, want unknown route configuration", err)
	}
}
