package dataplane

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The upstream side of weir-proxy's HTTP/1.1 client: writing a bodyless
// request and parsing a response head, with the same strictness as the
// downstream parser. A response whose framing is ambiguous (Content-Length
// and Transfer-Encoding, conflicting lengths, an unknown coding) is an
// upstream protocol error, answered 502 like Envoy's codec does.

var errUpstreamFraming = errors.New("upstream response framing is invalid")

// writeBodylessRequest writes req's head. Hop-by-hop headers were removed
// by the connection manager; an empty User-Agent means none.
func writeBodylessRequest(bw *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return errors.New("invalid Host for the upstream request")
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if k == "User-Agent" && v == "" {
				continue
			}
			writeField(bw, k, v)
		}
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// readResponse reads one response head and frames its body.
func readResponse(br *bufio.Reader, req *http.Request, lim headLimits) (*http.Response, error) {
	budget := lim.maxBytes
	var scratch []byte
	line, err := readLine(br, &budget, &scratch)
	if err != nil {
		return nil, upstreamHeadErr(err)
	}
	res := &http.Response{Request: req, ContentLength: -1}
	proto, rest, ok := bytes.Cut(line, []byte{' '})
	switch string(proto) {
	case "HTTP/1.1":
		res.Proto, res.ProtoMajor, res.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		res.Proto, res.ProtoMajor, res.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		return nil, errUpstreamFraming
	}
	if !ok || len(rest) < 3 {
		return nil, errUpstreamFraming
	}
	code, err := strconv.Atoi(string(rest[:3]))
	if err != nil || code < 100 || code > 999 || (len(rest) > 3 && rest[3] != ' ') {
		return nil, errUpstreamFraming
	}
	res.StatusCode = code
	res.Status = string(rest)

	h := make(http.Header, 8)
	count := 0
	for {
		scratch = scratch[:0]
		line, err := readLine(br, &budget, &scratch)
		if err != nil {
			return nil, upstreamHeadErr(err)
		}
		if len(line) == 0 {
			break
		}
		if count++; count > lim.maxHeaders {
			return nil, errResponseHeadersTooLarge
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validToken(line[:colon]) || line[0] == ' ' || line[0] == '\t' {
			return nil, errUpstreamFraming
		}
		value := trimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return nil, errUpstreamFraming
		}
		key := canonicalKey(line[:colon])
		h[key] = append(h[key], string(value))
	}
	res.Header = h

	for _, v := range h["Connection"] {
		if hasToken(v, "close") {
			res.Close = true
		}
	}
	if res.ProtoMinor == 0 && !hasKeepAlive(h) {
		res.Close = true
	}
	if code < 200 {
		return res, nil // informational: no body, the final response follows
	}

	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	bodyless := req.Method == http.MethodHead || code == 204 || code == 304
	switch {
	case hasTE && hasCL:
		return nil, errUpstreamFraming
	case bodyless:
		res.Body = http.NoBody
		if n, ok := singleLength(cl); ok && req.Method == http.MethodHead {
			res.ContentLength = n
		} else {
			res.ContentLength = 0
		}
	case hasTE:
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return nil, errUpstreamFraming
		}
		delete(h, "Transfer-Encoding")
		res.TransferEncoding = []string{"chunked"}
		if declared := h["Trailer"]; len(declared) > 0 {
			res.Trailer = http.Header{}
			for _, v := range declared {
				for k := range splitList(v) {
					res.Trailer[canonicalKey([]byte(k))] = nil
				}
			}
			delete(h, "Trailer")
		}
		res.Body = &chunkedResponseBody{cr: chunkedReader{br: br, lim: lim}, res: res}
	case hasCL:
		n, ok := singleLength(cl)
		if !ok {
			return nil, errUpstreamFraming
		}
		res.ContentLength = n
		h["Content-Length"] = []string{formatInt(n)} // one value downstream
		if n == 0 {
			res.Body = http.NoBody
		} else {
			res.Body = &fixedBody{br: br, left: n}
		}
	default:
		// Delimited by the connection closing.
		res.Close = true
		res.Body = &eofBody{br: br}
	}
	return res, nil
}

func upstreamHeadErr(err error) error {
	if errors.Is(err, errHeadersTooLarge) {
		return errResponseHeadersTooLarge
	}
	var pe *headParseError
	if errors.As(err, &pe) {
		return errUpstreamFraming
	}
	return err
}

func hasKeepAlive(h http.Header) bool {
	for _, v := range h["Connection"] {
		if hasToken(v, "keep-alive") {
			return true
		}
	}
	return false
}

// singleLength parses Content-Length values, which must all agree.
func singleLength(vs []string) (int64, bool) {
	var n int64 = -1
	for _, v := range vs {
		for part := range strings.SplitSeq(v, ",") {
			m, ok := parseContentLength(strings.Trim(part, " \t"))
			if !ok || (n >= 0 && m != n) {
				return 0, false
			}
			n = m
		}
	}
	return n, n >= 0
}

// fixedBody reads a Content-Length body.
type fixedBody struct {
	br   *bufio.Reader
	left int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	if err == nil && b.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }

// eofBody reads a body delimited by the end of the connection.
type eofBody struct{ br *bufio.Reader }

func (b *eofBody) Read(p []byte) (int, error) { return b.br.Read(p) }
func (b *eofBody) Close() error               { return nil }

// chunkedResponseBody decodes a chunked body and fills res.Trailer at its
// end, as Go's transport does.
type chunkedResponseBody struct {
	cr  chunkedReader
	res *http.Response
}

func (b *chunkedResponseBody) Read(p []byte) (int, error) {
	n, err := b.cr.Read(p)
	if err == io.EOF && len(b.cr.trailer) > 0 {
		if b.res.Trailer == nil {
			b.res.Trailer = http.Header{}
		}
		for k, v := range b.cr.trailer {
			b.res.Trailer[k] = v
		}
		b.cr.trailer = nil
	}
	return n, err
}

func (b *chunkedResponseBody) Close() error { return nil }
