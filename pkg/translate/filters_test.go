package translate

import (
	"slices"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestRouteFiltersReachOnlyTheirChain: a route's CORS policy puts the CORS
// filter in front of the router of its own connection manager only. The
// shared listeners' chains are fixed: they hold every filter, disabled,
// and a route there turns CORS on with its typed_per_filter_config.
func TestRouteFiltersReachOnlyTheirChain(t *testing.T) {
	gw := ir.ObjectRef{Kind: "Gateway", Namespace: "ns", Name: "gw"}
	kin := ir.ObjectRef{Kind: "KIngress", Namespace: "ns", Name: "k"}
	cors := &ir.CORSPolicy{AllowOrigins: []string{"https://*.example.com"}, AllowMethods: []string{"GET"}}
	route := func(path string, fs ...ir.HTTPFilter) *ir.Route {
		return &ir.Route{Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: path}}, Filters: fs,
			Backends: []ir.WeightedBackend{{BackendName: "ns/svc:80", Weight: 1}}}
	}
	backend := []*ir.Backend{{Name: "ns/svc:80", Service: ir.ServiceRef{Namespace: "ns", Name: "svc", Port: 80},
		Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}}
	gateway := &ir.Fragment{
		Source: gw,
		Listeners: []*ir.Listener{
			{Name: "cors", Port: 9000, Protocol: ir.ProtocolHTTP, Provenance: ir.Provenance{gw}},
			{Name: "plain", Port: 9001, Protocol: ir.ProtocolHTTP, Provenance: ir.Provenance{gw}},
		},
		Backends: backend,
		VirtualHosts: []*ir.VirtualHost{
			{Name: "a", Domains: []string{"a.example.com"}, Listener: "cors", Routes: []*ir.Route{route("/", cors)}, Provenance: ir.Provenance{gw}},
			{Name: "b", Domains: []string{"b.example.com"}, Listener: "plain", Routes: []*ir.Route{route("/")}, Provenance: ir.Provenance{gw}},
		},
	}
	shared := &ir.Fragment{
		Source:   kin,
		Backends: backend,
		VirtualHosts: []*ir.VirtualHost{{Name: "k", Domains: []string{"k.example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTP),
			Routes: []*ir.Route{route("/", cors)}, Provenance: ir.Provenance{kin}, Field: "spec.rules[0]"}},
	}
	res := mustTranslate(t, []*ir.Fragment{gateway, shared})
	chains := map[string][]string{}
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					chains[l.GetName()] = append(chains[l.GetName()], hf.GetName())
					// A filter acts only on the routes that turn it on.
					if hf.GetName() != routerFilter && !hf.GetDisabled() {
						t.Errorf("%s: %s is not disabled", l.GetName(), hf.GetName())
					}
				}
			}
		}
	}
	for _, l := range res.Listeners {
		if l.GetName() != "external-http" {
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		for _, hf := range hcm.GetHttpFilters() {
			if hf.GetName() != routerFilter && !hf.GetDisabled() {
				t.Errorf("the shared listener's %s is not disabled", hf.GetName())
			}
		}
	}
	for name, want := range map[string]string{
		"gateway/ns/gw/9000": corsFilter + "," + routerFilter,
		"gateway/ns/gw/9001": routerFilter,
		"external-http":      customResponseFilter + "," + rbacFilter + "," + corsFilter + "," + localRateLimitFilter + "," + headerMutationFilter + "," + basicAuthFilter + "," + extAuthzFilter + "," + globalRateLimitFilter + "," + globalRateLimitFailClosedFilter + "," + bufferFilter + "," + routerFilter,
	} {
		if got := strings.Join(chains[name], ","); got != want {
			t.Errorf("%s: http_filters %s, want %s", name, got, want)
		}
	}
	for _, rc := range res.Routes {
		if rc.GetName() != "external-http" {
			continue
		}
		r := rc.GetVirtualHosts()[0].GetRoutes()[0]
		if _, ok := r.GetTypedPerFilterConfig()[corsFilter]; !ok {
			t.Errorf("the shared-listener route does not turn CORS on: %v", r)
		}
	}
	if ps := res.ProblemsBySource()[kin]; len(ps) != 0 {
		t.Errorf("problems with the shared-listener route: %+v", ps)
	}
}

// TestBasicAuthPerRoute: a route's users become Envoy's htpasswd lines;
// a list Envoy would refuse at load fails the route instead.
func TestBasicAuthPerRoute(t *testing.T) {
	const alice = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
	got, err := basicAuthPerRoute(&ir.BasicAuth{Users: []ir.HtpasswdUser{{Name: "alice", Hash: alice}, {Name: "bob smith", Hash: alice}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "alice:" + alice + "\nbob smith:" + alice + "\n"; got.GetUsers().GetInlineString() != want {
		t.Errorf("users %q, want %q", got.GetUsers().GetInlineString(), want)
	}
	if none, err := basicAuthPerRoute(&ir.BasicAuth{}); err != nil || none.GetUsers() == nil || none.GetUsers().GetInlineString() != "" {
		t.Errorf("no users: %v, %v; want an empty list, which admits no one", none, err)
	}
	for name, users := range map[string][]ir.HtpasswdUser{
		"apr1":             {{Name: "alice", Hash: "$apr1$Vv8E6Bq1$3jkJ0t7U5oT9mC3eQ1lIb/"}},
		"bcrypt":           {{Name: "alice", Hash: "$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC"}},
		"a short hash":     {{Name: "alice", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9="}},
		"a colon":          {{Name: "al:ice", Hash: alice}},
		"a line break":     {{Name: "al\nice", Hash: alice}},
		"a comment":        {{Name: "#alice", Hash: alice}},
		"an empty name":    {{Name: "", Hash: alice}},
		"a duplicate user": {{Name: "alice", Hash: alice}, {Name: "alice", Hash: alice}},
	} {
		if _, err := basicAuthPerRoute(&ir.BasicAuth{Users: users}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "$") || strings.Contains(err.Error(), "W6ph") {
			t.Errorf("%s: the error quotes a hash: %v", name, err)
		}
	}
}

// TestClientValidationChain: a certificate that checks clients gets a
// filter chain of its own, with Envoy's validation context, that marks its
// connections with its name; a route's ViaCertificate admits only
// connections with that mark (Envoy's route match on filter state).
func TestClientValidationChain(t *testing.T) {
	chain, key := testKeyPair("client validation")
	depth := uint32(2)
	ing := ir.ObjectRef{Kind: "Ingress host", Name: "m.example.com"}
	const name = "ns/pair+client-ca=ns/ca"
	frag := &ir.Fragment{
		Source: ing,
		Certificates: []*ir.Certificate{{Name: name, Hosts: []string{"m.example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTPS), CertChain: chain, PrivateKey: key,
			ClientValidation: &ir.ClientValidation{CACertificates: chain, Optional: true, MaxDepth: &depth}}},
		Backends: []*ir.Backend{{Name: "ns/svc:80", Service: ir.ServiceRef{Namespace: "ns", Name: "svc", Port: 80}, Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}},
		VirtualHosts: []*ir.VirtualHost{{Name: "m", Domains: []string{"m.example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTPS), Routes: []*ir.Route{{
			Match:    ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}, ViaCertificate: name},
			Backends: []ir.WeightedBackend{{BackendName: "ns/svc:80", Weight: 1}}}}}},
	}
	res := mustTranslate(t, []*ir.Fragment{frag})
	var found bool
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			if !slices.Contains(fc.GetFilterChainMatch().GetServerNames(), "m.example.com") {
				continue
			}
			found = true
			var dtc tlsv3.DownstreamTlsContext
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&dtc); err != nil {
				t.Fatal(err)
			}
			vc := dtc.GetCommonTlsContext().GetValidationContext()
			if dtc.GetRequireClientCertificate().GetValue() || vc.GetMaxVerifyDepth().GetValue() != 2 || string(vc.GetTrustedCa().GetInlineBytes()) != string(chain) {
				t.Errorf("chain's TLS context %v", &dtc)
			}
			var sfs setfilterstatev3.Config
			if len(fc.GetFilters()) != 2 || fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&sfs) != nil ||
				sfs.GetOnNewConnection()[0].GetObjectKey() != filterChainKey || sfs.GetOnNewConnection()[0].GetFormatString().GetTextFormatSource().GetInlineString() != name {
				t.Errorf("chain's filters %v, want the mark of %s before the connection manager", fc.GetFilters(), name)
			}
		}
	}
	if !found {
		t.Fatal("no filter chain for m.example.com")
	}
	var matched bool
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				fs := r.GetMatch().GetFilterState()
				matched = matched || len(fs) == 1 && fs[0].GetKey() == filterChainKey && fs[0].GetStringMatch().GetExact() == name
			}
		}
	}
	if !matched {
		t.Error("the route does not match the filter chain's mark")
	}
}
