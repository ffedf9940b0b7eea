// Package admin owns weir-proxy's admin interface: readiness, Prometheus
// metrics, a dump of the config being served and Go's profiler. It binds
// to loopback by default because it reveals the whole routing config.
package admin

import (
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/xds"
)

// DefaultAddress is where the admin interface listens unless told otherwise.
const DefaultAddress = "127.0.0.1:9901"

// Options are what the admin interface reports on.
type Options struct {
	// Ready reports whether the first complete config is being served.
	Ready func() bool
	// Config returns the config being served, or nil before the first.
	Config func() *dataplane.Resources
	// Gatherer provides /metrics.
	Gatherer prometheus.Gatherer
	// Extra adds handlers, e.g. /status in weir run.
	Extra map[string]http.Handler
	// OnDrain, if set, is called once when POST /drain_listeners?graceful
	// starts a drain, e.g. the proxy's Drain.
	OnDrain func()
}

// Admin serves the admin endpoints.
type Admin struct {
	opts      Options
	draining  atomic.Bool
	drainOnce sync.Once
	mux       *http.ServeMux
}

// New returns the admin handler.
func New(opts Options) *Admin {
	a := &Admin{opts: opts, mux: http.NewServeMux()}
	a.mux.HandleFunc("/ready", a.ready)
	a.mux.Handle("/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("/config_dump", a.configDump)
	a.mux.HandleFunc("/drain_listeners", a.drainListeners)
	// Envoy's admin has /cpuprofiler and /heapprofiler; these are Go's.
	a.mux.HandleFunc("/debug/pprof/", pprof.Index)
	a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	for path, h := range opts.Extra {
		a.mux.Handle(path, h)
	}
	return a
}

// Drain makes /ready fail, so load balancers stop sending new traffic
// while in-flight requests finish.
func (a *Admin) Drain() { a.draining.Store(true) }

func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// drainListeners is Envoy's POST /drain_listeners?graceful, which the
// gateway's preStop hook calls in the release manifests: /ready fails, and
// every response asks its client to reconnect, while the listeners keep
// accepting until the process is told to stop. Without "graceful" Envoy
// closes the listeners at once, which weir-proxy does not offer.
func (a *Admin) drainListeners(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "This endpoint changes state: use POST", http.StatusMethodNotAllowed)
		return
	}
	if !r.URL.Query().Has("graceful") {
		http.Error(w, "weir-proxy drains gracefully only: POST /drain_listeners?graceful", http.StatusBadRequest)
		return
	}
	a.drainOnce.Do(func() {
		a.Drain()
		if a.opts.OnDrain != nil {
			a.opts.OnDrain()
		}
	})
	_, _ = w.Write([]byte("OK\n"))
}

// ready answers like Envoy's /ready: LIVE once configured, else 503.
func (a *Admin) ready(w http.ResponseWriter, _ *http.Request) {
	switch {
	case a.draining.Load():
		http.Error(w, "DRAINING", http.StatusServiceUnavailable)
	case a.opts.Ready != nil && a.opts.Ready():
		_, _ = w.Write([]byte("LIVE\n"))
	default:
		http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
	}
}

func (a *Admin) configDump(w http.ResponseWriter, r *http.Request) {
	var res *dataplane.Resources
	if a.opts.Config != nil {
		res = a.opts.Config()
	}
	if res == nil {
		res = &dataplane.Resources{}
	}
	format := r.URL.Query().Get("format")
	out, err := xds.Dump(ByType(res), format)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if format == "yaml" {
		w.Header().Set("Content-Type", "application/yaml")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	_, _ = w.Write(out)
}

// ByType indexes a proxy config by xDS type URL.
func ByType(r *dataplane.Resources) map[string][]types.Resource {
	out := map[string][]types.Resource{}
	for _, x := range r.Listeners {
		out[resource.ListenerType] = append(out[resource.ListenerType], x)
	}
	for _, x := range r.Routes {
		out[resource.RouteType] = append(out[resource.RouteType], x)
	}
	for _, x := range r.Clusters {
		out[resource.ClusterType] = append(out[resource.ClusterType], x)
	}
	for _, x := range r.Endpoints {
		out[resource.EndpointType] = append(out[resource.EndpointType], x)
	}
	for _, x := range r.Secrets {
		out[resource.SecretType] = append(out[resource.SecretType], x)
	}
	return out
}
