package dataplane

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCodeCountersConcurrent: requests finishing at once with codes seen
// for the first time each count once, in their own series.
func TestCodeCountersConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	st := m.cluster("c")
	codes := []int{200, 503, 200, 404, 200, 503, 700}
	var wg sync.WaitGroup
	for range 50 {
		for _, code := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.requests.inc(code)
			}()
		}
	}
	wg.Wait()
	for code, want := range map[string]float64{"200": 150, "503": 100, "404": 50, "0": 50} {
		if got := metricValue(t, reg, "weir_proxy_upstream_requests_total", map[string]string{"cluster": "c", "code": code}); got != want {
			t.Errorf("code %s counted %v times, want %v", code, got, want)
		}
	}
	if n := len(*st.requests.seen.Load()); n != 4 {
		t.Errorf("%d cached counters, want 4 (one per code seen)", n)
	}
}
