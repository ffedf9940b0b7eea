package translate

import (
	"slices"
	"strings"
	"testing"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestMisdirectedRequests is the conformance suite's case as route
// configurations: on a port with a catch-all HTTPS listener, an exact
// one, a wildcard one and an exact one inside the wildcard, each listener
// answers 421 for the hosts the others serve (a hostname listener for
// every host it does not serve), and the catch-all leaves unknown hosts
// to 404.
func TestMisdirectedRequests(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	chain, key := testKeyPair("gw")
	f := &ir.Fragment{
		Source:       gw,
		Certificates: []*ir.Certificate{{Name: "ns/cert", CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{gw}}},
		Backends: []*ir.Backend{{Name: "ns/svc:80", Service: ir.ServiceRef{Namespace: "ns", Name: "svc", Port: 80},
			Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}},
	}
	for _, l := range []struct{ name, host, routeHost string }{
		{"https", "", "example.org"},
		{"exact", "second-example.org", "second-example.org"},
		{"wildcard", "*.wildcard.org", "*.wildcard.org"},
		{"inside", "fourth-example.wildcard.org", "fourth-example.wildcard.org"},
	} {
		f.Listeners = append(f.Listeners, &ir.Listener{Name: l.name, Port: 9443, Protocol: ir.ProtocolHTTPS, Hostname: l.host,
			Certificates: []string{"ns/cert"}, Provenance: ir.Provenance{gw}})
		f.VirtualHosts = append(f.VirtualHosts, &ir.VirtualHost{Name: l.name, Domains: []string{l.routeHost}, Listener: l.name,
			Routes: []*ir.Route{{Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
				Backends: []ir.WeightedBackend{{BackendName: "ns/svc:80", Weight: 1}}}},
			Provenance: ir.Provenance{gw}})
	}
	res := mustTranslate(t, []*ir.Fragment{f})
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %+v", res.Problems)
	}
	got := map[string]string{}
	for _, rc := range res.Routes {
		var misdirected []string
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetRoutes()[0].GetDirectResponse().GetStatus() == 421 {
				misdirected = append(misdirected, vh.GetDomains()...)
			}
		}
		slices.Sort(misdirected)
		got[rc.GetName()[strings.LastIndexByte(rc.GetName(), '/')+1:]] = strings.Join(misdirected, " ")
	}
	for listener, want := range map[string]string{
		"https":    "*.wildcard.org fourth-example.wildcard.org second-example.org",
		"exact":    "*",
		"wildcard": "* fourth-example.wildcard.org",
		"inside":   "*",
	} {
		if got[listener] != want {
			t.Errorf("listener %s answers 421 for %q, want %q", listener, got[listener], want)
		}
	}
}

// TestClientCABundleRefused: a client CA bundle with a certificate Envoy
// cannot parse leaves the listener out (Envoy would refuse it, and serving
// it without the check would let every client in).
func TestClientCABundleRefused(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	chain, key := testKeyPair("gw")
	bad := append(append([]byte{}, chain...), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...)
	f := &ir.Fragment{
		Source:       gw,
		Certificates: []*ir.Certificate{{Name: "ns/cert", CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{gw}}},
		Listeners: []*ir.Listener{{Name: "mtls", Port: 9443, Protocol: ir.ProtocolHTTPS, Certificates: []string{"ns/cert"},
			ClientValidation: &ir.ClientValidation{CACertificates: bad}, Provenance: ir.Provenance{gw}}},
	}
	res, err := New(DefaultOptions()).Translate([]*ir.Fragment{f})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Listeners {
		if strings.HasPrefix(l.GetName(), "gateway/") {
			t.Errorf("listener %s served with a broken client CA bundle", l.GetName())
		}
	}
	found := false
	for _, p := range res.Problems {
		found = found || strings.Contains(p.Message, "client CA bundle")
	}
	if !found {
		t.Errorf("no problem reported: %+v", res.Problems)
	}
}
