package dataplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// tlsUpstreamContext is what translate emits for an HTTPS ExternalName.
func tlsUpstreamContext(sni, caFile string, sans ...string) *corev3.TransportSocket {
	ctx := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: []string{"http/1.1"}}}
	if caFile != "" {
		vc := &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}}}
		for _, s := range sans {
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}},
			})
		}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// TestUpstreamTLS: a cluster with an UpstreamTlsContext speaks TLS to its
// endpoint, sends the SNI, and accepts only what Envoy would: a chain from
// trusted_ca whose SAN matches.
func TestUpstreamTLS(t *testing.T) {
	var sawSNI string
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawSNI = r.TLS.ServerName
		fmt.Fprint(w, "over tls")
	}))
	up.StartTLS() // httptest's certificate names example.com and 127.0.0.1
	t.Cleanup(up.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(otherCA, newCert(t, "other", "other.example").certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := up.Listener.Addr().String()

	for _, tc := range []struct {
		name string
		ts   *corev3.TransportSocket
		want int
	}{
		{"trusted, SAN matches", tlsUpstreamContext("example.com", caFile, "example.com"), 200},
		{"no validation context verifies nothing", tlsUpstreamContext("example.com", ""), 200},
		{"SAN does not match", tlsUpstreamContext("example.com", caFile, "api.example.org"), 503},
		{"untrusted CA", tlsUpstreamContext("example.com", otherCA, "example.com"), 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := getThroughTLSCluster(t, tc.ts, addr, tc.want)
			if tc.want == 200 && (string(body) != "over tls" || sawSNI != "example.com") {
				t.Errorf("body %q, SNI %q; want over tls with SNI example.com", body, sawSNI)
			}
		})
	}
}

// getThroughTLSCluster sends a GET through a proxy whose one cluster
// reaches addr with ts, checks the status and returns the body.
func getThroughTLSCluster(t *testing.T, ts *corev3.TransportSocket, addr string, want int) string {
	t.Helper()
	p := newTestProxy(t, Options{})
	c := edsCluster("tls", false)
	c.TransportSocket = ts
	mustApply(t, p, &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("v", []string{"*"}, routeTo(prefixMatch("/"), "tls")))},
		Clusters:  []*clusterv3.Cluster{c},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("tls", addr)},
	})
	resp, err := http.Get(proxyURL(t, p, "l") + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("status %d %q, want %d", resp.StatusCode, body, want)
	}
	return string(body)
}

// TestUpstreamTLSRefusedAsEnvoyRefusesIt: config Envoy NACKs is NACKed.
func TestUpstreamTLSRefusedAsEnvoyRefusesIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   *corev3.TransportSocket
		want string
	}{
		{"SAN without trusted CA", func() *corev3.TransportSocket {
			ts := tlsUpstreamContext("a", filepath.Join(t.TempDir(), "x"), "a")
			ctx := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
				t.Fatal(err)
			}
			ctx.GetCommonTlsContext().GetValidationContext().TrustedCa = nil
			ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}
			return ts
		}(), "without trusted CA"},
		{"unreadable CA file", tlsUpstreamContext("a", "/nonexistent/ca.pem", "a"), "cannot read"},
	} {
		p := newTestProxy(t, Options{})
		c := edsCluster("tls", false)
		c.TransportSocket = tc.ts
		err := p.Apply(&Resources{Clusters: []*clusterv3.Cluster{c}, Endpoints: []*endpointv3.ClusterLoadAssignment{cla("tls", "127.0.0.1:1")}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Apply = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// TestDNSNameMatch is Envoy's: exact or one-label "*." certificate names,
// ASCII case folded only.
func TestDNSNameMatch(t *testing.T) {
	for _, tc := range []struct {
		want, cert string
		match      bool
	}{
		{"api.example.org", "api.example.org", true},
		{"API.Example.org", "api.example.org", true},
		{"api.example.org", "*.example.org", true},
		{"a.b.example.org", "*.example.org", false},
		{"example.org", "*.example.org", false},
		{"\u212Aube.example.org", "kube.example.org", false},
	} {
		if got := dnsNameMatch(tc.want, tc.cert); got != tc.match {
			t.Errorf("dnsNameMatch(%q, %q) = %v, want %v", tc.want, tc.cert, got, tc.match)
		}
	}
}

// TestUpstreamTLSURISAN: a URI matcher (what translate emits for a
// BackendTLSPolicy's URI subjectAltName) accepts a certificate carrying
// that exact URI and nothing else, and an inline trusted_ca is read as a
// file's would be.
func TestUpstreamTLSURISAN(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse("spiffe://example.com/ns/apps/sa/api")
	// Written as another CA might: Envoy compares the SAN's bytes, so
	// "spiffe://example.com/Mixed" does not match it.
	mixed := &url.URL{Scheme: "SPIFFE", Host: "example.com", Path: "/Mixed"}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "api"}, URIs: []*url.URL{id, mixed}, DNSNames: []string{"api.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "over tls") }))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	up.StartTLS()
	t.Cleanup(up.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))

	for _, tc := range []struct {
		name string
		san  *tlsv3.SubjectAltNameMatcher
		want int
	}{
		{"URI matches", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id.String()}}}, 200},
		{"another URI", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://example.com/ns/apps/sa/web"}}}, 503},
		{"the URI as a DNS name", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id.String()}}}, 503},
		{"a DNS SAN as a URI", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "api.internal"}}}, 503},
		{"a URI as written", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "SPIFFE://example.com/Mixed"}}}, 200},
		{"a URI as Go would re-write it", &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://example.com/Mixed"}}}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := &tlsv3.UpstreamTlsContext{Sni: "api.internal", CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols: []string{"http/1.1"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: caPEM}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{tc.san},
				}},
			}}
			ts := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
			getThroughTLSCluster(t, ts, up.Listener.Addr().String(), tc.want)
		})
	}
}

// TestUpstreamTLSClientCertificate: a cluster's tls_certificate_sds_secret_configs
// names the Secret the proxy presents to the upstream; a new version of
// that Secret, with the cluster unchanged, is presented on the next
// connection; a Secret that has not arrived makes the config wait, and
// two certificates are refused, as Envoy refuses them for a client.
func TestUpstreamTLSClientCertificate(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	up.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	up.StartTLS()
	t.Cleanup(up.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}))
	withClientCert := func(names ...string) *corev3.TransportSocket {
		common := &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"http/1.1"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: caPEM}},
			}},
		}
		for _, n := range names {
			common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs, &tlsv3.SdsSecretConfig{Name: n, SdsConfig: ads()})
		}
		ctx := &tlsv3.UpstreamTlsContext{Sni: "example.com", CommonTlsContext: common}
		return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
	}

	p := newTestProxy(t, Options{})
	c := edsCluster("tls", false)
	c.TransportSocket = withClientCert("client")
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l")},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("v", []string{"*"}, routeTo(prefixMatch("/"), "tls")))},
		Clusters:  []*clusterv3.Cluster{c},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("tls", up.Listener.Addr().String())},
	}
	if err := p.Apply(res); !errors.Is(err, ErrMissingResource) {
		t.Fatalf("Apply without the secret = %v, want a missing resource", err)
	}
	get := func() string {
		t.Helper()
		resp, err := http.Get(proxyURL(t, p, "l") + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		return string(body)
	}
	res.Secrets = []*tlsv3.Secret{secret("client", newCert(t, "client-a"))}
	mustApply(t, p, res)
	if got := get(); got != "client-a" {
		t.Errorf("upstream saw client certificate %q, want client-a", got)
	}
	res.Secrets = []*tlsv3.Secret{secret("client", newCert(t, "client-b"))}
	mustApply(t, p, res)
	if got := get(); got != "client-b" {
		t.Errorf("after rotation the upstream saw %q, want client-b", got)
	}

	c2 := edsCluster("tls", false)
	c2.TransportSocket = withClientCert("client", "other")
	err := p.Apply(&Resources{Clusters: []*clusterv3.Cluster{c2}, Endpoints: res.Endpoints, Secrets: []*tlsv3.Secret{secret("client", newCert(t, "a")), secret("other", newCert(t, "b"))}})
	if err == nil || !strings.Contains(err.Error(), "Multiple TLS certificates") {
		t.Errorf("two client certificates: Apply = %v", err)
	}
}
