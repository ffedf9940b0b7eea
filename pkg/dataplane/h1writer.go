package dataplane

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1ResponseWriter writes one HTTP/1.1 response: the status line and
// headers on the first write or flush, then the body with the framing the
// headers ask for (Content-Length, or chunked with trailers).
type h1ResponseWriter struct {
	c    *serverConn
	bw   *bufio.Writer
	req  *http.Request
	body *h1RequestBody

	// mu serialises writes with the "100 Continue" that a body read may
	// send from the transport's goroutine.
	mu          sync.Mutex
	header      http.Header
	status      int
	wroteHeader bool
	chunked     bool
	noBody      bool  // HEAD, 1xx, 204, 304
	declared    int64 // Content-Length given, or -1
	written     int64
	keepAlive   bool
	hijacked    bool
	failed      bool
	// cancel ends the request's context; the stream uses it for its own
	// timeouts instead of deriving a second context.
	cancel context.CancelCauseFunc
}

// requestCanceler lets the stream cancel the request's context with a cause.
func (w *h1ResponseWriter) requestCanceler() context.CancelCauseFunc { return w.cancel }

// SetReadDeadline bounds reads of the request body, for
// http.ResponseController; the connection's next request sets its own.
func (w *h1ResponseWriter) SetReadDeadline(t time.Time) error { return w.c.nc.SetReadDeadline(t) }

var errBodyTooLong = errors.New("http: wrote more than the declared Content-Length")

func (w *h1ResponseWriter) Header() http.Header { return w.header }

func (w *h1ResponseWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	w.status = code
	w.wroteHeader = true
	w.declared = -1
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, ok := singleLength(cl); ok {
			w.declared = n
			w.header["Content-Length"] = []string{formatInt(n)}
		} else {
			delete(w.header, "Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || code < 200 || code == 204 || code == 304
	w.chunked = !w.noBody && w.declared < 0
	if code < 200 || code == 204 {
		delete(w.header, "Content-Length")
	}
	if w.hasClose() || !w.body.complete() {
		// A response that starts before its request was read whole
		// ends the connection (Envoy resets such a stream), and says so.
		w.keepAlive = false
	}
	if !w.keepAlive || w.c.d.noKeepAlive.Load() {
		w.keepAlive = false
	}
	w.writeHead()
}

func (w *h1ResponseWriter) hasClose() bool {
	for _, v := range w.header["Connection"] {
		if hasToken(v, "close") {
			return true
		}
	}
	return false
}

// dateValue caches the Date header, which changes once a second.
var dateValue atomic.Pointer[dateCache]

type dateCache struct {
	sec int64
	val string
}

func httpDate() string {
	now := time.Now()
	if d := dateValue.Load(); d != nil && d.sec == now.Unix() {
		return d.val
	}
	d := &dateCache{sec: now.Unix(), val: now.UTC().Format(http.TimeFormat)}
	dateValue.Store(d)
	return d.val
}

// writeHead writes the status line and headers, skipping any field that
// could split the response.
func (w *h1ResponseWriter) writeHead() {
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	if text := http.StatusText(w.status); text != "" {
		bw.WriteString(strconv.Itoa(w.status))
		bw.WriteByte(' ')
		bw.WriteString(text)
	} else {
		bw.WriteString(strconv.Itoa(w.status))
		bw.WriteString(" status code ")
		bw.WriteString(strconv.Itoa(w.status))
	}
	bw.WriteString("\r\n")
	for k, vv := range w.header {
		switch k {
		case "Connection", "Transfer-Encoding", "Keep-Alive":
			continue
		case "Content-Length":
			if w.chunked {
				continue // the framing is chunked: never both
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	if _, ok := w.header["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !w.keepAlive && w.status >= 200 {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

func (w *h1ResponseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeaderLocked() {
		w.WriteHeader(http.StatusOK)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked || w.failed {
		return 0, http.ErrHijacked
	}
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		w.failed = true
		return 0, errBodyTooLong
	}
	w.written += int64(len(p))
	var err error
	if w.chunked {
		w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		_, err = w.bw.Write(p)
		w.bw.WriteString("\r\n")
	} else {
		_, err = w.bw.Write(p)
	}
	if err != nil {
		w.failed = true
		return 0, err
	}
	return len(p), nil
}

func (w *h1ResponseWriter) wroteHeaderLocked() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wroteHeader
}

// Flush sends what is buffered; FlushError reports a gone client.
func (w *h1ResponseWriter) FlushError() error {
	if !w.wroteHeaderLocked() {
		w.WriteHeader(http.StatusOK)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked || w.failed {
		return http.ErrHijacked
	}
	if err := w.bw.Flush(); err != nil {
		w.failed = true
		return err
	}
	return nil
}

func (w *h1ResponseWriter) Flush() { _ = w.FlushError() }

// Hijack hands the connection to an upgrade. What the client sent after
// the request head stays readable through the returned reader.
func (w *h1ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader {
		return nil, nil, errors.New("http: response already started")
	}
	w.hijacked = true
	w.c.setIdle(false)
	// No read-ahead may run on an upgraded connection; a byte it already
	// took is read back through the connReader.
	w.c.cr.unwatch()
	_ = w.c.nc.SetDeadline(time.Time{})
	return &hijackedConn{Conn: w.c.nc, r: &w.c.cr}, bufio.NewReadWriter(w.body.br, w.bw), nil
}

// finish ends the response: the last chunk with its trailers, or a check
// that a Content-Length response was complete. It returns false when the
// connection cannot be reused.
func (w *h1ResponseWriter) finish() bool {
	if !w.wroteHeaderLocked() {
		w.WriteHeader(http.StatusOK)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed {
		return false
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		w.writeTrailers()
		w.bw.WriteString("\r\n")
	}
	if err := w.bw.Flush(); err != nil {
		return false
	}
	if w.declared >= 0 && !w.noBody && w.written < w.declared {
		// A short body leaves the client waiting for bytes that will
		// never come; closing tells it the response is truncated.
		return false
	}
	return true
}

// writeTrailers writes the values of the announced trailers and of any
// http.TrailerPrefix keys.
func (w *h1ResponseWriter) writeTrailers() {
	write := func(k string, vv []string) {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return
		}
		for _, v := range vv {
			writeField(w.bw, k, v)
		}
	}
	for _, announced := range w.header["Trailer"] {
		for k := range strings.SplitSeq(announced, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			write(k, w.header[k])
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			write(http.CanonicalHeaderKey(k[len(http.TrailerPrefix):]), vv)
		}
	}
}

// sendContinue writes "100 Continue" unless the response has started.
func (w *h1ResponseWriter) sendContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader || w.hijacked {
		return
	}
	w.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	_ = w.bw.Flush()
}

// hijackedConn reads through the connReader, which may hold a byte read
// ahead before the upgrade.
type hijackedConn struct {
	net.Conn
	r *connReader
}

func (h *hijackedConn) Read(p []byte) (int, error) { return h.r.Read(p) }

// writeField writes one header field, unless its value could split the
// message (CR, LF or other controls).
func writeField(bw *bufio.Writer, k, v string) {
	if !httpguts.ValidHeaderFieldValue(v) {
		return
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}
