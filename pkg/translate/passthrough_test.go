package translate

import (
	"strings"
	"testing"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestTLSPassthroughListener: each TLS route is a tcp_proxy filter chain
// on its listener's server names; a server name already matched by
// another chain (Envoy refuses overlapping chains) and a route on a
// listener that is not served are left out with a problem on the route's
// own object.
func TestTLSPassthroughListener(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	route := func(name, listener string, names ...string) *ir.TLSRoute {
		return &ir.TLSRoute{
			Listener: listener, ServerNames: names, Field: "spec.rules[0]",
			Backends:   []ir.WeightedBackend{{BackendName: "ns/db:443", Weight: 1}},
			Provenance: ir.Provenance{{Kind: "TLSRoute", Namespace: "ns", Name: name}},
		}
	}
	f := &ir.Fragment{
		Source:    gw,
		Listeners: []*ir.Listener{{Name: "tls", Port: 9443, Protocol: ir.ProtocolTLSPassthrough, Provenance: ir.Provenance{gw}}},
		Backends: []*ir.Backend{{Name: "ns/db:443", Service: ir.ServiceRef{Namespace: "ns", Name: "db", Port: 443},
			Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 443}}}},
		TLSRoutes: []*ir.TLSRoute{
			route("first", "tls", "a.example.com", "*.b.example.com"),
			route("overlap", "tls", "c.example.com", "*.B.example.com"),
			route("nowhere", "missing", "d.example.com"),
		},
	}
	res := mustTranslate(t, []*ir.Fragment{f})
	var chains []string
	for _, l := range res.Listeners {
		if l.GetName() != "gateway/ns/gw/9443" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			var tp tcpproxyv3.TcpProxy
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
				t.Fatal(err)
			}
			chains = append(chains, strings.Join(fc.GetFilterChainMatch().GetServerNames(), ",")+" -> "+tp.GetCluster())
		}
	}
	if got := strings.Join(chains, "; "); got != "a.example.com,*.b.example.com -> ns/db:443" {
		t.Errorf("filter chains = %q", got)
	}
	want := map[string]string{
		"TLSRoute/ns/overlap": "ListenerConflict",
		"TLSRoute/ns/nowhere": "NotServed",
	}
	for _, p := range res.Problems {
		for name, reason := range want {
			if p.Source.String() == name && p.Reason == reason && strings.Contains(p.Message, "spec.rules[0]") {
				delete(want, name)
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("no problem reported for %v; problems: %+v", want, res.Problems)
	}
}

// TestTLSTerminateListener: on a TLS listener that terminates, each TLS
// route's chain has the listener's certificate and a tcp_proxy for the
// bytes inside; beside a passthrough listener on the same port, whose
// chain has no transport socket.
func TestTLSTerminateListener(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	chain, key := testKeyPair("plain.example.com")
	route := func(name, listener, host string) *ir.TLSRoute {
		return &ir.TLSRoute{
			Listener: listener, ServerNames: []string{host}, Field: "spec.rules[0]",
			Backends:   []ir.WeightedBackend{{BackendName: "ns/echo:80", Weight: 1}},
			Provenance: ir.Provenance{{Kind: "TLSRoute", Namespace: "ns", Name: name}},
		}
	}
	f := &ir.Fragment{
		Source: gw,
		Listeners: []*ir.Listener{
			{Name: "terminate", Port: 9443, Protocol: ir.ProtocolTLSTerminate, Hostname: "plain.example.com", Certificates: []string{"ns/cert"}, Provenance: ir.Provenance{gw}},
			{Name: "pass", Port: 9443, Protocol: ir.ProtocolTLSPassthrough, Hostname: "pass.example.com", Provenance: ir.Provenance{gw}},
		},
		Certificates: []*ir.Certificate{{Name: "ns/cert", CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{gw}}},
		Backends: []*ir.Backend{{Name: "ns/echo:80", Service: ir.ServiceRef{Namespace: "ns", Name: "echo", Port: 80},
			Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}},
		TLSRoutes: []*ir.TLSRoute{route("plain", "terminate", "plain.example.com"), route("pass", "pass", "pass.example.com")},
	}
	res := mustTranslate(t, []*ir.Fragment{f})
	got := map[string]bool{}
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			if fc.GetFilters()[0].GetName() != tcpProxyFilter {
				continue
			}
			got[fc.GetFilterChainMatch().GetServerNames()[0]] = fc.GetTransportSocket() != nil
		}
	}
	if len(got) != 2 || !got["plain.example.com"] || got["pass.example.com"] {
		t.Errorf("chains (server name: terminates) = %v, want plain.example.com terminating and pass.example.com not", got)
	}
	if len(res.Problems) != 0 {
		t.Errorf("problems: %v", res.Problems)
	}
}
