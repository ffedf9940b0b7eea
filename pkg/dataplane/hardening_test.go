package dataplane

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// edgeHCM sets the bounds translate emits for edge listeners.
func edgeHCM(headersTimeout time.Duration) func(*hcmv3.HttpConnectionManager) {
	return func(h *hcmv3.HttpConnectionManager) {
		h.RequestHeadersTimeout = durationpb.New(headersTimeout)
		h.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(100),
			InitialStreamWindowSize:     wrapperspb.UInt32(65536),
			InitialConnectionWindowSize: wrapperspb.UInt32(1 << 20),
		}
	}
}

func hardenedProxy(t *testing.T, opts Options, b *backend, mutate ...func(*hcmv3.HttpConnectionManager)) (*Proxy, string) {
	t.Helper()
	p := newTestProxy(t, opts)
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", mutate...)},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, routeTo(prefixMatch("/"), b.name)))},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)
	return p, p.ListenerAddr("l").String()
}

func okBackend(t *testing.T) *backend {
	b := &backend{name: "ok"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	return b
}

func getOK(t *testing.T, addr string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("a normal client was not served: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("a normal client got %d %q", resp.StatusCode, body)
	}
}

// TestSlowloris: 1,000 connections that never finish their headers hold no
// one else up, and each is answered 408 and closed at
// request_headers_timeout.
func TestSlowloris(t *testing.T) {
	const n, timeout = 1000, time.Second
	b := okBackend(t)
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(timeout))

	conns := make([]net.Conn, n)
	sentAt := make([]time.Time, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a"); err != nil {
			t.Fatal(err)
		}
		conns[i], sentAt[i] = c, time.Now()
	}
	getOK(t, addr)

	var wg sync.WaitGroup
	var timedOut, wrong, early atomic.Int64
	var latest atomic.Int64 // the longest time from a slow request's first bytes to its close
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(10 * timeout))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				wrong.Add(1)
				return
			}
			if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
				wrong.Add(1)
			}
			io.Copy(io.Discard, resp.Body)
			if _, err := c.Read(make([]byte, 1)); err == io.EOF {
				timedOut.Add(1)
			}
			d := time.Since(sentAt[i])
			if d < timeout-100*time.Millisecond {
				early.Add(1)
			}
			for {
				old := latest.Load()
				if int64(d) <= old || latest.CompareAndSwap(old, int64(d)) {
					break
				}
			}
		}()
	}
	wg.Wait()
	if timedOut.Load() != n || wrong.Load() != 0 || early.Load() != 0 {
		t.Fatalf("%d of %d slow connections got 408 and were closed (%d wrong answers, %d before the timeout)", timedOut.Load(), n, wrong.Load(), early.Load())
	}
	// Closed at the timeout, not at the 1 h idle timeout; the slack is
	// for a loaded 2-core machine handling 1,000 timers at once.
	if d := time.Duration(latest.Load()); d > timeout+5*time.Second {
		t.Errorf("a slow connection was closed %v after its first bytes, want about %v", d, timeout)
	}
	t.Logf("%d slow connections closed, at most %v after their first bytes", n, time.Duration(latest.Load()))
}

// TestHeaderFlood: a head that never ends is cut off at 60 KiB with 431.
func TestHeaderFlood(t *testing.T) {
	b := okBackend(t)
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(10*time.Second))
	c := dialRaw(t, addr)
	sent := make(chan int64, 1)
	go func() {
		var total int64
		line := "X-Flood: " + strings.Repeat("a", 1000) + "\r\n"
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
		for total < 64<<20 {
			n, err := io.WriteString(c, line)
			total += int64(n)
			if err != nil {
				break
			}
		}
		sent <- total
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	c.Close()
	if total := <-sent; total >= 64<<20 {
		t.Errorf("the proxy kept reading a head for %d bytes", total)
	}
	getOK(t, addr)
}

// h2cConn is a raw HTTP/2 client connection for attacks that a normal
// client would never make.
type h2cConn struct {
	c  net.Conn
	fr *http2.Framer
	mu sync.Mutex
	hb bytes.Buffer
	he *hpack.Encoder
}

func dialH2C(t *testing.T, addr string) *h2cConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &h2cConn{c: c, fr: http2.NewFramer(c, c)}
	h.he = hpack.NewEncoder(&h.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *h2cConn) headerBlock(path string) []byte {
	h.hb.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "a"}, {Name: ":path", Value: path}} {
		h.he.WriteField(f)
	}
	return bytes.Clone(h.hb.Bytes())
}

// TestHTTP2Settings: the HCM's http2_protocol_options reach the client.
func TestHTTP2Settings(t *testing.T) {
	b := okBackend(t)
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(10*time.Second))
	h := dialH2C(t, addr)
	defer h.c.Close()
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	want := map[http2.SettingID]uint32{http2.SettingMaxConcurrentStreams: 100, http2.SettingInitialWindowSize: 65536}
	for id, v := range want {
		if got, ok := sf.Value(id); !ok || got != v {
			t.Errorf("%v = %d (sent: %v), want %d", id, got, ok, v)
		}
	}
	// The connection window is raised to 1 MiB by a WINDOW_UPDATE.
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
			if got := wu.Increment + 65535; got != 1<<20 {
				t.Errorf("connection window %d, want %d", got, 1<<20)
			}
			return
		}
	}
}

func goroutinesSettle(t *testing.T, baseline int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= baseline+10 || time.Now().After(deadline) {
			return n
		}
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond) // polling a count, not waiting for an event
	}
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHTTP2RapidReset: 10,000 streams opened and reset at once
// (CVE-2023-44487) leave goroutines and memory where they were, and the
// proxy serves normal clients afterwards.
func TestHTTP2RapidReset(t *testing.T) {
	b := &backend{name: "slow"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(10*time.Second))
	getOK := func() {
		c := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}, Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + addr + "/?fast")
		if err != nil {
			t.Fatalf("a normal HTTP/2 client was not served: %v", err)
		}
		resp.Body.Close()
	}
	getOK()
	baseG, baseHeap := runtime.NumGoroutine(), heapInuse()

	const streams = 10000
	sent, conns := 0, 0
	for sent < streams {
		h := dialH2C(t, addr)
		conns++
		go io.Copy(io.Discard, h.c) // keep reading, as an attacker would
		for id := uint32(1); sent < streams; id += 2 {
			block := h.headerBlock("/")
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
				break // the proxy closed the connection: reconnect
			}
			if err := h.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				break
			}
			sent++
		}
		h.c.Close()
	}
	g := goroutinesSettle(t, baseG)
	heap := heapInuse()
	t.Logf("%d reset streams over %d connections; upstream saw %d; goroutines %d -> %d; heap %d KiB -> %d KiB",
		sent, conns, b.hits.Load(), baseG, g, baseHeap>>10, heap>>10)
	if g > baseG+10 {
		t.Errorf("goroutines did not return to baseline: %d, was %d", g, baseG)
	}
	if heap > baseHeap+16<<20 {
		t.Errorf("heap grew by %d KiB", (heap-baseHeap)>>10)
	}
	getOK()
}

func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// TestHTTP2ContinuationFlood: a header block that never ends is refused
// long before it could exhaust memory.
func TestHTTP2ContinuationFlood(t *testing.T) {
	b := okBackend(t)
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(10*time.Second))
	h := dialH2C(t, addr)
	defer h.c.Close()
	_ = h.c.SetDeadline(time.Now().Add(20 * time.Second))
	go io.Copy(io.Discard, h.c)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock("/"), EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	var sent int
	for sent < 256<<20 {
		if err := h.fr.WriteContinuation(1, false, chunk); err != nil {
			break
		}
		sent += len(chunk)
	}
	if sent >= 256<<20 {
		t.Fatalf("the proxy accepted %d MiB of CONTINUATION frames", sent>>20)
	}
	t.Logf("connection closed after %d KiB of CONTINUATION frames", sent>>10)
	getOK(t, addr)
}

// TestUpstreamHugeResponseHeaders: 1 MiB of response headers is a 502, and
// the proxy goes on serving.
func TestUpstreamHugeResponseHeaders(t *testing.T) {
	huge := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 1024) + "Content-Length: 2\r\n\r\nok"
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) { return huge, false })
	})
	b := &backend{name: "huge", addr: s.addr}
	_, addr := hardenedProxy(t, Options{}, b, edgeHCM(10*time.Second))
	for _, method := range []string{"GET", "POST"} { // weir's HTTP/1.1 client and Go's transport
		req, _ := http.NewRequest(method, "http://"+addr+"/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", method, resp.StatusCode)
		}
	}
	ok := okBackend(t)
	_, addr2 := hardenedProxy(t, Options{}, ok)
	getOK(t, addr2)
}

// TestUpstreamTooManyResponseHeaders: more than 100 response headers is a
// 502 on every upstream transport, as Envoy's max_headers_count.
func TestUpstreamTooManyResponseHeaders(t *testing.T) {
	many := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-N: 1\r\n", 101) + "Content-Length: 2\r\n\r\nok"
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) { return many, false })
	})
	_, addr := hardenedProxy(t, Options{}, &backend{name: "many", addr: s.addr})
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://"+addr+"/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", method, resp.StatusCode)
		}
	}
}

// TestClientDisconnectCancelsUpstream: a client that goes away while its
// request waits for the upstream cancels the upstream request.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	arrived := make(chan struct{})
	b := &backend{name: "wait"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(30 * time.Second):
		}
	}))
	_, addr := hardenedProxy(t, Options{}, b)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-arrived
	start := time.Now()
	c.Close()
	select {
	case <-cancelled:
		t.Logf("upstream cancelled %v after the client left", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request outlived its client by 10 s")
	}
}

// TestDownstreamConnectionLimit: connections over the cap are closed at
// accept; the ones inside it are served.
func TestDownstreamConnectionLimit(t *testing.T) {
	b := okBackend(t)
	p, addr := hardenedProxy(t, Options{MaxDownstreamConnections: 5}, b)
	var held []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The server has counted the five once a request on each is served.
	for _, c := range held {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("a connection inside the cap: %v %v", resp, err)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = extra.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(extra, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("the sixth connection was served")
	}
	extra.Close()
	if got := p.listenerRejected("l"); got != 1 {
		t.Errorf("rejected connections %d, want 1", got)
	}
	held[0].Close()
	// Once the server has seen the close, a new connection fits.
	deadline := time.Now().Add(10 * time.Second)
	for p.listenerOpen("l") >= 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a count
	}
	getOK(t, addr)
}

// TestEdgeHeaderSanitising: an external client's x-envoy-* headers are
// dropped with use_remote_address; an internal client's are kept.
func TestEdgeHeaderSanitising(t *testing.T) {
	for remote, keep := range map[string]bool{"203.0.113.7:5000": false, "10.1.2.3:5000": true, "127.0.0.1:5000": true} {
		r, _ := http.NewRequest("GET", "http://a/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Envoy-Retry-On", "5xx")
		r.Header.Set("X-Envoy-Internal", "true")
		r.Header.Set("X-Other", "1")
		s := &stream{r: r, hcm: &hcmConf{useRemote: true}}
		s.prepareRequestHeaders(r.Header)
		_, kept := r.Header["X-Envoy-Retry-On"]
		_, kept2 := r.Header["X-Envoy-Internal"]
		if kept != keep || kept2 != keep || r.Header.Get("X-Other") != "1" {
			t.Errorf("%s: x-envoy-* kept %v/%v, want %v; other header %q", remote, kept, kept2, keep, r.Header.Get("X-Other"))
		}
	}
}

func (p *Proxy) listenerRejected(name string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listeners[name].srv.rejected.Load()
}

func (p *Proxy) listenerOpen(name string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listeners[name].srv.open.Load()
}

// TestReadAheadByteIsKept: the disconnect watch reads one byte ahead of a
// slow request; a pipelined request that arrives then must reach the
// proxy whole, after the connection has gone idle and given its buffers
// back.
func TestReadAheadByteIsKept(t *testing.T) {
	release := make(chan struct{})
	b := &backend{name: "slow"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	p, addr := hardenedProxy(t, Options{}, b)
	c := dialRaw(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	// Wait until the proxy's read-ahead is running, then send the next
	// request: its first byte lands in the read-ahead.
	deadline := time.Now().Add(5 * time.Second)
	for !p.readAheadRunning("l") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a flag
	}
	if !p.readAheadRunning("l") {
		t.Fatal("no read-ahead started for a slow request")
	}
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	close(release)
	br := bufio.NewReader(c)
	for _, want := range []string{"GET /slow", "GET /next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response for %s: %v", want, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

func (p *Proxy) readAheadRunning(name string) bool {
	p.mu.Lock()
	d := p.listeners[name].srv
	p.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.cr.mu.Lock()
		w := c.cr.watching
		c.cr.mu.Unlock()
		if w {
			return true
		}
	}
	return false
}

// TestUpstreamFramingIsNormalised: a duplicated Content-Length from the
// upstream reaches the client as one, never beside chunked framing; a 101
// that nobody asked for is a 502, not a tunnel.
func TestUpstreamFramingIsNormalised(t *testing.T) {
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(_ int, req *http.Request) (string, bool) {
			if req.URL.Path == "/switch" {
				return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", false
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", true
		})
	})
	_, addr := hardenedProxy(t, Options{}, &backend{name: "dup", addr: s.addr})
	c := dialRaw(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello" || len(resp.Header.Values("Content-Length")) != 1 || len(resp.TransferEncoding) != 0 {
		t.Errorf("body %q, Content-Length %v, Transfer-Encoding %v; want one length and no chunking",
			body, resp.Header.Values("Content-Length"), resp.TransferEncoding)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/switch", strings.NewReader("x"))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusBadGateway {
		t.Errorf("an unrequested 101: status %d, want 502", r2.StatusCode)
	}
}
