package standalone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func gatewayYAML(port int, from string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - name: http
    port: %d
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: %s}}
`, port, from)
}

func httpRouteYAML(v1Weight, v2Weight int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: default}]
  hostnames: [app.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: v1, namespace: default, port: 80, weight: %d}
    - {name: v2, namespace: default, port: 80, weight: %d}
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-served-by, value: weir}]}
    backendRefs: [{name: v2, namespace: default, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps-to-default, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
`, v1Weight, v2Weight)
}

// pathBackend answers with its name and the path it was asked for.
func pathBackend(t *testing.T, name string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func getPath(port int, host, path string) (int, string, http.Header) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestRunServesGatewayAPI: `weir run` serves a Gateway and an HTTPRoute on
// the Gateway's own port, follows edits, and stops serving a route as soon
// as its listener no longer allows it, saying why.
func TestRunServesGatewayAPI(t *testing.T) {
	dir := t.TempDir()
	gwPort, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	write(t, dir, "gateway.yaml", gatewayYAML(gwPort, "All"))
	write(t, dir, "route.yaml", httpRouteYAML(100, 0))
	g := startRun(t, dir, 20*time.Millisecond)

	eventually(t, "the route to be served on the Gateway's port", func() bool {
		code, body, _ := getPath(gwPort, "app.example.com", "/split/a")
		return code == 200 && body == "v1 /split/a"
	})
	code, body, h := getPath(gwPort, "app.example.com", "/v2/b?q=1")
	if code != 200 || body != "v2 /b" || h.Get("X-Served-By") != "weir" {
		t.Errorf("rewrite route = %d %q %v, want 200 \"v2 /b\" with x-served-by", code, body, h)
	}
	if code, _, _ := getPath(gwPort, "app.example.com", "/v2x"); code != 404 {
		t.Errorf("/v2x = %d, want 404: prefixes match whole segments", code)
	}
	if code, _, _ := getPath(gwPort, "other.example.com", "/split"); code != 404 {
		t.Errorf("a host the route does not name = %d, want 404", code)
	}
	if r := g.Report(); len(r.GatewayAPI) != 0 {
		t.Errorf("not-ready lines for a valid setup: %v", r.GatewayAPI)
	}

	write(t, dir, "route.yaml", httpRouteYAML(0, 1))
	eventually(t, "the split to move to v2", func() bool {
		_, body, _ := getPath(gwPort, "app.example.com", "/split/a")
		return body == "v2 /split/a"
	})

	// The listener stops allowing routes from other namespaces.
	write(t, dir, "gateway.yaml", gatewayYAML(gwPort, "Same"))
	eventually(t, "the route to stop being served", func() bool {
		code, _, _ := getPath(gwPort, "app.example.com", "/split/a")
		return code == 404
	})
	r := g.Report()
	if len(r.GatewayAPI) == 0 || !strings.Contains(strings.Join(r.GatewayAPI, "\n"), "HTTPRoute apps/app parent edge: Accepted=False NotAllowedByListeners") {
		t.Errorf("report does not say why the route is not served: %v", r.GatewayAPI)
	}
}

// grpcBackend serves gRPC health checks; service "who" reports status,
// which tells the backends apart.
func grpcBackend(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("who", status)
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

const grpcRouteYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}, headers: [{name: version, value: b}]}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{method: {type: RegularExpression, method: "Wat.*"}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{method: {service: grpc.health.v1.Health, method: List}}]
    backendRefs: [{name: missing, port: 80}]
`

// TestRunServesGRPCRoute: a real gRPC client through weir-proxy reaches
// the backend each method and header match names, streams, and gets
// UNIMPLEMENTED for a method no rule matches and UNAVAILABLE for a rule
// whose backend does not exist.
func TestRunServesGRPCRoute(t *testing.T) {
	dir := t.TempDir()
	gwPort, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// The Services' ports say nothing of HTTP/2: a GRPCRoute speaks it.
	write(t, dir, "backends.yaml", backendsYAML(grpcBackend(t, healthpb.HealthCheckResponse_SERVING), grpcBackend(t, healthpb.HealthCheckResponse_NOT_SERVING)))
	write(t, dir, "gateway.yaml", gatewayYAML(gwPort, "Same"))
	write(t, dir, "route.yaml", grpcRouteYAML)
	g := startRun(t, dir, 20*time.Millisecond)

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", gwPort), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func(ctx context.Context) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "who"})
		return resp.GetStatus(), status.Code(err)
	}
	eventually(t, "the GRPCRoute to be served", func() bool {
		st, code := check(context.Background())
		return code == codes.OK && st == healthpb.HealthCheckResponse_SERVING
	})
	if st, code := check(metadata.AppendToOutgoingContext(context.Background(), "version", "b")); code != codes.OK || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check with version: b = %v %v, want NOT_SERVING from v2", st, code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "who"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Watch = %v %v, want a SERVING message streamed from v1", resp, err)
	}

	if _, err := client.List(ctx, &healthpb.HealthListRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("List (its backend is missing) = %v, want Unavailable", err)
	}
	if err := conn.Invoke(ctx, "/pkg.Nope/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("a method no rule matches = %v, want Unimplemented", err)
	}
	report := strings.Join(g.Report().GatewayAPI, "\n")
	if !strings.Contains(report, "GRPCRoute default/health parent edge: ResolvedRefs=False BackendNotFound: spec.rules[3].backendRefs[0]") {
		t.Errorf("report does not say which backend is missing:\n%s", report)
	}
}

// TestRunServesTLSPassthrough: a TLSRoute forwards TLS by SNI through
// weir-proxy to a backend that terminates it with its own certificate,
// which the client verifies; a server name no route has is refused. A
// second TLS listener on the same port terminates TLS itself and forwards
// the plain bytes (TLSRouteModeMixed).
func TestRunServesTLSPassthrough(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, keyPEM := certPEM(t, key, "secure.example.com")
	pair, err := tls.X509KeyPair(chain, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s", r.TLS.ServerName)
	})}
	go func() { _ = backend.Serve(ln) }()
	t.Cleanup(func() { backend.Close() })

	dir := t.TempDir()
	gwPort, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// A plain TCP echo for the listener that terminates TLS itself.
	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echoLn.Close() })
	go func() {
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	gwKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gwChain, gwKeyPEM := certPEM(t, gwKey, "plain.example.com")
	write(t, dir, "backends.yaml", backendsYAML(ln.Addr().(*net.TCPAddr).Port, echoLn.Addr().(*net.TCPAddr).Port)+secretYAML("plain-cert", gwChain, gwKeyPEM))
	write(t, dir, "gateway.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: tls, port: %[1]d, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: terminate, port: %[1]d, protocol: TLS, hostname: plain.example.com, tls: {mode: Terminate, certificateRefs: [{name: plain-cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: plain, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: terminate}]
  hostnames: [plain.example.com]
  rules: [{backendRefs: [{name: v2, port: 80}]}]
`, gwPort))
	g := startRun(t, dir, 20*time.Millisecond)

	roots := x509.NewCertPool()
	roots.AddCert(pair.Leaf)
	get := func(sni string) (string, error) {
		tr := &http.Transport{DialTLS: func(network, _ string) (net.Conn, error) {
			return tls.Dial(network, fmt.Sprintf("127.0.0.1:%d", gwPort), &tls.Config{ServerName: sni, RootCAs: roots})
		}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + sni + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	eventually(t, "the TLSRoute to be served", func() bool {
		body, err := get("secure.example.com")
		return err == nil && body == "backend saw secure.example.com"
	})
	if body, err := get("other.example.com"); err == nil {
		t.Errorf("a server name no route has was answered: %q", body)
	}
	// The terminating listener on the same port: the gateway's own
	// certificate, and the plain bytes inside reach the echo.
	gwPair, err := tls.X509KeyPair(gwChain, gwKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	gwRoots := x509.NewCertPool()
	gwRoots.AddCert(gwPair.Leaf)
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", gwPort), &tls.Config{ServerName: "plain.example.com", RootCAs: gwRoots})
	if err != nil {
		t.Fatalf("TLS to the terminating listener: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); string(b) != "ping\n" {
		t.Errorf("echo through the terminating listener = %q, %v", b, err)
	}
	if r := g.Report(); len(r.GatewayAPI) != 0 {
		t.Errorf("not-ready lines for a valid setup: %v", r.GatewayAPI)
	}
}

// TestRunRefusesTheShareOfAnInvalidBackend: an HTTPRoute that splits
// between a Service and one that does not exist answers 500 for the
// missing one's share, as the spec asks, and serves the rest.
func TestRunRefusesTheShareOfAnInvalidBackend(t *testing.T) {
	dir := t.TempDir()
	gwPort, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	write(t, dir, "gateway.yaml", gatewayYAML(gwPort, "Same"))
	write(t, dir, "route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: half, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [half.example.com]
  rules:
  - backendRefs:
    - {name: v1, port: 80, weight: 1}
    - {name: missing, port: 80, weight: 1}
`)
	g := startRun(t, dir, 20*time.Millisecond)
	eventually(t, "the route to be served", func() bool {
		code, _, _ := getPath(gwPort, "half.example.com", "/")
		return code == 200 || code == 500
	})
	codes := map[int]int{}
	for range 200 {
		code, body, _ := getPath(gwPort, "half.example.com", "/")
		codes[code]++
		if code == 200 && body != "v1 /" {
			t.Fatalf("200 from %q", body)
		}
	}
	// Each of 200 requests is a coin toss: both answers come up.
	if codes[200] == 0 || codes[500] == 0 || codes[200]+codes[500] != 200 {
		t.Errorf("answers = %v, want both 200 (v1) and 500 (the missing Service's share)", codes)
	}
	if !strings.Contains(strings.Join(g.Report().GatewayAPI, "\n"), "HTTPRoute default/half parent edge: ResolvedRefs=False BackendNotFound") {
		t.Errorf("report: %v", g.Report().GatewayAPI)
	}
}
