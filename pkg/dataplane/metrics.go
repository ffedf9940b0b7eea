package dataplane

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// codeLabels avoids formatting status codes on the hot path.
var codeLabels = func() [600]string {
	var out [600]string
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}()

func codeLabel(code int) string {
	if code < 0 || code >= len(codeLabels) {
		return "0"
	}
	return codeLabels[code]
}

type metrics struct {
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	upstreamRequests *prometheus.CounterVec
	connectErrors    *prometheus.CounterVec
	// codecErrors are requests the HTTP/1.1 codec refused (400, 408, 413,
	// 426, 431, 501) by listener and code.
	codecErrors *prometheus.CounterVec
	// connRejected are connections closed at accept by the connection limit.
	connRejected prometheus.Counter

	mu        sync.Mutex
	listeners map[string]*listenerStats
	clusters  map[string]*clusterStats
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_proxy_requests_total",
			Help: "Downstream requests by listener and response code.",
		}, []string{"listener", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weir_proxy_request_duration_seconds",
			Help:    "Downstream request duration, from headers received to response complete.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"listener"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_proxy_upstream_requests_total",
			Help: "Upstream responses by cluster and response code.",
		}, []string{"cluster", "code"}),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_proxy_upstream_connect_errors_total",
			Help: "Failed upstream connection attempts by cluster.",
		}, []string{"cluster"}),
		codecErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_proxy_downstream_codec_errors_total",
			Help: "Downstream requests refused by the HTTP/1.1 codec, by listener and response code.",
		}, []string{"listener", "code"}),
		connRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_proxy_downstream_connections_rejected_total",
			Help: "Downstream connections closed at accept because the connection limit was reached.",
		}),
		listeners: map[string]*listenerStats{},
		clusters:  map[string]*clusterStats{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.upstreamRequests, m.connectErrors, m.codecErrors, m.connRejected)
	}
	return m
}

// codeCounters caches one counter per status code so the hot path is a
// plain atomic load plus the counter's own atomic add.
type codeCounters struct {
	vec    *prometheus.CounterVec
	label  string
	byCode [600]atomic.Pointer[prometheus.Counter]
}

func (c *codeCounters) inc(code int) {
	if code < 0 || code >= len(c.byCode) {
		code = 0
	}
	p := c.byCode[code].Load()
	if p == nil {
		ctr := c.vec.WithLabelValues(c.label, codeLabel(code))
		c.byCode[code].CompareAndSwap(nil, &ctr)
		p = c.byCode[code].Load()
	}
	(*p).Inc()
}

type listenerStats struct {
	requests codeCounters
	duration prometheus.Observer
}

type clusterStats struct {
	requests      codeCounters
	connectErrors prometheus.Counter
}

func (m *metrics) listener(name string) *listenerStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.listeners[name]
	if s == nil {
		s = &listenerStats{duration: m.duration.WithLabelValues(name)}
		s.requests.vec, s.requests.label = m.requests, name
		m.listeners[name] = s
	}
	return s
}

func (m *metrics) cluster(name string) *clusterStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.clusters[name]
	if s == nil {
		s = &clusterStats{connectErrors: m.connectErrors.WithLabelValues(name)}
		s.requests.vec, s.requests.label = m.upstreamRequests, name
		m.clusters[name] = s
	}
	return s
}
