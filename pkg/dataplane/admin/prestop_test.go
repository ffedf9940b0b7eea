package admin

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// gatewayPreStop returns the preStop command of the gateway Deployment in
// the release manifests.
func gatewayPreStop(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../../config/500-gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil || d.Kind != "Deployment" || d.Name != "weir-gateway" {
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
			t.Fatal("the gateway container has no preStop exec hook")
		}
		return c.Lifecycle.PreStop.Exec.Command
	}
	t.Fatal("no weir-gateway Deployment in config/500-gateway.yaml")
	return nil
}

// TestGatewayPreStopDrains runs the release preStop hook, as written, with
// the shell and bash, against an admin interface that answers like
// Envoy's: it must POST /drain_listeners?graceful, and a drain that fails
// must still leave the sleep. Only the admin port and the sleep are
// changed, so the test does not wait 45 seconds.
func TestGatewayPreStopDrains(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash here")
	}
	cmd := gatewayPreStop(t)
	script := cmd[len(cmd)-1]
	if !strings.Contains(script, "/dev/tcp/127.0.0.1/9901") || !strings.Contains(script, "sleep 45") {
		t.Fatalf("preStop %q no longer calls the admin port 9901 and sleeps 45 s; update this test", script)
	}

	run := func(t *testing.T, h http.Handler) string {
		srv := httptest.NewServer(h)
		defer srv.Close()
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		s := strings.ReplaceAll(script, "/dev/tcp/127.0.0.1/9901", "/dev/tcp/127.0.0.1/"+port)
		s = strings.ReplaceAll(s, "sleep 45", "echo slept")
		out, err := exec.Command(cmd[0], append(cmd[1:len(cmd)-1], s)...).CombinedOutput()
		if err != nil {
			t.Fatalf("preStop failed: %v\n%s", err, out)
		}
		return string(out)
	}

	t.Run("drains through the admin API", func(t *testing.T) {
		var drained atomic.Int32
		a := New(Options{Ready: func() bool { return true }, OnDrain: func() { drained.Add(1) }})
		out := run(t, a)
		if drained.Load() != 1 {
			t.Errorf("OnDrain called %d times, want 1; output:\n%s", drained.Load(), out)
		}
		if code, body := get(t, a, "/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "DRAINING") {
			t.Errorf("/ready after the preStop = %d %q, want 503 DRAINING", code, body)
		}
		if strings.Contains(out, "failed") || !strings.Contains(out, "slept") {
			t.Errorf("output %q, want only the sleep", out)
		}
	})
	t.Run("a refused drain still sleeps, and says so", func(t *testing.T) {
		out := run(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no", http.StatusNotFound)
		}))
		if !strings.Contains(out, "drain_listeners failed") || !strings.Contains(out, "slept") {
			t.Errorf("output %q, want the failure and the sleep", out)
		}
	})
}

// TestDrainListenersIsEnvoys: POST only, graceful only, once.
func TestDrainListenersIsEnvoys(t *testing.T) {
	var drained atomic.Int32
	a := New(Options{OnDrain: func() { drained.Add(1) }})
	if code, _ := get(t, a, "/drain_listeners?graceful"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET = %d, want 405", code)
	}
	post := func(path string) int {
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		return rec.Code
	}
	if code := post("/drain_listeners"); code != http.StatusBadRequest || drained.Load() != 0 {
		t.Errorf("POST without graceful = %d (drained %d), want 400 and no drain", code, drained.Load())
	}
	if post("/drain_listeners?graceful") != 200 || post("/drain_listeners?graceful") != 200 || drained.Load() != 1 {
		t.Errorf("two graceful drains: OnDrain called %d times, want 1", drained.Load())
	}
}
