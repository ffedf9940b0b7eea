package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// cluster is the per-snapshot view of a cluster: its endpoints and LB
// policy. The connection pool behind it outlives snapshots.
type cluster struct {
	name         string
	pool         *upstreamPool
	endpoints    []*endpoint
	leastRequest bool
	// ring is set for RING_HASH.
	ring    *lazyRing
	rr      atomic.Uint64
	stats   *clusterStats
	missing bool // referenced by a route but not configured
	// connectTimeout and upstreamTLS are the spec's, for tcp_proxy.
	connectTimeout time.Duration
	upstreamTLS    bool
	tls            *upstreamTLS
	// maxRequests is the circuit breaker's max_requests: requests to
	// the cluster in flight at once, counted in stats.active.
	maxRequests int64
}

// acquire takes a place among the cluster's requests in flight, or
// reports false when max_requests are already (Envoy's circuit breaker).
func (c *cluster) acquire() bool {
	if c.stats == nil {
		return true
	}
	if c.stats.active.Add(1) > c.maxRequests {
		c.stats.active.Add(-1)
		return false
	}
	return true
}

// release gives the place back.
func (c *cluster) release() {
	if c.stats != nil {
		c.stats.active.Add(-1)
	}
}

// defaultMaxRequests is Envoy's max_requests without a circuit breaker.
const defaultMaxRequests = 1024

// endpoint is shared across snapshots (keyed by address) so that
// least-request counters survive EDS updates.
type endpoint struct {
	addr   string
	active atomic.Int64
}

// upstreamPool owns the HTTP transports of one cluster. It is reused across
// config swaps as long as the settings that shape connections are unchanged,
// so EDS/RDS updates never drop pooled connections.
type upstreamPool struct {
	key   string
	h2c   bool
	main  idleCloser      // h2c, or HTTP/1.1 with the fast path for bodyless requests
	h1    *http.Transport // upgrades (on h2c clusters too: Go has no extended CONNECT client)
	stats *clusterStats
	// shadows counts the mirrored requests in flight to this cluster.
	shadows atomic.Int64

	mu        sync.Mutex
	endpoints map[string]*endpoint
}

func missingCluster(name string) *cluster { return &cluster{name: name, missing: true} }

// liveEndpoint picks an endpoint of a cluster of the current
// configuration, for filters that call services.
func (p *Proxy) liveEndpoint(name string) (*cluster, *endpoint, error) {
	live := p.live.Load()
	if live == nil {
		return nil, nil, fmt.Errorf("cluster %q does not exist", name)
	}
	cl := (*live)[name]
	if cl == nil || cl.missing {
		return nil, nil, fmt.Errorf("cluster %q does not exist", name)
	}
	ep := cl.pick()
	if ep == nil {
		return nil, nil, errNoEndpoint
	}
	return cl, ep, nil
}

// dialCluster connects to an endpoint of a cluster of the current
// configuration, for filters' gRPC services (httpfilter.ClusterDialer).
func (p *Proxy) dialCluster(ctx context.Context, name string) (net.Conn, error) {
	cl, ep, err := p.liveEndpoint(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cl.connectTimeout)
	defer cancel()
	dial := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	if cl.tls != nil {
		// gRPC is HTTP/2: without ALPN of its own, the cluster offers
		// h2, as Envoy's HTTP/2 pool does.
		conf := cl.tls.config()
		if len(conf.NextProtos) == 0 {
			conf.NextProtos = []string{"h2"}
		}
		dial = cl.tls.dialTLSWith(conf, dial)
	}
	c, err := dial(ctx, "tcp", ep.addr)
	if err != nil && cl.stats != nil {
		cl.stats.connectErrors.Inc()
	}
	return c, err
}

// pick returns the next endpoint, or nil when the cluster has none.
func (c *cluster) pick() *endpoint {
	eps := c.endpoints
	switch len(eps) {
	case 0:
		return nil
	case 1:
		return eps[0]
	}
	if c.ring != nil {
		// A ring hash cluster's choice without a key.
		return eps[rand.IntN(len(eps))]
	}
	if c.leastRequest {
		// Envoy's least request for equal weights: power of two random choices.
		a := eps[rand.IntN(len(eps))]
		b := eps[rand.IntN(len(eps))]
		if b.active.Load() < a.active.Load() {
			return b
		}
		return a
	}
	return eps[(c.rr.Add(1)-1)%uint64(len(eps))]
}

// clusterSpec is what determines an upstreamPool's connection behaviour.
type clusterSpec struct {
	name           string
	kind           clusterv3.Cluster_DiscoveryType
	edsName        string
	connectTimeout time.Duration
	leastRequest   bool
	ring           *ringConfig // RING_HASH
	h2c            bool
	family         clusterv3.Cluster_DnsLookupFamily
	inline         *endpointv3.ClusterLoadAssignment
	tls            *upstreamTLS // nil: cleartext
	maxRequests    int64
}

func (s *clusterSpec) poolKey() string {
	tlsKey := ""
	if s.tls != nil {
		tlsKey = s.tls.key
	}
	return fmt.Sprintf("%d/%s/%t/%d/%s", s.kind, s.connectTimeout, s.h2c, s.family, tlsKey)
}

func parseCluster(c *clusterv3.Cluster, secrets map[string]*tls.Certificate) (*clusterSpec, error) {
	if err := pgv(c, ""); err != nil {
		return nil, err
	}
	if err := onlyFields(c, "", "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy", "ring_hash_lb_config",
		"typed_extension_protocol_options", "dns_lookup_family", "load_assignment", "transport_socket", "circuit_breakers"); err != nil {
		return nil, err
	}
	s := &clusterSpec{name: c.GetName(), kind: c.GetType(), connectTimeout: 5 * time.Second, family: c.GetDnsLookupFamily(), maxRequests: defaultMaxRequests}
	if cb := c.GetCircuitBreakers(); cb != nil {
		if err := onlyFields(cb, "circuit_breakers", "thresholds"); err != nil {
			return nil, err
		}
		// Envoy takes the first threshold of each priority; weir-proxy
		// routes every request at DEFAULT, so the others never apply.
		if i := slices.IndexFunc(cb.GetThresholds(), func(th *clusterv3.CircuitBreakers_Thresholds) bool {
			return th.GetPriority() == corev3.RoutingPriority_DEFAULT
		}); i >= 0 {
			th := cb.GetThresholds()[i]
			path := fmt.Sprintf("circuit_breakers.thresholds[%d]", i)
			if err := onlyFields(th, path, "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries"); err != nil {
				return nil, err
			}
			if th.GetMaxRequests() != nil {
				s.maxRequests = int64(th.GetMaxRequests().GetValue())
			}
			// weir-proxy bounds neither connections, pending requests nor
			// concurrent retries. A threshold that leaves one unset means
			// Envoy's default for it (1,024, 1,024, 3), which weir-proxy
			// would not keep: only no bound (4294967295) is honoured.
			for _, f := range []struct {
				name string
				v    *wrapperspb.UInt32Value
			}{{"max_connections", th.GetMaxConnections()}, {"max_pending_requests", th.GetMaxPendingRequests()}, {"max_retries", th.GetMaxRetries()}} {
				if f.v.GetValue() != math.MaxUint32 {
					return nil, invalid(path+"."+f.name, "only %d (no limit) is supported by weir-proxy, and Envoy's default when unset is not", uint32(math.MaxUint32))
				}
			}
		}
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if ts.GetName() != "envoy.transport_sockets.tls" {
			return nil, invalid("transport_socket.name", "%q is not supported by weir-proxy", ts.GetName())
		}
		u, err := parseUpstreamTLS(ts, "transport_socket", secrets)
		if err != nil {
			return nil, err
		}
		s.tls = u
	}
	if d, ok := duration(c.GetConnectTimeout()); ok {
		s.connectTimeout = d
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
	case clusterv3.Cluster_LEAST_REQUEST:
		s.leastRequest = true
	case clusterv3.Cluster_RING_HASH:
		rc, err := compileRingConfig(c)
		if err != nil {
			return nil, err
		}
		s.ring = &rc
	default:
		return nil, invalid("lb_policy", "%v is not supported by weir-proxy", c.GetLbPolicy())
	}
	switch s.kind {
	case clusterv3.Cluster_EDS:
		eds := c.GetEdsClusterConfig()
		if eds == nil {
			return nil, invalid("eds_cluster_config", "required for EDS clusters")
		}
		if err := onlyFields(eds, "eds_cluster_config", "eds_config", "service_name"); err != nil {
			return nil, err
		}
		if err := checkADS(eds.GetEdsConfig(), "eds_cluster_config.eds_config"); err != nil {
			return nil, err
		}
		s.edsName = eds.GetServiceName()
		if s.edsName == "" {
			s.edsName = c.GetName()
		}
		if c.GetLoadAssignment() != nil {
			return nil, unsupported("load_assignment")
		}
	case clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_STATIC:
		if c.GetEdsClusterConfig() != nil {
			return nil, unsupported("eds_cluster_config")
		}
		s.inline = c.GetLoadAssignment()
		if s.inline == nil {
			return nil, invalid("load_assignment", "required for %v clusters", s.kind)
		}
	default:
		return nil, invalid("type", "%v is not supported by weir-proxy", s.kind)
	}
	if s.kind != clusterv3.Cluster_LOGICAL_DNS && s.family != clusterv3.Cluster_AUTO {
		return nil, invalid("dns_lookup_family", "only meaningful for LOGICAL_DNS clusters")
	}
	for k, v := range c.GetTypedExtensionProtocolOptions() {
		p := fmt.Sprintf("typed_extension_protocol_options[%q]", k)
		if k != httpProtocolOptionsKey {
			return nil, unsupported(p)
		}
		var opts httpv3.HttpProtocolOptions
		if err := unpack(v, &opts, p); err != nil {
			return nil, err
		}
		if err := pgv(&opts, p); err != nil {
			return nil, err
		}
		if err := onlyFields(&opts, p, "explicit_http_config"); err != nil {
			return nil, err
		}
		ex := opts.GetExplicitHttpConfig()
		if ex == nil {
			return nil, invalid(p, "explicit_http_config is required")
		}
		ep := sub(p, "explicit_http_config")
		switch pc := ex.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			if err := onlyFields(pc.HttpProtocolOptions, sub(ep, "http_protocol_options")); err != nil {
				return nil, err
			}
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			if err := onlyFields(pc.Http2ProtocolOptions, sub(ep, "http2_protocol_options")); err != nil {
				return nil, err
			}
			s.h2c = true
		default:
			return nil, unsupported(sub(ep, "protocol_config"))
		}
	}
	return s, nil
}

// parseAssignment returns the endpoint addresses of a ClusterLoadAssignment.
// STATIC/EDS endpoints must be IP addresses (as in Envoy); LOGICAL_DNS takes a
// single hostname endpoint.
func parseAssignment(cla *endpointv3.ClusterLoadAssignment, kind clusterv3.Cluster_DiscoveryType, path string) ([]string, error) {
	if err := pgv(cla, path); err != nil {
		return nil, err
	}
	if err := onlyFields(cla, path, "cluster_name", "endpoints"); err != nil {
		return nil, err
	}
	var addrs []string
	for i, loc := range cla.GetEndpoints() {
		lp := idx(sub(path, "endpoints"), i)
		if err := onlyFields(loc, lp, "lb_endpoints"); err != nil {
			return nil, err
		}
		for j, lbe := range loc.GetLbEndpoints() {
			ep := idx(sub(lp, "lb_endpoints"), j)
			if err := onlyFields(lbe, ep, "endpoint", "health_status"); err != nil {
				return nil, err
			}
			switch lbe.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue // Envoy never routes to these
			default:
				return nil, invalid(sub(ep, "health_status"), "%v is not supported by weir-proxy", lbe.GetHealthStatus())
			}
			e := lbe.GetEndpoint()
			if e == nil {
				return nil, invalid(ep, "endpoint is required")
			}
			if err := onlyFields(e, sub(ep, "endpoint"), "address"); err != nil {
				return nil, err
			}
			ap := sub(ep, "endpoint.address")
			if err := onlyFields(e.GetAddress(), ap, "socket_address"); err != nil {
				return nil, err
			}
			sa := e.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, invalid(ap, "socket_address is required")
			}
			if err := onlyFields(sa, sub(ap, "socket_address"), "address", "port_value", "protocol"); err != nil {
				return nil, err
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, invalid(sub(ap, "socket_address.protocol"), "only TCP is supported")
			}
			host := sa.GetAddress()
			if kind != clusterv3.Cluster_LOGICAL_DNS {
				a, err := netip.ParseAddr(host)
				if err != nil {
					return nil, invalid(sub(ap, "socket_address.address"), "malformed IP address %q", host)
				}
				host = a.String()
			}
			addrs = append(addrs, net.JoinHostPort(host, strconv.FormatUint(uint64(sa.GetPortValue()), 10)))
		}
	}
	if kind == clusterv3.Cluster_LOGICAL_DNS && len(addrs) != 1 {
		return nil, invalid(path, "LOGICAL_DNS clusters need exactly one endpoint, got %d", len(addrs))
	}
	return addrs, nil
}

// idleCloser is an http.RoundTripper with a pool of idle connections.
type idleCloser interface {
	http.RoundTripper
	CloseIdleConnections()
}

// connectError marks a failure to establish the upstream connection, which
// Envoy reports (and retries) differently from a reset.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func newPool(s *clusterSpec, stats *clusterStats, budget *idleBudget) *upstreamPool {
	p := &upstreamPool{key: s.poolKey(), h2c: s.h2c, stats: stats, endpoints: map[string]*endpoint{}}
	d := &net.Dialer{Timeout: s.connectTimeout, KeepAlive: 30 * time.Second}
	networks := []string{"tcp"}
	if s.kind == clusterv3.Cluster_LOGICAL_DNS {
		switch s.family {
		case clusterv3.Cluster_V4_ONLY:
			networks = []string{"tcp4"}
		case clusterv3.Cluster_V6_ONLY:
			networks = []string{"tcp6"}
		case clusterv3.Cluster_V4_PREFERRED:
			networks = []string{"tcp4", "tcp6"}
		case clusterv3.Cluster_AUTO:
			networks = []string{"tcp6", "tcp4"}
		}
	}
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		var err error
		for _, n := range networks {
			var c net.Conn
			c, err = d.DialContext(ctx, n, addr)
			if err == nil {
				return c, nil
			}
			var dnsErr *net.DNSError
			var addrErr *net.AddrError
			if !errors.As(err, &dnsErr) && !errors.As(err, &addrErr) {
				break // only fall back to the other family when resolution found nothing
			}
		}
		if ctx.Err() == nil {
			stats.connectErrors.Inc()
		}
		return nil, &connectError{err}
	}
	if s.tls != nil {
		// Both transports then speak over TLS: HTTP/1.1, or HTTP/2 by
		// prior knowledge after ALPN "h2".
		dial = s.tls.dialTLS(dial)
	}
	newTransport := func(h2c bool) *http.Transport {
		t := &http.Transport{
			DialContext:         dial,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     time.Hour, // Envoy's default upstream idle_timeout
			DisableCompression:  true,
			ReadBufferSize:      32 << 10,
			WriteBufferSize:     32 << 10,
			// Envoy's max_response_headers_kb, for HTTP/1.1 and h2c.
			MaxResponseHeaderBytes: maxResponseHeaderBytes,
		}
		var protos http.Protocols
		if h2c {
			protos.SetUnencryptedHTTP2(true)
			t.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: math.MaxInt32}
		} else {
			protos.SetHTTP1(true)
		}
		t.Protocols = &protos
		return t
	}
	p.h1 = newTransport(false)
	if s.h2c {
		p.main = newTransport(true)
	} else {
		p.main = newH1Transport(dial, p.h1, time.Hour, 1024, budget)
	}
	return p
}

// endpointsFor returns shared endpoint objects for addrs, reusing the
// existing ones by address.
func (p *upstreamPool) endpointsFor(addrs []string) []*endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*endpoint, 0, len(addrs))
	for _, a := range addrs {
		e := p.endpoints[a]
		if e == nil {
			e = &endpoint{addr: a}
			p.endpoints[a] = e
		}
		out = append(out, e)
	}
	return out
}

// retain drops endpoint entries no longer referenced by the live snapshot,
// and the idle connections to them.
func (p *upstreamPool) retain(live []*endpoint) {
	p.mu.Lock()
	keep := make(map[string]*endpoint, len(live))
	addrs := make(map[string]bool, len(live))
	for _, e := range live {
		keep[e.addr] = e
		addrs[e.addr] = true
	}
	p.endpoints = keep
	p.mu.Unlock()
	if h1, ok := p.main.(*h1Transport); ok {
		h1.retain(addrs)
	}
}

func (p *upstreamPool) close() {
	p.main.CloseIdleConnections()
	p.h1.CloseIdleConnections()
}
