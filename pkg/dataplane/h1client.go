package dataplane

import (
	"bufio"
	"container/list"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// h1Transport is the upstream HTTP/1.1 client for bodyless GET, HEAD,
// OPTIONS and TRACE requests, the bulk of proxied traffic. It writes the
// request and reads the response on the calling goroutine over a pooled
// keep-alive connection. Go's Transport hands every request to a
// connection's write goroutine and back from its read goroutine; on a small
// GET those handoffs cost about as much as the proxying itself. Requests
// with a body (whose upload must overlap the response), other methods (which
// must not be resent when a pooled connection turns out closed) and
// upgrades go to the fallback Transport.
type h1Transport struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback    *http.Transport
	idleTimeout time.Duration
	maxIdle     int // per address
	budget      *idleBudget

	mu   sync.Mutex
	idle map[string][]*h1Conn // by address, the most recently used last; nil once closed
}

type h1Conn struct {
	t    *h1Transport
	addr string
	nc   net.Conn
	fd   int         // nc's socket, for the reuse check; -1 when unknown
	in   limitedConn // between nc and br: caps response heads, counts bytes
	br   *bufio.Reader
	bw   *bufio.Writer
	// idleTimer closes the connection once it has been idle for
	// idleTimeout, Envoy's upstream idle_timeout.
	idleTimer *time.Timer
	// idleElem is its place in the idle budget while it is idle, guarded
	// by the budget's lock.
	idleElem *list.Element
}

const (
	h1BufferSize = 16 << 10
	// maxResponseHeaderBytes is Envoy's default max_response_headers_kb.
	maxResponseHeaderBytes = 60 << 10
	// max1xxResponses bounds informational responses before the final one,
	// as Go's Transport does.
	max1xxResponses = 5
	// maxStaleRetries bounds how many pooled connections a request tries
	// before it dials a new one.
	maxStaleRetries = 4
)

var errResponseHeadersTooLarge = errors.New("upstream response headers exceed 60 KiB")

// limitedConn reads from the connection, at most limit bytes while a
// response head is read, and counts what it read.
type limitedConn struct {
	nc    net.Conn
	limit int64
	read  int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.limit <= 0 {
		return 0, errResponseHeadersTooLarge
	}
	if int64(len(p)) > l.limit {
		p = p[:l.limit]
	}
	n, err := l.nc.Read(p)
	l.limit -= int64(n)
	l.read += int64(n)
	return n, err
}

func newH1Transport(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback *http.Transport, idleTimeout time.Duration, maxIdle int, budget *idleBudget) *h1Transport {
	return &h1Transport{dial: dial, fallback: fallback, idleTimeout: idleTimeout, maxIdle: maxIdle, idle: map[string][]*h1Conn{}, budget: budget}
}

// RoundTrip implements http.RoundTripper with net/http's contract: on
// success the caller reads and closes the body; the connection returns to
// the pool once the body has been read to the end.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Body != nil && req.Body != http.NoBody) || !replayable(req.Method) || req.Header.Get("Upgrade") != "" {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for stale := 0; ; stale++ {
		c, reused, err := t.get(ctx, req.URL.Host, stale < maxStaleRetries)
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(ctx, req)
		if err == nil {
			return res, nil
		}
		c.nc.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		// The server may close a pooled connection at any time. A request
		// that got no byte of answer goes again on another connection, as
		// net/http does; the method is safe to repeat.
		if reused && c.in.read == 0 {
			continue
		}
		return nil, err
	}
}

// replayable are the methods net/http resends on a new connection.
func replayable(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// get returns a pooled connection to addr (if pooled) or dials a new one.
func (t *h1Transport) get(ctx context.Context, addr string, pooled bool) (*h1Conn, bool, error) {
	if pooled {
		t.mu.Lock()
		if conns := t.idle[addr]; len(conns) > 0 {
			c := conns[len(conns)-1]
			conns[len(conns)-1] = nil
			if len(conns) == 1 {
				delete(t.idle, addr)
			} else {
				t.idle[addr] = conns[:len(conns)-1]
			}
			t.budget.remove(c)
			t.mu.Unlock()
			if !c.idleTimer.Stop() {
				// Its idle timer fired and is closing it; dial instead.
			} else if idleConnUsable(c.fd) {
				c.takeBuffers()
				return c, true, nil
			} else {
				// The upstream closed it, or sent bytes nobody asked for
				// while it was idle: those must never be read as the
				// next request's response.
				c.nc.Close()
			}
		} else {
			t.mu.Unlock()
		}
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &h1Conn{t: t, addr: addr, nc: nc, fd: -1}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { c.fd = int(fd) })
		}
	}
	c.in.nc = nc
	c.takeBuffers()
	c.idleTimer = time.AfterFunc(math.MaxInt64, c.expire)
	c.idleTimer.Stop()
	return c, false, nil
}

// put returns a connection whose last response was read to the end.
func (t *h1Transport) put(c *h1Conn) {
	c.releaseBuffers()
	t.mu.Lock()
	if t.idle == nil || len(t.idle[c.addr]) >= t.maxIdle {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
	c.idleTimer.Reset(t.idleTimeout)
	evict := t.budget.add(c)
	t.mu.Unlock()
	for _, v := range evict {
		v.evict()
	}
}

// Idle connections hold no buffers: a gateway keeps one or more per
// endpoint of every cluster it has forwarded to (Envoy's pools do too),
// and at 10,000 clusters 32 KiB each was 150 MB of its heap.
var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1BufferSize) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufferSize) }}
)

func (c *h1Conn) takeBuffers() {
	c.br = h1Readers.Get().(*bufio.Reader)
	c.br.Reset(&c.in)
	c.bw = h1Writers.Get().(*bufio.Writer)
	c.bw.Reset(c.nc)
}

// releaseBuffers runs only when both are empty: the response was read to
// its end with nothing after it, and the request was flushed.
func (c *h1Conn) releaseBuffers() {
	c.br.Reset(nil)
	h1Readers.Put(c.br)
	c.bw.Reset(nil)
	h1Writers.Put(c.bw)
	c.br, c.bw = nil, nil
}

// expire closes a connection idle for idleTimeout. get, which may have
// taken it just before, sees the timer fired and does not use it.
func (c *h1Conn) expire() {
	c.t.takeIdle(c)
	c.nc.Close()
}

// evict closes c for the idle budget, if it is still idle.
func (c *h1Conn) evict() {
	if c.t.takeIdle(c) {
		c.idleTimer.Stop()
		c.nc.Close()
	}
}

// takeIdle removes c from the idle connections, and reports whether it
// was there.
func (t *h1Transport) takeIdle(c *h1Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.budget.remove(c)
	conns := t.idle[c.addr]
	for i, o := range conns {
		if o == c {
			t.idle[c.addr] = append(conns[:i:i], conns[i+1:]...)
			if len(t.idle[c.addr]) == 0 {
				delete(t.idle, c.addr)
			}
			return true
		}
	}
	return false
}

// retain closes the idle connections to addresses not in live, so
// connections to pods that have gone do not linger.
func (t *h1Transport) retain(live map[string]bool) {
	t.mu.Lock()
	var drop []*h1Conn
	for addr, conns := range t.idle {
		if !live[addr] {
			drop = append(drop, conns...)
			delete(t.idle, addr)
		}
	}
	for _, c := range drop {
		t.budget.remove(c)
	}
	t.mu.Unlock()
	for _, c := range drop {
		c.idleTimer.Stop()
		c.nc.Close()
	}
}

// CloseIdleConnections closes the pooled connections for good: the pool
// is being replaced, and connections still in use are closed when their
// responses end.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	for _, conns := range idle {
		for _, c := range conns {
			t.budget.remove(c)
		}
	}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.idleTimer.Stop()
			c.nc.Close()
		}
	}
	t.fallback.CloseIdleConnections()
}

var errUnexpected101 = errors.New("upstream switched protocols on a request that asked for no upgrade")

// roundTrip writes req and reads the response head.
func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	// Cancelling the request (route timeout, client gone) unblocks the
	// read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	c.in.read = 0
	err := writeBodylessRequest(c.bw, req)
	if err == nil {
		err = c.bw.Flush()
	}
	for informational := 0; err == nil; informational++ {
		c.in.limit = maxResponseHeaderBytes + 1
		var res *http.Response
		if res, err = readResponse(c.br, req, upstreamHeadLimits); err != nil {
			break
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			err = errUnexpected101
		case res.StatusCode >= 100 && res.StatusCode < 200:
			if informational >= max1xxResponses {
				err = errors.New("upstream sent too many informational responses")
			}
			continue // e.g. 103 Early Hints; the final response follows
		default:
			c.in.limit = math.MaxInt64 // the body has its own framing
			res.Body = &h1Body{ReadCloser: res.Body, c: c, stop: stop, reusable: !res.Close && !req.Close}
			return res, nil
		}
	}
	stop()
	return nil, err
}

// upstreamHeadLimits are Envoy's max_response_headers_kb and
// max_headers_count defaults.
var upstreamHeadLimits = headLimits{maxBytes: maxResponseHeaderBytes, maxHeaders: 100}

// h1Body gives the connection back to the pool when the response body has
// been read to the end, and closes it otherwise.
type h1Body struct {
	io.ReadCloser
	c        *h1Conn
	stop     func() bool
	reusable bool
	done     bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: to the pool only if the body ended
// cleanly, the connection may be kept, no cancellation fired and nothing
// unasked for follows the response (as Go's Transport, which drops a
// connection with an unsolicited response on it).
func (b *h1Body) finish(atEOF bool) {
	if b.done {
		return
	}
	b.done = true
	notCancelled := b.stop()
	if atEOF && b.reusable && notCancelled && b.c.br.Buffered() == 0 {
		b.c.t.put(b.c)
		return
	}
	b.c.nc.Close()
}

// idleConnUsable peeks at a pooled connection's socket without blocking:
// an idle HTTP/1.1 connection has nothing to read. Data means an
// unsolicited (or late, overlong) response; EOF means the upstream closed
// it. Go's Transport learns the same from a read goroutine per connection.
// The connection is ours alone while it is checked, so its descriptor is
// open.
func idleConnUsable(fd int) bool {
	if fd < 0 {
		return true
	}
	var b [1]byte
	for {
		_, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		default: // data (n > 0), EOF (n == 0) or a socket error
			return false
		}
	}
}
