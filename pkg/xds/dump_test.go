package xds

import (
	"encoding/json"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func TestDumpShapeAndRedaction(t *testing.T) {
	secret := &tlsv3.Secret{Name: "ns/tls", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("CERT")}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("TOP-SECRET-KEY")}},
	}}}
	in := map[string][]types.Resource{
		resource.ClusterType: {&clusterv3.Cluster{Name: "b"}, &clusterv3.Cluster{Name: "a"}},
		resource.SecretType:  {secret},
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
	y, err := Dump(in, "yaml")
	if err != nil || !strings.Contains(string(y), "clusters:") {
		t.Errorf("yaml = %s, %v", y, err)
	}
	if _, err := Dump(in, "xml"); err == nil {
		t.Error("xml accepted")
	}
}
