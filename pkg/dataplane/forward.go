package dataplane

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

var (
	errRouteTimeout   = errors.New("upstream request timeout")
	errPerTryTimeout  = errors.New("upstream per-try timeout")
	errStreamIdle     = errors.New("stream idle timeout")
	errBodySuperseded = errors.New("request body superseded by a retry")
	errBodyTooLarge   = errors.New("request body exceeded the retry buffer")
)

// Shared single-value header slices. Their len equals their cap, so an
// append by anyone copies instead of writing into the shared array.
var (
	hvHTTP        = []string{"http"}
	hvHTTPS       = []string{"https"}
	hvTrailers    = []string{"trailers"}
	hvUpgrade     = []string{"Upgrade"}
	hvEmpty       = []string{""}
	hvTextPlain   = []string{"text/plain"}
	hvGRPC        = []string{"application/grpc"}
	hvZero        = []string{"0"}
	grpcStatusFor = map[int][]string{
		400: {"13"}, 401: {"16"}, 403: {"7"}, 404: {"12"},
		429: {"14"}, 502: {"14"}, 503: {"14"}, 504: {"14"},
	}
	hvGRPCUnknown = []string{"2"}
)

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// stream is the per-request state: Envoy's active stream with its filter
// manager. The router, the terminal filter, is the code in this file. It is
// not pooled: timers and the transport's body reader may outlive the
// handler.
type stream struct {
	// filterState is the connection's filter state, from its chain's
	// set_filter_state filter.
	filterState map[string]string
	// decBufLimit, when set by a filter (SetDecoderBufferLimit), is what
	// decoder filters may buffer instead of the connection's limit.
	decBufLimit int
	// clientAddr is Envoy's downstream remote address (downstreamAddr).
	clientAddr netip.Addr
	// hash is the request's key under its route's hash_policy, when
	// hashed; setCookie is a cookie that policy made up, for the response.
	hash      uint64
	hashed    bool
	setCookie string
	// tried are the endpoints this request went to, and hostAttempts the
	// route's previous_hosts selection attempts (0: none).
	tried        []*endpoint
	hostAttempts int
	rl           *rtListener
	conf         *listenerConf
	hcm          *hcmConf
	w            http.ResponseWriter
	r            *http.Request
	start        time.Time

	// req is what the filters see and the router forwards.
	req httpfilter.RequestHeaders
	// path and rawQuery split req.Path; hasQuery is set when it has a '?'.
	path     string
	rawQuery string
	hasQuery bool
	tls      bool
	upType   string
	vhost    *vhost
	route    *route
	cluster  *cluster
	endpoint *endpoint
	activeEp *endpoint // least-request accounting to release at the end
	// admitted is the cluster whose circuit breaker counts this stream
	// until it ends.
	admitted *cluster
	tee      *teeBody // the body's copies for mirrors, reset at the end

	// mu serialises the filter callbacks and downstream writes: the
	// transport reads the request body, and so runs decoder filters, on a
	// goroutine of its own.
	mu      sync.Mutex
	filters []activeFilter
	decAt   int // index of the filter holding the request headers; len(filters) once at the router
	encAt   int // index of the filter holding the response headers; -1 once written
	body    *decodedBody
	resp    httpfilter.ResponseHeaders
	replied bool // a local reply has started
	// replaced is set when an encoder filter's local reply replaces the
	// response being encoded: the reply skips the encoder filters, which
	// already decided, and the outer encode stops.
	replaced    bool
	headersSent bool
	replies     int  // local replies sent, to tell whether a filter replaced ours
	aborted     bool // the stream must be reset
	// next is the stream a filter recreated this one as (RecreateStream):
	// this one's response is dropped, and next serves the request once
	// this one ends. recreated marks such a stream; mayRecreate is set
	// when one of the stream's filters may recreate it.
	next         *stream
	recreated    bool
	mayRecreate  bool
	requestState map[string]any

	ctx          context.Context
	cancel       context.CancelCauseFunc
	idle         time.Duration
	idleTimer    *time.Timer
	routeTimeout time.Duration
	routeTimer   *time.Timer
	timerOnce    sync.Once
	lastActivity atomic.Int64
	upgraded     atomic.Pointer[upgradedConn]

	code     int
	flags    string
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
}

func (rl *rtListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conf := rl.conf.Load()
	ch := conf.plain
	if conf.tls {
		if r.TLS == nil {
			panic(http.ErrAbortHandler)
		}
		ch = conf.httpChainForSNI(r.TLS.ServerName)
	}
	if ch == nil {
		panic(http.ErrAbortHandler)
	}
	if r.ProtoMajor == 2 && tooManyHeaders(r.Header, ch.hcm.codec.head.maxHeaders) {
		// The HTTP/1.1 codec counts while parsing; Go's HTTP/2 server
		// does not, so max_headers_count is enforced here.
		w.Header()["Content-Length"] = hvZero
		w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if r.ProtoMajor == 2 && rl.p.drainingAll.Load() {
		// net/http turns this into a GOAWAY; HTTP/1.1 connections get
		// "Connection: close" from SetKeepAlivesEnabled(false).
		w.Header().Set("Connection", "close")
	}
	// The filter state is the connection's, from the chain that took it;
	// the connection manager is the current chain's, as Envoy applies
	// route updates to open connections.
	s := &stream{rl: rl, conf: conf, hcm: ch.hcm, filterState: connFilterState(r), w: w, r: r, start: time.Now(), tls: r.TLS != nil}
	for s != nil {
		s = s.run()
	}
}

// run serves the stream and returns the stream a filter recreated it as,
// if one did.
func (s *stream) run() *stream {
	defer s.finish()
	if s.recreated {
		s.serveRecreated()
	} else {
		s.serve()
	}
	s.mu.Lock()
	aborted, next := s.aborted, s.next
	s.mu.Unlock()
	if aborted {
		panic(http.ErrAbortHandler)
	}
	return next
}

// serveRecreated serves a stream a filter recreated: the connection
// manager's edge handling was done for the first, so its headers are
// routed and filtered again as they are, with no body.
func (s *stream) serveRecreated() {
	h := s.w.Header()
	drain := h["Connection"] // set when the proxy is draining
	clear(h)
	if drain != nil {
		h["Connection"] = drain
	}
	s.clearRouteCache()
	s.startFilters()
	// Never the downstream body, which the first stream consumed.
	s.body = &decodedBody{s: s, src: http.NoBody, end: true}
	if len(s.filters) > 0 {
		s.mu.Lock()
		s.decodeHeaders(0, true)
		s.mu.Unlock()
		if s.replied || s.decAt < len(s.filters) {
			return
		}
	}
	s.routeRequest()
}

// serve is the connection manager's part of a request: the edge header
// handling, route selection and the decoder filters, then the router.
func (s *stream) serve() {
	r, hcm := s.r, s.hcm
	if r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		// An h2c upgrade is not a stream upgrade: Envoy strips it and
		// serves the request as HTTP/1.1.
		if up := r.Header.Get("Upgrade"); !strings.EqualFold(up, "h2c") {
			s.upType = up
		}
	}

	s.path = r.URL.EscapedPath()
	if hcm.normalize || hcm.mergeSlashes {
		s.path = normalizePath(s.path, hcm.normalize, hcm.mergeSlashes)
	}
	s.rawQuery, s.hasQuery = r.URL.RawQuery, r.URL.RawQuery != "" || r.URL.ForceQuery
	fullPath := s.path
	if s.hasQuery {
		fullPath = s.path + "?" + s.rawQuery
	}
	s.req = httpfilter.RequestHeaders{Method: r.Method, Scheme: s.scheme(), Authority: r.Host, Path: fullPath, Header: r.Header}
	s.prepareRequestHeaders(r.Header)
	s.matchRoute()

	s.startFilters()
	if len(s.filters) > 0 {
		endStream := !hasBody(r)
		s.body = &decodedBody{s: s, src: r.Body, end: endStream}
		s.mu.Lock()
		s.decodeHeaders(0, endStream)
		s.mu.Unlock()
		// While filters hold the request, its idle timeout bounds each
		// read of the body, as Envoy's stream idle timer does from the
		// moment the route is chosen: a client that stalls mid-body must
		// not hold the stream and its buffer for ever.
		idle := s.decodeIdleTimeout()
		rc := http.NewResponseController(s.w)
		for !s.replied && s.decAt < len(s.filters) {
			if idle > 0 {
				_ = rc.SetReadDeadline(time.Now().Add(idle))
			}
			if !s.body.pump() {
				break
			}
		}
		if idle > 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
		if s.replied {
			return
		}
		if s.decAt < len(s.filters) && errors.Is(s.body.err, os.ErrDeadlineExceeded) {
			s.localReply(http.StatusRequestTimeout, "stream timeout", "SI")
			return
		}
		if s.decAt < len(s.filters) {
			if pe := downstreamCodecError(r); pe != nil {
				s.localReply(pe.code, pe.reason, "DPE")
				return
			}
			s.flags = "DC" // the downstream body ended in an error
			return
		}
	}
	s.routeRequest()
}

// decodeIdleTimeout is the idle timeout while filters decode: the
// route's idle_timeout, else the connection manager's.
func (s *stream) decodeIdleTimeout() time.Duration {
	if s.route != nil && s.route.fwd != nil && s.route.fwd.idle != nil {
		return *s.route.fwd.idle
	}
	return s.hcm.streamIdle
}

func tooManyHeaders(h http.Header, limit int) bool {
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	return n > limit
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// matchRoute selects the virtual host and route for the request as it is
// now; filters call it again through ClearRouteCache.
func (s *stream) matchRoute() {
	s.route = nil
	s.vhost = s.hcm.routes.findVhost(lowerASCII(s.req.Authority))
	if s.vhost != nil {
		s.route = s.vhost.match(s)
	}
}

// clearRouteCache re-reads :path after a filter changed it, then routes.
func (s *stream) clearRouteCache() {
	p := s.req.Path
	s.path, s.rawQuery, s.hasQuery = p, "", false
	if i := strings.IndexByte(p, '?'); i >= 0 {
		s.path, s.rawQuery, s.hasQuery = p[:i], p[i+1:], true
	}
	s.matchRoute()
}

// routeRequest is the router filter's decodeHeaders.
func (s *stream) routeRequest() {
	rt := s.route
	if rt == nil {
		s.localReply(http.StatusNotFound, "", "NR")
		return
	}
	if rt.redirect != nil {
		s.redirect(rt.redirect)
		return
	}
	if rt.direct != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.flags = "-"
		var extra http.Header
		if len(rt.respOps) > 0 {
			extra = http.Header{}
			applyHeaderOps(extra, rt.respOps)
		}
		s.sendLocalReply(rt.direct.code, rt.direct.body, extra, "direct_response")
		return
	}
	fw := rt.fwd
	if s.upType != "" && !upgradeAllowed(s.hcm, fw, s.upType) {
		s.localReply(http.StatusForbidden, "", "UPE")
		return
	}
	tgt := fw.pick()
	c := tgt.cluster
	s.cluster = c
	if c.missing {
		s.localReply(fw.notFoundCode, "", "NC")
		return
	}
	if len(c.endpoints) == 0 {
		s.localReply(http.StatusServiceUnavailable, "no healthy upstream", "UH")
		return
	}
	s.forward(fw, tgt)
}

// upgradeAllowed follows Envoy: a route-level upgrade config decides when
// present, otherwise the HCM's.
func upgradeAllowed(hcm *hcmConf, fw *forward, upType string) bool {
	t := strings.ToLower(upType)
	if fw.upgrades != nil {
		if enabled, ok := fw.upgrades[t]; ok {
			return enabled
		}
	}
	return hcm.upgrades[t]
}

func (fw *forward) pick() *target {
	if len(fw.targets) == 1 {
		return fw.targets[0]
	}
	v := rand.Uint64N(fw.totalWeight)
	for _, t := range fw.targets {
		if v < t.weight {
			return t
		}
		v -= t.weight
	}
	return fw.targets[len(fw.targets)-1]
}

func (v *vhost) match(s *stream) *route {
	for _, rt := range v.routes {
		switch rt.kind {
		case matchPrefix:
			if !s.hasPrefix(rt.value) {
				continue
			}
		case matchPath:
			if s.path != rt.value {
				continue
			}
		case matchRegex:
			if !rt.re.MatchString(s.path) {
				continue
			}
		case matchSegmentPrefix:
			if !strings.HasPrefix(s.path, rt.value) || len(s.path) > len(rt.value) && s.path[len(rt.value)] != '/' {
				continue
			}
		}
		if !s.headersMatch(rt.headers) {
			continue
		}
		if len(rt.query) > 0 && !s.queryMatches(rt.query) {
			continue
		}
		if len(rt.filterState) > 0 && !s.filterStateMatches(rt.filterState) {
			continue
		}
		return rt
	}
	return nil
}

// filterStateMatches reports whether the connection's filter state has
// every object ms name, matching; a missing one never matches.
func (s *stream) filterStateMatches(ms []filterStateMatcher) bool {
	for _, m := range ms {
		v, ok := s.filterState[m.key]
		if !ok || !m.match(v) {
			return false
		}
	}
	return true
}

// hasPrefix matches a prefix against :path (Envoy matches prefixes on the
// full :path, query included).
func (s *stream) hasPrefix(prefix string) bool {
	if strings.HasPrefix(s.path, prefix) {
		return true
	}
	return len(prefix) > len(s.path) && s.hasQuery && strings.HasPrefix(s.req.Path, prefix)
}

func (s *stream) scheme() string {
	if s.tls {
		return "https"
	}
	return "http"
}

func (s *stream) headersMatch(ms []headerMatcher) bool {
	for i := range ms {
		m := &ms[i]
		var value string
		present := true
		switch m.pseudo {
		case pseudoMethod:
			value = s.req.Method
		case pseudoAuthority:
			value = s.req.Authority
		case pseudoPath:
			value = s.req.Path
		case pseudoScheme:
			value = s.req.Scheme
		default:
			vs := s.req.Header[m.key]
			switch len(vs) {
			case 0:
				present = false
			case 1:
				value = vs[0]
			default:
				// Envoy matches repeated headers as one comma-joined value.
				value = strings.Join(vs, ",")
			}
		}
		var ok bool
		switch m.kind {
		case hmPresent:
			ok = present
		case hmAbsent:
			ok = !present
		case hmExact:
			ok = present && value == m.exact
		case hmRegex:
			ok = present && m.re.MatchString(value)
		}
		// Envoy inverts presence checks and the values of present
		// headers; a value matcher never matches a missing header.
		if m.invert && (present || m.kind == hmPresent || m.kind == hmAbsent) {
			ok = !ok
		}
		if !ok {
			return false
		}
	}
	return true
}

// retriable reports whether rp may retry this request: with
// retriable_request_headers, one of them must match (Envoy).
func (s *stream) retriable(rp *retryPolicy) bool {
	if len(rp.requestHeaders) == 0 {
		return true
	}
	for i := range rp.requestHeaders {
		if s.headersMatch(rp.requestHeaders[i : i+1]) {
			return true
		}
	}
	return false
}

// queryMatches follows Envoy's QueryParameterMatcher: the first value of
// the parameter, as sent (Envoy's parseQueryString does not decode), must
// match.
func (s *stream) queryMatches(ms []queryMatcher) bool {
	if !s.hasQuery {
		return false
	}
	for i := range ms {
		m := &ms[i]
		value, ok := firstQueryValue(s.rawQuery, m.name)
		if !ok {
			return false
		}
		switch m.kind {
		case hmExact:
			ok = value == m.exact
		case hmRegex:
			ok = m.re.MatchString(value)
		}
		if !ok {
			return false
		}
	}
	return true
}

// firstQueryValue finds the first "name=value" (or bare "name", whose
// value is "") in a raw query. Names and values are compared as sent.
func firstQueryValue(raw, name string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	return "", false
}

// applyHeaderOps applies header mutations in order.
func applyHeaderOps(h http.Header, ops []headerOp) {
	for i := range ops {
		op := &ops[i]
		switch op.kind {
		case opRemove:
			delete(h, op.key)
		case opAppend:
			h[op.key] = append(h[op.key], op.value...)
		case opAddIfAbsent:
			if _, ok := h[op.key]; !ok {
				h[op.key] = op.value
			}
		case opOverwriteOrAdd:
			h[op.key] = op.value
		case opOverwriteIfExists:
			if _, ok := h[op.key]; ok {
				h[op.key] = op.value
			}
		}
	}
}

// redirect builds the Location like Envoy: the scheme/host/port/path
// replacements apply to the request URL, and a default port of the old
// scheme is dropped when the scheme changes.
func (s *stream) redirect(rd *redirect) {
	scheme := s.req.Scheme
	origScheme := scheme
	if rd.scheme != "" {
		scheme = rd.scheme
	}
	host := rd.host
	if host == "" {
		host = s.req.Authority
		if i := portIndex(host); i >= 0 {
			port := host[i:]
			if rd.port != "" || (scheme != origScheme && ((port == ":80" && scheme == "https") || (port == ":443" && scheme == "http"))) {
				host = host[:i]
			}
		}
	}
	path := s.path
	query := s.rawQuery
	if rd.rewrite != nil {
		path = rd.rewrite.apply(path)
	}
	if rd.path != "" {
		path = rd.path
		if strings.Contains(path, "?") {
			query = ""
		}
	}
	if rd.stripQuery {
		query = ""
	}
	loc := scheme + "://" + host + rd.port + path
	if query != "" {
		loc += "?" + query
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replied = true
	s.flags = "DR"
	h := s.w.Header()
	if s.route != nil && len(s.route.respOps) > 0 {
		applyHeaderOps(h, s.route.respOps)
	}
	h["Location"] = []string{loc}
	h["Content-Length"] = hvZero
	s.resp = httpfilter.ResponseHeaders{Status: rd.code, Header: h}
	s.encodeHeaders(true)
}

// portIndex returns the index of the ":port" suffix of a host, or -1.
func portIndex(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return -1
	}
	return i
}

func (s *stream) forward(fw *forward, tgt *target) {
	r := s.r
	c := tgt.cluster
	if len(fw.hash) > 0 {
		s.hash, s.hashed, s.setCookie = s.requestHash(fw.hash)
	}
	s.routeTimeout = fw.timeout
	if s.upType != "" {
		// Envoy arms the route timeout when the downstream request ends,
		// which never happens for an upgraded stream.
		s.routeTimeout = 0
	}
	s.ctx = r.Context()
	idle := s.hcm.streamIdle
	if fw.idle != nil {
		idle = *fw.idle
	}
	if s.routeTimeout > 0 || idle > 0 || fw.retry != nil {
		if rc, ok := s.w.(requestCanceler); ok && !s.mayRecreate {
			// weir-proxy's HTTP/1.1 codec made a cancellable context for
			// this request alone: one context serves both, unless a
			// recreated stream will need it after this one ends.
			s.cancel = rc.requestCanceler()
		} else {
			s.ctx, s.cancel = context.WithCancelCause(r.Context())
		}
	}
	if idle > 0 {
		s.idle = idle
		s.touch()
		s.idleTimer = time.AfterFunc(s.idle, s.onIdle)
	}

	// The downstream request is ours: the upstream one shares its header
	// map instead of cloning it.
	out := r.WithContext(s.ctx)
	out.RequestURI = ""
	out.Close = false
	out.TransferEncoding = nil // the transport frames the body itself
	if s.recreated {
		// No body, so none of the first request's trailers either: an
		// HTTP/2 stream announcing them would never end.
		out.Trailer = nil
	}
	out.Method = s.req.Method
	out.Header = s.req.Header
	out.Host = s.req.Authority
	u := &url.URL{Scheme: "http", RawQuery: s.rawQuery, ForceQuery: s.hasQuery && s.rawQuery == ""}
	path := s.path
	if fw.rewrite != nil {
		if rewritten := fw.rewrite.apply(path); rewritten != path {
			// As Envoy's router, unless suppress_envoy_headers.
			out.Header["X-Envoy-Original-Path"] = []string{s.req.Path}
			path = rewritten
		}
	}
	if path == r.URL.RawPath || (r.URL.RawPath == "" && path == r.URL.Path) {
		u.Path, u.RawPath = r.URL.Path, r.URL.RawPath
	} else if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
	} else {
		u.Path, u.RawPath = path, path
	}
	out.URL = u
	switch {
	case s.body != nil && (!s.body.end || len(s.body.ready) > 0):
		// Decoder filters ran: their output is the body, and its length
		// is what the last of them left in Content-Length.
		out.Body = s.body
		out.ContentLength = -1
		if cl, err := strconv.ParseInt(s.req.Header.Get("Content-Length"), 10, 64); err == nil && cl >= 0 {
			out.ContentLength = cl
		}
	case s.body == nil && hasBody(r):
		out.Body = &requestBody{src: r.Body, s: s}
	default:
		out.Body = nil
		out.ContentLength = 0
		s.armRouteTimeout()
	}
	if fw.hostRewrite != "" {
		out.Host = fw.hostRewrite
	}
	s.routeHeaders(out.Header, fw, tgt)
	if len(fw.mirrors) > 0 && s.upType == "" {
		s.startShadows(out, fw.mirrors, fw.timeout)
	}

	transport := c.pool.main
	if s.upType != "" {
		transport = c.pool.h1
	}
	if !c.acquire() {
		// Envoy's circuit breaker: the request is not sent.
		s.mu.Lock()
		s.flags = "UO"
		s.sendLocalReply(http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
			http.Header{"X-Envoy-Overloaded": {"true"}}, "UO")
		s.mu.Unlock()
		return
	}
	s.admitted = c
	res, err := s.roundTrip(out, c, fw, transport)
	if err != nil {
		s.upstreamError(err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if s.upType != "" {
			s.upgrade(res)
			return
		}
		// A switch nobody asked for would turn the downstream
		// connection into a tunnel: an upstream protocol error.
		res.Body.Close()
		s.localReply(http.StatusBadGateway,
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error", "UPE")
		return
	}
	s.respond(res)
}

// requestCanceler is a ResponseWriter whose request context the stream may
// cancel with a cause (weir-proxy's HTTP/1.1 codec).
type requestCanceler interface {
	requestCanceler() context.CancelCauseFunc
}

// armRouteTimeout starts the route timeout; Envoy starts it when the
// downstream request has ended.
func (s *stream) armRouteTimeout() {
	if s.routeTimeout > 0 {
		s.timerOnce.Do(func() {
			s.routeTimer = time.AfterFunc(s.routeTimeout, func() { s.cancel(errRouteTimeout) })
		})
	}
}

// prepareRequestHeaders is the connection manager's header handling before
// any filter runs: hop-by-hop headers go, x-forwarded-* and x-request-id
// are set as Envoy's edge settings say.
func (s *stream) prepareRequestHeaders(h http.Header) {
	// Hop-by-hop headers, including those named by Connection.
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				delete(h, http.CanonicalHeaderKey(tok))
			}
		}
	}
	delete(h, "Connection")
	delete(h, "Proxy-Connection")
	delete(h, "Keep-Alive")
	delete(h, "Transfer-Encoding")
	delete(h, "Upgrade")
	delete(h, "Trailer")
	delete(h, "Http2-Settings")
	// Envoy answers 100-continue itself (Go's server does on first read).
	delete(h, "Expect")
	if te, ok := h["Te"]; ok {
		if httpguts.HeaderValuesContainsToken(te, "trailers") {
			h["Te"] = hvTrailers
		} else {
			delete(h, "Te")
		}
	}

	clientIP, _, err := net.SplitHostPort(s.r.RemoteAddr)
	if err != nil {
		clientIP = s.r.RemoteAddr
	}
	s.clientAddr = downstreamAddr(s.hcm.useRemote, s.hcm.trustedHops, clientIP, h["X-Forwarded-For"])
	scheme := hvHTTP
	if s.tls {
		scheme = hvHTTPS
	}
	external := true
	if s.hcm.useRemote {
		// Edge proxy: append the peer to XFF and own x-forwarded-proto.
		// As Envoy, a request is internal only when it came with no
		// X-Forwarded-For and its client address is private or loopback.
		prior := h["X-Forwarded-For"]
		if len(prior) > 0 {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ",") + "," + clientIP}
		} else {
			h["X-Forwarded-For"] = []string{clientIP}
		}
		h["X-Forwarded-Proto"] = scheme
		if a := s.clientAddr; a.IsValid() && len(prior) == 0 {
			external = !(a.IsLoopback() || a.IsPrivate())
		}
		if external {
			// Envoy's edge sanitising: an external client cannot speak
			// for the proxy (x-envoy-internal, retry and timeout
			// overrides, ...).
			for k := range h {
				if len(k) > 8 && strings.EqualFold(k[:8], "X-Envoy-") {
					delete(h, k)
				}
			}
		}
	} else {
		external = false
		if _, ok := h["X-Forwarded-Proto"]; !ok {
			h["X-Forwarded-Proto"] = scheme
		}
	}
	// generate_request_id defaults to true; external request ids are not
	// trusted (preserve_external_request_id defaults to false).
	if _, ok := h["X-Request-Id"]; !ok || external {
		h["X-Request-Id"] = []string{newRequestID()}
	}
}

// downstreamAddr is Envoy's downstream remote address (RBAC's remote_ip):
// the peer when the connection manager uses the remote address (no
// X-Forwarded-For hop is trusted), otherwise the last X-Forwarded-For
// address, falling back to the peer when there is none that parses.
func downstreamAddr(useRemote bool, trustedHops uint32, peer string, xff []string) netip.Addr {
	addr, _ := netip.ParseAddr(peer)
	// Envoy skips trustedHops entries from the right of X-Forwarded-For;
	// with use_remote_address the last trusted hop is the peer itself, so
	// one fewer. An entry that is missing or not an address leaves the
	// peer.
	skip := int(trustedHops)
	if useRemote {
		if trustedHops == 0 {
			return addr.WithZone("").Unmap()
		}
		skip--
	}
	if len(xff) == 0 {
		return addr.WithZone("").Unmap()
	}
	entry, ok := xffEntryFromRight(xff, skip)
	if ok {
		if a, err := netip.ParseAddr(entry); err == nil {
			addr = a
		}
	}
	return addr.WithZone("").Unmap()
}

// xffEntryFromRight is the X-Forwarded-For entry skip places from the
// right, across all the header's lines.
func xffEntryFromRight(xff []string, skip int) (string, bool) {
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for {
			j := strings.LastIndexByte(line, ',')
			if skip == 0 {
				return strings.TrimSpace(line[j+1:]), true
			}
			skip--
			if j < 0 {
				break
			}
			line = line[:j]
		}
	}
	return "", false
}

// routeHeaders are the router's header changes: the upgrade, the expected
// timeout, and the route's and weighted cluster's mutations.
func (s *stream) routeHeaders(h http.Header, fw *forward, tgt *target) {
	if s.upType != "" {
		h["Connection"] = hvUpgrade
		h["Upgrade"] = []string{s.upType}
	}
	if fw.timeoutHdr != nil && s.upType == "" {
		h["X-Envoy-Expected-Rq-Timeout-Ms"] = fw.timeoutHdr
	}

	applyHeaderOps(h, tgt.ops)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = hvEmpty // keep Go's transport from adding its own
	}
}

// roundTrip sends out to an endpoint of c, retrying per the route's policy.
func (s *stream) roundTrip(out *http.Request, c *cluster, fw *forward, transport http.RoundTripper) (*http.Response, error) {
	rp := fw.retry
	if rp == nil || s.upType != "" {
		return s.attempt(out, c, transport)
	}
	if !s.retriable(rp) {
		// Envoy: no retries, while per_try_timeout still applies.
		once := *rp
		once.numRetries = 0
		rp = &once
	}
	var rb *replayBody
	if out.Body != nil {
		rb = &replayBody{src: out.Body, limit: s.decoderBufferLimit()} // Envoy's retry_shadow_buffer_limit
	}
	s.hostAttempts = rp.hostAttempts
	for try := 0; ; try++ {
		tryCtx, tryCancel := s.ctx, context.CancelFunc(func() {})
		if rp.perTry > 0 {
			tryCtx, tryCancel = context.WithTimeoutCause(s.ctx, rp.perTry, errPerTryTimeout)
		}
		req := out.Clone(tryCtx)
		if rb != nil {
			req.Body = rb.next()
		}
		res, err := s.attempt(req, c, transport)
		last := try >= rp.numRetries || s.ctx.Err() != nil || (rb != nil && rb.overflowed())
		if err == nil {
			if !last && rp.retriableStatus(res.StatusCode) {
				io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
				res.Body.Close()
				tryCancel()
				s.releaseEndpoint()
				if !s.backoff(rp, try) {
					return nil, context.Cause(s.ctx)
				}
				continue
			}
			if rp.perTry > 0 {
				res.Body = &cancelOnClose{ReadCloser: res.Body, cancel: tryCancel}
			} else {
				tryCancel()
			}
			return res, nil
		}
		perTryExpired := errors.Is(context.Cause(tryCtx), errPerTryTimeout) && s.ctx.Err() == nil
		tryCancel()
		if perTryExpired {
			err = errPerTryTimeout
		}
		if last || s.ctx.Err() != nil || !rp.retriableError(err) {
			return nil, err
		}
		if !s.backoff(rp, try) {
			return nil, context.Cause(s.ctx)
		}
	}
}

func (s *stream) attempt(req *http.Request, c *cluster, transport http.RoundTripper) (*http.Response, error) {
	ep := c.pickHashed(s.hash, s.hashed)
	// previous_hosts: choose again, up to hostAttempts selections in
	// all, while the choice was tried already.
	// More selections than endpoints find nothing new.
	for i := 1; i < min(s.hostAttempts, len(c.endpoints)+1) && ep != nil && slices.Contains(s.tried, ep); i++ {
		ep = c.pickAgain(s.hash, s.hashed, i)
	}
	if ep == nil {
		return nil, errNoEndpoint
	}
	if s.hostAttempts > 0 {
		s.tried = append(s.tried, ep)
	}
	s.endpoint = ep
	req.URL.Host = ep.addr
	if c.leastRequest {
		ep.active.Add(1)
		s.activeEp = ep
	}
	res, err := transport.RoundTrip(req)
	if err == nil && tooManyHeaders(res.Header, upstreamHeadLimits.maxHeaders) {
		// Go's transports bound the size of a head, not its count.
		res.Body.Close()
		res, err = nil, errResponseHeadersTooLarge
	}
	if err != nil {
		s.releaseEndpoint()
		return nil, err
	}
	c.stats.requests.inc(res.StatusCode)
	return res, nil
}

var errNoEndpoint = errors.New("no healthy upstream")

func (s *stream) releaseEndpoint() {
	if s.activeEp != nil {
		s.activeEp.active.Add(-1)
		s.activeEp = nil
	}
}

func (rp *retryPolicy) retriableStatus(code int) bool {
	switch {
	case rp.on5xx && code >= 500 && code <= 599:
		return true
	case rp.onGateway && (code == 502 || code == 503 || code == 504):
		return true
	}
	for _, c := range rp.onCodes {
		if c == code {
			return true
		}
	}
	return false
}

func (rp *retryPolicy) retriableError(err error) bool {
	if errors.Is(err, errNoEndpoint) || errors.Is(err, errBodyTooLarge) {
		return false
	}
	var ce *connectError
	if errors.As(err, &ce) && rp.onConnect {
		return true
	}
	return rp.on5xx || rp.onGateway || rp.onReset
}

// backoff sleeps Envoy's default jittered exponential back-off (25ms base,
// 250ms max). It returns false when the stream ended meanwhile.
func (s *stream) backoff(rp *retryPolicy, try int) bool {
	ceil := rp.baseBackoff << min(try+1, 8)
	ceil = min(ceil, rp.maxBackoff)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(ceil)) + 1))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// upstreamError turns a failed round trip into Envoy's local reply.
func (s *stream) upstreamError(err error) {
	if errors.Is(err, errLocalReply) {
		return // a decoder filter answered while the body was being sent
	}
	if pe := downstreamCodecError(s.r); pe != nil {
		// The request body broke HTTP/1.1 framing: Envoy's codec answers
		// 400 (if it still can) and closes the connection.
		s.localReply(pe.code, pe.reason, "DPE")
		return
	}
	cause := error(nil)
	if s.ctx != nil {
		cause = context.Cause(s.ctx)
	}
	var ce *connectError
	switch {
	case errors.Is(cause, errStreamIdle):
		s.localReply(http.StatusRequestTimeout, "stream timeout", "SI")
	case errors.Is(cause, errRouteTimeout) || errors.Is(err, errPerTryTimeout):
		s.localReply(http.StatusGatewayTimeout, "upstream request timeout", "UT")
	case s.r.Context().Err() != nil:
		s.flags = "DC" // downstream went away; nobody to answer
	case errors.Is(err, errNoEndpoint):
		s.localReply(http.StatusServiceUnavailable, "no healthy upstream", "UH")
	case errors.As(err, &ce):
		s.localReply(http.StatusServiceUnavailable,
			"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: "+ce.err.Error(), "UF")
	case upstreamHeadersTooLarge(err):
		// An upstream codec error: Envoy answers 502 (flag UPE).
		s.localReply(http.StatusBadGateway,
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error", "UPE")
	default:
		s.localReply(http.StatusServiceUnavailable,
			"upstream connect error or disconnect/reset before headers. reset reason: connection termination", "UC")
	}
}

// respond sends the upstream response through the encoder filters.
func (s *stream) respond(res *http.Response) {
	defer res.Body.Close()
	bodyless := res.Body == http.NoBody || (res.ContentLength == 0 && len(res.Trailer) == 0)
	removeHopByHop(res.Header)

	s.mu.Lock()
	if s.replied {
		// A decoder filter answered while the request body was being
		// sent; the upstream's answer is dropped.
		s.mu.Unlock()
		return
	}
	dst := s.w.Header()
	for k, vv := range res.Header {
		dst[k] = vv
	}
	dst["X-Envoy-Upstream-Service-Time"] = []string{strconv.FormatInt(time.Since(s.start).Milliseconds(), 10)}
	if s.setCookie != "" {
		dst["Set-Cookie"] = append(dst["Set-Cookie"], s.setCookie)
	}
	if s.route != nil && len(s.route.respOps) > 0 {
		applyHeaderOps(dst, s.route.respOps)
	}
	if n := len(res.Trailer); n > 0 {
		keys := make([]string, 0, n)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	s.resp = httpfilter.ResponseHeaders{Status: res.StatusCode, Header: dst}
	s.encAt = len(s.filters)
	s.encodeHeaders(bodyless && len(s.filters) > 0)
	done := s.replaced || s.next != nil
	s.mu.Unlock()
	if done || (bodyless && len(s.filters) > 0) {
		return
	}

	// Stream anything without a known length (gRPC, SSE, chunked) with a
	// flush per read, so nothing sits in our buffers.
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			s.touch()
			s.mu.Lock()
			ok := s.encodeData(len(s.filters)-1, buf[:n], false)
			done := s.replaced || s.aborted || s.next != nil
			s.mu.Unlock()
			if !ok {
				s.mu.Lock()
				s.flags = "DC"
				s.mu.Unlock()
				return
			}
			if done {
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The response has started: all we can do is reset the
			// downstream stream, as Envoy does.
			s.mu.Lock()
			if cause := context.Cause(s.ctx); errors.Is(cause, errRouteTimeout) || errors.Is(cause, errPerTryTimeout) {
				s.flags = "UT"
			} else if errors.Is(cause, errStreamIdle) {
				s.flags = "SI"
			} else {
				s.flags = "UR"
			}
			s.aborted = true
			s.mu.Unlock()
			return
		}
	}
	res.Body.Close() // populates res.Trailer
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(res.Trailer) > 0 {
		s.encodeTrailers(res.Trailer)
	} else {
		s.encodeData(len(s.filters)-1, nil, true)
	}
}

// writeResponseHeaders writes s.resp downstream, once the encoder filters
// let it through.
func (s *stream) writeResponseHeaders() {
	if s.headersSent || s.next != nil {
		return
	}
	s.headersSent = true
	s.code = s.resp.Status
	s.w.WriteHeader(s.resp.Status)
}

// writeBody writes response data downstream. Anything without a known
// length (gRPC, SSE, chunked) is flushed per write, so nothing sits in our
// buffers. It returns false when the downstream is gone.
func (s *stream) writeBody(data []byte) bool {
	if len(data) == 0 || s.next != nil {
		return true
	}
	if !s.headersSent {
		s.writeResponseHeaders()
	}
	_, known := s.resp.Header["Content-Length"]
	// A slow client must not hold the stream's lock: the request body
	// still needs it to go through the decoder filters.
	s.mu.Unlock()
	defer s.mu.Lock()
	n, err := s.w.Write(data)
	s.bytesOut.Add(int64(n))
	if err != nil {
		return false
	}
	if !known {
		if f, ok := s.w.(http.Flusher); ok {
			f.Flush()
		}
	}
	return true
}

// writeTrailers writes response trailers, announced or not.
func (s *stream) writeTrailers(t http.Header) {
	if s.next != nil {
		return
	}
	dst := s.w.Header()
	_, announced := dst["Trailer"]
	if !s.headersSent {
		s.writeResponseHeaders()
	}
	if f, ok := s.w.(http.Flusher); ok && !announced {
		f.Flush() // force chunked encoding so trailers can follow
	}
	for k, vv := range t {
		if announced {
			dst[k] = vv
		} else {
			dst[http.TrailerPrefix+k] = vv
		}
	}
}

// upstreamHeadersTooLarge recognises a response head over
// max_response_headers_kb from weir's HTTP/1.1 client or Go's transports,
// which report it only as text.
func upstreamHeadersTooLarge(err error) bool {
	if errors.Is(err, errResponseHeadersTooLarge) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "response headers exceeded") || strings.Contains(msg, "header list larger than")
}

var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Trailer"}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				delete(h, http.CanonicalHeaderKey(tok))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// upgrade splices the downstream connection and the upgraded upstream one.
func (s *stream) upgrade(res *http.Response) {
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		s.localReply(http.StatusBadGateway, "upstream upgrade failed", "UC")
		return
	}
	down, brw, err := http.NewResponseController(s.w).Hijack()
	if err != nil {
		back.Close()
		s.localReply(http.StatusInternalServerError, "upgrade not possible on this connection", "UPE")
		return
	}
	u := &upgradedConn{down: down, back: back}
	if !s.rl.trackUpgrade(u) {
		down.Close()
		back.Close()
		return
	}
	defer s.rl.untrackUpgrade(u)
	s.upgraded.Store(u)
	defer down.Close()
	defer back.Close()

	hdr := res.Header.Clone()
	for _, k := range []string{"Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Trailer"} {
		delete(hdr, k)
	}
	s.code = http.StatusSwitchingProtocols
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return
	}
	if err := hdr.Write(brw); err != nil {
		return
	}
	if _, err := brw.WriteString("\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		data, _ := brw.Reader.Peek(n)
		if _, err := back.Write(data); err != nil {
			return
		}
		s.bytesIn.Add(int64(n))
	}

	done := make(chan struct{}, 2)
	go func() {
		s.pipe(back, down, &s.bytesIn)
		done <- struct{}{}
	}()
	go func() {
		s.pipe(down, back, &s.bytesOut)
		done <- struct{}{}
	}()
	select {
	case <-done:
	case <-s.ctx.Done(): // idle timeout or request cancelled
	}
	// One side finished: tear the whole stream down, as Envoy does for
	// upgraded streams once either peer closes.
	down.Close()
	back.Close()
}

func (s *stream) pipe(dst io.Writer, src io.Reader, counter *atomic.Int64) {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			s.touch()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			counter.Add(int64(n))
		}
		if rerr != nil {
			return
		}
	}
}

func (s *stream) touch() {
	if s.idle > 0 {
		s.lastActivity.Store(time.Now().UnixNano())
	}
}

// onIdle fires at most once per idle period; it re-arms itself for the
// remaining time when there was activity meanwhile.
func (s *stream) onIdle() {
	quiet := time.Duration(time.Now().UnixNano() - s.lastActivity.Load())
	if quiet < s.idle {
		s.idleTimer.Reset(s.idle - quiet)
		return
	}
	s.cancel(errStreamIdle)
	if u := s.upgraded.Load(); u != nil {
		u.down.Close()
		u.back.Close()
	}
}

// localReply is the router's local reply, with its access log flags.
func (s *stream) localReply(code int, body, flags string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flags = flags
	s.sendLocalReply(code, body, nil, flags)
}

// sendLocalReply answers like Envoy's sendLocalReply: text/plain bodies,
// and a trailers-only response with grpc-status for gRPC requests. The
// reply goes through the encoder filters unless an encoder filter sent it.
// Once the response has started, the stream can only be reset. s.mu is
// held.
func (s *stream) sendLocalReply(code int, body string, extra http.Header, details string) {
	if s.headersSent {
		s.aborted = true
		return
	}
	s.replied = true
	if s.resp.Header != nil {
		// Sent from an encoder filter: the response being encoded is
		// dropped, and the reply goes straight downstream.
		s.replaced = true
		for i := range s.filters {
			s.filters[i].encBuf = nil
		}
	}
	h := s.w.Header()
	drain := h["Connection"] // set when the proxy is draining
	clear(h)
	if drain != nil {
		h["Connection"] = drain
	}
	for k, vv := range extra {
		h[http.CanonicalHeaderKey(k)] = vv
	}
	grpc := strings.HasPrefix(s.r.Header.Get("Content-Type"), "application/grpc")
	switch {
	case grpc:
		h["Content-Type"] = hvGRPC
		st, ok := grpcStatusFor[code]
		if !ok {
			st = hvGRPCUnknown
		}
		h["Grpc-Status"] = st
		if body != "" {
			h["Grpc-Message"] = []string{url.PathEscape(body)}
		}
		code, body = http.StatusOK, ""
	case body == "":
		h["Content-Length"] = hvZero
	default:
		if _, ok := h["Content-Type"]; !ok {
			// A content-type from response_headers_to_add wins, as in Envoy.
			h["Content-Type"] = hvTextPlain
		}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	if s.r.Method == http.MethodHead {
		body = ""
	}
	s.resp = httpfilter.ResponseHeaders{Status: code, Header: h}
	s.encAt = len(s.filters)
	s.replies++
	this := s.replies
	s.encodeHeaders(body == "")
	if body != "" && s.replies == this {
		s.encodeData(len(s.filters)-1, []byte(body), true)
	}
}

func (s *stream) finish() {
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	if s.tee != nil {
		s.tee.abort()
	}
	// The route timer may be armed from the transport's body goroutine;
	// going through the Once both disarms it for good and makes the
	// write to routeTimer visible here.
	s.timerOnce.Do(func() {})
	if s.routeTimer != nil {
		s.routeTimer.Stop()
	}
	if s.cancel != nil {
		s.cancel(context.Canceled)
	}
	s.releaseEndpoint()
	if s.admitted != nil {
		s.admitted.release()
		s.admitted = nil
	}
	s.mu.Lock()
	replaced := s.next != nil
	s.mu.Unlock()
	if replaced {
		// The stream that replaces this one answers, and is counted
		// and logged, as Envoy logs an internally redirected request once.
		return
	}
	d := time.Since(s.start)
	st := s.conf.stats
	st.requests.inc(s.code)
	st.duration.Observe(d.Seconds())
	if a := s.rl.p.alog; a != nil {
		a.log(s, d)
	}
}

// requestBody feeds the downstream body to the upstream request, counting
// bytes, recording activity and arming the route timeout at end of stream.
type requestBody struct {
	src io.ReadCloser
	s   *stream
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	if n > 0 {
		b.s.bytesIn.Add(int64(n))
		b.s.touch()
	}
	if err == io.EOF {
		b.s.armRouteTimeout()
	}
	return n, err
}

// Close does not close the server's request body: the transport may call
// it early (for instance on a failed dial) while a retry still needs it.
func (b *requestBody) Close() error { return nil }

// replayBody lets a retry resend what earlier attempts already consumed
// from the downstream body, while still streaming (Envoy buffers the
// request for retries up to its buffer limit, then gives up retrying).
type replayBody struct {
	srcMu sync.Mutex // serialises reads of src
	src   io.ReadCloser

	mu       sync.Mutex
	buf      []byte
	total    int
	limit    int
	overflow bool
	srcErr   error
	gen      int
}

func (rb *replayBody) next() io.ReadCloser {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.gen++
	return &replayReader{rb: rb, gen: rb.gen}
}

func (rb *replayBody) overflowed() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.overflow
}

type replayReader struct {
	rb  *replayBody
	gen int
	off int
}

func (r *replayReader) Read(p []byte) (int, error) {
	rb := r.rb
	for {
		rb.mu.Lock()
		if r.gen != rb.gen {
			rb.mu.Unlock()
			return 0, errBodySuperseded
		}
		if r.off < rb.total {
			if rb.overflow {
				rb.mu.Unlock()
				return 0, errBodyTooLarge
			}
			n := copy(p, rb.buf[r.off:])
			r.off += n
			rb.mu.Unlock()
			return n, nil
		}
		if rb.srcErr != nil {
			err := rb.srcErr
			rb.mu.Unlock()
			return 0, err
		}
		rb.mu.Unlock()

		rb.srcMu.Lock()
		rb.mu.Lock()
		stale := r.off < rb.total || rb.srcErr != nil
		rb.mu.Unlock()
		if stale { // someone else read meanwhile; serve from the buffer
			rb.srcMu.Unlock()
			continue
		}
		n, err := rb.src.Read(p)
		rb.mu.Lock()
		if n > 0 {
			if !rb.overflow {
				if len(rb.buf)+n > rb.limit {
					rb.overflow, rb.buf = true, nil
				} else {
					rb.buf = append(rb.buf, p[:n]...)
				}
			}
			rb.total += n
		}
		if err != nil {
			rb.srcErr = err
		}
		current := r.gen == rb.gen
		if current {
			r.off = rb.total
		}
		rb.mu.Unlock()
		rb.srcMu.Unlock()
		if !current {
			return 0, errBodySuperseded
		}
		return n, err
	}
}

func (r *replayReader) Close() error { return nil }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func newRequestID() string {
	const hex = "0123456789abcdef"
	var b [36]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	hi = hi&^(0xf<<12) | 4<<12   // version 4
	lo = lo&^(0xc<<60) | 0x8<<60 // RFC 4122 variant
	var raw [16]byte
	for i := 0; i < 8; i++ {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	j := 0
	for i, v := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hex[v>>4], hex[v&0xf]
		j += 2
	}
	return string(b[:])
}
