package standalone

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// networkingIngressYAML is a set of networking.k8s.io Ingresses of class
// weir, in namespace default, with ingress-nginx annotations; backend is
// the Service of host a.example.com's /api path.
func networkingIngressYAML(backend, extraAnnotation string) string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: paths
  annotations: {%s}
spec:
  ingressClassName: weir
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
      - {path: /exact, pathType: Exact, backend: {service: {name: v2, port: {number: 80}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: v2, port: {name: http}}}}
      - {path: /gone, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/x-forwarded-prefix: /svc
    nginx.ingress.kubernetes.io/proxy-body-size: 1k
spec:
  ingressClassName: weir
  rules:
  - host: rw.example.com
    http:
      paths:
      - {path: /svc(/|$)(.*), pathType: ImplementationSpecific, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 3m}
spec:
  ingressClassName: weir
  rules:
  - host: c.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main-canary
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-by-header: x-canary
    nginx.ingress.kubernetes.io/canary-by-cookie: canary
    nginx.ingress.kubernetes.io/canary-weight: "50"
spec:
  ingressClassName: weir
  rules:
  - host: c.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v2, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: cors
  annotations:
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: "https://app.example.com"
    nginx.ingress.kubernetes.io/app-root: /app
spec:
  ingressClassName: weir
  rules:
  - host: cors.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: moved
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://new.example.com$request_uri
spec:
  ingressClassName: weir
  rules:
  - host: old.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: moved-fixed
  annotations:
    nginx.ingress.kubernetes.io/temporal-redirect: https://new.example.com/landing
spec:
  ingressClassName: weir
  rules:
  - host: old.example.com
    http:
      paths:
      - {path: /promo, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: closed
  annotations: {nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8, 192.0.2.1"}
spec:
  ingressClassName: weir
  rules:
  - host: closed.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: open-to-me
  annotations: {nginx.ingress.kubernetes.io/allowlist-source-range: "127.0.0.0/8"}
spec:
  ingressClassName: weir
  rules:
  - host: open.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limited
  annotations: {nginx.ingress.kubernetes.io/limit-rpm: "1", nginx.ingress.kubernetes.io/limit-burst-multiplier: "2"}
spec:
  ingressClassName: weir
  rules:
  - host: limited.example.com
    http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limited-but-me
  annotations: {nginx.ingress.kubernetes.io/limit-rpm: "1", nginx.ingress.kubernetes.io/limit-burst-multiplier: "1", nginx.ingress.kubernetes.io/limit-whitelist: "10.0.0.0/8, 127.0.0.1"}
spec:
  ingressClassName: weir
  rules:
  - host: exempt.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: denied
  annotations: {nginx.ingress.kubernetes.io/denylist-source-range: "127.0.0.1"}
spec:
  ingressClassName: weir
  rules:
  - host: denied.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: slow
  annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: "1", nginx.ingress.kubernetes.io/proxy-send-timeout: "1"}
spec:
  ingressClassName: weir
  rules:
  - host: slow.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: stalled, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: www
  annotations: {nginx.ingress.kubernetes.io/from-to-www-redirect: "true"}
spec:
  ingressClassName: weir
  rules:
  - host: www.shop2.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  ingressClassName: weir
  tls: [{hosts: [secure.example.com], secretName: secure}]
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v2, port: {number: 80}}}}
`, extraAnnotation, backend)
}

// stalledBackendYAML is the Service "stalled", whose one endpoint takes
// requests and never answers them.
func stalledBackendYAML(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close() })
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: stalled, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: stalled-1, namespace: default, labels: {kubernetes.io/service-name: stalled}}
addressType: IPv4
ports: [{name: http, port: %d, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
`, l.Addr().(*net.TCPAddr).Port)
}

// TestRunServesNetworkingIngress: weir run serves networking.k8s.io
// Ingresses with ingress-nginx's semantics on real sockets: element-wise
// Prefix, Exact, ImplementationSpecific as a plain prefix, regex rewrite
// with capture groups, canary by header, cookie and weight in that order,
// CORS preflight, app-root, redirects, ssl-redirect for TLS hosts, 503 for
// a missing Service on its path only; and an Ingress with a snippet is
// refused while its last good version keeps serving.
func TestRunServesNetworkingIngress(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, keyPEM := certPEM(t, key, "secure.example.com")
	write(t, dir, "secret.yaml", secretYAML("secure", chain, keyPEM))
	write(t, dir, "ingress.yaml", networkingIngressYAML("v1", ""))
	write(t, dir, "stalled.yaml", stalledBackendYAML(t))
	g := startRun(t, dir, 20*time.Millisecond)
	port, tlsPort, _, _ := g.Ports()

	eventually(t, "the Ingresses to be served", func() bool {
		code, body, _ := getPath(port, "a.example.com", "/api")
		return code == 200 && body == "v1 /api"
	})
	for _, tc := range []struct {
		host, path string
		code       int
		body       string
	}{
		{"a.example.com", "/api/x", 200, "v1 /api/x"},
		{"a.example.com", "/apix", 404, ""},
		{"a.example.com", "/exact", 200, "v2 /exact"},
		{"a.example.com", "/exact/", 404, ""},
		{"a.example.com", "/implx", 200, "v2 /implx"},
		{"a.example.com", "/gone/x", 503, ""},
		{"rw.example.com", "/svc/foo/bar", 200, "v1 /foo/bar"},
		{"rw.example.com", "/SVC/foo", 200, "v1 /foo"},
		{"rw.example.com", "/svc", 200, "v1 /"},
		{"nobody.example.com", "/", 404, ""},
		// The client is 127.0.0.1.
		{"closed.example.com", "/x", 403, "RBAC: access denied"},
		{"open.example.com", "/x", 200, "v1 /x"},
		{"denied.example.com", "/x", 403, "RBAC: access denied"},
		// proxy-read-timeout: 1 s without a byte from the backend.
		{"slow.example.com", "/", 408, "stream timeout"},
	} {
		code, body, _ := getPath(port, tc.host, tc.path)
		if code != tc.code || tc.body != "" && body != tc.body {
			t.Errorf("%s%s: %d %q, want %d %q", tc.host, tc.path, code, body, tc.code, tc.body)
		}
	}

	// limit-rpm 1 with a burst multiplier of 2 takes 3 requests at once
	// (nginx's burst+1), then answers 503, ingress-nginx's status; each
	// path counts on its own. A whitelisted client is never limited.
	limited := func(host, path string, n int) string {
		var codes []string
		for range n {
			code, _, _ := getPath(port, host, path)
			codes = append(codes, fmt.Sprint(code))
		}
		return strings.Join(codes, " ")
	}
	if got := limited("limited.example.com", "/a", 4); got != "200 200 200 503" {
		t.Errorf("limit-rpm on /a: %s, want 200 200 200 503", got)
	}
	if got := limited("limited.example.com", "/b", 4); got != "200 200 200 503" {
		t.Errorf("limit-rpm on /b: %s, want 200 200 200 503", got)
	}
	if got := limited("exempt.example.com", "/", 5); got != "200 200 200 200 200" {
		t.Errorf("limit-whitelist: %s, want every request served", got)
	}

	// proxy-body-size: 1m by default, as in ingress-nginx; 413 above it.
	post := func(host, path string, size int) int {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(strings.Repeat("x", size)))
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		host, path string
		size, code int
	}{
		{"a.example.com", "/api", 1 << 20, 200},
		{"a.example.com", "/api", 1<<20 + 1, 413},
		{"rw.example.com", "/svc/x", 1024, 200},
		{"rw.example.com", "/svc/x", 1025, 413},
		// Past the 1 MiB a filter may hold by default: the limit raises it.
		{"c.example.com", "/", 3 << 20, 200},
		{"c.example.com", "/", 3<<20 + 1, 413},
	} {
		if code := post(tc.host, tc.path, tc.size); code != tc.code {
			t.Errorf("POST %d bytes to %s%s: %d, want %d", tc.size, tc.host, tc.path, code, tc.code)
		}
	}

	// Canary: the header decides first, then the cookie, then the weight.
	canary := func(header, cookie string) string {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		req.Host = "c.example.com"
		if header != "" {
			req.Header.Set("x-canary", header)
		}
		if cookie != "" {
			req.Header.Set("Cookie", "a=b; canary="+cookie+"; c=d")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Fields(string(b))[0]
	}
	for _, tc := range []struct{ header, cookie, want string }{
		{"always", "", "v2"}, {"never", "", "v1"}, {"never", "always", "v1"}, {"always", "never", "v2"},
		{"", "always", "v2"}, {"", "never", "v1"}, {"other", "never", "v1"},
	} {
		for range 20 {
			if got := canary(tc.header, tc.cookie); got != tc.want {
				t.Fatalf("header %q, cookie %q: served by %s, want %s", tc.header, tc.cookie, got, tc.want)
			}
		}
	}
	seen := map[string]int{}
	for range 400 {
		seen[canary("", "")]++
	}
	// 50 %: outside 140 to 260 of 400 is a one-in-10^9 event for a fair split.
	if seen["v2"] < 140 || seen["v2"] > 260 || seen["v1"]+seen["v2"] != 400 {
		t.Errorf("canary-weight 50 spread 400 requests as %v", seen)
	}

	// CORS: a preflight is answered at the gateway, for the allowed origin only.
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, fmt.Sprintf("http://127.0.0.1:%d/x", port), nil)
		req.Host = "cors.example.com"
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "PUT")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(string(b), "v1") {
			t.Errorf("the preflight from %s reached the backend", origin)
		}
		return resp
	}
	if resp := preflight("https://app.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PUT") || resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
		resp.Header.Get("Access-Control-Max-Age") != "1728000" {
		t.Errorf("preflight from an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := preflight("https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin was allowed: %v", resp.Header)
	}

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirect := func(host, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
		req.Host = host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	for _, tc := range []struct {
		host, path string
		code       int
		location   string
	}{
		{"cors.example.com", "/", 302, "http://cors.example.com/app"},
		{"old.example.com", "/a/b?q=1", 301, "https://new.example.com/a/b?q=1"},
		{"old.example.com", "/promo/x?q=1", 302, "https://new.example.com/landing"},
		{"secure.example.com", "/p?q=1", 308, "https://secure.example.com/p?q=1"},
		{"shop2.example.com", "/p?q=1", 308, "http://www.shop2.example.com/p?q=1"},
	} {
		if code, loc := redirect(tc.host, tc.path); code != tc.code || loc != tc.location {
			t.Errorf("%s%s: %d to %q, want %d to %q", tc.host, tc.path, code, loc, tc.code, tc.location)
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "secure.example.com", InsecureSkipVerify: true}}} //nolint:gosec // a self-signed test certificate
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/p", tlsPort), nil)
	req.Host = "secure.example.com"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "v2 /p" || resp.TLS.PeerCertificates[0].Subject.CommonName != "secure.example.com" {
		t.Errorf("https://secure.example.com/p: %d %q", resp.StatusCode, b)
	}

	// A snippet is refused: the last good version keeps serving, and the
	// report says why.
	write(t, dir, "ingress.yaml", networkingIngressYAML("v2", `nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers X: y;"`))
	eventually(t, "the snippet to be refused", func() bool {
		for _, l := range g.Report().NetworkingIngress {
			if strings.Contains(l, "refused: Ingress default/paths: nginx.ingress.kubernetes.io/configuration-snippet") {
				return true
			}
		}
		return false
	})
	if code, body, _ := getPath(port, "a.example.com", "/api"); code != 200 || body != "v1 /api" {
		t.Errorf("while refused, /api: %d %q; want the last good version, v1", code, body)
	}
	write(t, dir, "ingress.yaml", networkingIngressYAML("v2", ""))
	eventually(t, "the fixed Ingress to be served", func() bool {
		code, body, _ := getPath(port, "a.example.com", "/api")
		return code == 200 && body == "v2 /api"
	})
}

// TestIngressAndKIngressShareDomains: an Ingress host that an older
// KIngress serves is left out and the report says so; once the KIngress
// is gone, the Ingress takes the host without any Ingress changing.
func TestIngressAndKIngressShareDomains(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	// The KIngress has no creationTimestamp: it is the older.
	write(t, dir, "kingress.yaml", kingressYAML("shared.example.com", 100, 0))
	write(t, dir, "ingress.yaml", `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  ingressClassName: weir
  rules:
  - host: shared.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v2, port: {number: 80}}}}
`)
	g := startRun(t, dir, 20*time.Millisecond)
	port, _, _, _ := g.Ports()
	eventually(t, "the KIngress to serve the host", func() bool {
		code, body, _ := getPath(port, "shared.example.com", "/x")
		return code == 200 && strings.HasPrefix(body, "v1 ")
	})
	eventually(t, "the report to name the conflict", func() bool {
		for _, l := range g.Report().NetworkingIngress {
			if strings.Contains(l, "Ingress default/late: spec.rules: host shared.example.com is not served") && strings.Contains(l, "KIngress/default/hello") {
				return true
			}
		}
		return false
	})
	if err := os.Remove(filepath.Join(dir, "kingress.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Ingress to take the host", func() bool {
		code, body, _ := getPath(port, "shared.example.com", "/x")
		return code == 200 && body == "v2 /x"
	})
}

// TestIngressMirror: mirror-target copies each request, path and query
// included, to the target the operator allowed, whose answer is dropped;
// the Host of the copy gets "-shadow", as Envoy's mirroring does.
func TestIngressMirror(t *testing.T) {
	copies := make(chan string, 10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mirror := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		copies <- r.Host + " " + r.URL.RequestURI()
		w.WriteHeader(http.StatusTeapot)
	})}
	go func() { _ = mirror.Serve(l) }()
	t.Cleanup(func() { mirror.Close() })

	dir := t.TempDir()
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	write(t, dir, "ingress.yaml", fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: mirrored
  annotations: {nginx.ingress.kubernetes.io/mirror-target: "http://%s$request_uri"}
spec:
  ingressClassName: weir
  rules:
  - host: mirrored.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
`, l.Addr()))
	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond, MirrorTargetHosts: []string{"127.0.0.1"}})
	port, _, _, _ := g.Ports()
	eventually(t, "the Ingress to be served", func() bool {
		code, body, _ := getPath(port, "mirrored.example.com", "/a?b=c")
		return code == 200 && body == "v1 /a"
	})
	select {
	case got := <-copies:
		if got != "mirrored.example.com-shadow /a?b=c" {
			t.Errorf("the mirror got %q, want the request's path and query for mirrored.example.com-shadow", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the mirror got no copy")
	}
}

// TestIngressHTTPSBackends checks backend-protocol HTTPS with the
// proxy-ssl-* annotations against a real TLS backend: by default nothing
// is verified and no SNI is sent, as in ingress-nginx; proxy-ssl-secret's
// pair is presented as a client certificate; proxy-ssl-verify checks the
// backend's certificate against the Secret's ca.crt and proxy-ssl-name,
// and a backend that fails the check is never sent the request (503).
func TestIngressHTTPSBackends(t *testing.T) {
	backendKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	backendChain, backendKeyPEM := certPEM(t, backendKey, "backend.internal")
	backendCert, err := tls.X509KeyPair(backendChain, backendKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{backendCert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		client := "none"
		if cs := r.TLS.PeerCertificates; len(cs) > 0 {
			client = cs[0].Subject.CommonName
		}
		fmt.Fprintf(w, "sni=%q client=%s", r.TLS.ServerName, client)
	})}
	go func() { _ = backend.Serve(l) }()
	t.Cleanup(func() { backend.Close() })

	clientKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	clientChain, clientKeyPEM := certPEM(t, clientKey, "gateway-client")
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCA, _ := certPEM(t, otherKey, "backend.internal")
	secret := func(name string, ca []byte) string {
		b64 := base64.StdEncoding.EncodeToString
		return fmt.Sprintf("---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s, ca.crt: %s}\n",
			name, b64(clientChain), b64(clientKeyPEM), b64(ca))
	}
	ingress := func(name, annotations string) string {
		return fmt.Sprintf(`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: %[1]s
  annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS, %[2]s}
spec:
  ingressClassName: weir
  rules:
  - host: %[1]s.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: secure, port: {number: 443}}}}
`, name, annotations)
	}
	const verify = `nginx.ingress.kubernetes.io/proxy-ssl-verify: "on", nginx.ingress.kubernetes.io/proxy-ssl-server-name: "on"`
	dir := t.TempDir()
	write(t, dir, "backend.yaml", serviceYAML("default", "secure", "https", 443, l.Addr().(*net.TCPAddr).Port, "127.0.0.1")+
		secret("backend-ca", backendChain)+secret("other-ca", otherCA))
	write(t, dir, "ingress.yaml", ingress("insecure", "")+
		ingress("verified", verify+`, nginx.ingress.kubernetes.io/proxy-ssl-secret: default/backend-ca, nginx.ingress.kubernetes.io/proxy-ssl-name: backend.internal`)+
		ingress("chain-only", `nginx.ingress.kubernetes.io/proxy-ssl-verify: "on", nginx.ingress.kubernetes.io/proxy-ssl-secret: backend-ca`)+
		ingress("wrong-ca", verify+`, nginx.ingress.kubernetes.io/proxy-ssl-secret: default/other-ca, nginx.ingress.kubernetes.io/proxy-ssl-name: backend.internal`)+
		ingress("wrong-name", verify+`, nginx.ingress.kubernetes.io/proxy-ssl-secret: default/backend-ca, nginx.ingress.kubernetes.io/proxy-ssl-name: other.internal`))
	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond})
	port, _, _, _ := g.Ports()
	eventually(t, "the Ingresses to be served", func() bool {
		code, _, _ := getPath(port, "wrong-name.example.com", "/")
		return code == 503
	})
	for _, tc := range []struct {
		host string
		code int
		body string
	}{
		{"insecure.example.com", 200, `sni="" client=none`},
		{"verified.example.com", 200, `sni="backend.internal" client=gateway-client`},
		{"chain-only.example.com", 200, `sni="" client=gateway-client`},
		{"wrong-ca.example.com", 503, ""},
		{"wrong-name.example.com", 503, ""},
	} {
		before := served.Load()
		code, body, _ := getPath(port, tc.host, "/")
		if code != tc.code || tc.body != "" && body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.host, code, body, tc.code, tc.body)
		}
		if reached := served.Load() != before; reached != (tc.code == 200) {
			t.Errorf("%s: the backend was reached: %v", tc.host, reached)
		}
	}
}

// TestIngressStickySessions checks affinity: cookie through weir run
// against a Service with two endpoints: the first answer sets
// INGRESSCOOKIE for the path, and every request that carries it reaches
// the endpoint the first did; without it, both endpoints are used.
func TestIngressStickySessions(t *testing.T) {
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := first.Addr().(*net.TCPAddr).Port
	second, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("no second loopback address with port %d: %v", port, err)
	}
	for _, l := range []net.Listener{first, second} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		})}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { srv.Close() })
	}
	dir := t.TempDir()
	write(t, dir, "sticky.yaml", serviceYAML("default", "pair", "http", 80, port, "127.0.0.1", "127.0.0.2")+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  annotations: {nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/session-cookie-max-age: "600"}
spec:
  ingressClassName: weir
  rules:
  - host: sticky.example.com
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: pair, port: {number: 80}}}}
`)
	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond})
	gw, _, _, _ := g.Ports()
	send := func(cookie string) (string, string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/app/x", gw), nil)
		req.Host = "sticky.example.com"
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", ""
		}
		return string(b), resp.Header.Get("Set-Cookie")
	}
	eventually(t, "the Ingress to be served", func() bool { got, _ := send(""); return got != "" })
	endpoints := map[string]bool{}
	for i := range 40 {
		// Each new connection has its own port, so its own cookie.
		http.DefaultClient.CloseIdleConnections()
		got, set := send("")
		value, attrs, _ := strings.Cut(set, ";")
		if !strings.HasPrefix(value, "INGRESSCOOKIE=") || attrs != " Max-Age=600; Path=/app; HttpOnly" {
			t.Fatalf("Set-Cookie %q, want INGRESSCOOKIE for /app", set)
		}
		endpoints[got] = true
		for range 3 {
			if again, set := send(value); again != got || set != "" {
				t.Fatalf("client %d with its cookie reached %s (Set-Cookie %q), first %s", i, again, set, got)
			}
		}
	}
	if len(endpoints) != 2 {
		t.Errorf("40 clients reached %v; want both endpoints used", endpoints)
	}
}

// TestIngressTrustedForwardedFor checks --xff-num-trusted-hops: behind one
// trusted proxy, the client whose address the allow-lists and rate limits
// judge is the last X-Forwarded-For entry, not the proxy; without it, the
// header is not believed.
func TestIngressTrustedForwardedFor(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "backends.yaml", backendsYAML(pathBackend(t, "v1"), pathBackend(t, "v2")))
	write(t, dir, "ingress.yaml", `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  annotations: {nginx.ingress.kubernetes.io/denylist-source-range: "192.0.2.0/24", nginx.ingress.kubernetes.io/limit-rpm: "1", nginx.ingress.kubernetes.io/limit-burst-multiplier: "1"}
spec:
  ingressClassName: weir
  rules:
  - host: guarded.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}
`)
	send := func(port int, xff string) int {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		req.Host = "guarded.example.com"
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	trusting := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond, XffNumTrustedHops: 1})
	port, _, _, _ := trusting.Ports()
	eventually(t, "the Ingress to be served", func() bool { return send(port, "198.51.100.1") == 200 })
	if code := send(port, "203.0.113.7, 192.0.2.5"); code != 403 {
		t.Errorf("a denied client behind the trusted proxy: %d, want 403", code)
	}
	// Each client has its own bucket of 2 (burst 1+1); the first client
	// already spent one.
	var codes []int
	for _, xff := range []string{"198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.2"} {
		codes = append(codes, send(port, xff))
	}
	if fmt.Sprint(codes) != "[200 503 200 200]" {
		t.Errorf("clients told apart by X-Forwarded-For: %v, want [200 503 200 200]", codes)
	}

	untrusting := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond})
	port, _, _, _ = untrusting.Ports()
	// Served (200) though X-Forwarded-For names a denied address: the
	// client is the connection's peer.
	eventually(t, "the Ingress to be served without believing X-Forwarded-For", func() bool { return send(port, "192.0.2.5") == 200 })
}

// TestIngressExternalAuth checks auth-url through weir run: each request
// is checked by the Service auth-url names, in another namespace the
// operator allows (until then the path answers 503); a
// refused one gets the service's answer and never reaches the backend,
// an admitted one reaches it with auth-response-headers copied on; the
// check is sent to the URL's path with the original URL beside it.
func TestIngressExternalAuth(t *testing.T) {
	var checked atomic.Value
	auth := serveAuth(t, func(w http.ResponseWriter, r *http.Request) {
		checked.Store(r.URL.RequestURI() + " " + r.Header.Get("X-Original-URL"))
		if r.Header.Get("Authorization") == "Bearer anonymous" {
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-Request-User", "alice")
	})
	var reached atomic.Int32
	app := serveAuth(t, func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "hello "+r.Header.Get("X-Auth-Request-User"))
	})
	dir := t.TempDir()
	write(t, dir, "services.yaml", serviceYAML("auth-system", "oauth2-proxy", "http", 4180, auth, "127.0.0.1")+serviceYAML("default", "app", "http", 80, app, "127.0.0.1")+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: private
  annotations:
    nginx.ingress.kubernetes.io/auth-url: http://oauth2-proxy.auth-system.svc.cluster.local:4180/oauth2/auth
    nginx.ingress.kubernetes.io/auth-response-headers: X-Auth-Request-User
spec:
  ingressClassName: weir
  rules:
  - host: private.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
`)
	var port int
	send := func(token string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/page?q=1", port), nil)
		req.Host = "private.example.com"
		req.Header.Set("X-Auth-Request-User", "mallory")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	// The service is in another namespace: only the operator may allow it.
	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond})
	port, _, _, _ = g.Ports()
	eventually(t, "the Ingress to be served", func() bool { code, _, _ := send("good"); return code == 503 })
	g = startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond, AuthServiceNamespaces: []string{"auth-system"}})
	port, _, _, _ = g.Ports()
	eventually(t, "the Ingress to be served", func() bool { code, _, _ := send(""); return code == 401 })
	if reached.Load() != 0 {
		t.Fatalf("a refused request reached the backend")
	}
	if _, _, h := send("bad"); h.Get("Www-Authenticate") != "Bearer" {
		t.Errorf("the service's challenge did not reach the client: %v", h)
	}
	if code, body, _ := send("good"); code != 200 || body != "hello alice" {
		t.Errorf("admitted: %d %q, want the backend with X-Auth-Request-User", code, body)
	}
	if code, body, _ := send("anonymous"); code != 200 || body != "hello " {
		t.Errorf("admitted with no user: %d %q; the client's own X-Auth-Request-User must not pass", code, body)
	}
	if got := checked.Load(); got != "/oauth2/auth http://private.example.com/page?q=1" {
		t.Errorf("the check was %q", got)
	}
}

// serveAuth serves h on a loopback port and returns the port.
func serveAuth(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// serviceYAML is a Service with one port and an EndpointSlice of addrs
// listening on port.
func serviceYAML(ns, name, portName string, servicePort, port int, addrs ...string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec: {ports: [{name: %[3]s, port: %[4]d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[2]s-1, namespace: %[1]s, labels: {kubernetes.io/service-name: %[2]s}}
addressType: IPv4
ports: [{name: %[3]s, port: %[5]d, protocol: TCP}]
endpoints: [{addresses: [%[6]s], conditions: {ready: true}}]
`, ns, name, portName, servicePort, port, strings.Join(addrs, ", "))
}

// TestRunServesCustomHTTPErrors: with custom-http-errors and
// default-backend, weir run's gateway replaces the backend's 404 and the
// gateway's own 503 (a Service that does not exist) with the default
// backend's page, as ingress-nginx does: asked for "/" with the query and
// X-Code, X-Original-URI, X-Format, X-Namespace, X-Ingress-Name,
// X-Service-Name and X-Service-Port. Other codes, and other Ingresses of
// the host, keep their answers.
func TestRunServesCustomHTTPErrors(t *testing.T) {
	app := serveAuth(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/app/missing", "/plain/missing", "/missing":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "app 404")
		case "/app/teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			io.WriteString(w, "app "+r.URL.Path)
		}
	})
	pages := serveAuth(t, func(w http.ResponseWriter, r *http.Request) {
		code := 200
		fmt.Sscanf(r.Header.Get("X-Code"), "%d", &code)
		w.WriteHeader(code)
		fmt.Fprintf(w, "page %s %s code=%s uri=%s format=%s ns=%s ingress=%s service=%s port=%s",
			r.Method, r.URL.RequestURI(), r.Header.Get("X-Code"), r.Header.Get("X-Original-URI"), r.Header.Get("X-Format"),
			r.Header.Get("X-Namespace"), r.Header.Get("X-Ingress-Name"), r.Header.Get("X-Service-Name"), r.Header.Get("X-Service-Port"))
	})
	// The internal name of e.example.com's error pages, as anyone can
	// work it out.
	h := fnv.New64a()
	h.Write([]byte("e.example.com"))
	internal := fmt.Sprintf("pages.default.%016x.custom-http-errors.weir.invalid", h.Sum64())
	dir := t.TempDir()
	write(t, dir, "backends.yaml", serviceYAML("default", "app", "http", 80, app, "127.0.0.1")+serviceYAML("default", "pages", "http", 80, pages, "127.0.0.1"))
	write(t, dir, "ingress.yaml", `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: with-pages
  annotations:
    nginx.ingress.kubernetes.io/custom-http-errors: "404,503"
    nginx.ingress.kubernetes.io/default-backend: pages
spec:
  ingressClassName: weir
  rules:
  - host: e.example.com
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
      - {path: /gone, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: without
spec:
  ingressClassName: weir
  rules:
  - host: e.example.com
    http:
      paths:
      - {path: /plain, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewritten
  annotations:
    nginx.ingress.kubernetes.io/custom-http-errors: "404"
    nginx.ingress.kubernetes.io/default-backend: pages
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: weir
  rules:
  - host: r.example.com
    http:
      paths:
      - {path: /svc(/|$)(.*), pathType: ImplementationSpecific, backend: {service: {name: app, port: {number: 80}}}}
---
# Older than with-pages, and claims the name of its error pages.
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: squatter
  creationTimestamp: "2020-01-01T00:00:00Z"
spec:
  ingressClassName: weir
  rules:
  - host: `+internal+`
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
`)
	g := startRun(t, dir, 20*time.Millisecond)
	port, _, _, _ := g.Ports()
	eventually(t, "the Ingresses to be served", func() bool {
		code, body, _ := getPath(port, "e.example.com", "/app/x")
		return code == 200 && body == "app /app/x"
	})
	for _, tc := range []struct {
		host, path string
		code       int
		body       string
	}{
		{"e.example.com", "/app/missing?q=1", 404, "page GET /?q=1 code=404 uri=/app/missing?q=1 format=text/html ns=default ingress=with-pages service=app port=80"},
		{"e.example.com", "/gone", 503, "page GET / code=503 uri=/gone format=text/html ns=default ingress=with-pages service=missing port=80"},
		{"e.example.com", "/app/teapot", 418, ""},
		{"e.example.com", "/plain/missing", 404, "app 404"},
		// X-Original-URI is the request's, not the rewritten path.
		{"r.example.com", "/svc/missing", 404, "page GET / code=404 uri=/svc/missing format=text/html ns=default ingress=rewritten service=app port=80"},
		// The error pages' virtual host is the gateway's alone: a
		// client naming it reaches neither it nor the squatter's.
		{internal, "/", 404, ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, tc.path), nil)
		req.Host = tc.host
		req.Header.Set("Accept", "text/html")
		req.Header.Set("X-Code", "200")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || string(b) != tc.body {
			t.Errorf("%s%s: %d %q, want %d %q", tc.host, tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
	}
	// Even with the header the gateway's redirect sets, a client needs
	// its token.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = internal
	req.Header.Set("X-Weir-Internal-Token", "guess")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("a guessed token: %v %v", resp, err)
	}
}
