package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer accepts connections and runs handle on each, counting them.
type rawServer struct {
	addr  string
	conns atomic.Int64
}

func startRawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &rawServer{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return s
}

// readRequests reads requests off a connection and answers each with
// respond, until the client goes or respond returns false. It reads what
// respond left of each body: a socket closed with unread bytes sends a
// reset, which can reach the proxy before the response it follows and
// make it a 503.
func readRequests(c net.Conn, br *bufio.Reader, respond func(n int, req *http.Request) (string, bool)) {
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		out, more := respond(n, req)
		_, _ = io.Copy(io.Discard, req.Body)
		if _, err := io.WriteString(c, out); err != nil || !more {
			return
		}
	}
}

func newTestH1(t *testing.T) *h1Transport {
	t.Helper()
	d := &net.Dialer{}
	tr := newH1Transport(d.DialContext, &http.Transport{}, time.Hour, 16, newIdleBudget(1024))
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func h1Get(t *testing.T, tr http.RoundTripper, ctx context.Context, addr, method string) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+"/", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

func TestH1TransportReusesConnections(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(n int, req *http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	for i := 0; i < 20; i++ {
		if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d connections, want 1", n)
	}
}

// TestH1TransportIdleConnectionsHoldNoBuffers: an idle connection gives
// its 32 KiB of buffers back, and takes them again when it is reused.
func TestH1TransportIdleConnectionsHoldNoBuffers(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(n int, req *http.Request) (string, bool) {
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", n), true
		})
	})
	tr := newTestH1(t)
	for i := 0; i < 3; i++ {
		if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != strconv.Itoa(i) {
			t.Fatalf("request %d on the one connection: %q %v", i, body, err)
		}
		tr.mu.Lock()
		idle := tr.idle[s.addr]
		tr.mu.Unlock()
		if len(idle) != 1 {
			t.Fatalf("after request %d: %d idle connections, want 1", i, len(idle))
		}
		if idle[0].br != nil || idle[0].bw != nil {
			t.Errorf("after request %d: the idle connection holds its buffers", i)
		}
	}
}

// TestH1TransportRetriesStaleConnection: the server closes a pooled
// connection after one response without saying so; the next request goes
// on a new connection instead of failing.
func TestH1TransportRetriesStaleConnection(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
	})
	tr := newTestH1(t)
	for i := 0; i < 5; i++ {
		if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
		time.Sleep(10 * time.Millisecond) // let the close arrive
	}
	if n := s.conns.Load(); n != 5 {
		t.Errorf("connections = %d, want 5 (one per request)", n)
	}
}

func TestH1TransportConnectionClose(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	for i := 0; i < 3; i++ {
		if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("connections = %d, want 3: a Connection: close response must not be pooled", n)
	}
}

func TestH1TransportInformationalAndChunked(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) {
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n", true
		})
	})
	tr := newTestH1(t)
	res, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet)
	if err != nil || res.StatusCode != 200 || body != "abc" || res.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("got %v %q trailer %v, err %v", res, body, res.Trailer, err)
	}
	if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "abc" {
		t.Fatalf("second request: %q %v", body, err)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("connections = %d, want 1", n)
	}
}

// TestH1TransportCancelAndEarlyClose: a cancelled request fails at once,
// and a body closed before its end closes the connection.
func TestH1TransportCancelAndEarlyClose(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(_ int, req *http.Request) (string, bool) {
			if req.URL.Query().Get("slow") != "" {
				time.Sleep(10 * time.Second)
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", true
		})
	})
	tr := newTestH1(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/?slow=1", nil)
	t0 := time.Now()
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
		t.Fatalf("cancelled request: %v after %v", err, time.Since(t0))
	}

	req, _ = http.NewRequest(http.MethodGet, "http://"+s.addr+"/", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	tr.mu.Lock()
	n := len(tr.idle[s.addr])
	tr.mu.Unlock()
	if n != 0 {
		t.Errorf("a half-read connection went back to the pool (%d idle)", n)
	}
	before := s.conns.Load()
	if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "0123456789" {
		t.Fatalf("after early close: %q %v", body, err)
	}
	if s.conns.Load() != before+1 {
		t.Error("the request after an early close did not dial a new connection")
	}
}

// TestH1TransportFallback: requests with a body and non-idempotent methods
// go through Go's Transport.
func TestH1TransportFallback(t *testing.T) {
	t.Parallel()
	var methods atomic.Value
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(_ int, req *http.Request) (string, bool) {
			b, _ := io.ReadAll(req.Body)
			methods.Store(req.Method + " " + string(b))
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/", strings.NewReader("body"))
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if got := methods.Load(); got != "POST body" {
		t.Errorf("server saw %q", got)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if _, ok := tr.idle[s.addr]; ok {
		t.Error("a request with a body went through the fast path")
	}
}

// TestH1TransportUnsolicitedBytes: an upstream that sends more than the
// response (a body on a HEAD) must not hand those bytes to the next
// request as its response.
func TestH1TransportUnsolicitedBytes(t *testing.T) {
	t.Parallel()
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(_ int, req *http.Request) (string, bool) {
			if req.Method == http.MethodHead {
				return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbogus!", true
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	if _, _, err := h1Get(t, tr, context.Background(), s.addr, http.MethodHead); err != nil {
		t.Fatal(err)
	}
	if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "ok" {
		t.Fatalf("the request after an unsolicited response got %q, %v", body, err)
	}
}

// TestH1TransportLateUnsolicitedBytes: bytes an upstream sends on a
// connection after its response has been read, while the connection sits
// in the pool, must not become the next request's response.
func TestH1TransportLateUnsolicitedBytes(t *testing.T) {
	t.Parallel()
	gotFirst, strayWritten := make(chan struct{}), make(chan struct{})
	var served atomic.Int64
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(_ int, req *http.Request) (string, bool) {
			if served.Add(1) > 1 {
				return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh", true
			}
			go func() {
				<-gotFirst
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSTOLEN")
				close(strayWritten)
			}()
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "ok" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	close(gotFirst)
	// On loopback a completed write is in the peer's receive buffer.
	<-strayWritten
	if _, body, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil || body != "fresh" {
		t.Fatalf("the request after a late unsolicited response got %q, %v; want a fresh connection's answer", body, err)
	}
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2: the tainted one must not be reused", n)
	}
}

func TestH1TransportResponseHeaderLimit(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 70<<10)
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	tr := newTestH1(t)
	if _, _, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err == nil {
		t.Fatal("a 70 KiB response header was accepted")
	}
}

// startCountingServer answers every request with 200 "ok" and counts its
// open connections.
func startCountingServer(t *testing.T) (*rawServer, *atomic.Int64) {
	open := &atomic.Int64{}
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		open.Add(1)
		defer open.Add(-1)
		readRequests(c, br, func(int, *http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
	})
	return s, open
}

// TestH1TransportIdleConnections: pooled connections close after the idle
// timeout, when their endpoint leaves the cluster, and when the pool is
// closed, including connections still in use at that moment.
func TestH1TransportIdleConnections(t *testing.T) {
	t.Parallel()
	s, open := startCountingServer(t)
	eventuallyOpen := func(want int64, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); open.Load() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d upstream connections open, want %d", what, open.Load(), want)
			}
		}
	}
	d := &net.Dialer{}
	tr := newH1Transport(d.DialContext, &http.Transport{}, 100*time.Millisecond, 16, newIdleBudget(1024))
	if _, _, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil {
		t.Fatal(err)
	}
	eventuallyOpen(1, "after a request")
	eventuallyOpen(0, "after the idle timeout")

	tr = newH1Transport(d.DialContext, &http.Transport{}, time.Hour, 16, newIdleBudget(1024))
	if _, _, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil {
		t.Fatal(err)
	}
	tr.retain(map[string]bool{"127.0.0.1:1": true})
	eventuallyOpen(0, "after the endpoint left")

	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	eventuallyOpen(0, "after a response that ended once the pool was closed")
}

// TestIdleBudgetAcrossPools: with many clusters' pools pointing at one
// backend (Knative's activator behind thousands of revisions), idle
// connections stay within the proxy-wide budget, the longest idle is the
// one closed, and every request still succeeds.
func TestIdleBudgetAcrossPools(t *testing.T) {
	t.Parallel()
	s, open := startCountingServer(t)
	budget := newIdleBudget(3)
	d := &net.Dialer{}
	var pools []*h1Transport
	for range 10 {
		tr := newH1Transport(d.DialContext, &http.Transport{}, time.Hour, 16, budget)
		pools = append(pools, tr)
		if _, _, err := h1Get(t, tr, context.Background(), s.addr, http.MethodGet); err != nil {
			t.Fatal(err)
		}
		if n := budget.idle(); n > 3 {
			t.Fatalf("%d idle connections held, budget 3", n)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); open.Load() != 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections open, want the budget's 3", open.Load())
		}
	}
	// The three newest pools kept theirs; the oldest dials again.
	for i, tr := range pools {
		tr.mu.Lock()
		n := len(tr.idle[s.addr])
		tr.mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[i >= 7]; n != want {
			t.Errorf("pool %d holds %d idle connections, want %d", i, n, want)
		}
	}
	if _, _, err := h1Get(t, pools[0], context.Background(), s.addr, http.MethodGet); err != nil {
		t.Fatalf("a pool whose connection was evicted: %v", err)
	}
	if n := budget.idle(); n != 3 {
		t.Errorf("%d idle after reusing the oldest pool, want 3", n)
	}
}
