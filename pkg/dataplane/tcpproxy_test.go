package dataplane

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// tlsBackend is an HTTPS server with its own certificate for name: a
// client that sees that certificate reached it through passthrough.
func tlsBackend(t *testing.T, name string) (string, testCert) {
	t.Helper()
	cert := newCert(t, name, name)
	pair, err := tls.X509KeyPair(cert.certPEM, cert.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s", name, r.TLS.ServerName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), cert
}

func passthroughChain(names []string, tp *tcpproxyv3.TcpProxy) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: names, TransportProtocol: "tls"},
		Filters: []*listenerv3.Filter{{
			Name:       tcpProxyFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)},
		}},
	}
}

func toCluster(name string) *tcpproxyv3.TcpProxy {
	return &tcpproxyv3.TcpProxy{StatPrefix: "tls", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: name}}
}

// TestTLSPassthrough: on one listener, a tcp_proxy chain forwards the TLS
// connection of its server names untouched to the backend, which the
// client then authenticates; a terminating chain beside it still
// terminates; a name no chain matches and a cluster without endpoints
// close the connection, as in Envoy.
func TestTLSPassthrough(t *testing.T) {
	aAddr, aCert := tlsBackend(t, "a.example.com")
	bAddr, bCert := tlsBackend(t, "b.pass.example.com")
	echo := startBackend(t, "echo")
	proxyCert := newCert(t, "term.example.com", "term.example.com")

	l := tlsListener("tls", sniChain{names: []string{"term.example.com"}, secret: "term"})
	l.FilterChains = append(l.FilterChains,
		passthroughChain([]string{"a.example.com"}, toCluster("a")),
		passthroughChain([]string{"*.pass.example.com"}, &tcpproxyv3.TcpProxy{StatPrefix: "tls", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "b", Weight: 1}}},
		}}),
		passthroughChain([]string{"empty.example.com"}, toCluster("empty")),
		passthroughChain([]string{"missing.example.com"}, toCluster("not-configured")),
	)
	res := &Resources{
		Listeners: []*listenerv3.Listener{l},
		Routes:    []*routev3.RouteConfiguration{routeConfig("tls", virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "echo")))},
		Clusters:  []*clusterv3.Cluster{edsCluster("a", false), edsCluster("b", false), edsCluster("empty", false)},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", aAddr), cla("b", bAddr)},
		Secrets:   []*tlsv3.Secret{secret("term", proxyCert)},
	}
	addBackends(res, false, echo)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	addr := p.ListenerAddr("tls").String()

	get := func(sni string, roots testCert) (string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialTLS: func(network, _ string) (net.Conn, error) {
				return tls.Dial(network, addr, &tls.Config{ServerName: sni, RootCAs: certPool(roots)})
			},
		}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + sni + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// The client trusts only the backend's certificate: it verifies only
	// if the backend itself answered the handshake.
	if body, err := get("a.example.com", aCert); err != nil || body != "a.example.com saw a.example.com" {
		t.Errorf("a.example.com = %q, %v", body, err)
	}
	if body, err := get("b.pass.example.com", bCert); err != nil || body != "b.pass.example.com saw b.pass.example.com" {
		t.Errorf("b.pass.example.com = %q, %v", body, err)
	}
	// The terminating chain: the proxy's certificate, then the route.
	if body, err := get("term.example.com", proxyCert); err != nil || !strings.Contains(body, `"backend":"echo"`) {
		t.Errorf("term.example.com = %q, %v", body, err)
	}
	for _, sni := range []string{"other.example.com", "empty.example.com", "missing.example.com"} {
		if body, err := get(sni, aCert); err == nil {
			t.Errorf("%s answered %q; want the connection closed", sni, body)
		}
	}
	// A connection that is not TLS at all is closed too.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprint(nc, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("plain HTTP on the TLS listener read %d bytes, %v; want the connection closed", n, err)
	}
}

// TestTCPProxyHalfClose: when the client half-closes, the backend sees
// EOF and can still answer, as with Envoy's tcp_proxy.
func TestTCPProxyHalfClose(t *testing.T) {
	cert := newCert(t, "echo.example.com", "echo.example.com")
	pair, err := tls.X509KeyPair(cert.certPEM, cert.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's close_notify and EOF
		fmt.Fprintf(c, "got %d bytes", len(b))
	}()
	l := tlsListener("tls")
	l.FilterChains = append(l.FilterChains, passthroughChain([]string{"echo.example.com"}, toCluster("echo")))
	p := newTestProxy(t, Options{})
	mustApply(t, p, &Resources{
		Listeners: []*listenerv3.Listener{l},
		Clusters:  []*clusterv3.Cluster{edsCluster("echo", false)},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("echo", ln.Addr().String())},
	})
	c, err := tls.Dial("tcp", p.ListenerAddr("tls").String(), &tls.Config{ServerName: "echo.example.com", RootCAs: certPool(cert)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "got 5 bytes" {
		t.Errorf("read %q, %v; want the answer after the half-close", b, err)
	}
}

// TestTCPProxyRefusals: weir-proxy NACKs the tcp_proxy shapes it does not
// serve, naming the field.
func TestTCPProxyRefusals(t *testing.T) {
	plain := &listenerv3.Listener{Name: "raw", Address: socketAddr("127.0.0.1", 0),
		FilterChains: []*listenerv3.FilterChain{passthroughChain(nil, toCluster("a"))}}
	tlsOrigin := edsCluster("a", false)
	tlsOrigin.TransportSocket = tlsUpstreamContext("a", "")
	withTLSCluster := tlsListener("tls")
	withTLSCluster.FilterChains = append(withTLSCluster.FilterChains, passthroughChain([]string{"a.example.com"}, toCluster("a")))
	for _, tc := range []struct {
		name string
		res  *Resources
		want string
	}{
		{"without the TLS inspector", &Resources{Listeners: []*listenerv3.Listener{plain}, Clusters: []*clusterv3.Cluster{edsCluster("a", false)}}, "filter_chains[0]: weir-proxy serves tcp_proxy only for TLS passthrough"},
		{"to a cluster that originates TLS", &Resources{Listeners: []*listenerv3.Listener{withTLSCluster}, Clusters: []*clusterv3.Cluster{tlsOrigin}}, "originates TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newTestProxy(t, Options{}).Apply(tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestTLSTerminateToTCP: a tcp_proxy chain with a transport socket
// terminates TLS with its certificate and forwards the plain bytes.
func TestTLSTerminateToTCP(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	cert := newCert(t, "plain.example.com", "plain.example.com")
	l := tlsListener("tls", sniChain{names: []string{"plain.example.com"}, secret: "plain"})
	fc := l.FilterChains[0]
	fc.FilterChainMatch.TransportProtocol = "tls"
	fc.Filters = passthroughChain(nil, toCluster("echo")).Filters
	p := newTestProxy(t, Options{})
	mustApply(t, p, &Resources{
		Listeners: []*listenerv3.Listener{l},
		Clusters:  []*clusterv3.Cluster{edsCluster("echo", false)},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("echo", echo.Addr().String())},
		Secrets:   []*tlsv3.Secret{secret("plain", cert)},
	})
	c, err := tls.Dial("tcp", p.ListenerAddr("tls").String(), &tls.Config{ServerName: "plain.example.com", RootCAs: certPool(cert)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); string(b) != "ping" {
		t.Errorf("read %q, %v; want the echo of the plain bytes", b, err)
	}
}

// TestTCPProxyIdleTimeout: with no bytes moving either way for
// idle_timeout, the proxy closes both sides, even when it is blocked
// writing to a client that stopped reading.
func TestTCPProxyIdleTimeout(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	backendDone := make(chan error, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			backendDone <- err
			return
		}
		defer c.Close()
		// Stream until the proxy gives up on the stalled client.
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				backendDone <- err
				return
			}
		}
	}()
	cert := newCert(t, "plain.example.com", "plain.example.com")
	l := tlsListener("tls", sniChain{names: []string{"plain.example.com"}, secret: "plain"})
	fc := l.FilterChains[0]
	fc.FilterChainMatch.TransportProtocol = "tls"
	tp := toCluster("up")
	tp.IdleTimeout = durationpb.New(200 * time.Millisecond)
	fc.Filters = passthroughChain(nil, tp).Filters
	p := newTestProxy(t, Options{})
	mustApply(t, p, &Resources{
		Listeners: []*listenerv3.Listener{l},
		Clusters:  []*clusterv3.Cluster{edsCluster("up", false)},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("up", up.Addr().String())},
		Secrets:   []*tlsv3.Secret{secret("plain", cert)},
	})
	c, err := tls.Dial("tcp", p.ListenerAddr("tls").String(), &tls.Config{ServerName: "plain.example.com", RootCAs: certPool(cert)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The client is done sending (the proxy half-closes upstream and stops
	// reading from it) and reads nothing: buffers fill and the proxy's
	// write blocks.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-backendDone:
		if err == nil {
			t.Fatal("backend stopped without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled connection was not closed by the idle timeout")
	}
}

// TestTunnelsDrainWhenTheirChainChanges: a TCP tunnel whose filter chain
// changes is closed after the drain timeout, as Envoy drains a changed
// filter chain's connections; one whose chain is unchanged (an endpoint
// change does not touch it) keeps going.
func TestTunnelsDrainWhenTheirChainChanges(t *testing.T) {
	aAddr, aCert := tlsBackend(t, "a.example.com")
	bAddr, bCert := tlsBackend(t, "b.example.com")
	res := func(bCluster string, aEndpoints ...string) *Resources {
		l := tlsListener("tls")
		l.FilterChains = append(l.FilterChains,
			passthroughChain([]string{"a.example.com"}, toCluster("a")),
			passthroughChain([]string{"b.example.com"}, toCluster(bCluster)))
		return &Resources{
			Listeners: []*listenerv3.Listener{l},
			Clusters:  []*clusterv3.Cluster{edsCluster("a", false), edsCluster("b", false), edsCluster("b2", false)},
			Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", aEndpoints...), cla("b", bAddr), cla("b2", bAddr)},
		}
	}
	p := newTestProxy(t, Options{DrainTimeout: 200 * time.Millisecond})
	mustApply(t, p, res("b", aAddr))
	addr := p.ListenerAddr("tls").String()
	dial := func(sni string, c testCert) *tls.Conn {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, RootCAs: certPool(c)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	a, b := dial("a.example.com", aCert), dial("b.example.com", bCert)

	// First an endpoint change (a's chain is the same), then b's chain
	// changes: only b's tunnel is drained.
	mustApply(t, p, res("b", aAddr, "127.0.0.1:9"))
	mustApply(t, p, res("b2", aAddr, "127.0.0.1:9"))
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := b.Read(make([]byte, 1)); err == nil {
		t.Fatalf("b's tunnel read %d bytes; want it closed after the drain timeout", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("b's tunnel was not closed after its chain changed")
	}
	// a's tunnel, which would have been closed before b's had the
	// endpoint change drained it, still carries requests.
	if _, err := fmt.Fprint(a, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := a.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "a.example.com saw a.example.com") {
		t.Errorf("a's tunnel after the changes: %q, %v", buf[:n], err)
	}
}
