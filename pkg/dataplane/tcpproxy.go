package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

const (
	tcpProxyFilterName = "envoy.filters.network.tcp_proxy"
	// tcpProxyIdleTimeout is Envoy's default TcpProxy idle_timeout.
	tcpProxyIdleTimeout = time.Hour
)

// tcpProxyConf is a compiled TcpProxy network filter: the clusters a
// connection goes to, by weight. Immutable.
type tcpProxyConf struct {
	// key identifies the chain's config (its proto, deterministically
	// encoded): a tunnel whose chain keeps its key keeps going.
	key        string
	statPrefix string
	clusters   []*cluster
	weights    []uint32
	total      uint64
	idle       time.Duration // 0: none
}

func compileTCPProxy(tp *tcpproxyv3.TcpProxy, path string, env *compileEnv) (*tcpProxyConf, error) {
	if err := pgv(tp, path); err != nil {
		return nil, err
	}
	if err := onlyFields(tp, path, "stat_prefix", "cluster", "weighted_clusters", "idle_timeout"); err != nil {
		return nil, err
	}
	c := &tcpProxyConf{statPrefix: tp.GetStatPrefix(), idle: tcpProxyIdleTimeout}
	if d, ok := duration(tp.GetIdleTimeout()); ok {
		c.idle = d
	}
	add := func(name string, weight uint32, p string) error {
		cl := env.clusters[name]
		if cl == nil {
			// Envoy looks the cluster up per connection and closes the
			// connection when it is not there.
			cl = missingCluster(name)
		} else if cl.upstreamTLS {
			return invalid(p, "cluster %q originates TLS; weir-proxy's tcp_proxy forwards bytes only", name)
		}
		c.clusters = append(c.clusters, cl)
		c.weights = append(c.weights, weight)
		c.total += uint64(weight)
		return nil
	}
	switch cs := tp.GetClusterSpecifier().(type) {
	case *tcpproxyv3.TcpProxy_Cluster:
		if err := add(cs.Cluster, 1, sub(path, "cluster")); err != nil {
			return nil, err
		}
	case *tcpproxyv3.TcpProxy_WeightedClusters:
		wp := sub(path, "weighted_clusters")
		if err := onlyFields(cs.WeightedClusters, wp, "clusters"); err != nil {
			return nil, err
		}
		for i, cw := range cs.WeightedClusters.GetClusters() {
			p := idx(sub(wp, "clusters"), i)
			if err := onlyFields(cw, p, "name", "weight"); err != nil {
				return nil, err
			}
			if err := add(cw.GetName(), cw.GetWeight(), sub(p, "name")); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// pickCluster chooses a cluster by weight, as Envoy's weighted_clusters.
func (c *tcpProxyConf) pickCluster() *cluster {
	if len(c.clusters) == 1 {
		return c.clusters[0]
	}
	n := rand.Uint64N(c.total)
	for i, w := range c.weights {
		if n < uint64(w) {
			return c.clusters[i]
		}
		n -= uint64(w)
	}
	return c.clusters[len(c.clusters)-1]
}

var errHelloSeen = errors.New("client hello seen")

// helloRecorder is what the TLS inspector reads through: it keeps every
// byte read, to be replayed to whatever takes the connection, and writes
// nothing back.
type helloRecorder struct {
	net.Conn
	seen bytes.Buffer
}

func (r *helloRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.seen.Write(p[:n])
	return n, err
}

func (r *helloRecorder) Write(p []byte) (int, error) { return len(p), nil }

// inspectClientHello reads the ClientHello as Envoy's TLS inspector does,
// without answering it, and returns the server name and the bytes read.
// ok is false for a connection that does not start with a ClientHello.
func inspectClientHello(nc net.Conn, timeout time.Duration) (sni string, read []byte, ok bool) {
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = nc.SetReadDeadline(time.Time{}) }()
	rec := &helloRecorder{Conn: nc}
	err := tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni = h.ServerName
		return nil, errHelloSeen
	}}).Handshake()
	return sni, rec.seen.Bytes(), errors.Is(err, errHelloSeen)
}

// replayConn reads the bytes already read from the connection first.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// proxyTCP connects down to an endpoint of the chain's clusters and copies
// bytes both ways until both sides are done or the connection is idle for
// the idle timeout. A cluster without endpoints closes the connection, as
// Envoy does. first is what the inspector read from down.
func (c *serverConn) proxyTCP(tp *tcpProxyConf, sni string, down net.Conn, first []byte) {
	defer down.Close()
	cl := tp.pickCluster()
	ep := cl.pick()
	if ep == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cl.connectTimeout)
	up, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", ep.addr)
	cancel()
	if err != nil {
		if cl.stats != nil {
			cl.stats.connectErrors.Inc()
		}
		return
	}
	defer up.Close()
	u := &upgradedConn{down: down, back: up, tcp: tp, sni: sni}
	if !c.d.rl.trackUpgrade(u) {
		return
	}
	defer c.d.rl.untrackUpgrade(u)
	ep.active.Add(1)
	defer ep.active.Add(-1)
	c.setIdle(false)

	if len(first) > 0 {
		if _, err := up.Write(first); err != nil {
			return
		}
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	if tp.idle > 0 {
		// Envoy's idle timer: no bytes either way for idle_timeout closes
		// the connection, whatever either side is blocked on.
		var idle *time.Timer
		// Armed only once idle is set, so the callback never sees nil.
		idle = time.AfterFunc(time.Duration(math.MaxInt64), func() {
			if rest := tp.idle - time.Since(time.Unix(0, last.Load())); rest > 0 {
				idle.Reset(rest)
				return
			}
			down.Close()
			up.Close()
		})
		idle.Reset(tp.idle)
		defer idle.Stop()
	}
	done := make(chan struct{}, 2)
	go func() { copyTCP(up, down, &last); done <- struct{}{} }()
	go func() { copyTCP(down, up, &last); done <- struct{}{} }()
	<-done
	<-done
}

// copyTCP copies src to dst, recording activity in last. At src's end it
// half-closes dst, as Envoy's tcp_proxy does; the other direction goes on.
// Any other error (a reset, or the idle timer closing both) ends both.
func copyTCP(dst, src net.Conn, last *atomic.Int64) {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
			last.Store(time.Now().UnixNano())
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			} else {
				dst.Close()
			}
			return
		default:
			dst.Close()
			src.Close()
			return
		}
	}
}
