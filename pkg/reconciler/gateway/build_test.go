package gateway_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
)

const class = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {gateway-access: "yes"}}
`

// build decodes docs as weir run would and builds them.
func build(t *testing.T, docs string) *gateway.Result {
	t.Helper()
	return buildWith(t, docs, gateway.Options{})
}

func buildWith(t *testing.T, docs string, opts gateway.Options) *gateway.Result {
	t.Helper()
	ds, err := manifest.Decode("test.yaml", []byte(class+"---\n"+docs))
	if err != nil {
		t.Fatal(err)
	}
	s := manifest.NewStore()
	if _, _, errs := s.SetFile(context.Background(), "test.yaml", ds); len(errs) > 0 {
		t.Fatal(errs)
	}
	return gateway.Build(s.GatewayObjects(), s.GatewayListers(), opts)
}

func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return "missing"
	}
	return string(c.Status) + "/" + c.Reason
}

func listenerCondition(t *testing.T, res *gateway.Result, listener, typ string) string {
	t.Helper()
	st := res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	if st == nil {
		t.Fatal("no status for Gateway default/gw")
	}
	for _, l := range st.Listeners {
		if string(l.Name) == listener {
			return condition(l.Conditions, typ)
		}
	}
	t.Fatalf("no status for listener %s", listener)
	return ""
}

func routeCondition(t *testing.T, res *gateway.Result, ns, name, typ string) string {
	t.Helper()
	st := res.HTTPRoutes[types.NamespacedName{Namespace: ns, Name: name}]
	if st == nil || len(st.Parents) == 0 {
		t.Fatalf("no parent status for HTTPRoute %s/%s", ns, name)
	}
	return condition(st.Parents[0].Conditions, typ)
}

func TestListenerConditions(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: mixed-http, port: 83, protocol: HTTP}
  - {name: mixed-https, port: 83, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}
  - {name: dup-a, port: 84, protocol: HTTP, hostname: x.example.com}
  - {name: dup-b, port: 84, protocol: HTTP, hostname: x.example.com}
  - {name: udp, port: 53, protocol: UDP}
  - name: bad-kinds
    port: 81
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: TCPRoute}]}
  - {name: no-secret, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: missing}]}}
  - {name: other-ns-secret, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: cert, namespace: vault}]}}
`)
	for _, tc := range []struct{ listener, typ, want string }{
		{"http", "Programmed", "True/Programmed"},
		{"http", "Conflicted", "False/NoConflicts"},
		// Conflicting listeners are all marked; none wins.
		{"mixed-http", "Conflicted", "True/ProtocolConflict"},
		{"mixed-https", "Conflicted", "True/ProtocolConflict"},
		{"mixed-http", "Programmed", "False/Invalid"},
		{"dup-a", "Conflicted", "True/HostnameConflict"},
		{"dup-b", "Conflicted", "True/HostnameConflict"},
		{"udp", "Accepted", "False/UnsupportedProtocol"},
		{"bad-kinds", "ResolvedRefs", "False/InvalidRouteKinds"},
		{"bad-kinds", "Programmed", "False/Invalid"},
		{"no-secret", "ResolvedRefs", "False/InvalidCertificateRef"},
		{"other-ns-secret", "ResolvedRefs", "False/RefNotPermitted"},
	} {
		if got := listenerCondition(t, res, tc.listener, tc.typ); got != tc.want {
			t.Errorf("listener %s %s = %s, want %s", tc.listener, tc.typ, got, tc.want)
		}
	}
	gw := res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	if got := condition(gw.Conditions, "Accepted"); got != "True/ListenersNotValid" {
		t.Errorf("Gateway Accepted = %s, want True/ListenersNotValid", got)
	}
	if len(res.Fragments) != 1 || len(res.Fragments[0].Listeners) != 1 || res.Fragments[0].Listeners[0].Name != "http" {
		t.Errorf("only the valid listener may be served; fragments = %+v", res.Fragments)
	}
}

func TestRouteConditions(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - name: selected
    port: 81
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-access: "yes"}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-section, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: nope}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-ns, namespace: team-b}
spec:
  parentRefs: [{name: gw, namespace: default, sectionName: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: selected-ns, namespace: team-a}
spec:
  parentRefs: [{name: gw, namespace: default, sectionName: selected}]
  rules: [{backendRefs: [{name: svc, namespace: default, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-host, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [example.org]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-backend, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: nope, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-kind, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}, percent: 25}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror-missing, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: nowhere, port: 80}}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-mirror, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: svc
      port: 80
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-regex, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/a("}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-rewrite, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: svc
      port: 80
      filters: [{type: URLRewrite, urlRewrite: {hostname: elsewhere.example.com}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-headers, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: svc
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-b, value: "1"}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-ours, namespace: default}
spec:
  parentRefs: [{name: someone-elses-gateway}]
`)
	for _, tc := range []struct{ route, typ, want string }{
		{"default/ok", "Accepted", "True/Accepted"},
		// A backend's own filters may only change request headers.
		{"default/backend-rewrite", "Accepted", "False/UnsupportedValue"},
		{"default/backend-headers", "Accepted", "True/Accepted"},
		{"default/ok", "ResolvedRefs", "True/ResolvedRefs"},
		{"default/no-section", "Accepted", "False/NoMatchingParent"},
		{"team-b/other-ns", "Accepted", "False/NotAllowedByListeners"},
		{"team-a/selected-ns", "Accepted", "True/Accepted"},
		{"team-a/selected-ns", "ResolvedRefs", "False/RefNotPermitted"},
		{"default/wrong-host", "Accepted", "False/NoMatchingListenerHostname"},
		{"default/missing-backend", "ResolvedRefs", "False/BackendNotFound"},
		{"default/missing-backend", "Accepted", "True/Accepted"},
		{"default/bad-kind", "ResolvedRefs", "False/InvalidKind"},
		{"default/mirror", "Accepted", "True/Accepted"},
		// A mirror that does not resolve is left out; the rule serves.
		{"default/mirror-missing", "Accepted", "True/Accepted"},
		{"default/mirror-missing", "ResolvedRefs", "False/BackendNotFound"},
		{"default/backend-mirror", "Accepted", "False/UnsupportedValue"},
		// Envoy would refuse it; it is refused here, not left out unsaid.
		{"default/bad-regex", "Accepted", "False/UnsupportedValue"},
	} {
		ns, name, _ := strings.Cut(tc.route, "/")
		if got := routeCondition(t, res, ns, name, tc.typ); got != tc.want {
			t.Errorf("HTTPRoute %s %s = %s, want %s", tc.route, tc.typ, got, tc.want)
		}
	}
	if _, ok := res.HTTPRoutes[types.NamespacedName{Namespace: "default", Name: "not-ours"}]; ok {
		t.Error("a route whose parents are not Weir's got a status from Weir")
	}
	gw := res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	attached := map[gwv1.SectionName]int32{}
	for _, l := range gw.Listeners {
		attached[l.Name] = l.AttachedRoutes
	}
	// ok, missing-backend, bad-kind, backend-headers, mirror and
	// mirror-missing attach to "http"; ok and the others without a
	// sectionName to "selected" only if allowed (they are in "default",
	// which has no label).
	if attached["http"] != 6 || attached["selected"] != 1 {
		t.Errorf("attachedRoutes = %v, want http:6 selected:1", attached)
	}
	// The mirrors as the model has them: a quarter of requests to svc,
	// and none for the one that did not resolve.
	mirrors := map[string][]ir.Mirror{}
	for _, vh := range res.Fragments[0].VirtualHosts {
		for _, rt := range vh.Routes {
			if len(rt.Provenance) > 0 && strings.HasPrefix(rt.Provenance[0].Name, "mirror") {
				mirrors[rt.Provenance[0].Name] = rt.Mirrors
			}
		}
	}
	if m := mirrors["mirror"]; len(m) != 1 || m[0] != (ir.Mirror{BackendName: "default/svc:80", Numerator: 25, Denominator: 100}) {
		t.Errorf("mirror route mirrors %+v", m)
	}
	if m, ok := mirrors["mirror-missing"]; !ok || len(m) != 0 {
		t.Errorf("mirror-missing route mirrors %+v (present %v), want none", m, ok)
	}
	// A rule whose only backend is invalid answers 500.
	for _, vh := range res.Fragments[0].VirtualHosts {
		for _, r := range vh.Routes {
			if strings.HasPrefix(r.Name, "default/missing-backend/") && (r.DirectResponse == nil || r.DirectResponse.StatusCode != 500) {
				t.Errorf("route %s = %+v, want a direct 500", r.Name, r)
			}
		}
	}
}

// TestPrecedenceAcrossRoutes: rules of several HTTPRoutes on one host are
// ordered by the spec's precedence, then age, then name.
func TestPrecedenceAcrossRoutes(t *testing.T) {
	route := func(name, created, path string, extra string) string {
		return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ` + name + `, namespace: default, creationTimestamp: "` + created + `"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: ` + path + `}` + extra + `}]
    backendRefs: [{name: svc, port: 80}]
---
`
	}
	res := build(t, route("old-root", "2026-01-01T00:00:00Z", "/", "")+
		route("new-root", "2026-01-02T00:00:00Z", "/", "")+
		route("new-long", "2026-01-03T00:00:00Z", "/api/v1", "")+
		route("old-short", "2026-01-01T00:00:00Z", "/api", "")+
		route("new-short-header", "2026-01-04T00:00:00Z", "/api", ", headers: [{name: x, value: v}]")+
		`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners: [{name: http, port: 80, protocol: HTTP}]
`)
	var got []string
	for _, vh := range res.Fragments[0].VirtualHosts {
		if vh.Domains[0] != "a.example.com" {
			continue
		}
		for _, r := range vh.Routes {
			got = append(got, r.Provenance[0].Name)
		}
	}
	want := []string{"new-long", "new-short-header", "old-short", "old-root", "new-root"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func TestGatewayOfAnotherClassIsSkipped(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 80, protocol: HTTP}]
`)
	if len(res.Fragments) != 0 || len(res.Gateways) != 0 {
		t.Errorf("served or reported a Gateway of another class: %+v", res)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], `GatewayClass "nginx"`) {
		t.Errorf("skipped = %v", res.Skipped)
	}
}

func TestListenerHostnameIntersection(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: any, port: 80, protocol: HTTP}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: exact, port: 80, protocol: HTTP, hostname: shop.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*.example.com", "example.org", "shop.example.com"]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	got := map[string]string{}
	for _, vh := range res.Fragments[0].VirtualHosts {
		got[vh.Domains[0]] = vh.Listener
	}
	// Each host goes to the most specific listener that takes it.
	want := map[string]string{"*.example.com": "wild", "example.org": "any", "shop.example.com": "exact"}
	if len(got) != len(want) {
		t.Fatalf("virtual hosts = %v, want %v", got, want)
	}
	for h, l := range want {
		if got[h] != l {
			t.Errorf("host %s on listener %q, want %q", h, got[h], l)
		}
	}
}

// TestListenerIsolation: a host belongs to the most specific listener of
// its port; a route attached to a broader listener does not serve it.
func TestListenerIsolation(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: any, port: 80, protocol: HTTP}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  hostnames: [foo.example.com, example.org]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	routes := map[string]int{}
	for _, vh := range res.Fragments[0].VirtualHosts {
		routes[vh.Domains[0]] = len(vh.Routes)
	}
	want := map[string]int{"foo.example.com": 0, "example.org": 1, "*.example.com": 0}
	for h, n := range want {
		if got, ok := routes[h]; !ok || got != n {
			t.Errorf("host %s has %d routes (present %v), want %d", h, got, ok, n)
		}
	}
}

// TestPortUnavailable: a listener may not bind the data plane's own ports,
// nor share a container port with another listener through the offset.
func TestPortUnavailable(t *testing.T) {
	res := buildWith(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: admin, port: 9901, protocol: HTTP}
  - {name: low, port: 80, protocol: HTTP}
  - {name: high, port: 10080, protocol: HTTP}
  - {name: fine, port: 8080, protocol: HTTP}
`, gateway.Options{PrivilegedPortOffset: 10000, ReservedPorts: []uint32{9901}})
	for l, want := range map[string]string{"admin": "False/PortUnavailable", "low": "False/PortUnavailable", "high": "False/PortUnavailable", "fine": "True/Accepted"} {
		if got := listenerCondition(t, res, l, "Accepted"); got != want {
			t.Errorf("listener %s Accepted = %s, want %s", l, got, want)
		}
	}
	if ls := res.Fragments[0].Listeners; len(ls) != 1 || ls[0].Port != 8080 {
		t.Errorf("served listeners = %+v, want only 8080", ls)
	}
}

// TestGatewayAddresses: an IPAddress without a value asks for any address
// and is served; a static IP is Programmed only where a provisioner can
// give it (not in weir run); any other address type is not accepted, and
// its routes do not attach.
func TestGatewayAddresses(t *testing.T) {
	docs := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: any, namespace: default}
spec:
  gatewayClassName: weir
  addresses: [{type: IPAddress}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: static, namespace: default}
spec:
  gatewayClassName: weir
  addresses: [{value: 10.96.0.10}]
  listeners: [{name: http, port: 8081, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: hostname, namespace: default}
spec:
  gatewayClassName: weir
  addresses: [{type: Hostname, value: gw.example.com}]
  listeners: [{name: http, port: 8082, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: hostname}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`
	for _, tc := range []struct {
		static        bool
		gw, typ, want string
	}{
		{false, "any", "Accepted", "True/Accepted"},
		{false, "any", "Programmed", "True/Programmed"},
		{false, "static", "Accepted", "True/Accepted"},
		{false, "static", "Programmed", "False/AddressNotUsable"},
		{true, "static", "Programmed", "True/Programmed"},
		{true, "hostname", "Accepted", "False/UnsupportedAddress"},
		{true, "hostname", "Programmed", "False/Invalid"},
	} {
		res := buildWith(t, docs, gateway.Options{StaticAddresses: tc.static})
		st := res.Gateways[types.NamespacedName{Namespace: "default", Name: tc.gw}]
		if got := condition(st.Conditions, tc.typ); got != tc.want {
			t.Errorf("static addresses %v: Gateway %s %s = %s, want %s", tc.static, tc.gw, tc.typ, got, tc.want)
		}
		if got := routeCondition(t, res, "default", "r", "Accepted"); got != "False/NoMatchingParent" {
			t.Errorf("a route to the Gateway that is not accepted: Accepted = %s", got)
		}
	}
}
