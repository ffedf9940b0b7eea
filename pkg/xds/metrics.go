package xds

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	nacks     *prometheus.CounterVec
	retries   *prometheus.CounterVec
	pushes    *prometheus.CounterVec
	resources *prometheus.GaugeVec
	clients   prometheus.Gauge

	// Children for the served types, resolved once so the push path does not
	// look labels up.
	nackCounters   map[string]prometheus.Counter
	retryCounters  map[string]prometheus.Counter
	pushCounters   map[string]prometheus.Counter
	resourceGauges map[string]prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_xds_nacks_total",
			Help: "xDS pushes rejected by a client, by type URL.",
		}, []string{"type_url"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_xds_nack_retries_total",
			Help: "Re-pushes of resources a client rejected before it had what they refer to, by type URL.",
		}, []string{"type_url"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_xds_pushes_total",
			Help: "xDS responses sent to clients, by type URL.",
		}, []string{"type_url"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_xds_resources",
			Help: "Resources currently served, by type URL.",
		}, []string{"type_url"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_xds_connected_clients",
			Help: "Open xDS streams (one per ADS client).",
		}),
	}
	if reg != nil {
		m.nacks = register(reg, m.nacks)
		m.retries = register(reg, m.retries)
		m.pushes = register(reg, m.pushes)
		m.resources = register(reg, m.resources)
		m.clients = register(reg, m.clients)
	}
	m.nackCounters = make(map[string]prometheus.Counter, len(servedTypes))
	m.retryCounters = make(map[string]prometheus.Counter, len(servedTypes))
	m.pushCounters = make(map[string]prometheus.Counter, len(servedTypes))
	m.resourceGauges = make(map[string]prometheus.Gauge, len(servedTypes))
	for _, url := range servedTypes {
		m.nackCounters[url] = m.nacks.WithLabelValues(url)
		m.retryCounters[url] = m.retries.WithLabelValues(url)
		m.pushCounters[url] = m.pushes.WithLabelValues(url)
		m.resourceGauges[url] = m.resources.WithLabelValues(url)
		m.resourceGauges[url].Set(0)
	}
	return m
}

func (m *metrics) nack(typeURL string) {
	if c, ok := m.nackCounters[typeURL]; ok {
		c.Inc()
		return
	}
	m.nacks.WithLabelValues(typeURL).Inc()
}

// nackRetry is only called for served types.
func (m *metrics) nackRetry(typeURL string) { m.retryCounters[typeURL].Inc() }

func (m *metrics) push(typeURL string) {
	if c, ok := m.pushCounters[typeURL]; ok {
		c.Inc()
		return
	}
	m.pushes.WithLabelValues(typeURL).Inc()
}

// register registers c, or returns the collector already registered under
// the same description, so two Servers on one registry share their metrics
// instead of panicking.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}
