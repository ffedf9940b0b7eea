package dataplane

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// h1Transport is the upstream HTTP/1.1 client for idempotent requests
// without a body, the bulk of proxied traffic. It writes the request and
// reads the response on the calling goroutine over a pooled keep-alive
// connection. Go's Transport hands every request to a connection's write
// goroutine and back from its read goroutine; on a small GET those
// handoffs cost about as much as the proxying itself. Requests with a body
// (whose upload must overlap the response), other methods (which must not
// be resent when a pooled connection turns out closed) and upgrades go to
// the fallback Transport.
type h1Transport struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback    *http.Transport
	idleTimeout time.Duration
	maxIdle     int // per address

	mu   sync.Mutex
	idle map[string][]*h1Conn // by address; the most recently used last
}

type h1Conn struct {
	t      *h1Transport
	addr   string
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

const h1BufferSize = 16 << 10

func newH1Transport(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback *http.Transport, idleTimeout time.Duration, maxIdle int) *h1Transport {
	return &h1Transport{dial: dial, fallback: fallback, idleTimeout: idleTimeout, maxIdle: maxIdle, idle: map[string][]*h1Conn{}}
}

// RoundTrip implements http.RoundTripper with net/http's contract: on
// success the caller reads and closes the body; the connection returns to
// the pool once the body has been read to the end.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Body != nil && req.Body != http.NoBody) || !idempotent(req.Method) || req.Header.Get("Upgrade") != "" {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for {
		c, reused, err := t.get(ctx, req.URL.Host)
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
		// The server may close a pooled connection at any time; the
		// request is idempotent, so it goes again on a new connection,
		// as net/http does.
		if reused {
			continue
		}
		return nil, err
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodDelete:
		return true
	}
	return false
}

// get returns a pooled connection to addr or dials a new one.
func (t *h1Transport) get(ctx context.Context, addr string) (*h1Conn, bool, error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[addr]; len(conns) > 0; conns = t.idle[addr] {
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		if now.Sub(c.idleAt) < t.idleTimeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.nc.Close()
	}
	t.mu.Unlock()
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{t: t, addr: addr, nc: nc, br: bufio.NewReaderSize(nc, h1BufferSize), bw: bufio.NewWriterSize(nc, h1BufferSize)}, false, nil
}

// put returns a connection whose last response was read to the end.
func (t *h1Transport) put(c *h1Conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil || len(t.idle[c.addr]) >= t.maxIdle {
		c.nc.Close()
		return
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
}

// CloseIdleConnections closes the pooled connections; later requests dial
// new ones.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
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
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	for err == nil {
		var res *http.Response
		if res, err = http.ReadResponse(c.br, req); err != nil {
			break
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			err = errUnexpected101
		case res.StatusCode >= 100 && res.StatusCode < 200:
			continue // informational (e.g. 103); the final response follows
		default:
			res.Body = &h1Body{ReadCloser: res.Body, c: c, stop: stop, reusable: !res.Close && !req.Close}
			return res, nil
		}
	}
	stop()
	return nil, err
}

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

// finish releases the connection once: to the pool if the body ended
// cleanly, the connection may be kept and no cancellation fired.
func (b *h1Body) finish(atEOF bool) {
	if b.done {
		return
	}
	b.done = true
	notCancelled := b.stop()
	if atEOF && b.reusable && notCancelled {
		b.c.t.put(b.c)
		return
	}
	b.c.nc.Close()
}
