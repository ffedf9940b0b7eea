package xdsclient

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	updates     *prometheus.CounterVec
	connected   prometheus.Gauge
	lastApplied prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_proxy_xds_updates_total",
			Help: "xDS responses handled, by type and result (ack or nack).",
		}, []string{"type_url", "result"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_proxy_xds_connected",
			Help: "1 while a stream to the xDS server is open.",
		}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_proxy_xds_last_applied_timestamp_seconds",
			Help: "When the proxy last applied a complete config.",
		}),
	}
	if reg != nil {
		m.updates = register(reg, m.updates)
		m.connected = register(reg, m.connected)
		m.lastApplied = register(reg, m.lastApplied)
	}
	return m
}

// register shares an already registered collector, so several clients in
// one process (tests, weir run) report into the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

func (m *metrics) update(typeURL, result string) { m.updates.WithLabelValues(typeURL, result).Inc() }

func (m *metrics) setConnected(v bool) {
	if v {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m *metrics) applied() { m.lastApplied.Set(float64(time.Now().Unix())) }
