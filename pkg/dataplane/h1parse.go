package dataplane

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
)

// The downstream HTTP/1.1 parser. It accepts what RFC 9112 requires a
// server to accept and refuses, with Envoy's status codes, everything that
// request smuggling relies on: both Content-Length and Transfer-Encoding,
// unequal or malformed Content-Lengths, transfer codings other than
// chunked, obs-fold, bare LF, whitespace before a colon, control
// characters, oversized chunk sizes.

// headParseError is a request the server answers itself and then closes the
// connection.
type headParseError struct {
	code   int
	reason string
}

func (e *headParseError) Error() string { return e.reason }

func badRequest(reason string) error {
	return &headParseError{code: http.StatusBadRequest, reason: reason}
}

var (
	errHeadersTooLarge = &headParseError{code: http.StatusRequestHeaderFieldsTooLarge, reason: "headers size exceeds limit"}
	errTooManyHeaders  = &headParseError{code: http.StatusRequestHeaderFieldsTooLarge, reason: "too many headers"}
	errHTTP10          = &headParseError{code: http.StatusUpgradeRequired, reason: "HTTP/1.0 is not accepted"}
	errUnsupportedTE   = &headParseError{code: http.StatusNotImplemented, reason: "unsupported transfer encoding"}
)

// headLimits are the HCM's bounds on a request head.
type headLimits struct {
	maxBytes   int // max_request_headers_kb
	maxHeaders int // common_http_protocol_options.max_headers_count
}

// requestHead is a parsed request line and header block.
type requestHead struct {
	method, target, proto string
	header                http.Header
	host                  string
	contentLength         int64 // -1: none given
	chunked               bool
	close                 bool // Connection: close
	expectContinue        bool
	uri                   *url.URL
}

// headBufPool holds the buffers a request head is assembled in.
var headBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readLine returns the next CRLF-terminated line without its CRLF, copied
// into *buf when it did not fit the reader's buffer. A bare LF is an error.
func readLine(br *bufio.Reader, budget *int, buf *[]byte) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return nil, errHeadersTooLarge
		}
		if err == bufio.ErrBufferFull {
			*buf = append(*buf, frag...)
			line = *buf
			continue
		}
		if err != nil {
			return nil, err
		}
		if line != nil {
			*buf = append(*buf, frag...)
			line = *buf
		} else {
			line = frag
		}
		break
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, badRequest("bare LF")
	}
	return line[:len(line)-2], nil
}

// readRequestHead reads and validates one request head.
func readRequestHead(br *bufio.Reader, lim headLimits) (*requestHead, error) {
	budget := lim.maxBytes
	bp := headBufPool.Get().(*[]byte)
	defer func() { *bp = (*bp)[:0]; headBufPool.Put(bp) }()

	line, err := readLine(br, &budget, bp)
	if err != nil {
		return nil, err
	}
	h := &requestHead{contentLength: -1}
	if err := h.parseRequestLine(line); err != nil {
		return nil, err
	}
	*bp = (*bp)[:0]

	h.header = make(http.Header, 8)
	count := 0
	var clValues []string
	hosts := 0
	for {
		line, err := readLine(br, &budget, bp)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, badRequest("obs-fold header line")
		}
		count++
		if count > lim.maxHeaders {
			return nil, errTooManyHeaders
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, badRequest("header line without a name")
		}
		name := line[:colon]
		if !validToken(name) {
			return nil, badRequest("invalid header name")
		}
		value := trimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return nil, badRequest("invalid header value")
		}
		key := canonicalKey(name)
		v := string(value)
		switch key {
		case "Host":
			hosts++
		case "Content-Length":
			clValues = append(clValues, v)
		}
		*bp = (*bp)[:0]
		h.header[key] = append(h.header[key], v)
	}

	if hosts > 1 {
		return nil, badRequest("duplicate Host header")
	}
	if err := h.frame(clValues); err != nil {
		return nil, err
	}
	if err := h.resolveTarget(hosts); err != nil {
		return nil, err
	}
	for _, v := range h.header["Connection"] {
		if hasToken(v, "close") {
			h.close = true
		}
	}
	if ex, ok := h.header["Expect"]; ok {
		if len(ex) != 1 || !strings.EqualFold(ex[0], "100-continue") {
			return nil, &headParseError{code: http.StatusExpectationFailed, reason: "unsupported expectation"}
		}
		h.expectContinue = true
	}
	return h, nil
}

func (h *requestHead) parseRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return badRequest("malformed request line")
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return badRequest("malformed request line")
	}
	method, target, proto := line[:sp1], rest[:sp2], rest[sp2+1:]
	if !validToken(method) {
		return badRequest("invalid method")
	}
	for _, c := range target {
		// Envoy refuses fragments and raw non-ASCII in :path.
		if c <= ' ' || c >= 0x7f || c == '#' {
			return badRequest("invalid request target")
		}
	}
	switch string(proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		// Envoy's default (http_protocol_options.accept_http_10: false).
		return errHTTP10
	default:
		return badRequest("unsupported protocol version")
	}
	h.method = internMethod(method)
	h.target = string(target)
	h.proto = "HTTP/1.1"
	return nil
}

// frame decides how the body is delimited (RFC 9112 section 6.3).
func (h *requestHead) frame(clValues []string) error {
	te, hasTE := h.header["Transfer-Encoding"]
	if hasTE {
		if len(clValues) > 0 {
			// Envoy refuses both (allow_chunked_length: false).
			return badRequest("both Content-Length and Transfer-Encoding")
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return errUnsupportedTE
		}
		h.chunked = true
		return nil
	}
	if len(clValues) == 0 {
		return nil
	}
	// Repeated fields with one value are that value, as RFC 9110 section
	// 8.6 allows. A list inside one field is refused: net/http, which an
	// upstream may run, refuses it too, and no client needs it.
	var n int64 = -1
	for _, v := range clValues {
		m, ok := parseContentLength(strings.Trim(v, " \t"))
		if !ok {
			return badRequest("invalid Content-Length")
		}
		if n >= 0 && m != n {
			return badRequest("conflicting Content-Length values")
		}
		n = m
	}
	h.contentLength = n
	h.header["Content-Length"] = []string{formatInt(n)}
	return nil
}

// parseContentLength accepts 1*DIGIT that fits in an int64.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// resolveTarget parses the request target. An absolute-form target's
// authority replaces Host (RFC 9112 section 3.2.2), as in Envoy.
func (h *requestHead) resolveTarget(hosts int) error {
	t := h.target
	switch {
	case strings.HasPrefix(t, "/"):
		u, err := url.ParseRequestURI(t)
		if err != nil {
			return badRequest("invalid request target")
		}
		h.uri = u
		if hosts == 0 {
			return badRequest("missing Host header")
		}
		h.host = h.header["Host"][0]
	case len(t) > 7 && (strings.EqualFold(t[:7], "http://") || (len(t) > 8 && strings.EqualFold(t[:8], "https://"))):
		u, err := url.ParseRequestURI(t)
		if err != nil || u.Host == "" || u.User != nil {
			return badRequest("invalid absolute request target")
		}
		h.host = u.Host
		h.header["Host"] = []string{u.Host}
		u.Scheme, u.Host = "", ""
		if u.Path == "" {
			u.Path = "/"
		}
		h.uri = u
	default:
		// Asterisk-form and authority-form (CONNECT) are not served.
		return badRequest("unsupported request target form")
	}
	if !validHost(h.host) {
		return badRequest("invalid Host header")
	}
	return nil
}

func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '@' || c == '\\' {
			return false
		}
	}
	return true
}

// tokenTable marks RFC 9110 tchar bytes.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

// validFieldValue refuses control characters other than HTAB, and DEL.
func validFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func hasToken(v, token string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.Trim(part, " \t"), token) {
			return true
		}
	}
	return false
}

// commonKeys are interned canonical header names, so the usual headers
// cost no allocation.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Expect", "Host", "If-Modified-Since",
		"If-None-Match", "Origin", "Referer", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "Sec-Websocket-Key", "Sec-Websocket-Version",
		"Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Grpc-Timeout", "Te", "Keep-Alive"} {
		m[k] = k
	}
	return m
}()

// canonicalKey returns the canonical form of a valid header name.
func canonicalKey(name []byte) string {
	var buf [64]byte
	if len(name) <= len(buf) {
		upper := true
		for i, c := range name {
			if upper && 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			} else if !upper && 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
			upper = c == '-'
		}
		if k, ok := commonKeys[string(buf[:len(name)])]; ok {
			return k
		}
		return string(buf[:len(name)])
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

func internMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return http.MethodGet
	case "POST":
		return http.MethodPost
	case "HEAD":
		return http.MethodHead
	case "PUT":
		return http.MethodPut
	case "DELETE":
		return http.MethodDelete
	case "OPTIONS":
		return http.MethodOptions
	case "PATCH":
		return http.MethodPatch
	}
	return string(m)
}

func formatInt(n int64) string {
	if n >= 0 && n < 10 {
		return "0123456789"[n : n+1]
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// ---- request bodies ----

var errBodyAfterClose = errors.New("http: request body read after the response ended")

// maxChunkSizeDigits bounds a chunk-size line: 16 hex digits overflow an
// int64 at most once, and nothing larger is a real chunk.
const maxChunkSizeDigits = 16

// chunkedReader decodes a chunked body (RFC 9112 section 7.1) and its
// trailer section.
type chunkedReader struct {
	br      *bufio.Reader
	left    int64 // bytes left in the current chunk
	started bool
	done    bool
	trailer http.Header
	lim     headLimits
	err     error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		if c.started {
			if err := c.crlf(); err != nil {
				return 0, c.fail(err)
			}
		}
		c.started = true
		n, err := c.size()
		if err != nil {
			return 0, c.fail(err)
		}
		if n == 0 {
			if err := c.readTrailers(); err != nil {
				return 0, c.fail(err)
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, c.fail(err)
	}
	return n, nil
}

func (c *chunkedReader) fail(err error) error {
	c.err = err
	return err
}

func (c *chunkedReader) crlf() error {
	b, err := c.br.Peek(2)
	if err != nil {
		return unexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return badRequest("chunk data not followed by CRLF")
	}
	_, _ = c.br.Discard(2)
	return nil
}

func (c *chunkedReader) size() (int64, error) {
	budget := 4096
	var scratch []byte
	line, err := readLine(c.br, &budget, &scratch)
	if err != nil {
		return 0, unexpected(err)
	}
	hexPart := line
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		hexPart = line[:i]
		if !validFieldValue(line[i:]) {
			return 0, badRequest("invalid chunk extension")
		}
	}
	hexPart = bytes.TrimRight(hexPart, " \t")
	if len(hexPart) == 0 || len(hexPart) > maxChunkSizeDigits {
		return 0, badRequest("invalid chunk size")
	}
	var n uint64
	for _, b := range hexPart {
		var d byte
		switch {
		case '0' <= b && b <= '9':
			d = b - '0'
		case 'a' <= b && b <= 'f':
			d = b - 'a' + 10
		case 'A' <= b && b <= 'F':
			d = b - 'A' + 10
		default:
			return 0, badRequest("invalid chunk size")
		}
		n = n<<4 | uint64(d)
	}
	if n > 1<<62 {
		return 0, badRequest("chunk size overflow")
	}
	return int64(n), nil
}

func (c *chunkedReader) readTrailers() error {
	budget := c.lim.maxBytes
	var scratch []byte
	count := 0
	for {
		line, err := readLine(c.br, &budget, &scratch)
		if err != nil {
			return unexpected(err)
		}
		scratch = scratch[:0]
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badRequest("obs-fold trailer line")
		}
		if count++; count > c.lim.maxHeaders {
			return errTooManyHeaders
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validToken(line[:colon]) {
			return badRequest("invalid trailer name")
		}
		value := trimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return badRequest("invalid trailer value")
		}
		key := canonicalKey(line[:colon])
		switch key {
		case "Content-Length", "Transfer-Encoding", "Host", "Trailer":
			continue // framing and routing fields are not allowed in trailers
		}
		if c.trailer == nil {
			c.trailer = http.Header{}
		}
		c.trailer[key] = append(c.trailer[key], string(value))
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
