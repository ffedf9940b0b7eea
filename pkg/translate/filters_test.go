package translate

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

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
		"external-http":      rbacFilter + "," + corsFilter + "," + localRateLimitFilter + "," + headerMutationFilter + "," + extAuthzFilter + "," + bufferFilter + "," + routerFilter,
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
