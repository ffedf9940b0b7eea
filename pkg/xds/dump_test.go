package xds

import (
	"encoding/json"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	basicauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestDumpShapeAndRedaction(t *testing.T) {
	secret := &tlsv3.Secret{Name: "ns/tls", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("CERT")}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("TOP-SECRET-KEY")}},
	}}}
	users := &basicauthv3.BasicAuthPerRoute{Users: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"}}}
	usersAny, _ := anypb.New(users)
	routes := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Routes: []*routev3.Route{{
		Name: "with-users", TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.basic_auth": usersAny},
	}}}}}
	in := map[string][]types.Resource{
		resource.ClusterType: {&clusterv3.Cluster{Name: "b"}, &clusterv3.Cluster{Name: "a"}},
		resource.SecretType:  {secret},
		resource.RouteType:   {routes},
	}
	out, err := Dump(in, "json")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string][]map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"listeners", "routes", "clusters", "endpoints", "secrets"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	if c := got["clusters"]; len(c) != 2 || c[0]["name"] != "b" || c[0]["@type"] != "type.googleapis.com/envoy.config.cluster.v3.Cluster" {
		t.Errorf("clusters = %v, want input order with @type", c)
	}
	// base64 of the key must not appear either.
	if strings.Contains(string(out), "TOP-SECRET-KEY") || strings.Contains(string(out), "VE9QLVNFQ1JFVC1LRVk") {
		t.Error("private key in dump")
	}
	if secret.GetTlsCertificate().GetPrivateKey().GetInlineBytes() == nil {
		t.Error("Dump modified the served Secret")
	}
	// Nor basic_auth's password hashes, which are quick to crack.
	if strings.Contains(string(out), "W6ph5Mm5") || !strings.Contains(string(out), "with-users") {
		t.Errorf("basic_auth users in dump, or the route left out:\n%s", out)
	}
	if routes.GetVirtualHosts()[0].GetRoutes()[0].GetTypedPerFilterConfig()["envoy.filters.http.basic_auth"] != usersAny {
		t.Error("Dump modified the served route configuration")
	}
	if all, err := DumpWithSecrets(in, "json"); err != nil || !strings.Contains(string(all), "W6ph5Mm5") {
		t.Errorf("DumpWithSecrets left the users out: %v", err)
	}
	y, err := Dump(in, "yaml")
	if err != nil || !strings.Contains(string(y), "clusters:") {
		t.Errorf("yaml = %s, %v", y, err)
	}
	if _, err := Dump(in, "xml"); err == nil {
		t.Error("xml accepted")
	}
}
