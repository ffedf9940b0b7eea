package standalone

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// backend answers with its name, echoes the probe hash like queue-proxy,
// and reports the X-Gen header it received as X-Gen-Seen.
func backend(t *testing.T, name string) int {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("K-Network-Hash"); h != "" {
			w.Header().Set("K-Network-Hash", h)
		}
		w.Header().Set("X-Gen-Seen", r.Header.Get("X-Gen"))
		fmt.Fprint(w, name)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).Port
}

func kingressYAML(host string, percent1, percent2 int) string {
	return fmt.Sprintf(`apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [%s]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceName: v1, serviceNamespace: default, servicePort: 80, percent: %d}
        - {serviceName: v2, serviceNamespace: default, servicePort: 80, percent: %d}
`, host, percent1, percent2)
}

func backendsYAML(port1, port2 int) string {
	var b strings.Builder
	for i, p := range []int{port1, port2} {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: v%[1]d, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v%[1]d-1, namespace: default, labels: {kubernetes.io/service-name: v%[1]d}}
addressType: IPv4
ports: [{name: http, port: %[2]d, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
`, i+1, p)
	}
	return b.String()
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, port int, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startRun runs `weir run` on dir, on loopback with free ports, until the
// test ends.
func startRun(t *testing.T, dir string, poll time.Duration) *Gateway {
	t.Helper()
	return startRunWith(t, Options{Paths: []string{dir}, PollInterval: poll})
}

// startRunWith is startRun with more options; the addresses and the
// logger are the test's.
func startRunWith(t *testing.T, opts Options) *Gateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts.ListenAddress, opts.AdminAddress, opts.Logger = "127.0.0.1", "127.0.0.1:0", zaptest.NewLogger(t).Sugar()
	g, err := Start(ctx, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = g.Shutdown(sctx)
		cancel()
	})
	return g
}

func TestRunServesReloadsAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := backend(t, "v1"), backend(t, "v2")
	write(t, dir, "backends.yaml", backendsYAML(p1, p2))
	write(t, dir, "hello.yaml", kingressYAML("hello.example.com", 100, 0))

	g := startRun(t, dir, 20*time.Millisecond)
	port, _, _, _ := g.Ports()

	for i := 0; i < 20; i++ {
		if code, body := get(t, port, "hello.example.com"); code != 200 || body != "v1" {
			t.Fatalf("request %d = %d %q, want 200 v1", i, code, body)
		}
	}
	if code, _ := get(t, port, "other.example.com"); code != 404 {
		t.Errorf("unknown host = %d, want 404", code)
	}
	// Knative's prober sees the new hash through the embedded proxy.
	eventually(t, "the KIngress to become Ready", func() bool {
		r := g.Report()
		return len(r.Ingresses) == 1 && r.Ingresses[0].Ready
	})

	// Hot reload: shift all traffic to v2 by editing the file.
	write(t, dir, "hello.yaml", kingressYAML("hello.example.com", 0, 100))
	eventually(t, "traffic to move to v2", func() bool {
		_, body := get(t, port, "hello.example.com")
		return body == "v2"
	})
	eventually(t, "the new version to become Ready", func() bool {
		r := g.Report()
		return len(r.Ingresses) == 1 && r.Ingresses[0].Ready
	})

	// An invalid edit is reported with file, document and field, and the
	// last good version keeps serving.
	write(t, dir, "hello.yaml", kingressYAML("hello.example.com", 150, 0))
	write(t, dir, "junk.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
	eventually(t, "both errors to be reported", func() bool { return len(g.FileErrors()) == 2 })
	errs := g.FileErrors()
	if e := errs[filepath.Join(dir, "hello.yaml")]; e == nil || !strings.Contains(e.Error(), "document 1 (KIngress default/hello)") || !strings.Contains(e.Error(), "percent") {
		t.Errorf("hello.yaml error = %v", e)
	}
	if e := errs[filepath.Join(dir, "junk.yaml")]; e == nil || !strings.Contains(e.Error(), "junk.yaml: document 1") {
		t.Errorf("junk.yaml error = %v", e)
	}
	for i := 0; i < 20; i++ {
		if code, body := get(t, port, "hello.example.com"); code != 200 || body != "v2" {
			t.Fatalf("after the invalid edit, request %d = %d %q, want the last good config (v2)", i, code, body)
		}
	}

	// /status on the admin interface shows both the status and the errors.
	resp, err := http.Get("http://" + g.AdminAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var report StatusReport
	if err := json.NewDecoder(resp.Body).Decode(&report); err != nil {
		t.Fatal(err)
	}
	if len(report.Ingresses) != 1 || report.Ingresses[0].Name != "hello" || len(report.FileErrors) != 2 {
		t.Errorf("/status = %+v", report)
	}
	// hello.yaml loaded before its bad edit, so its last good version is
	// served; junk.yaml never loaded, and nothing may claim it serves.
	if !report.ServingLastGood[filepath.Join(dir, "hello.yaml")] || report.ServingLastGood[filepath.Join(dir, "junk.yaml")] {
		t.Errorf("servingLastGood = %v, want hello.yaml only", report.ServingLastGood)
	}

	// Removing a file drops what it defined.
	if err := os.Remove(filepath.Join(dir, "hello.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the KIngress to be dropped", func() bool {
		code, _ := get(t, port, "hello.example.com")
		return code == 404
	})
}
