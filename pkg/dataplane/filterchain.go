package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"

	// The filters weir-proxy ships register themselves.
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/basicauth"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/buffer"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/cors"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/customresponse"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/extauthz"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/headermutation"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/localratelimit"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/ratelimit"
	_ "github.com/weir-dev/weir/pkg/dataplane/filters/rbac"
)

// filterBufferLimit is Envoy's default per_connection_buffer_limit_bytes,
// the most a filter may buffer of a request or response.
const filterBufferLimit = 1 << 20

// httpFilterConf is one compiled entry of the HCM's http_filters, other
// than the router.
type httpFilterConf struct {
	name   string
	config httpfilter.Config
	// disabled is HttpFilter.disabled: the filter runs only on routes
	// whose typed_per_filter_config enables it.
	disabled bool
}

// routeFilterConf is a compiled typed_per_filter_config entry.
type routeFilterConf struct {
	// disabled and enabled are FilterConfig.disabled set to true or false;
	// both false means the entry only carries config.
	disabled, enabled bool
	config            any // compiled by the filter's factory; nil for a bare FilterConfig
}

// compileHTTPFilters compiles http_filters: any registered filters, then
// the router, which must come last, exactly once.
func compileHTTPFilters(filters []*hcmv3.HttpFilter, path string, scope *httpfilter.Scope) ([]*httpFilterConf, error) {
	if len(filters) == 0 || filters[len(filters)-1].GetName() == "" {
		return nil, invalid(path, "the last filter must be %s", routerFilterName)
	}
	var out []*httpFilterConf
	names := map[string]bool{}
	for i, f := range filters {
		fp := idx(path, i)
		if err := onlyFields(f, fp, "name", "typed_config", "disabled", "is_optional"); err != nil {
			return nil, err
		}
		if names[f.GetName()] {
			return nil, invalid(sub(fp, "name"), "filter name %q is used twice", f.GetName())
		}
		names[f.GetName()] = true
		tc := f.GetTypedConfig()
		if tc == nil {
			return nil, invalid(sub(fp, "typed_config"), "required")
		}
		last := i == len(filters)-1
		if typeName(tc) == string((&routerv3.Router{}).ProtoReflect().Descriptor().FullName()) {
			if !last {
				return nil, invalid(fp, "%s must be the last filter", routerFilterName)
			}
			if f.GetDisabled() {
				return nil, invalid(sub(fp, "disabled"), "the router cannot be disabled")
			}
			var router routerv3.Router
			if err := unpack(tc, &router, sub(fp, "typed_config")); err != nil {
				return nil, err
			}
			if err := onlyFields(&router, sub(fp, "typed_config")); err != nil {
				return nil, err
			}
			return out, nil
		}
		if last {
			return nil, invalid(fp, "the last filter must be %s", routerFilterName)
		}
		fac := httpfilter.Lookup(protoName(tc))
		if fac == nil {
			if f.GetIsOptional() {
				continue // Envoy skips an optional filter it does not know
			}
			return nil, invalid(sub(fp, "typed_config"), "filter type %q is not supported by weir-proxy", tc.GetTypeUrl())
		}
		msg := fac.ConfigType().ProtoReflect().New().Interface()
		if err := unpack(tc, msg, sub(fp, "typed_config")); err != nil {
			return nil, err
		}
		if v, ok := msg.(interface{ Validate() error }); ok {
			if err := pgv(v, sub(fp, "typed_config")); err != nil {
				return nil, err
			}
		}
		cfg, err := fac.NewConfig(msg, scope)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sub(fp, "typed_config"), err)
		}
		out = append(out, &httpFilterConf{name: f.GetName(), config: cfg, disabled: f.GetDisabled()})
	}
	panic("unreachable")
}

// compilePerFilterConfig compiles a route's or virtual host's
// typed_per_filter_config. The value is either the filter's own per-route
// message or a FilterConfig wrapping it, as in Envoy.
func compilePerFilterConfig(m map[string]*anypb.Any, path string, scope *httpfilter.Scope) (map[string]*routeFilterConf, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]*routeFilterConf, len(m))
	for name, a := range m {
		p := fmt.Sprintf("%s[%q]", path, name)
		rc := &routeFilterConf{}
		inner := a
		optional := false
		if typeName(a) == string((&routev3.FilterConfig{}).ProtoReflect().Descriptor().FullName()) {
			var fc routev3.FilterConfig
			if err := unpack(a, &fc, p); err != nil {
				return nil, err
			}
			if err := onlyFields(&fc, p, "config", "is_optional", "disabled"); err != nil {
				return nil, err
			}
			rc.disabled, rc.enabled = fc.GetDisabled(), !fc.GetDisabled()
			optional = fc.GetIsOptional()
			inner = fc.GetConfig()
			p = sub(p, "config")
		}
		if inner != nil {
			fac := httpfilter.LookupRoute(protoName(inner))
			if fac == nil {
				if !optional {
					return nil, invalid(p, "per-route config type %q is not supported by weir-proxy", inner.GetTypeUrl())
				}
			} else {
				msg := fac.RouteConfigType().ProtoReflect().New().Interface()
				if err := unpack(inner, msg, p); err != nil {
					return nil, err
				}
				if v, ok := msg.(interface{ Validate() error }); ok {
					if err := pgv(v, p); err != nil {
						return nil, err
					}
				}
				cfg, err := fac.NewRouteConfig(msg, scope)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p, err)
				}
				rc.config = cfg
			}
		}
		out[name] = rc
	}
	return out, nil
}

func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	return u[strings.LastIndexByte(u, '/')+1:]
}

func protoName(a *anypb.Any) protoreflect.FullName { return protoreflect.FullName(typeName(a)) }

// activeFilter is one filter's instance in one stream.
type activeFilter struct {
	s    *stream
	conf *httpFilterConf
	dec  httpfilter.DecoderFilter
	enc  httpfilter.EncoderFilter
	// decBuf and encBuf hold what the filter asked to buffer.
	decBuf, encBuf []byte
}

// filterCallbacks are what a filter sees of its stream.
type filterCallbacks struct{ f *activeFilter }

func (c filterCallbacks) Context() context.Context {
	if c.f.s.ctx != nil {
		return c.f.s.ctx
	}
	return c.f.s.r.Context()
}

func (c filterCallbacks) SendLocalReply(code int, body string, header http.Header, details string) {
	c.f.s.sendLocalReply(code, body, header, details)
}

func (c filterCallbacks) ClearRouteCache() { c.f.s.clearRouteCache() }

func (c filterCallbacks) SendToCluster(name string, req *http.Request) (*http.Response, error) {
	cl, ep, err := c.f.s.rl.p.liveEndpoint(name)
	if err != nil {
		return nil, err
	}
	req.URL.Scheme, req.URL.Host = "http", ep.addr
	return cl.pool.main.RoundTrip(req)
}

func (c filterCallbacks) HasRoute() bool { return c.f.s.route != nil }

func (c filterCallbacks) RouteName() string {
	if c.f.s.route == nil {
		return ""
	}
	return c.f.s.route.name
}

func (c filterCallbacks) RouteForwards() bool { return c.f.s.route != nil && c.f.s.route.fwd != nil }

func (c filterCallbacks) PerRouteConfig() any {
	if rc := c.f.s.perRouteConf(c.f.conf.name); rc != nil {
		return rc.config
	}
	return nil
}

func (c filterCallbacks) PerRouteConfigs() []any {
	var out []any
	name := c.f.conf.name
	if s := c.f.s; s.route != nil && s.route.perFilter[name] != nil && s.route.perFilter[name].config != nil {
		out = append(out, s.route.perFilter[name].config)
	}
	if s := c.f.s; s.vhost != nil && s.vhost.perFilter[name] != nil && s.vhost.perFilter[name].config != nil {
		out = append(out, s.vhost.perFilter[name].config)
	}
	return out
}

func (c filterCallbacks) RemoteAddr() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(c.f.s.r.RemoteAddr)
	return ap
}

func (c filterCallbacks) BufferLimit() int { return c.f.s.decoderBufferLimit() }

func (c filterCallbacks) SetDecoderBufferLimit(n int) { c.f.s.decBufLimit = n }

func (c filterCallbacks) ClientAddr() netip.Addr { return c.f.s.clientAddr }

func (c filterCallbacks) FilterState(key string) (string, bool) {
	v, ok := c.f.s.filterState[key]
	return v, ok
}

func (c filterCallbacks) RecreateStream() bool { return c.f.s.recreateStream() }

func (c filterCallbacks) SetRequestState(key string, v any) {
	s := c.f.s
	if s.requestState == nil {
		s.requestState = map[string]any{}
	}
	s.requestState[key] = v
}

func (c filterCallbacks) RequestState(key string) any { return c.f.s.requestState[key] }

// recreateStream prepares the stream that replaces s once it ends, with
// the request headers the filters left (Envoy's recreateStream). s.mu is
// held.
func (s *stream) recreateStream() bool {
	// The downstream request has ended (Envoy's complete()); what the
	// router has not read of it yet is dropped.
	complete := s.body == nil || s.body.end
	if !s.mayRecreate || s.next != nil || s.recreated || s.headersSent || s.aborted || s.upType != "" || !complete {
		return false
	}
	h := s.req
	h.Header = s.req.Header.Clone()
	// The new request has no body (Envoy sends it headers only).
	delete(h.Header, "Content-Length")
	delete(h.Header, "Transfer-Encoding")
	s.next = &stream{
		rl: s.rl, conf: s.conf, hcm: s.hcm, filterState: s.filterState, w: s.w, r: s.r, start: s.start, tls: s.tls,
		clientAddr: s.clientAddr, requestState: s.requestState, recreated: true, req: h,
	}
	return true
}

func (c filterCallbacks) RequestedServerName() string {
	if t := c.f.s.r.TLS; t != nil {
		return t.ServerName
	}
	return ""
}

// decoderBufferLimit is what a decoder filter may buffer: the stream's
// own limit, if a filter set one, else the connection's.
func (s *stream) decoderBufferLimit() int {
	if s.decBufLimit > 0 {
		return s.decBufLimit
	}
	return filterBufferLimit
}

// perRouteConf is the most specific typed_per_filter_config entry for a
// filter: the route's, then the virtual host's.
func (s *stream) perRouteConf(name string) *routeFilterConf {
	if s.route != nil {
		if rc := s.route.perFilter[name]; rc != nil {
			return rc
		}
	}
	if s.vhost != nil {
		return s.vhost.perFilter[name]
	}
	return nil
}

// startFilters instantiates the HCM's filters for this stream, leaving out
// those disabled for its route.
func (s *stream) startFilters() {
	confs := s.hcm.filters
	if len(confs) == 0 {
		return
	}
	for _, fc := range confs {
		on := !fc.disabled
		if rc := s.perRouteConf(fc.name); rc != nil {
			if rc.disabled {
				on = false
			} else if rc.enabled || rc.config != nil {
				on = true
			}
		}
		if !on {
			continue
		}
		if s.filters == nil {
			// A chain of disabled filters (the shared listeners')
			// costs nothing on routes that use none.
			s.filters = make([]activeFilter, 0, len(confs))
		}
		s.filters = append(s.filters, activeFilter{s: s, conf: fc})
		f := &s.filters[len(s.filters)-1]
		if _, ok := fc.config.(httpfilter.StreamRecreator); ok {
			s.mayRecreate = true
		}
		inst := fc.config.NewFilter(filterCallbacks{f})
		f.dec, _ = inst.(httpfilter.DecoderFilter)
		f.enc, _ = inst.(httpfilter.EncoderFilter)
	}
}

var errFilterStalled = errors.New("filter stopped at the end of the stream")

// decodeHeaders runs the request headers through the decoder filters from
// index i, and records where they stopped (len(filters): at the router).
func (s *stream) decodeHeaders(i int, endStream bool) {
	for ; i < len(s.filters); i++ {
		f := &s.filters[i]
		if f.dec == nil {
			continue
		}
		st := f.dec.DecodeHeaders(&s.req, endStream)
		if s.replied {
			return
		}
		if st != httpfilter.Continue {
			s.decAt = i
			if endStream {
				s.filterStalled(f, "DecodeHeaders")
			}
			return
		}
	}
	s.decAt = len(s.filters)
}

// decodeData runs a piece of the request body through the decoder filters
// from index i. What passes them all is queued for the router. A filter
// that held the headers and now continues releases them first.
func (s *stream) decodeData(i int, data []byte, endStream bool) {
	for ; i < len(s.filters) && i <= s.decAt; i++ {
		f := &s.filters[i]
		if f.dec == nil {
			continue
		}
		if f.decBuf != nil {
			f.decBuf = append(f.decBuf, data...)
			data = f.decBuf
		}
		st := f.dec.DecodeData(data, endStream)
		if s.replied {
			return
		}
		switch st {
		case httpfilter.Continue:
			f.decBuf = nil
			if i == s.decAt {
				s.decodeHeaders(i+1, false)
				if s.replied {
					return
				}
			}
			continue
		case httpfilter.StopIterationAndBuffer:
			if f.decBuf == nil {
				f.decBuf = append(make([]byte, 0, 2*len(data)), data...)
			}
			if len(f.decBuf) > s.decoderBufferLimit() {
				s.sendLocalReply(http.StatusRequestEntityTooLarge, "Payload Too Large", nil, "request_payload_too_large")
				return
			}
		default:
			f.decBuf = nil
		}
		if endStream {
			s.filterStalled(f, "DecodeData")
		}
		return
	}
	s.body.queue(data, endStream)
}

// decodeTrailers runs request trailers through the decoder filters. A
// filter holding data releases it before its trailers, as in Envoy.
func (s *stream) decodeTrailers(t http.Header) {
	for i := 0; i < len(s.filters) && i <= s.decAt; i++ {
		f := &s.filters[i]
		if f.dec == nil {
			continue
		}
		if st := f.dec.DecodeTrailers(t); st != httpfilter.Continue || s.replied {
			if !s.replied {
				s.filterStalled(f, "DecodeTrailers")
			}
			return
		}
		if f.decBuf != nil || i == s.decAt {
			data := f.decBuf
			f.decBuf = nil
			if i == s.decAt {
				s.decodeHeaders(i+1, false)
				if s.replied {
					return
				}
			}
			if len(data) > 0 {
				s.decodeData(i+1, data, false)
				if s.replied {
					return
				}
			}
		}
	}
	s.body.queue(nil, true)
}

// filterStalled ends a stream whose filter stopped when nothing more will
// arrive to resume it. In Envoy the filter would resume it later from
// another thread; weir-proxy's filters block instead, so this is a bug.
func (s *stream) filterStalled(f *activeFilter, callback string) {
	s.rl.p.log.Errorw("HTTP filter stopped the stream at its end", "filter", f.conf.name, "callback", callback)
	s.sendLocalReply(http.StatusInternalServerError, "filter_chain_stalled", nil, "filter_chain_stalled")
}

// decodedBody is the request body as the router sees it: the downstream
// body after every decoder filter. Reading it pulls the downstream body
// through the filters.
type decodedBody struct {
	s     *stream
	src   io.ReadCloser
	buf   []byte // read buffer for src
	ready []byte // passed every filter, not yet read by the router
	end   bool   // the router has been given the end of the stream
	err   error  // from src, or the stream's local reply
}

func (b *decodedBody) queue(data []byte, endStream bool) {
	b.ready = append(b.ready, data...)
	if endStream {
		b.end = true
	}
}

// pump reads one piece of the downstream body and runs it through the
// filters. It returns false when nothing more can be read.
func (b *decodedBody) pump() bool {
	s := b.s
	if b.end || b.err != nil {
		return false
	}
	if b.buf == nil {
		b.buf = make([]byte, 32<<10)
	}
	n, err := b.src.Read(b.buf)
	if n > 0 {
		s.bytesIn.Add(int64(n))
		s.touch()
	}
	if err != nil && err != io.EOF {
		b.err = err
		return false
	}
	// The filters run under the stream's lock: this may be the
	// transport's goroutine while the stream's encodes a response.
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == io.EOF:
		trailers := s.requestTrailers()
		s.decodeData(0, b.buf[:n], trailers == nil)
		if trailers != nil && !s.replied {
			s.decodeTrailers(trailers)
		}
	case n > 0:
		s.decodeData(0, b.buf[:n], false)
	}
	if s.replied {
		b.err = errLocalReply
		return false
	}
	return true
}

var errLocalReply = errors.New("a filter answered the request")

// requestTrailers returns the trailers the client sent, or nil.
func (s *stream) requestTrailers() http.Header {
	for _, v := range s.r.Trailer {
		if len(v) > 0 {
			return s.r.Trailer
		}
	}
	return nil
}

func (b *decodedBody) Read(p []byte) (int, error) {
	for len(b.ready) == 0 {
		if b.end {
			b.s.armRouteTimeout()
			return 0, io.EOF
		}
		if !b.pump() && len(b.ready) == 0 && !b.end {
			return 0, b.err
		}
	}
	n := copy(p, b.ready)
	b.ready = b.ready[n:]
	if len(b.ready) == 0 && b.end {
		b.s.armRouteTimeout()
		return n, io.EOF
	}
	return n, nil
}

// Close does not close the server's request body: the transport may call
// it early (for instance on a failed dial) while a retry still needs it.
func (b *decodedBody) Close() error { return nil }

// encodeHeaders runs the response headers through the encoder filters, in
// reverse order, and writes them downstream once every filter continued.
func (s *stream) encodeHeaders(endStream bool) { s.encodeHeadersFrom(len(s.filters)-1, endStream) }

// encodeHeadersFrom runs the response headers through the encoder filters
// from index i down, and records where they stopped (-1: written).
func (s *stream) encodeHeadersFrom(i int, endStream bool) {
	for ; i >= 0; i-- {
		f := &s.filters[i]
		if f.enc == nil || s.replaced {
			continue
		}
		st := f.enc.EncodeHeaders(&s.resp, endStream)
		if s.replaced || s.next != nil {
			return
		}
		if st != httpfilter.Continue {
			s.encAt = i
			if endStream {
				s.filterStalled(f, "EncodeHeaders")
			}
			return
		}
	}
	s.encAt = -1
	s.writeResponseHeaders()
}

// encodeData runs a piece of the response body through the encoder filters
// from index i downwards and writes what passes them all. It returns false
// when the downstream is gone.
func (s *stream) encodeData(i int, data []byte, endStream bool) bool {
	if s.next != nil {
		return true // a recreated stream answers instead
	}
	for ; i >= 0 && i >= s.encAt; i-- {
		f := &s.filters[i]
		if f.enc == nil || s.replaced {
			continue
		}
		if f.encBuf != nil {
			f.encBuf = append(f.encBuf, data...)
			data = f.encBuf
		}
		st := f.enc.EncodeData(data, endStream)
		if s.replaced {
			return true
		}
		switch st {
		case httpfilter.Continue:
			f.encBuf = nil
			if i == s.encAt {
				s.encodeHeadersFrom(i-1, false)
				if s.replaced {
					return true
				}
			}
			continue
		case httpfilter.StopIterationAndBuffer:
			if f.encBuf == nil {
				f.encBuf = append(make([]byte, 0, 2*len(data)), data...)
			}
			if len(f.encBuf) > filterBufferLimit {
				s.responseOverflow()
				return true
			}
		default:
			f.encBuf = nil
		}
		if endStream {
			s.filterStalled(f, "EncodeData")
		}
		return true
	}
	return s.writeBody(data)
}

// encodeTrailers runs response trailers through the encoder filters; a
// filter holding data releases it first.
func (s *stream) encodeTrailers(t http.Header) {
	if s.next != nil {
		return
	}
	for i := len(s.filters) - 1; i >= 0 && i >= s.encAt; i-- {
		f := &s.filters[i]
		if f.enc == nil || s.replaced {
			continue
		}
		if st := f.enc.EncodeTrailers(t); st != httpfilter.Continue || s.replaced {
			if !s.replaced {
				s.filterStalled(f, "EncodeTrailers")
			}
			return
		}
		if f.encBuf != nil || i == s.encAt {
			data := f.encBuf
			f.encBuf = nil
			if i == s.encAt {
				s.encodeHeadersFrom(i-1, false)
				if s.replaced {
					return
				}
			}
			if len(data) > 0 && !s.encodeData(i-1, data, false) {
				return
			}
		}
	}
	s.writeTrailers(t)
}

// responseOverflow answers 500 when a filter buffered more of the response
// than the limit, as Envoy does before the headers have gone out.
func (s *stream) responseOverflow() {
	s.sendLocalReply(http.StatusInternalServerError, "Internal Server Error", nil, "response_payload_too_large")
}
