package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	setfilterstatecommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
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

// tlsClient connects to addr, whatever a URL's host, trusting server's
// certificate, with sni as the server name and client's certificate, if
// any.
func tlsClient(t *testing.T, addr string, server testCert, sni string, client *testCert) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: certPool(server), ServerName: sni}
	if client != nil {
		pair, err := tls.X509KeyPair(client.certPEM, client.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
}

// TestClientCertificateValidation: a chain that requires client
// certificates takes only those its CA signed, and only that chain; one in
// ACCEPT_UNTRUSTED mode takes any certificate or none.
func TestClientCertificateValidation(t *testing.T) {
	server := newCert(t, "server", "strict.example.com", "lax.example.com", "open.example.com")
	caA, caB := issue(t, nil, "client-ca-a", true), issue(t, nil, "client-ca-b", true)
	clientA, clientB := issue(t, &caA, "client-a", false, x509.ExtKeyUsageClientAuth), issue(t, &caB, "client-b", false, x509.ExtKeyUsageClientAuth)
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
		resp, err := tlsClient(t, addr, server, host, client).Get("https://" + host + "/")
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
		{"strict.example.com", &clientA, true},
		{"strict.example.com", &clientB, false},
		{"strict.example.com", nil, false},
		{"lax.example.com", &clientA, true},
		{"lax.example.com", &clientB, true},
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

// issue signs a certificate for cn with parent's key; with a nil parent it
// is self-signed. A CA gets no extended key usage.
func issue(t *testing.T, parent *testCert, cn string, isCA bool, eku ...x509.ExtKeyUsage) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parentKey, parentCert := key, (*x509.Certificate)(nil)
	if parent != nil {
		block, _ := pem.Decode(parent.keyPEM)
		if parentKey, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			t.Fatal(err)
		}
		parentCert = parent.x509
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku, IsCA: isCA, BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parentCert == nil {
		parentCert = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	parsed, _ := x509.ParseCertificate(der)
	return testCert{certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), x509: parsed}
}

// TestClientCertificateChainsPurposeAndResumption: a client certificate
// may come with its intermediates; one whose extended key usage does not
// allow client use is refused, as Envoy checks the ssl_client purpose; and
// a TLS session from before a change of the trusted CA cannot be resumed
// to skip the check.
func TestClientCertificateChainsPurposeAndResumption(t *testing.T) {
	server := newCert(t, "server", "mtls.example.com")
	rootA, rootB := issue(t, nil, "root-a", true), issue(t, nil, "root-b", true)
	inter := issue(t, &rootA, "intermediate-a", true)
	viaInter := issue(t, &inter, "client-via-intermediate", false, x509.ExtKeyUsageClientAuth)
	serverOnly := issue(t, &rootA, "server-use-only", false, x509.ExtKeyUsageServerAuth)
	b := startBackend(t, "b")
	const name = "https"
	resources := func(ca testCert) *Resources {
		l := tlsListener(name, sniChain{names: []string{"mtls.example.com"}, secret: "srv"})
		withClientValidation(t, l, 0, ca, false)
		res := &Resources{
			Listeners: []*listenerv3.Listener{l},
			Routes:    []*routev3.RouteConfiguration{routeConfig(name, virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "b")))},
			Secrets:   []*tlsv3.Secret{secret("srv", server)},
		}
		addBackends(res, false, b)
		return res
	}
	p := newTestProxy(t, Options{})
	mustApply(t, p, resources(rootA))
	addr := p.ListenerAddr(name).String()
	sessions := tls.NewLRUClientSessionCache(8)
	// get connects with client (and chain); only resuming calls share the
	// session cache.
	get := func(resume bool, client testCert, chain ...testCert) (*tls.ConnectionState, error) {
		var cache tls.ClientSessionCache
		if resume {
			cache = sessions
		}
		pair, err := tls.X509KeyPair(append(append([]byte{}, client.certPEM...), concatPEM(chain)...), client.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: certPool(server), ServerName: "mtls.example.com", Certificates: []tls.Certificate{pair}, ClientSessionCache: cache},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		}}
		resp, err := c.Get("https://mtls.example.com/")
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return resp.TLS, nil
	}
	if _, err := get(false, viaInter, inter); err != nil {
		t.Errorf("a client certificate sent with its intermediate: %v", err)
	}
	if _, err := get(false, viaInter); err == nil {
		t.Error("a client certificate without the intermediate it needs was taken")
	}
	if _, err := get(false, serverOnly); err == nil {
		t.Error("a certificate for server use only was taken from a client")
	}
	// A session made while root A was trusted, resumed after root B
	// replaced it, must not get in. The second call shows that sessions
	// do resume, so the last one tests what it says.
	for i := range 2 {
		st, err := get(true, viaInter, inter)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && !st.DidResume {
			t.Fatal("a second connection did not resume its session")
		}
	}
	mustApply(t, p, resources(rootB))
	if _, err := get(true, viaInter, inter); err == nil {
		t.Error("after the trusted CA changed, a client of the old CA got in (by resuming its session)")
	}
}

func concatPEM(certs []testCert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.certPEM...)
	}
	return out
}

// TestClientCertificateDepthAndFilterChain: max_verify_depth counts the
// certificates after the client's own, its CA included; a chain's
// set_filter_state marks its connections, and an RBAC filter_state
// principal keeps a host whose chain checks clients from being reached
// over a connection another chain took. requested_server_name compares
// the SNI, ignoring the case of ASCII letters only.
func TestClientCertificateDepthAndFilterChain(t *testing.T) {
	server := newCert(t, "server", "strict.example.com", "open.example.com")
	ca := issue(t, nil, "client-ca", true)
	inter := issue(t, &ca, "client-intermediate", true)
	direct := issue(t, &ca, "client-direct", false, x509.ExtKeyUsageClientAuth)
	deep := issue(t, &inter, "client-deep", false, x509.ExtKeyUsageClientAuth)
	deep.certPEM = append(append([]byte(nil), deep.certPEM...), inter.certPEM...)
	b := startBackend(t, "b")
	const name = "https"
	l := tlsListener(name, sniChain{names: []string{"strict.example.com"}, secret: "srv"}, sniChain{names: []string{"open.example.com"}, secret: "srv"})
	rbacFilter := func(name string) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacv3.RBAC{})}}
	}
	for _, fc := range l.FilterChains {
		fc.Filters = []*listenerv3.Filter{hcmFilter(name, withFilters(rbacFilter("via_chain"), rbacFilter("by_sni")))}
	}
	// The strict chain marks its connections.
	l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.set_filter_state", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&setfilterstatev3.Config{
		OnNewConnection: []*setfilterstatecommonv3.FilterStateValue{{
			Key:        &setfilterstatecommonv3.FilterStateValue_ObjectKey{ObjectKey: "weir.filter_chain"},
			FactoryKey: "envoy.string",
			Value: &setfilterstatecommonv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "strict 100%% checked"}}},
			}},
			ReadOnly: true,
		}},
	})}}}, l.FilterChains[0].Filters...)
	withClientValidation(t, l, 0, ca, false)
	var dtc tlsv3.DownstreamTlsContext
	if err := l.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&dtc); err != nil {
		t.Fatal(err)
	}
	dtc.CommonTlsContext.GetValidationContext().MaxVerifyDepth = wrapperspb.UInt32(1)
	l.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&dtc)}

	allow := func(perm *rbacconfigv3.Permission, who *rbacconfigv3.Principal) *anypb.Any {
		return mustAny(&rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
			Action:   rbacconfigv3.RBAC_ALLOW,
			Policies: map[string]*rbacconfigv3.Policy{"p": {Permissions: []*rbacconfigv3.Permission{perm}, Principals: []*rbacconfigv3.Principal{who}}},
		}}})
	}
	anyPerm := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
	anyone := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
	strict := routeTo(prefixMatch("/"), "b")
	strict.TypedPerFilterConfig = map[string]*anypb.Any{"via_chain": allow(anyPerm, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
		Key: "weir.filter_chain", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "strict 100% checked"}}},
	}}})}
	bySNI := routeTo(prefixMatch("/"), "b")
	bySNI.TypedPerFilterConfig = map[string]*anypb.Any{"by_sni": allow(&rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_RequestedServerName{RequestedServerName: &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "OPEN.example.com"}, IgnoreCase: true}}}, anyone)}
	// The same check as a route match, with a 421 for other connections.
	routed := routeTo(prefixMatch("/"), "b")
	routed.Match.FilterState = []*matcherv3.FilterStateMatcher{{
		Key: "weir.filter_chain", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "strict 100% checked"}}},
	}}
	misdirected := &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: http.StatusMisdirectedRequest}}}
	res := &Resources{
		Listeners: []*listenerv3.Listener{l},
		Routes: []*routev3.RouteConfiguration{routeConfig(name,
			virtualHost("strict", []string{"strict.example.com"}, strict),
			virtualHost("routed", []string{"routed.example.com"}, routed, misdirected),
			virtualHost("sni", []string{"sni.example.com"}, bySNI),
			virtualHost("open", []string{"open.example.com"}, routeTo(prefixMatch("/"), "b")))},
		Secrets: []*tlsv3.Secret{secret("srv", server)},
	}
	addBackends(res, false, b)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	addr := p.ListenerAddr(name).String()

	get := func(sni, host string, client *testCert) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+sni+"/", nil)
		req.Host = host
		resp, err := tlsClient(t, addr, server, sni, client).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get("strict.example.com", "strict.example.com", &direct); err != nil || code != 200 {
		t.Errorf("a client its CA signed: %d %v", code, err)
	}
	if _, err := get("strict.example.com", "strict.example.com", &deep); err == nil {
		t.Error("a client two certificates from its CA was taken with max_verify_depth 1")
	}
	if code, err := get("open.example.com", "strict.example.com", nil); err != nil || code != http.StatusForbidden {
		t.Errorf("the checked host over a connection another chain took: %d %v, want 403", code, err)
	}
	if code, err := get("strict.example.com", "routed.example.com", &direct); err != nil || code != 200 {
		t.Errorf("a route matching the filter chain's mark, over that chain: %d %v, want 200", code, err)
	}
	if code, err := get("open.example.com", "routed.example.com", nil); err != nil || code != http.StatusMisdirectedRequest {
		t.Errorf("a route matching the filter chain's mark, over another chain: %d %v, want the next route's 421", code, err)
	}
	if code, err := get("open.example.com", "sni.example.com", nil); err != nil || code != 200 {
		t.Errorf("requested_server_name OPEN.example.com, SNI open.example.com: %d %v, want 200", code, err)
	}
	if code, err := get("strict.example.com", "sni.example.com", &direct); err != nil || code != http.StatusForbidden {
		t.Errorf("requested_server_name OPEN.example.com, SNI strict.example.com: %d %v, want 403", code, err)
	}
	if code, err := get("open.example.com", "open.example.com", nil); err != nil || code != 200 {
		t.Errorf("the open host: %d %v", code, err)
	}

	// With depth 2 the deeper chain is taken.
	dtc.CommonTlsContext.GetValidationContext().MaxVerifyDepth = wrapperspb.UInt32(2)
	l.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&dtc)}
	mustApply(t, p, res)
	if code, err := get("strict.example.com", "strict.example.com", &deep); err != nil || code != 200 {
		t.Errorf("a client two certificates from its CA with max_verify_depth 2: %d %v", code, err)
	}
}

// TestFilterStateIsTheHandshakeChains: a connection keeps the filter
// state of the chain that took it. One opened before its chain began
// checking clients (and marking its connections) gets no mark from the
// new chain, so a route that requires the mark refuses its requests;
// a new connection is checked and marked.
func TestFilterStateIsTheHandshakeChains(t *testing.T) {
	server := newCert(t, "server", "strict.example.com")
	ca := issue(t, nil, "client-ca", true)
	client := issue(t, &ca, "client", false, x509.ExtKeyUsageClientAuth)
	b := startBackend(t, "b")
	const name = "https"
	build := func(checked bool) *Resources {
		l := tlsListener(name, sniChain{names: []string{"strict.example.com"}, secret: "srv"})
		l.FilterChains[0].Filters = []*listenerv3.Filter{hcmFilter(name, withFilters(&hcmv3.HttpFilter{Name: "via_chain", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacv3.RBAC{})}}))}
		r := routeTo(prefixMatch("/"), "b")
		if checked {
			l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.set_filter_state", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&setfilterstatev3.Config{
				OnNewConnection: []*setfilterstatecommonv3.FilterStateValue{{
					Key: &setfilterstatecommonv3.FilterStateValue_ObjectKey{ObjectKey: "weir.filter_chain"}, FactoryKey: "envoy.string", ReadOnly: true,
					Value: &setfilterstatecommonv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
						Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "strict"}}},
					}},
				}},
			})}}}, l.FilterChains[0].Filters...)
			withClientValidation(t, l, 0, ca, false)
			r.TypedPerFilterConfig = map[string]*anypb.Any{"via_chain": mustAny(&rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
				Action: rbacconfigv3.RBAC_ALLOW,
				Policies: map[string]*rbacconfigv3.Policy{"p": {
					Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
					Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
						Key: "weir.filter_chain", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "strict"}}},
					}}}},
				}},
			}}})}
		}
		res := &Resources{
			Listeners: []*listenerv3.Listener{l},
			Routes:    []*routev3.RouteConfiguration{routeConfig(name, virtualHost("strict", []string{"strict.example.com"}, r))},
			Secrets:   []*tlsv3.Secret{secret("srv", server)},
		}
		addBackends(res, false, b)
		return res
	}
	p := newTestProxy(t, Options{})
	mustApply(t, p, build(false))
	addr := p.ListenerAddr(name).String()
	clientFor := func(certs []tls.Certificate, h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certPool(server), ServerName: "strict.example.com", Certificates: certs}, ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: tr}
	}
	get := func(c *http.Client) (code int, reused bool, err error) {
		req, _ := http.NewRequest(http.MethodGet, "https://strict.example.com/", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
		resp, err := c.Do(req)
		if err != nil {
			return 0, reused, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, reused, nil
	}
	h1, h2 := clientFor(nil, false), clientFor(nil, true)
	for _, c := range []*http.Client{h1, h2} {
		if code, _, err := get(c); err != nil || code != 200 {
			t.Fatalf("before the chain checked clients: %d %v", code, err)
		}
	}
	mustApply(t, p, build(true))
	for proto, c := range map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2": h2} {
		code, reused, err := get(c)
		if err != nil || !reused || code != http.StatusForbidden {
			t.Errorf("%s on the connection opened before: %d (reused %v) %v, want 403", proto, code, reused, err)
		}
	}
	pair, err := tls.X509KeyPair(client.certPEM, client.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, err := get(clientFor([]tls.Certificate{pair}, true)); err != nil || code != 200 {
		t.Errorf("a new, checked connection: %d %v", code, err)
	}
}
