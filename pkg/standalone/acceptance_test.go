package standalone

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// certPEM returns a self-signed certificate for hosts with the given key.
func certPEM(t *testing.T, key crypto.Signer, hosts ...string) (chain, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: hosts[0]},
		DNSNames:     hosts,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	pub := key.Public()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func secretYAML(name string, chain, key []byte) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
`, name, base64.StdEncoding.EncodeToString(chain), base64.StdEncoding.EncodeToString(key))
}

func ingressYAML(name string, hosts []string, tlsHosts []string, secret string) string {
	q := func(in []string) string {
		out := make([]string, len(in))
		for i, h := range in {
			out[i] = fmt.Sprintf("%q", h)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	s := fmt.Sprintf(`---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: %s
  namespace: default
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: %s
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceName: v1, serviceNamespace: default, servicePort: 80, percent: 100}
`, name, q(hosts))
	if secret != "" {
		s += fmt.Sprintf("  tls:\n  - {hosts: %s, secretName: %s, secretNamespace: default}\n", q(tlsHosts), secret)
	}
	return s
}

func statusOf(g *Gateway, name string) (IngressStatus, bool) {
	for _, s := range g.Report().Ingresses {
		if s.Name == name {
			return s, true
		}
	}
	return IngressStatus{}, false
}

// TestEnvoyRefusalsReachTheObject runs config that a real Envoy would
// refuse, or serve wrongly, through `weir run`: each refused part shows on
// its own KIngress with the field and the reason, and everything else is
// served. Before the acceptance checks, the overlapping server names made
// the whole HTTPS listener a NACK, and the small RSA key a secret Envoy
// never loads.
func TestEnvoyRefusalsReachTheObject(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := backend(t, "v1"), backend(t, "v2")
	write(t, dir, "backends.yaml", backendsYAML(p1, p2))

	good, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	goodChain, goodKey := certPEM(t, good, "*.x.example.com")
	weakChain, weakKey := certPEM(t, weak, "weak.example.com")
	write(t, dir, "secrets.yaml", secretYAML("good", goodChain, goodKey)+secretYAML("weak", weakChain, weakKey))
	write(t, dir, "ingresses.yaml",
		ingressYAML("plain", []string{"plain.example.com", "*.wild.example.com"}, nil, "")+
			// ".x" and "*.x" are one key in Envoy's filter chain manager.
			ingressYAML("dotted", []string{"*.x.example.com"}, []string{".x.example.com", "*.x.example.com"}, "good")+
			ingressYAML("weak", []string{"weak.example.com"}, []string{"weak.example.com"}, "weak")+
			// U+212A KELVIN SIGN lower-cases to "k" with Unicode rules.
			ingressYAML("kelvin", []string{"\u212Aelvin.example.com"}, nil, ""))

	g := startRun(t, dir, 20*time.Millisecond)
	httpPort, httpsPort, _, _ := g.Ports()

	eventually(t, "plain and dotted to become Ready, weak and kelvin to fail", func() bool {
		plain, _ := statusOf(g, "plain")
		dotted, _ := statusOf(g, "dotted")
		weak, _ := statusOf(g, "weak")
		kelvin, _ := statusOf(g, "kelvin")
		return plain.Ready && dotted.Ready && strings.HasPrefix(weak.Status, "UnsupportedCertificate") && strings.HasPrefix(kelvin.Status, "InvalidHost")
	})
	weakStatus, _ := statusOf(g, "weak")
	if !strings.Contains(weakStatus.Status, "spec.tls[0]") || !strings.Contains(weakStatus.Status, "RSA key of 1024 bits") {
		t.Errorf("weak: status %q, want the field spec.tls[0] and the key size", weakStatus.Status)
	}
	kelvin, _ := statusOf(g, "kelvin")
	if !strings.Contains(kelvin.Status, "spec.rules[0]") || !strings.Contains(kelvin.Status, "not ASCII") {
		t.Errorf("kelvin: status %q, want the field spec.rules[0] and why", kelvin.Status)
	}

	// A Host with a port reaches exact and wildcard virtual hosts alike.
	for _, host := range []string{"plain.example.com", "plain.example.com:8080", "a.wild.example.com:8080"} {
		if code, body := get(t, httpPort, host); code != 200 || body != "v1" {
			t.Errorf("Host %q: %d %q, want 200 v1", host, code, body)
		}
	}
	// The Kelvin sign never reaches another host's name.
	if code, _ := get(t, httpPort, "kelvin.example.com"); code != 404 {
		t.Errorf("kelvin.example.com: %d, want 404", code)
	}

	// The HTTPS listener serves the dotted KIngress's certificate.
	pool := x509.NewCertPool()
	block, _ := pem.Decode(goodChain)
	leaf, _ := x509.ParseCertificate(block.Bytes)
	pool.AddCert(leaf)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.x.example.com"}}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/", httpsPort), nil)
	req.Host = "a.x.example.com"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("HTTPS to a.x.example.com: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "v1" {
		t.Errorf("HTTPS a.x.example.com: %d %q, want 200 v1", resp.StatusCode, body)
	}

	// Fixing the key makes weak Ready, with nothing else to do.
	strong, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	strongChain, strongKey := certPEM(t, strong, "weak.example.com")
	write(t, dir, "secrets.yaml", secretYAML("good", goodChain, goodKey)+secretYAML("weak", strongChain, strongKey))
	eventually(t, "weak to become Ready once its key is 2048 bits", func() bool {
		s, _ := statusOf(g, "weak")
		return s.Ready
	})
}

// TestExternalNameHTTPSGoesOutOverTLS: an ExternalName Service port named
// https is called over TLS with its name as SNI, and its certificate is
// verified; before, it went out in cleartext.
func TestExternalNameHTTPSGoesOutOverTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	caChain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	// The backend's certificate is for "localhost", issued by the CA.
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	var sni string
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni = r.TLS.ServerName
		fmt.Fprint(w, "external over tls")
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	up.StartTLS()
	t.Cleanup(up.Close)
	port := up.Listener.Addr().(*net.TCPAddr).Port

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caChain, 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "external.yaml", fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: v1, namespace: default}
spec: {type: ExternalName, externalName: localhost, ports: [{name: https, port: %d}]}
`, port)+strings.Replace(ingressYAML("ext", []string{"ext.example.com"}, nil, ""), "servicePort: 80", fmt.Sprintf("servicePort: %d", port), 1))

	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond, UpstreamTrustedCA: caFile})
	httpPort, _, _, _ := g.Ports()
	eventually(t, "ext to answer over TLS", func() bool {
		code, body := get(t, httpPort, "ext.example.com")
		return code == 200 && body == "external over tls"
	})
	if sni != "localhost" {
		t.Errorf("SNI = %q, want localhost", sni)
	}
}

// TestKIngressRouteHasNoTimeout: a KIngress has no route timeout (Knative
// requires it; revision timeouts are the queue-proxy's), so a backend that
// answers after 20 s, past Envoy's default of 15 s, is served. If translate
// left the timeout out or weir-proxy took 0s for the default, this would be
// a 504 at 15 s.
func TestKIngressRouteHasNoTimeout(t *testing.T) {
	t.Parallel()
	const delay = 20 * time.Second
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
			fmt.Fprint(w, "slow but served")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	port := slow.Listener.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	write(t, dir, "slow.yaml", backendsYAML(port, port)+ingressYAML("slow", []string{"slow.example.com"}, nil, ""))
	g := startRunWith(t, Options{Paths: []string{dir}, PollInterval: 20 * time.Millisecond})
	httpPort, _, _, _ := g.Ports()
	eventually(t, "slow to be Ready", func() bool {
		s, _ := statusOf(g, "slow")
		return s.Ready
	})
	start := time.Now()
	code, body := get(t, httpPort, "slow.example.com")
	if code != 200 || body != "slow but served" || time.Since(start) < delay {
		t.Fatalf("got %d %q after %v, want 200 from the backend after %v", code, body, time.Since(start).Round(time.Millisecond), delay)
	}
}

// TestRunSaysWhatItRead: weir run's report counts what it loaded by kind
// and lists, one line each with file and document, what it skipped: a
// KIngress of another class, a duplicate, an invalid KIngress.
func TestRunSaysWhatItRead(t *testing.T) {
	dir := t.TempDir()
	p1 := backend(t, "v1")
	write(t, dir, "a.yaml", backendsYAML(p1, p1)+ingressYAML("good", []string{"good.example.com"}, nil, "")+
		strings.Replace(ingressYAML("istio", []string{"istio.example.com"}, nil, ""), "weir.ingress.networking.knative.dev", "istio.ingress.networking.knative.dev", 1))
	write(t, dir, "b.yaml", strings.TrimPrefix(ingressYAML("good", []string{"second.example.com"}, nil, ""), "---\n"))
	// A file with an invalid document is not loaded at all (its last good
	// version, here none, would keep serving); it is a file error.
	write(t, dir, "c.yaml", strings.TrimPrefix(strings.Replace(ingressYAML("split", []string{"split.example.com"}, nil, ""), "percent: 100", "percent: 60", 1), "---\n"))
	g := startRun(t, dir, 20*time.Millisecond)
	eventually(t, "good to be Ready", func() bool {
		s, _ := statusOf(g, "good")
		return s.Ready
	})
	r := g.Report()
	if r.Files != 2 || r.Documents["KIngress"] != 3 || r.Documents["Service"] != 2 || r.Documents["EndpointSlice"] != 2 {
		t.Errorf("files %d, documents %v; want 2 files loaded: 3 KIngress, 2 Service, 2 EndpointSlice", r.Files, r.Documents)
	}
	want := []string{
		filepath.Join(dir, "a.yaml") + ": document 6: KIngress default/istio skipped: its networking.knative.dev/ingress.class annotation is \"istio.ingress.networking.knative.dev\"",
		"KIngress default/good is defined in [" + filepath.Join(dir, "a.yaml") + " " + filepath.Join(dir, "b.yaml") + "]; the one in " + filepath.Join(dir, "a.yaml") + " is served",
	}
	for _, w := range want {
		if !slices.ContainsFunc(r.Skipped, func(s string) bool { return strings.HasPrefix(s, w) }) {
			t.Errorf("skipped lines %q\nwant one starting with %q", r.Skipped, w)
		}
	}
	if e := r.FileErrors[filepath.Join(dir, "c.yaml")]; !strings.Contains(e, "document 1 (KIngress default/split)") || !strings.Contains(e, "100") || r.ServingLastGood[filepath.Join(dir, "c.yaml")] {
		t.Errorf("c.yaml error %q (serving a last good version: %v), want the invalid split named and nothing served", e, r.ServingLastGood)
	}
}

// TestPartlyServedIsNotReady: a KIngress that is only partly served is not
// Ready, and its status names the rule and why; the rest is served. Both
// cases pass Knative's validation.
func TestPartlyServedIsNotReady(t *testing.T) {
	dir := t.TempDir()
	p1 := backend(t, "v1")
	twoRules := ingressYAML("dup", []string{"dup.example.com"}, nil, "") +
		"  - hosts: [dup.example.com]\n    visibility: ExternalIP\n    http:\n      paths:\n      - splits:\n        - {serviceName: v2, serviceNamespace: default, servicePort: 80, percent: 100}\n"
	crlf := strings.Replace(ingressYAML("crlf", []string{"crlf.example.com"}, nil, ""), "      - splits:", "      - appendHeaders: {x-a: \"one\\r\\ntwo\"}\n        splits:", 1)
	write(t, dir, "in.yaml", backendsYAML(p1, p1)+ingressYAML("good", []string{"good.example.com"}, nil, "")+twoRules+crlf)
	g := startRun(t, dir, 20*time.Millisecond)
	httpPort, _, _, _ := g.Ports()
	eventually(t, "good Ready, dup and crlf failed", func() bool {
		good, _ := statusOf(g, "good")
		dup, _ := statusOf(g, "dup")
		crlf, _ := statusOf(g, "crlf")
		return good.Ready && strings.HasPrefix(dup.Status, "DomainConflict") && strings.HasPrefix(crlf.Status, "NotServed")
	})
	dup, _ := statusOf(g, "dup")
	if !strings.Contains(dup.Status, `spec.rules[1]`) || !strings.Contains(dup.Status, `domain "dup.example.com" is already served`) {
		t.Errorf("dup: %q, want spec.rules[1] and the domain", dup.Status)
	}
	crlfStatus, _ := statusOf(g, "crlf")
	if !strings.Contains(crlfStatus.Status, "spec.rules[0]") || !strings.Contains(crlfStatus.Status, "left out") {
		t.Errorf("crlf: %q, want spec.rules[0] and what was left out", crlfStatus.Status)
	}
	// The first rule of dup is served; good is served.
	for _, host := range []string{"good.example.com", "dup.example.com"} {
		if code, body := get(t, httpPort, host); code != 200 || body != "v1" {
			t.Errorf("%s: %d %q, want 200 v1", host, code, body)
		}
	}
}
