package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

const tlsGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: pass, port: 443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: terminate, port: 8443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: missing-cert}]}}
  - {name: no-tls, port: 8444, protocol: TLS}
  - {name: http, port: 80, protocol: HTTP}
---
`

func tlsRoute(name, created, parent string, hosts, backends string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: ` + name + `, namespace: default, creationTimestamp: "` + created + `"}
spec:
  parentRefs: [{name: gw, sectionName: ` + parent + `}]
  hostnames: ` + hosts + `
  rules: [{backendRefs: ` + backends + `}]
---
`
}

// TestTLSRoutes: TLSRoutes attach to TLS passthrough listeners only, keep
// the hostnames the listener takes, and a hostname two routes ask for
// goes to the older; a missing backend keeps its weight, to be refused.
func TestTLSRoutes(t *testing.T) {
	res := build(t, tlsGateway+
		tlsRoute("old", "2026-01-01T00:00:00Z", "pass", `[a.example.com, a.example.org]`, `[{name: svc, port: 80}]`)+
		tlsRoute("new", "2026-01-02T00:00:00Z", "pass", `[a.example.com, b.example.com]`, `[{name: svc, port: 80, weight: 3}, {name: missing, port: 80}]`)+
		tlsRoute("on-http", "2026-01-02T00:00:00Z", "http", `[c.example.com]`, `[{name: svc, port: 80}]`)+
		`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: pass}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	cond := func(name, typ string) string {
		st := res.TLSRoutes[types.NamespacedName{Namespace: "default", Name: name}]
		if st == nil || len(st.Parents) == 0 {
			t.Fatalf("no status for TLSRoute %s", name)
		}
		return condition(st.Parents[0].Conditions, typ)
	}
	for _, c := range []struct{ route, typ, want string }{
		{"old", "Accepted", "True/Accepted"},
		{"new", "Accepted", "True/Accepted"},
		{"new", "ResolvedRefs", "False/BackendNotFound"},
		{"on-http", "Accepted", "False/NotAllowedByListeners"},
	} {
		if got := cond(c.route, c.typ); got != c.want {
			t.Errorf("TLSRoute %s %s = %s, want %s", c.route, c.typ, got, c.want)
		}
	}
	if got := routeCondition(t, res, "default", "web", "Accepted"); got != "False/NotAllowedByListeners" {
		t.Errorf("an HTTPRoute on a TLS listener: Accepted = %s", got)
	}
	if got := listenerCondition(t, res, "terminate", "ResolvedRefs"); got != "False/InvalidCertificateRef" {
		t.Errorf("a TLS listener that terminates with a missing certificate: ResolvedRefs = %s", got)
	}
	if got := listenerCondition(t, res, "no-tls", "Accepted"); got != "False/UnsupportedValue" {
		t.Errorf("a TLS listener without tls: Accepted = %s", got)
	}
	for _, l := range res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}].Listeners {
		if l.Name == "no-tls" && len(l.SupportedKinds) != 0 {
			t.Errorf("the TLS listener without tls supports %v; nothing can attach to it", l.SupportedKinds)
		}
	}
	frag := res.Fragments[0]
	var got []string
	for _, tr := range frag.TLSRoutes {
		var bs []string
		for _, b := range tr.Backends {
			name := b.BackendName
			if b.Unresolved {
				name += " (unresolved)"
			}
			bs = append(bs, fmt.Sprintf("%s=%d", name, b.Weight))
		}
		got = append(got, tr.Listener+" "+strings.Join(tr.ServerNames, ",")+" -> "+strings.Join(bs, ","))
	}
	want := []string{
		"pass a.example.com -> default/svc:80/tls-passthrough=1",
		"pass b.example.com -> default/svc:80/tls-passthrough=3,spec.rules[0].backendRefs[1] (unresolved)=1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("TLS routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range frag.Listeners {
		if l.Name == "pass" && l.Protocol.String() != "TLS" {
			t.Errorf("listener pass has protocol %v", l.Protocol)
		}
	}
}

// TestTLSRoutesShareAPort: TLS listeners on one port are one set of filter
// chains. A hostname goes to the most specific listener that takes it and
// to the oldest route there; a newer route that gets no hostname at all is
// not accepted.
func TestTLSRoutesShareAPort(t *testing.T) {
	res := build(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: wild, port: 443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: foo, port: 443, protocol: TLS, hostname: foo.example.com, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: both, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [foo.example.com, bar.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: later, namespace: default, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [foo.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: twice, namespace: default, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: wild}, {name: gw, port: 443}]
  hostnames: [baz.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	// A route does not conflict with itself through a second parentRef.
	for i, p := range res.TLSRoutes[types.NamespacedName{Namespace: "default", Name: "twice"}].Parents {
		if c := condition(p.Conditions, "Accepted"); c != "True/Accepted" {
			t.Errorf("twice, parent %d: Accepted = %s", i, c)
		}
	}
	var got []string
	for _, tr := range res.Fragments[0].TLSRoutes {
		got = append(got, tr.Listener+":"+strings.Join(tr.ServerNames, ",")+":"+tr.Provenance[0].Name)
	}
	if strings.Join(got, " ") != "wild:bar.example.com:both wild:baz.example.com:twice foo:foo.example.com:both" {
		t.Errorf("TLS routes = %v", got)
	}
	st := res.TLSRoutes[types.NamespacedName{Namespace: "default", Name: "later"}]
	if c := condition(st.Parents[0].Conditions, "Accepted"); c != "False/HostnameConflict" {
		t.Errorf("later: Accepted = %s, want False/HostnameConflict", c)
	}
}
