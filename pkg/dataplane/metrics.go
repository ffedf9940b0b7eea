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

// codeCounters caches the counters of the status codes seen, so the hot
// path is an atomic load, a scan of a few entries and the counter's own
// atomic add. A table of all 600 codes was 4.8 KB per cluster: 48 MB of a
// gateway's heap at 10,000 clusters, for the two or three codes each sees.
type codeCounters struct {
	vec   *prometheus.CounterVec
	label string
	mu    sync.Mutex // serialises additions to seen
	seen  atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code    int
	counter prometheus.Counter
}

func (c *codeCounters) inc(code int) {
	if code < 0 || code >= 600 {
		code = 0
	}
	if seen := c.seen.Load(); seen != nil {
		for _, cc := range *seen {
			if cc.code == code {
				cc.counter.Inc()
				return
			}
		}
	}
	c.add(code).Inc()
}

// add returns code's counter, adding it to seen (copied, so readers never
// see a slice change under them) unless another request just did.
func (c *codeCounters) add(code int) prometheus.Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []codeCounter
	if seen := c.seen.Load(); seen != nil {
		for _, cc := range *seen {
			if cc.code == code {
				return cc.counter
			}
		}
		next = append(make([]codeCounter, 0, len(*seen)+1), *seen...)
	}
	ctr := c.vec.WithLabelValues(c.label, codeLabel(code))
	next = append(next, codeCounter{code: code, counter: ctr})
	c.seen.Store(&next)
	return ctr
}

type listenerStats struct {
	requests codeCounters
	duration prometheus.Observer
}

type clusterStats struct {
	requests codeCounters
	// connectErrors exists, at 0, from the cluster's creation, as Envoy's
	// stats do: a series that first appears at 1 hides that failure from
	// rate() and increase().
	connectErrors prometheus.Counter
	// active counts the cluster's requests in flight, for its circuit
	// breaker; it outlives config updates, as the cluster's name does.
	active atomic.Int64
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
