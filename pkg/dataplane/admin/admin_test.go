package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weir-dev/weir/pkg/dataplane"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestAdmin(t *testing.T) {
	var ready atomic.Bool
	var cfg atomic.Pointer[dataplane.Resources]
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "weir_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	a := New(Options{Ready: ready.Load, Config: cfg.Load, Gatherer: reg})

	if code, body := get(t, a, "/ready"); code != 503 || !strings.Contains(body, "PRE_INITIALIZING") {
		t.Errorf("/ready before config = %d %q", code, body)
	}
	if code, body := get(t, a, "/config_dump"); code != 200 || !strings.Contains(body, `"clusters": []`) {
		t.Errorf("/config_dump before config = %d %q", code, body)
	}
	ready.Store(true)
	cfg.Store(&dataplane.Resources{Clusters: []*clusterv3.Cluster{{Name: "default/hello:80"}}})
	if code, body := get(t, a, "/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready = %d %q", code, body)
	}
	if _, body := get(t, a, "/config_dump"); !strings.Contains(body, `"name": "default/hello:80"`) {
		t.Errorf("/config_dump = %q", body)
	}
	if code, _ := get(t, a, "/config_dump?format=toml"); code != 400 {
		t.Errorf("/config_dump?format=toml = %d, want 400", code)
	}
	if _, body := get(t, a, "/metrics"); !strings.Contains(body, "weir_test_total 1") {
		t.Errorf("/metrics = %q", body)
	}
	a.Drain()
	if code, body := get(t, a, "/ready"); code != 503 || !strings.Contains(body, "DRAINING") {
		t.Errorf("/ready while draining = %d %q", code, body)
	}
}
