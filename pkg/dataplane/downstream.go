package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
)

// downstreamServer accepts a listener's connections and runs the HTTP
// codec on each: weir-proxy's own HTTP/1.1 loop, or Go's HTTP/2 server for
// h2c prior knowledge and TLS connections that negotiated h2. Unlike
// net/http's server it has no per-request read goroutine and hands the
// router a request whose header map it may keep.
type downstreamServer struct {
	rl      *rtListener
	handler http.Handler
	h2      *http2.Server
	h1base  *http.Server // carries the HTTP/2 server's settings and shutdown hook

	maxConns int // 0: no limit

	mu          sync.Mutex
	ln          net.Listener
	conns       map[*serverConn]struct{}
	shutdown    bool
	wg          sync.WaitGroup
	noKeepAlive atomic.Bool
	open        atomic.Int64
	rejected    atomic.Int64
}

// codecLimits are the HCM settings the codecs enforce.
type codecLimits struct {
	head           headLimits
	headersTimeout time.Duration // request_headers_timeout; 0: none
	idleTimeout    time.Duration // common_http_protocol_options.idle_timeout
	maxStreams     uint32
	streamWindow   int32
	connWindow     int32
}

// envoyCodecDefaults are Envoy's defaults for the fields the codecs read.
var envoyCodecDefaults = codecLimits{
	head:         headLimits{maxBytes: 60 << 10, maxHeaders: 100},
	idleTimeout:  time.Hour,
	maxStreams:   2147483647,
	streamWindow: 268435456,
	connWindow:   268435456,
}

func newDownstreamServer(rl *rtListener, maxConns int) *downstreamServer {
	d := &downstreamServer{rl: rl, handler: rl, maxConns: maxConns, conns: map[*serverConn]struct{}{}}
	d.h1base = envoyCodecDefaults.h2Base(rl.p.log)
	// Per-connection settings come from the chain's HCM through
	// ServeConnOpts.BaseConfig; this server carries the idle timeout and
	// the graceful-shutdown hook that sends GOAWAY.
	d.h2 = &http2.Server{IdleTimeout: envoyCodecDefaults.idleTimeout}
	_ = http2.ConfigureServer(d.h1base, d.h2)
	return d
}

// h2Base is the HTTP/2 server configuration of a connection manager.
func (l codecLimits) h2Base(logger *zap.SugaredLogger) *http.Server {
	return &http.Server{
		ErrorLog:       log.New(&zapDebugWriter{logger}, "", 0),
		MaxHeaderBytes: l.head.maxBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          int(l.maxStreams),
			MaxReceiveBufferPerStream:     int(l.streamWindow),
			MaxReceiveBufferPerConnection: int(l.connWindow),
		},
	}
}

// Serve accepts connections until the listener is closed.
func (d *downstreamServer) Serve(ln net.Listener) error {
	d.mu.Lock()
	d.ln = ln
	d.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			d.mu.Lock()
			down := d.shutdown
			d.mu.Unlock()
			if down {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				// Out of descriptors or memory: back off and keep the
				// listener, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if d.maxConns > 0 && d.open.Load() >= int64(d.maxConns) {
			// The overload manager's downstream connection limit: the
			// connection is closed at once.
			d.rejected.Add(1)
			d.rl.p.metrics.connRejected.Inc()
			nc.Close()
			continue
		}
		c := &serverConn{d: d, nc: nc, raw: nc}
		d.mu.Lock()
		if d.shutdown {
			d.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		d.conns[c] = struct{}{}
		d.wg.Add(1)
		d.open.Add(1)
		d.mu.Unlock()
		go c.serve()
	}
}

var errDownstreamGone = errors.New("downstream connection closed")

func (d *downstreamServer) forget(c *serverConn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	d.open.Add(-1)
	d.wg.Done()
}

// SetKeepAlivesEnabled(false) is the drain: HTTP/1.1 responses carry
// "Connection: close" and idle HTTP/1.1 connections close now.
func (d *downstreamServer) SetKeepAlivesEnabled(on bool) {
	d.noKeepAlive.Store(!on)
	if !on {
		d.closeIdle()
	}
}

func (d *downstreamServer) closeIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.closeIfIdle()
	}
}

// Shutdown stops accepting, closes idle connections, sends GOAWAY on HTTP/2
// ones, and waits for the rest to finish their requests until ctx ends.
func (d *downstreamServer) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.shutdown = true
	if d.ln != nil {
		d.ln.Close()
	}
	d.mu.Unlock()
	d.noKeepAlive.Store(true)
	_ = d.h1base.Shutdown(ctx) // runs the HTTP/2 graceful shutdown hook
	d.closeIdle()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			// A connection that finished its request meanwhile is idle now.
			d.closeIdle()
		}
	}
}

// Close closes the listener and every connection at once.
func (d *downstreamServer) Close() {
	d.mu.Lock()
	d.shutdown = true
	if d.ln != nil {
		d.ln.Close()
	}
	for c := range d.conns {
		c.raw.Close()
	}
	d.mu.Unlock()
}

// serverConn is one downstream connection.
type serverConn struct {
	d   *downstreamServer
	nc  net.Conn // after TLS, the tls.Conn; the connection's goroutine's alone
	raw net.Conn // the accepted socket, which Close may close from anywhere
	cr  connReader

	sni string // the TLS server name
	// filterState is the filter state of the chain that took the
	// connection, fixed at its handshake (or accept, without TLS): a
	// chain that starts checking clients later gives no mark to the
	// connections it did not check.
	filterState map[string]string

	watchTimer *time.Timer // only the connection's goroutine arms it
	hijacked   bool        // an upgrade took the connection and its buffers
	bufsInUse  bool        // a request body read may still be running in the buffers

	mu       sync.Mutex
	watchReq watchedRequest
	idle     bool // waiting for a request; may be closed by a drain
	closed   bool
}

// armWatch starts the disconnect watch timer of the current request; the
// timer is the connection's, reused across requests.
func (c *serverConn) armWatch(br *bufio.Reader, body *h1RequestBody, cancel context.CancelCauseFunc) {
	c.mu.Lock()
	c.watchReq = watchedRequest{gen: c.cr.generation(), br: br, body: body, cancel: cancel}
	c.mu.Unlock()
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(disconnectWatchDelay, c.fireWatch)
	} else {
		c.watchTimer.Reset(disconnectWatchDelay)
	}
}

func (c *serverConn) fireWatch() {
	c.mu.Lock()
	w := c.watchReq
	c.mu.Unlock()
	c.cr.watch(w.gen, w.br, w.body, w.cancel)
}

type watchedRequest struct {
	gen    uint64
	br     *bufio.Reader
	body   *h1RequestBody
	cancel context.CancelCauseFunc
}

// chain is the filter chain the connection's requests use under the
// listener's current config.
func (c *serverConn) chain() *filterChain {
	return c.d.rl.conf.Load().httpChainForSNI(c.sni)
}

func (c *serverConn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle && !c.closed {
		c.closed = true
		c.raw.Close()
	}
}

// setIdle marks the connection idle or busy. It returns false when the
// connection was closed while idle.
func (c *serverConn) setIdle(idle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = idle
	return !c.closed
}

var h2Preface = []byte(http2.ClientPreface)

func (c *serverConn) serve() {
	defer c.d.forget(c)
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.d.rl.p.log.Errorw("panic serving a connection", "listener", c.d.rl.name, "panic", v)
		}
	}()
	conf := c.d.rl.conf.Load()
	if conf.tls {
		tlsConn := c.nc
		if conf.passthrough {
			// The chain is chosen before anything answers the client: a
			// tcp_proxy chain forwards the ClientHello as it came.
			sni, read, ok := inspectClientHello(c.nc, listenerFiltersTimeout)
			ch := conf.chainForSNI(sni)
			if !ok || ch == nil {
				c.nc.Close()
				return
			}
			tlsConn = &replayConn{Conn: c.nc, pending: read}
			switch {
			case ch.tcp != nil && ch.tlsConfig == nil:
				c.proxyTCP(ch.tcp, sni, c.nc, read)
				return
			case ch.tcp != nil:
				// Terminated here: the bytes inside go to the cluster.
				tc := tls.Server(tlsConn, ch.tlsConfig)
				ctx, cancel := context.WithTimeout(context.Background(), listenerFiltersTimeout)
				err := tc.HandshakeContext(ctx)
				cancel()
				if err != nil {
					c.nc.Close()
					return
				}
				c.proxyTCP(ch.tcp, sni, tc, nil)
				return
			}
		}
		// The TLS inspector gives up after listener_filters_timeout.
		_ = c.nc.SetReadDeadline(time.Now().Add(listenerFiltersTimeout))
		tc := tls.Server(tlsConn, &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			ch, err := c.d.rl.chainForClient(hello)
			if err != nil {
				return nil, err
			}
			c.filterState = ch.filterState
			return ch.tlsConfig, nil
		}})
		// The read deadline covers the ClientHello only (the SNI lookup
		// clears it); the context bounds the rest of the handshake.
		ctx, cancel := context.WithTimeout(context.Background(), listenerFiltersTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.nc.Close()
			return
		}
		_ = tc.SetReadDeadline(time.Time{})
		c.nc = tc
		c.sni = tc.ConnectionState().ServerName
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			c.serveH2(tc, nil)
			return
		}
	}
	if !conf.tls && conf.plain != nil {
		c.filterState = conf.plain.filterState
	}
	c.cr.nc = c.nc
	br := h1ReaderPool.Get().(*bufio.Reader)
	br.Reset(&c.cr)
	if !conf.tls {
		// codec_type AUTO: HTTP/2 prior knowledge starts with the preface.
		_ = c.nc.SetReadDeadline(time.Now().Add(envoyCodecDefaults.idleTimeout))
		h2, err := sniffPreface(br)
		if err != nil {
			c.nc.Close()
			return
		}
		if h2 {
			_ = c.nc.SetReadDeadline(time.Time{})
			c.serveH2(c.nc, br)
			return
		}
	}
	c.serveH1(br)
}

// sniffPreface reports whether the connection starts with the HTTP/2
// client preface. It reads only as far as the bytes keep matching, so a
// short HTTP/1.1 request is not held waiting for 24 bytes.
func sniffPreface(br *bufio.Reader) (bool, error) {
	for n := 1; ; n++ {
		if b := br.Buffered(); b > n {
			n = min(b, len(h2Preface))
		}
		b, err := br.Peek(n)
		if len(b) == 0 {
			return false, err
		}
		if string(b) != string(h2Preface[:len(b)]) {
			return false, nil
		}
		if len(b) == len(h2Preface) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// serveH2 hands the connection to Go's HTTP/2 server. br holds what was
// read while sniffing the preface.
func (c *serverConn) serveH2(nc net.Conn, br *bufio.Reader) {
	if br != nil {
		nc = &bufferedConn{Conn: nc, r: br}
	}
	c.setIdle(false)
	base := c.d.h1base
	if ch := c.chain(); ch != nil {
		base = ch.hcm.h2base
	}
	opts := &http2.ServeConnOpts{BaseConfig: base, Handler: c.d.handler}
	if c.filterState != nil {
		opts.Context = withConnFilterState(context.Background(), c.filterState)
	}
	c.d.h2.ServeConn(nc, opts)
	nc.Close()
}

// bufferedConn reads what a bufio.Reader already holds first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// serveH1 is the HTTP/1.1 loop: read a head, run the handler on this
// goroutine, finish the response, repeat while the connection may be kept.
func (c *serverConn) serveH1(br *bufio.Reader) {
	defer c.nc.Close()
	bw := h1WriterPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		// Buffers handed to a hijacked connection are not ours any more,
		// and a reader that may still be inside br keeps it.
		if br != nil && !c.hijacked && !c.bufsInUse {
			br.Reset(nil)
			h1ReaderPool.Put(br)
			bw.Reset(nil)
			h1WriterPool.Put(bw)
		}
	}()
	var state *tls.ConnectionState
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		state = &cs
	}
	remote := c.nc.RemoteAddr().String()
	for {
		ch := c.chain()
		if ch == nil {
			return // the listener's config no longer has a chain for us
		}
		lim := ch.hcm.codec
		if !c.setIdle(true) {
			return
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(lim.idleTimeout))
		if br.Buffered() == 0 {
			// Idle: the buffers go back to the pools while the
			// connection waits, so an idle connection holds only its
			// goroutine. The first byte waits in the connReader.
			br.Reset(nil)
			h1ReaderPool.Put(br)
			bw.Reset(nil)
			h1WriterPool.Put(bw)
			br = nil
			err := c.cr.awaitByte()
			br = h1ReaderPool.Get().(*bufio.Reader)
			br.Reset(&c.cr)
			bw = h1WriterPool.Get().(*bufio.Writer)
			bw.Reset(c.nc)
			if err != nil {
				return
			}
		}
		if !c.setIdle(false) {
			return
		}
		if lim.headersTimeout > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(lim.headersTimeout))
		} else {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		head, err := readRequestHead(br, lim.head)
		if err != nil {
			c.rejectHead(bw, err)
			return
		}
		_ = c.nc.SetReadDeadline(time.Time{})
		if !c.serveRequest(br, bw, head, lim, state, remote) {
			return
		}
	}
}

// Buffers of HTTP/1.1 connections that are serving a request.
var (
	h1ReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	h1WriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// rejectHead answers a head the parser refused and closes, as Envoy does
// on a codec error.
func (c *serverConn) rejectHead(bw *bufio.Writer, err error) {
	var pe *headParseError
	if !errors.As(err, &pe) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// request_headers_timeout: Envoy answers 408 and closes.
			pe = &headParseError{code: http.StatusRequestTimeout, reason: "request headers timeout"}
		} else {
			return // the client went away mid-head
		}
	}
	c.d.rl.p.metrics.codecErrors.WithLabelValues(c.d.rl.name, strconv.Itoa(pe.code)).Inc()
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	body := pe.reason
	bw.WriteString("HTTP/1.1 " + strconv.Itoa(pe.code) + " " + http.StatusText(pe.code) + "\r\n")
	bw.WriteString("content-type: text/plain\r\ncontent-length: " + strconv.Itoa(len(body)) + "\r\nconnection: close\r\n\r\n")
	bw.WriteString(body)
	_ = bw.Flush()
}

// serveRequest runs one request. It returns whether the connection can
// carry another.
func (c *serverConn) serveRequest(br *bufio.Reader, bw *bufio.Writer, head *requestHead, lim codecLimits, state *tls.ConnectionState, remote string) bool {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(context.Canceled)
	body := &h1RequestBody{c: c, br: br, expect: head.expectContinue}
	r := &http.Request{
		Method:     head.method,
		URL:        head.uri,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     head.header,
		Host:       head.host,
		RemoteAddr: remote,
		RequestURI: head.target,
		TLS:        state,
		Close:      head.close,
	}
	switch {
	case head.chunked:
		r.ContentLength = -1
		r.TransferEncoding = []string{"chunked"}
		body.chunked = &chunkedReader{br: br, lim: lim.head}
		if declared := r.Header["Trailer"]; len(declared) > 0 {
			r.Trailer = http.Header{}
			for _, v := range declared {
				for k := range splitList(v) {
					r.Trailer[canonicalKey([]byte(k))] = nil
				}
			}
		}
		body.trailer = r.Trailer
		r.Body = body
	case head.contentLength > 0:
		r.ContentLength = head.contentLength
		body.left = head.contentLength
		r.Body = body
	default:
		r.Body = http.NoBody
		body.eof = true
	}
	if c.filterState != nil {
		ctx = withConnFilterState(ctx, c.filterState)
	}
	r = r.WithContext(ctx)

	w := &h1ResponseWriter{c: c, bw: bw, req: r, body: body, header: make(http.Header, 8), cancel: cancel}
	body.w = w
	w.keepAlive = !head.close && !c.d.noKeepAlive.Load()
	// A client that goes away while its request waits for the upstream
	// must cancel it, as Envoy does. Watching for that costs a goroutine,
	// so only requests still running after disconnectWatchDelay get one.
	c.armWatch(br, body, cancel)
	defer func() {
		if v := recover(); v != nil {
			// The handler aborted the stream: fence the body off and
			// never reuse the buffers a late reader may be in.
			c.watchTimer.Stop()
			c.cr.unwatch()
			body.finish()
			c.bufsInUse = true
			panic(v)
		}
	}()
	c.d.handler.ServeHTTP(w, r)
	c.watchTimer.Stop()
	c.cr.unwatch()
	if w.hijacked {
		c.hijacked = true
		return false
	}
	// The transport may still hold the body: stop it reading the
	// connection, and close if the request was not read to its end
	// (Envoy resets a stream whose response ends first).
	complete := body.finish()
	if !complete {
		c.bufsInUse = body.readInFlight()
	}
	if !w.finish() || !complete {
		return false
	}
	return w.keepAlive && !c.d.noKeepAlive.Load()
}

func splitList(v string) map[string]struct{} {
	m := map[string]struct{}{}
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.Trim(part, " \t"); part != "" {
			m[part] = struct{}{}
		}
	}
	return m
}

// h1RequestBody is a request body read from the connection, by Content-Length or
// chunked. Reads may come from the transport's goroutine; finish fences
// them off when the request ends.
type h1RequestBody struct {
	c       *serverConn
	br      *bufio.Reader
	w       *h1ResponseWriter
	chunked *chunkedReader
	trailer http.Header
	expect  bool // send "100 Continue" before the first read

	mu       sync.Mutex
	left     int64
	eof      bool
	err      error
	closed   bool
	reading  bool
	inFlight bool // finish found a read running
}

func (b *h1RequestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyAfterClose
	}
	if b.eof {
		b.mu.Unlock()
		return 0, io.EOF
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.reading = true
	expect := b.expect
	b.expect = false
	b.mu.Unlock()

	if expect {
		b.w.sendContinue()
	}
	var n int
	var err error
	if b.chunked != nil {
		n, err = b.chunked.Read(p)
	} else {
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err = b.br.Read(p)
		b.left -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		} else if err == nil && b.left == 0 {
			err = io.EOF
		}
	}

	b.mu.Lock()
	b.reading = false
	switch {
	case err == io.EOF:
		b.eof = true
		if b.chunked != nil {
			for k, v := range b.chunked.trailer {
				if b.trailer != nil {
					b.trailer[k] = v
				}
			}
		}
	case err != nil:
		b.err = err
	}
	b.mu.Unlock()
	return n, err
}

func (b *h1RequestBody) Close() error { return nil }

// complete reports whether the body has been read to its end without
// error, so the connection could carry another request.
func (b *h1RequestBody) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof && b.err == nil
}

// finish fences the body off from late readers and reports whether it was
// read to its end, so the connection can carry another request.
func (b *h1RequestBody) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.reading {
		// A read is blocked on the connection: only closing it frees
		// the reader.
		b.inFlight = true
		b.c.nc.Close()
		return false
	}
	return b.eof
}

// readInFlight reports whether finish found a read still running.
func (b *h1RequestBody) readInFlight() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inFlight
}

// downstreamCodecError returns the framing error that ended r's body, if
// r came from the HTTP/1.1 codec and its body broke framing.
func downstreamCodecError(r *http.Request) *headParseError {
	b, ok := r.Body.(*h1RequestBody)
	if !ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var pe *headParseError
	if errors.As(b.err, &pe) {
		return pe
	}
	return nil
}

// disconnectWatchDelay is how long a request runs before its connection is
// watched for the client going away.
const disconnectWatchDelay = 50 * time.Millisecond

// connReader is what the HTTP/1.1 codec's bufio.Reader reads from. While a
// request waits for its response, a watcher reads ahead one byte to learn
// that the client closed the connection; that byte is handed back to the
// next read.
type connReader struct {
	nc net.Conn

	mu       sync.Mutex
	gen      uint64 // the request being watched; bumped by unwatch
	pending  bool
	b        [1]byte
	watching bool
	done     chan struct{}
}

func (cr *connReader) Read(p []byte) (int, error) {
	cr.mu.Lock()
	if cr.pending {
		cr.pending = false
		p[0] = cr.b[0]
		cr.mu.Unlock()
		return 1, nil
	}
	cr.mu.Unlock()
	return cr.nc.Read(p)
}

// awaitByte blocks until the client sends something, keeping that byte for
// the next read; it needs no buffer.
func (cr *connReader) awaitByte() error {
	cr.mu.Lock()
	pending := cr.pending // read ahead by a disconnect watch
	cr.mu.Unlock()
	if pending {
		return nil
	}
	var b [1]byte
	n, err := cr.nc.Read(b[:])
	if n == 1 {
		cr.mu.Lock()
		cr.pending, cr.b[0] = true, b[0]
		cr.mu.Unlock()
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// generation identifies the current request for watch.
func (cr *connReader) generation() uint64 {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.gen
}

// watch starts the read-ahead for request gen if its body is complete and
// the client has sent nothing more yet (a pipelined request is already
// proof that it is there).
func (cr *connReader) watch(gen uint64, br *bufio.Reader, body *h1RequestBody, cancel context.CancelCauseFunc) {
	body.mu.Lock()
	quiet := body.eof && !body.reading && !body.closed
	body.mu.Unlock()
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if !quiet || gen != cr.gen || cr.pending || cr.watching || br.Buffered() > 0 {
		return
	}
	cr.watching = true
	cr.done = make(chan struct{})
	go func() {
		defer close(cr.done)
		n, err := cr.nc.Read(cr.b[:])
		cr.mu.Lock()
		defer cr.mu.Unlock()
		if n == 1 {
			cr.pending = true
		}
		if err != nil && gen == cr.gen {
			cancel(errDownstreamGone)
		}
	}()
}

// unwatch ends request gen's watch, stopping a read-ahead in progress,
// before the connection is used again.
func (cr *connReader) unwatch() {
	cr.mu.Lock()
	cr.gen++
	watching, done := cr.watching, cr.done
	cr.watching = false
	cr.mu.Unlock()
	if watching {
		_ = cr.nc.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = cr.nc.SetReadDeadline(time.Time{})
	}
}

// connFilterStateKey carries a connection's filter state to its requests.
type connFilterStateKey struct{}

func withConnFilterState(ctx context.Context, fs map[string]string) context.Context {
	return context.WithValue(ctx, connFilterStateKey{}, fs)
}

// connFilterState is the filter state of the connection r came on.
func connFilterState(r *http.Request) map[string]string {
	fs, _ := r.Context().Value(connFilterStateKey{}).(map[string]string)
	return fs
}
