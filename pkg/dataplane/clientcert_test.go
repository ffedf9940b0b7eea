package dataplane

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// withClientValidation sets a chain's validation_context: clients are
// checked against ca, and required unless fallback (ACCEPT_UNTRUSTED).
func withClientValidation(t *testing.T, l *listenerv3.Listener, chain int, ca testCert, fallback bool) {
	t.Helper()
	var dtc tlsv3.DownstreamTlsContext
	if err := l.FilterChains[chain].TransportSocket.GetTypedConfig().UnmarshalTo(&dtc); err != nil {
		t.Fatal(err)
	}
	vc := &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca.certPEM}}}
	if fallback {
		vc.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	} else {
		dtc.RequireClientCertificate = wrapperspb.Bool(true)
	}
	dtc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	l.FilterChains[chain].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&dtc)}
}

// TestClientCertificateValidation: a chain that requires client
// certificates takes only those its CA signed, and only that chain; one in
// ACCEPT_UNTRUSTED mode takes any certificate or none.
func TestClientCertificateValidation(t *testing.T) {
	server := newCert(t, "server", "strict.example.com", "lax.example.com", "open.example.com")
	caA, caB := newCert(t, "client-ca-a"), newCert(t, "client-ca-b")
	b := startBackend(t, "b")
	const name = "https"
	l := tlsListener(name,
		sniChain{names: []string{"strict.example.com"}, secret: "srv"},
		sniChain{names: []string{"lax.example.com"}, secret: "srv"},
		sniChain{names: []string{"open.example.com"}, secret: "srv"})
	withClientValidation(t, l, 0, caA, false)
	withClientValidation(t, l, 1, caA, true)
	res := &Resources{
		Listeners: []*listenerv3.Listener{l},
		Routes:    []*routev3.RouteConfiguration{routeConfig(name, virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "b")))},
		Secrets:   []*tlsv3.Secret{secret("srv", server)},
	}
	addBackends(res, false, b)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	addr := p.ListenerAddr(name).String()

	get := func(host string, client *testCert) error {
		cfg := &tls.Config{RootCAs: certPool(server), ServerName: host}
		if client != nil {
			pair, err := tls.X509KeyPair(client.certPEM, client.keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
		resp, err := c.Get("https://" + host + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	for _, tc := range []struct {
		host   string
		client *testCert
		ok     bool
	}{
		{"strict.example.com", &caA, true},
		{"strict.example.com", &caB, false},
		{"strict.example.com", nil, false},
		{"lax.example.com", &caA, true},
		{"lax.example.com", &caB, true},
		{"lax.example.com", nil, true},
		{"open.example.com", nil, true},
	} {
		name := "none"
		if tc.client != nil {
			name = tc.client.x509.Subject.CommonName
		}
		if err := get(tc.host, tc.client); (err == nil) != tc.ok {
			t.Errorf("%s with client certificate %s: error %v, want success %v", tc.host, name, err, tc.ok)
		}
	}

	// Without a trusted CA, a required certificate cannot be checked.
	bad := tlsListener("bad", sniChain{names: []string{"x.example.com"}, secret: "srv"})
	var dtc tlsv3.DownstreamTlsContext
	_ = bad.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&dtc)
	dtc.RequireClientCertificate = wrapperspb.Bool(true)
	bad.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&dtc)}
	res.Listeners = append(res.Listeners, bad)
	res.Routes = append(res.Routes, routeConfig("bad", virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "b"))))
	if err := newTestProxy(t, Options{}).Apply(res); err == nil {
		t.Error("require_client_certificate without a validation context was accepted")
	}
}
