package gateway_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
)

const grpcGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
`

func grpcRouteCondition(t *testing.T, res *gateway.Result, name, typ string) string {
	t.Helper()
	st := res.GRPCRoutes[types.NamespacedName{Namespace: "default", Name: name}]
	if st == nil || len(st.Parents) == 0 {
		t.Fatalf("no parent status for GRPCRoute default/%s", name)
	}
	return condition(st.Parents[0].Conditions, typ)
}

// vhostRoutes returns the routes of the virtual host for domain.
func vhostRoutes(t *testing.T, res *gateway.Result, domain string) []*ir.Route {
	t.Helper()
	for _, vh := range res.Fragments[0].VirtualHosts {
		if vh.Domains[0] == domain {
			return vh.Routes
		}
	}
	t.Fatalf("no virtual host for %s", domain)
	return nil
}

// TestGRPCRouteMatches: each kind of method match becomes the path match
// Envoy needs, and the rules are in the GRPCRoute spec's order: most
// service characters, then method characters, then headers.
func TestGRPCRouteMatches(t *testing.T) {
	res := build(t, grpcGateway+`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{headers: [{name: version, value: two}, {name: Version, value: ignored}]}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{method: {method: Echo}}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{method: {service: pkg.Echo}}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{method: {service: pkg.Echo, method: Echo}}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{method: {type: RegularExpression, service: "pkg\\..*", method: "Echo.*"}}]
    backendRefs: [{name: svc, port: 80}]
`)
	if c := grpcRouteCondition(t, res, "g", "Accepted"); c != "True/Accepted" {
		t.Fatalf("Accepted = %s", c)
	}
	type want struct {
		rule    string
		kind    ir.PathMatchKind
		path    string
		headers int
	}
	wants := []want{
		{"rule/3", ir.PathExact, "/pkg.Echo/Echo", 0},
		{"rule/2", ir.PathPrefix, "/pkg.Echo/", 0},
		// A regex counts its own characters: pkg\..* is shorter than pkg.Echo.
		{"rule/4", ir.PathRegex, `/(?:pkg\..*)/(?:Echo.*)`, 0},
		{"rule/1", ir.PathRegex, "/(?:[^/]+)/(?:Echo)", 0},
		// Only the first match of a header name counts, as the spec says.
		{"rule/0", ir.PathPrefix, "/", 1},
	}
	routes := vhostRoutes(t, res, "grpc.example.com")
	if len(routes) != len(wants) {
		t.Fatalf("got %d routes, want %d", len(routes), len(wants))
	}
	for i, w := range wants {
		r := routes[i]
		if !strings.Contains(r.Name, w.rule+"/") || r.Match.Path.Kind != w.kind || r.Match.Path.Value != w.path || len(r.Match.Headers) != w.headers {
			t.Errorf("route %d = %s %v %q %d headers, want %s %v %q %d headers", i, r.Name, r.Match.Path.Kind, r.Match.Path.Value, len(r.Match.Headers), w.rule, w.kind, w.path, w.headers)
		}
		if r.Timeout != nil {
			t.Errorf("route %s has a timeout; a gRPC stream may last", r.Name)
		}
	}
}

// TestGRPCRouteBackendsSpeakHTTP2: a GRPCRoute's backend is spoken to over
// HTTP/2 whatever its port says, in its own cluster, apart from an
// HTTPRoute's HTTP/1.1 one to the same port.
func TestGRPCRouteBackendsSpeakHTTP2(t *testing.T) {
	res := build(t, grpcGateway+`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [http.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	got := map[string]ir.Protocol{}
	for _, b := range res.Fragments[0].Backends {
		got[b.Name] = b.Protocol
	}
	if got["default/svc:80"] != ir.HTTP1 || got["default/svc:80/grpc"] != ir.GRPC || len(got) != 2 {
		t.Errorf("backends = %v, want default/svc:80 HTTP/1.1 and default/svc:80/grpc gRPC", got)
	}
	if be := vhostRoutes(t, res, "grpc.example.com")[0].Backends[0].BackendName; be != "default/svc:80/grpc" {
		t.Errorf("the GRPCRoute goes to %s", be)
	}
}

// TestGRPCRouteAndHTTPRouteShareNoHostname: on one listener, the older of
// an HTTPRoute and a GRPCRoute with overlapping hostnames is accepted and
// the other is not; without an overlap both are.
func TestGRPCRouteAndHTTPRouteShareNoHostname(t *testing.T) {
	route := func(kind, name, created, host string) string {
		return `apiVersion: gateway.networking.k8s.io/v1
kind: ` + kind + `
metadata: {name: ` + name + `, namespace: default, creationTimestamp: "` + created + `"}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["` + host + `"]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
`
	}
	res := build(t, grpcGateway+
		route("HTTPRoute", "old-http", "2026-01-01T00:00:00Z", "*.example.com")+
		route("GRPCRoute", "new-grpc", "2026-01-02T00:00:00Z", "api.example.com")+
		route("GRPCRoute", "old-grpc", "2026-01-01T00:00:00Z", "grpc.example.org")+
		route("HTTPRoute", "new-http", "2026-01-03T00:00:00Z", "grpc.example.org")+
		route("GRPCRoute", "apart", "2026-01-03T00:00:00Z", "other.example.net"))
	if c := routeCondition(t, res, "default", "old-http", "Accepted"); c != "True/Accepted" {
		t.Errorf("old-http Accepted = %s", c)
	}
	if c := grpcRouteCondition(t, res, "new-grpc", "Accepted"); c != "False/HostnameConflict" {
		t.Errorf("new-grpc Accepted = %s, want False/HostnameConflict", c)
	}
	if c := grpcRouteCondition(t, res, "old-grpc", "Accepted"); c != "True/Accepted" {
		t.Errorf("old-grpc Accepted = %s", c)
	}
	if c := routeCondition(t, res, "default", "new-http", "Accepted"); c != "False/HostnameConflict" {
		t.Errorf("new-http Accepted = %s, want False/HostnameConflict", c)
	}
	if c := grpcRouteCondition(t, res, "apart", "Accepted"); c != "True/Accepted" {
		t.Errorf("apart Accepted = %s", c)
	}
	var domains []string
	for _, vh := range res.Fragments[0].VirtualHosts {
		domains = append(domains, vh.Domains[0])
	}
	if strings.Join(domains, ",") != "*.example.com,grpc.example.org,other.example.net" {
		t.Errorf("virtual hosts = %v", domains)
	}
	for _, r := range vhostRoutes(t, res, "grpc.example.org") {
		if r.Provenance[0].Kind != gateway.GRPCRouteKind {
			t.Errorf("grpc.example.org serves %v", r.Provenance)
		}
	}
	st := res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	if n := st.Listeners[0].AttachedRoutes; n != 3 {
		t.Errorf("attachedRoutes = %d, want 3", n)
	}
}

// TestGRPCRouteWithoutBackendIsUnavailable: a rule without a usable backend
// answers 503, which both data planes send to a gRPC client as UNAVAILABLE.
// An unsupported filter keeps the route from being accepted.
func TestGRPCRouteWithoutBackendIsUnavailable(t *testing.T) {
	res := build(t, grpcGateway+`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: half, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [half.example.com]
  rules: [{backendRefs: [{name: svc, port: 80, weight: 3}, {name: missing, port: 80, weight: 1}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: mirror, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [mirror.example.com]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}}}]
    backendRefs: [{name: svc, port: 80}]
`)
	if c := grpcRouteCondition(t, res, "g", "ResolvedRefs"); c != "False/BackendNotFound" {
		t.Errorf("ResolvedRefs = %s", c)
	}
	routes := vhostRoutes(t, res, "grpc.example.com")
	if len(routes) != 1 || routes[0].DirectResponse == nil || routes[0].DirectResponse.StatusCode != 503 {
		t.Errorf("routes = %+v, want one 503 direct response", routes)
	}
	// Part of a split unresolved: its share is refused, not given to the
	// others.
	half := vhostRoutes(t, res, "half.example.com")
	if len(half) != 1 || len(half[0].Backends) != 2 || half[0].Backends[0].Unresolved || !half[0].Backends[1].Unresolved || half[0].Backends[1].Weight != 1 {
		t.Errorf("half = %+v, want default/svc:80/grpc weight 3 and an unresolved share of 1", half[0].Backends)
	}
	if c := grpcRouteCondition(t, res, "mirror", "Accepted"); c != "False/UnsupportedValue" {
		t.Errorf("mirror Accepted = %s", c)
	}
	found := false
	for _, line := range res.NotReady() {
		found = found || strings.Contains(line, "GRPCRoute default/mirror") && strings.Contains(line, "spec.rules[0].filters[0]")
	}
	if !found {
		t.Errorf("NotReady does not name the mirror filter: %v", res.NotReady())
	}
}
