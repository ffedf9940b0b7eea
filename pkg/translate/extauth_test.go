package translate

import (
	"strconv"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestExtAuthRoutes: a route with an authorization service gets its own
// service in ext_authz's per-route config, and a route whose service has
// no cluster answers 500 instead of being left out, where a less specific
// route would serve its requests unchecked.
func TestExtAuthRoutes(t *testing.T) {
	kin := ir.ObjectRef{Kind: "Ingress host", Name: "a.example.com"}
	route := func(path string, fs ...ir.HTTPFilter) *ir.Route {
		return &ir.Route{Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: path}}, Filters: fs,
			Backends: []ir.WeightedBackend{{BackendName: "ns/app:80", Weight: 1}}}
	}
	auth := func(backend string) *ir.ExtAuth {
		return &ir.ExtAuth{BackendName: backend, Path: "/check", Timeout: time.Second, UpstreamHeaders: []string{"X-User"},
			CheckHeaders: []ir.Header{{Name: "X-Original-URL", Value: "%REQ(:path)%"}}}
	}
	be := func(name string) *ir.Backend {
		return &ir.Backend{Name: name, Service: ir.ServiceRef{Namespace: "ns", Name: strings.TrimSuffix(strings.TrimPrefix(name, "ns/"), ":80"), Port: 80},
			Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 80}}}
	}
	f := &ir.Fragment{
		Source:   kin,
		Backends: []*ir.Backend{be("ns/app:80"), be("ns/auth:80")},
		VirtualHosts: []*ir.VirtualHost{{Name: "a", Domains: []string{"a.example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTP), Provenance: ir.Provenance{kin},
			Routes: []*ir.Route{
				route("/checked", &ir.RemoveRequestHeaders{Names: []string{"X-User"}}, auth("ns/auth:80")),
				route("/lost", auth("ns/gone:80")),
				route("/"),
			}}},
	}
	res := mustTranslate(t, []*ir.Fragment{f})
	var routes []string
	for _, rc := range res.Routes {
		if rc.GetName() != "external-http" {
			continue
		}
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			desc := r.GetMatch().GetPrefix()
			if dr := r.GetDirectResponse(); dr != nil {
				desc += " direct " + strconv.Itoa(int(dr.GetStatus()))
			}
			if a := r.GetTypedPerFilterConfig()[extAuthzFilter]; a != nil {
				var pr extauthzv3.ExtAuthzPerRoute
				if err := a.UnmarshalTo(&pr); err != nil {
					t.Fatal(err)
				}
				svc := pr.GetCheckSettings().GetHttpService()
				desc += " authz " + svc.GetServerUri().GetCluster() + svc.GetPathOverride()
			}
			if r.GetTypedPerFilterConfig()[headerMutationFilter] != nil {
				desc += " +remove"
			}
			routes = append(routes, desc)
		}
	}
	if got := strings.Join(routes, "; "); got != "/checked authz ns/auth:80/check +remove; /lost direct 500; /" {
		t.Errorf("routes: %s", got)
	}
}
