package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

// Resources is a complete set of Envoy resources (state of the world).
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Options configures a Proxy. The zero value is usable.
type Options struct {
	Logger *zap.SugaredLogger
	// Registerer receives the proxy's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// AccessLog receives one JSON line per request; nil disables it.
	AccessLog io.Writer
	// ListenAddress replaces the listeners' socket_address.address
	// (e.g. "127.0.0.1" in tests).
	ListenAddress string
	// PortOffset is added to every non-zero listener port, so that an
	// unprivileged proxy can serve the translator's 80/443 on 8080/8443.
	PortOffset int
	// DrainTimeout bounds how long a removed listener drains before its
	// remaining connections are closed. Default 600s, Envoy's --drain-time-s.
	DrainTimeout time.Duration
	// MaxDownstreamConnections caps open downstream connections per
	// listener, like Envoy's overload manager
	// (envoy.resource_monitors.global_downstream_max_connections): a
	// connection over the cap is closed at accept. Default 50,000; a
	// negative value means no cap.
	MaxDownstreamConnections int
	// MaxIdleUpstreamConnections caps idle upstream HTTP/1.1 connections
	// across all clusters; over it, the longest idle one is closed.
	// Default: a quarter of the open-file limit.
	MaxIdleUpstreamConnections int
}

// defaultMaxDownstreamConnections bounds one listener's connections.
const defaultMaxDownstreamConnections = 50000

// Proxy serves traffic for the last successfully applied Resources.
type Proxy struct {
	opts Options
	// filterScope keeps filters' state across updates.
	filterScope *httpfilter.Scope
	log         *zap.SugaredLogger
	metrics     *metrics
	alog        *accessLogger
	ready       atomic.Bool
	// drainingAll is set by Drain: every response tells its client to
	// reconnect, so a load balancer can move traffic away without errors.
	drainingAll atomic.Bool

	mu        sync.Mutex // serialises Apply/Shutdown; never taken per request
	closed    bool
	listeners map[string]*rtListener
	draining  map[*rtListener]struct{}
	pools     map[string]*upstreamPool
	// The compiled state of the last Apply, reused by the next for what
	// did not change: route tables (to tell a changed configuration, which
	// is validated against the clusters, from an unchanged one), virtual
	// hosts and clusters.
	routeTables map[string]*routeTable
	vhosts      *vhostCache
	clusters    map[string]*clusterState
	// lastCompile counts what the last successful Apply compiled.
	lastCompile CompileStats
	// idle caps idle upstream connections across every cluster's pool.
	idle *idleBudget
	// live are the last Apply's clusters, for filters that call a
	// cluster by name per request (ext_authz).
	live atomic.Pointer[map[string]*cluster]
}

// clusterState is a compiled cluster and the resources it was built from.
type clusterState struct {
	proto   *clusterv3.Cluster
	edsName string // "" unless EDS
	cla     *endpointv3.ClusterLoadAssignment
	c       *cluster
	// secret is the client certificate's Secret, if any: a new one
	// recompiles the cluster.
	secretName string
	secret     *tlsv3.Secret
}

// CompileStats says how much of a configuration an Apply compiled and how
// much it reused unchanged.
type CompileStats struct {
	VirtualHosts, VirtualHostsReused int
	Clusters, ClustersReused         int
}

// LastCompile reports what the last successful Apply compiled.
func (p *Proxy) LastCompile() CompileStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastCompile
}

// New returns a Proxy with no listeners. Call Apply to start serving.
func New(opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 600 * time.Second
	}
	switch {
	case opts.MaxDownstreamConnections == 0:
		opts.MaxDownstreamConnections = defaultMaxDownstreamConnections
	case opts.MaxDownstreamConnections < 0:
		opts.MaxDownstreamConnections = 0
	}
	p := &Proxy{
		filterScope: httpfilter.NewScope(),
		opts:        opts,
		log:         opts.Logger,
		metrics:     newMetrics(opts.Registerer),
		listeners:   map[string]*rtListener{},
		draining:    map[*rtListener]struct{}{},
		pools:       map[string]*upstreamPool{},
	}
	if opts.MaxIdleUpstreamConnections <= 0 {
		opts.MaxIdleUpstreamConnections = defaultIdleBudget()
	}
	p.opts = opts
	p.idle = newIdleBudget(opts.MaxIdleUpstreamConnections)
	p.filterScope.SetClusterDialer(p.dialCluster)
	if opts.AccessLog != nil {
		p.alog = &accessLogger{w: opts.AccessLog}
	}
	return p
}

// Ready reports whether a configuration has been applied successfully.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// ListenerAddr returns the bound address of the named listener, or nil.
func (p *Proxy) ListenerAddr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rl := p.listeners[name]; rl != nil {
		return rl.ln.Addr()
	}
	return nil
}

type snapshot struct {
	listeners map[string]*listenerConf
	pools     map[string]*upstreamPool
	clusters  map[string]*cluster

	routes        map[string]*routeTable
	vhosts        *vhostCache
	clusterStates map[string]*clusterState
	stats         CompileStats
}

// Apply validates and compiles res and, if it is fully supported, swaps it
// in. On error nothing changes and the previous configuration keeps serving;
// the error names the offending resource and field.
func (p *Proxy) Apply(res *Resources) error {
	if res == nil {
		return errors.New("nil resources")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy is shut down")
	}
	snap, err := p.compile(res)
	if err != nil {
		return err
	}

	// Bind every new socket before touching anything, so a bind failure
	// leaves the old configuration intact (Envoy NACKs those too).
	next := make(map[string]*rtListener, len(snap.listeners))
	var opened []*rtListener
	for name, lc := range snap.listeners {
		if old := p.listeners[name]; old != nil && old.bind == lc.bind && old.network == lc.network {
			next[name] = old
			continue
		}
		rl, err := p.bind(lc)
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return fmt.Errorf("listener %q: address: %w", name, err)
		}
		opened = append(opened, rl)
		next[name] = rl
	}

	// Filters find clusters by name per request: the new ones must be
	// there before the routes that name them.
	p.live.Store(&snap.clusters)
	for name, lc := range snap.listeners {
		next[name].conf.Store(lc)
		next[name].drainChangedTunnels(lc)
	}
	for _, rl := range opened {
		if p.drainingAll.Load() {
			rl.srv.SetKeepAlivesEnabled(false)
		}
		go rl.serve()
	}
	for name, old := range p.listeners {
		if next[name] != old {
			p.drain(old)
		}
	}
	p.listeners = next

	for name, pool := range p.pools {
		if snap.pools[name] != pool {
			// In-flight requests keep their connections; only idle ones go.
			pool.close()
		}
	}
	for name, pool := range snap.pools {
		// A reused cluster has the endpoints its pool already retains.
		if prev := p.clusters[name]; prev == nil || prev.c != snap.clusters[name] {
			pool.retain(snap.clusters[name].endpoints)
		}
	}
	p.pools = snap.pools
	p.routeTables, p.vhosts, p.clusters = snap.routes, snap.vhosts, snap.clusterStates
	p.lastCompile = snap.stats
	p.ready.Store(true)
	return nil
}

// Check reports what Apply would refuse in res, without binding or
// serving anything: the config intake alone, for tests and fuzzing.
func (p *Proxy) Check(res *Resources) error {
	if res == nil {
		return errors.New("nil resources")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.compile(res)
	return err
}

func (p *Proxy) compile(res *Resources) (*snapshot, error) {
	var errs []error
	fail := func(kind, name string, err error) {
		errs = append(errs, fmt.Errorf("%s %q: %w", kind, name, err))
	}

	secrets := map[string]*tls.Certificate{}
	secretProtos := make(map[string]*tlsv3.Secret, len(res.Secrets))
	for _, s := range res.Secrets {
		secretProtos[s.GetName()] = s
		if _, dup := secrets[s.GetName()]; dup {
			fail("secret", s.GetName(), errors.New("duplicate name"))
			continue
		}
		cert, err := compileSecret(s)
		if err != nil {
			fail("secret", s.GetName(), err)
			continue
		}
		secrets[s.GetName()] = cert
	}

	clas := make(map[string]*endpointv3.ClusterLoadAssignment, len(res.Endpoints))
	for _, cla := range res.Endpoints {
		if _, dup := clas[cla.GetClusterName()]; dup {
			fail("cluster_load_assignment", cla.GetClusterName(), errors.New("duplicate cluster_name"))
			continue
		}
		clas[cla.GetClusterName()] = cla
	}

	snap := &snapshot{
		listeners:     map[string]*listenerConf{},
		pools:         make(map[string]*upstreamPool, len(res.Clusters)),
		clusters:      make(map[string]*cluster, len(res.Clusters)),
		clusterStates: make(map[string]*clusterState, len(res.Clusters)),
	}
	for _, c := range res.Clusters {
		name := c.GetName()
		if _, dup := snap.clusters[name]; dup {
			fail("cluster", name, errors.New("duplicate name"))
			continue
		}
		// An unchanged cluster (the xDS client keeps the pointers of
		// resources that were not updated) is the same compiled cluster,
		// so the virtual hosts that route to it need no recompile.
		if st := p.clusters[name]; st != nil && st.proto == c && p.pools[name] == st.c.pool && secretProtos[st.secretName] == st.secret {
			if st.edsName == "" || clas[st.edsName] == st.cla {
				snap.pools[name], snap.clusters[name], snap.clusterStates[name] = st.c.pool, st.c, st
				snap.stats.ClustersReused++
				continue
			}
		}
		snap.stats.Clusters++
		spec, err := parseCluster(c, secrets)
		if err != nil {
			fail("cluster", name, err)
			continue
		}
		var addrs []string
		if spec.kind == clusterv3.Cluster_EDS {
			// A cluster whose assignment has not arrived has no
			// endpoints; Envoy answers 503 "no healthy upstream".
			if cla := clas[spec.edsName]; cla != nil {
				addrs, err = parseAssignment(cla, spec.kind, "")
				if err != nil {
					fail("cluster_load_assignment", spec.edsName, err)
					continue
				}
			}
		} else if addrs, err = parseAssignment(spec.inline, spec.kind, "load_assignment"); err != nil {
			fail("cluster", name, err)
			continue
		}
		pool := p.pools[name]
		if pool == nil || pool.key != spec.poolKey() {
			pool = newPool(spec, p.metrics.cluster(name), p.idle)
		}
		snap.pools[name] = pool
		snap.clusters[name] = &cluster{
			name:         name,
			pool:         pool,
			endpoints:    pool.endpointsFor(addrs),
			leastRequest: spec.leastRequest,
			ring:         spec.lazyRing(),
			stats:        pool.stats,

			connectTimeout: spec.connectTimeout,
			upstreamTLS:    spec.tls != nil,
			tls:            spec.tls,
			maxRequests:    spec.maxRequests,
		}
		st := &clusterState{proto: c, c: snap.clusters[name]}
		if spec.tls != nil && spec.tls.secret != "" {
			st.secretName, st.secret = spec.tls.secret, secretProtos[spec.tls.secret]
		}
		if spec.kind == clusterv3.Cluster_EDS {
			st.edsName, st.cla = spec.edsName, clas[spec.edsName]
		}
		snap.clusterStates[name] = st
	}
	// Assignments for unknown clusters are ignored, as Envoy does.

	routes := map[string]*routeTable{}
	vhosts := newVhostCache(p.vhosts)
	vhosts.scope = p.filterScope
	for _, rc := range res.Routes {
		if _, dup := routes[rc.GetName()]; dup {
			fail("route_configuration", rc.GetName(), errors.New("duplicate name"))
			continue
		}
		rt, err := compileRoutes(rc, p.routeTables[rc.GetName()], snap.clusters, vhosts)
		if err != nil {
			fail("route_configuration", rc.GetName(), err)
			continue
		}
		routes[rc.GetName()] = rt
	}

	snap.routes, snap.vhosts = routes, vhosts
	snap.stats.VirtualHosts, snap.stats.VirtualHostsReused = vhosts.compiled, vhosts.reused
	env := &compileEnv{opts: &p.opts, routes: routes, secrets: secrets, clusters: snap.clusters, filterScope: p.filterScope}
	binds := map[string]string{}
	for _, l := range res.Listeners {
		name := l.GetName()
		if _, dup := snap.listeners[name]; dup {
			fail("listener", name, errors.New("duplicate name"))
			continue
		}
		lc, err := compileListener(l, env)
		if err != nil {
			fail("listener", name, err)
			continue
		}
		if other, dup := binds[lc.bind]; dup && !isPortZero(lc.bind) {
			fail("listener", name, fmt.Errorf("address %s is already used by listener %q", lc.bind, other))
			continue
		}
		binds[lc.bind] = name
		lc.stats = p.metrics.listener(name)
		snap.listeners[name] = lc
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return snap, nil
}

func isPortZero(hostport string) bool {
	_, port, _ := net.SplitHostPort(hostport)
	return port == "0"
}

// rtListener is a bound socket plus the http.Server serving it. Its config
// pointer is swapped by Apply; the socket survives as long as the address.
type rtListener struct {
	p       *Proxy
	name    string
	bind    string
	network string
	ln      net.Listener
	srv     *downstreamServer
	conf    atomic.Pointer[listenerConf]

	upMu     sync.Mutex
	upgrades map[*upgradedConn]struct{}
	upWG     sync.WaitGroup
	closing  bool
}

type upgradedConn struct {
	down net.Conn
	back io.Closer
	// tcp is the tcp_proxy chain a TCP tunnel came through, and sni its
	// server name; nil for an HTTP upgrade.
	tcp *tcpProxyConf
	sni string
	// draining is set once the tunnel's chain has changed.
	draining bool
}

// drainChangedTunnels closes, after the drain timeout, the TCP tunnels
// whose filter chain lc no longer has as it was, as Envoy drains the
// connections of a removed or changed filter chain.
func (rl *rtListener) drainChangedTunnels(lc *listenerConf) {
	rl.upMu.Lock()
	defer rl.upMu.Unlock()
	for u := range rl.upgrades {
		if u.tcp == nil || u.draining {
			continue
		}
		if ch := lc.chainForSNI(u.sni); ch != nil && ch.tcp != nil && ch.tcp.key == u.tcp.key {
			continue
		}
		u.draining = true
		time.AfterFunc(rl.p.opts.DrainTimeout, func() {
			u.down.Close()
			u.back.Close()
		})
	}
}

func (p *Proxy) bind(lc *listenerConf) (*rtListener, error) {
	ln, err := net.Listen(lc.network, lc.bind)
	if err != nil {
		return nil, err
	}
	rl := &rtListener{p: p, name: lc.name, bind: lc.bind, network: lc.network, ln: ln, upgrades: map[*upgradedConn]struct{}{}}
	rl.srv = newDownstreamServer(rl, p.opts.MaxDownstreamConnections)
	return rl, nil
}

func (rl *rtListener) serve() {
	err := rl.srv.Serve(rl.ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		rl.p.log.Errorw("listener stopped", "listener", rl.name, "error", err)
	}
}

var errNoFilterChain = errors.New("no filter chain matches the server name")

// chainForClient is the HTTP filter chain that terminates a TLS
// connection, chosen by its ClientHello.
func (rl *rtListener) chainForClient(hello *tls.ClientHelloInfo) (*filterChain, error) {
	ch := rl.conf.Load().httpChainForSNI(hello.ServerName)
	if ch == nil || ch.tlsConfig == nil {
		return nil, errNoFilterChain // the connection is closed, as in Envoy
	}
	_ = hello.Conn.SetReadDeadline(time.Time{})
	return ch, nil
}

func (rl *rtListener) trackUpgrade(u *upgradedConn) bool {
	rl.upMu.Lock()
	defer rl.upMu.Unlock()
	if rl.closing {
		return false
	}
	rl.upgrades[u] = struct{}{}
	rl.upWG.Add(1)
	return true
}

func (rl *rtListener) untrackUpgrade(u *upgradedConn) {
	rl.upMu.Lock()
	defer rl.upMu.Unlock()
	if _, ok := rl.upgrades[u]; ok {
		delete(rl.upgrades, u)
		rl.upWG.Done()
	}
}

// shutdown stops accepting, lets active requests and upgraded connections
// finish until ctx is done, then closes whatever is left.
func (rl *rtListener) shutdown(ctx context.Context) error {
	err := rl.srv.Shutdown(ctx)
	if err != nil {
		rl.srv.Close()
	}
	done := make(chan struct{})
	go func() { rl.upWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	rl.upMu.Lock()
	rl.closing = true
	for u := range rl.upgrades {
		u.down.Close()
		u.back.Close()
	}
	rl.upMu.Unlock()
	return err
}

// drain shuts a removed listener down in the background.
func (p *Proxy) drain(rl *rtListener) {
	p.draining[rl] = struct{}{}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.DrainTimeout)
		defer cancel()
		_ = rl.shutdown(ctx)
		p.mu.Lock()
		delete(p.draining, rl)
		p.mu.Unlock()
	}()
}

// Drain starts draining the way Envoy's drain manager does before a
// restart: listeners keep accepting connections and serving requests, but
// each HTTP/1.1 response carries "Connection: close", each HTTP/2 response
// starts a GOAWAY, and idle HTTP/1.1 connections are closed (an idle HTTP/2
// connection gets its GOAWAY with its next response). Clients then
// reconnect, and reach another gateway once this one has left its Service's
// endpoints. Call Shutdown after the drain period.
func (p *Proxy) Drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drainingAll.Swap(true) {
		return
	}
	for _, rl := range p.listeners {
		rl.srv.SetKeepAlivesEnabled(false)
	}
}

// Draining reports whether Drain was called.
func (p *Proxy) Draining() bool { return p.drainingAll.Load() }

// Shutdown stops all listeners gracefully: no new connections, in-flight
// requests and upgraded connections may finish until ctx is done.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	var all []*rtListener
	for _, rl := range p.listeners {
		all = append(all, rl)
	}
	for rl := range p.draining {
		all = append(all, rl)
	}
	p.listeners = map[string]*rtListener{}
	pools := p.pools
	p.mu.Unlock()

	errc := make(chan error, len(all))
	for _, rl := range all {
		go func() { errc <- rl.shutdown(ctx) }()
	}
	var errs []error
	for range all {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	for _, pool := range pools {
		pool.close()
	}
	return errors.Join(errs...)
}

type zapDebugWriter struct{ log *zap.SugaredLogger }

func (w *zapDebugWriter) Write(b []byte) (int, error) {
	w.log.Debug(string(b))
	return len(b), nil
}
