// Package httpfilter is the contract between weir-proxy's HTTP connection
// manager and its HTTP filters. It mirrors Envoy's: each stream gets one
// instance of every filter in the listener's http_filters; request headers,
// data and trailers go through the decoder filters in configuration order,
// response headers, data and trailers through the encoder filters in
// reverse order, and the router is always last. A filter may continue,
// stop iteration (and have data buffered for it), or answer the request
// itself with a local reply.
//
// Filters register a Factory by the protobuf type of their typed_config, as
// Envoy selects filter implementations by type URL, not by name.
//
// Unlike Envoy's C++ API, a filter never resumes a stopped stream from
// another thread: each stream runs on its own goroutine, so a filter that
// must wait (for an authorization service, a rate limit decision) blocks in
// its callback, honouring Callbacks.Context.
package httpfilter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"weak"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Status is what a filter callback returns.
type Status uint8

const (
	// Continue passes the headers, data or trailers on to the next filter.
	Continue Status = iota
	// StopIteration, from a headers callback, holds the headers (and every
	// later part of the message) at this filter. The filter's data
	// callbacks are then called until one of them returns Continue, at
	// which point the headers and the data buffered so far move on.
	StopIteration
	// StopIterationAndBuffer, from a data callback, keeps the data in a
	// buffer at this filter. The next data callback gets everything
	// buffered so far plus the new data. Past the connection's buffer
	// limit the stream ends with 413 (request) or 500 (response), as in
	// Envoy.
	StopIterationAndBuffer
	// StopIterationNoBuffer, from a data callback, drops the data.
	StopIterationNoBuffer
)

func (s Status) String() string {
	switch s {
	case Continue:
		return "Continue"
	case StopIteration:
		return "StopIteration"
	case StopIterationAndBuffer:
		return "StopIterationAndBuffer"
	case StopIterationNoBuffer:
		return "StopIterationNoBuffer"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// RequestHeaders are a request's pseudo headers and headers. Filters may
// change any of them; the router forwards what the last filter left. After
// a change that should affect routing, call Callbacks.ClearRouteCache.
type RequestHeaders struct {
	Method    string
	Scheme    string
	Authority string
	// Path is :path: the path (normalized per the connection manager's
	// settings) and the query.
	Path   string
	Header http.Header
}

// ResponseHeaders are a response's status and headers.
type ResponseHeaders struct {
	Status int
	Header http.Header
}

// DecoderFilter sees the request. Every callback runs on the stream's
// goroutine. endStream is true on the last part of the request.
type DecoderFilter interface {
	DecodeHeaders(h *RequestHeaders, endStream bool) Status
	DecodeData(data []byte, endStream bool) Status
	DecodeTrailers(trailers http.Header) Status
}

// EncoderFilter sees the response, including local replies.
type EncoderFilter interface {
	EncodeHeaders(h *ResponseHeaders, endStream bool) Status
	EncodeData(data []byte, endStream bool) Status
	EncodeTrailers(trailers http.Header) Status
}

// PassThroughDecoder can be embedded to implement the decoder callbacks a
// filter does not care about.
type PassThroughDecoder struct{}

func (PassThroughDecoder) DecodeHeaders(*RequestHeaders, bool) Status { return Continue }
func (PassThroughDecoder) DecodeData([]byte, bool) Status             { return Continue }
func (PassThroughDecoder) DecodeTrailers(http.Header) Status          { return Continue }

// PassThroughEncoder can be embedded to implement the encoder callbacks a
// filter does not care about.
type PassThroughEncoder struct{}

func (PassThroughEncoder) EncodeHeaders(*ResponseHeaders, bool) Status { return Continue }
func (PassThroughEncoder) EncodeData([]byte, bool) Status              { return Continue }
func (PassThroughEncoder) EncodeTrailers(http.Header) Status           { return Continue }

// Callbacks are the stream as a filter sees it.
type Callbacks interface {
	// Context ends when the stream does (client gone, timeouts).
	Context() context.Context
	// SendLocalReply answers the request: the response goes through the
	// encoder filters and the stream ends. header may be nil. details is
	// the access log's response code details. A decoder callback that
	// sends a local reply should return StopIteration.
	SendLocalReply(code int, body string, header http.Header, details string)
	// ClearRouteCache makes the stream match its route again, after the
	// filter changed what routing looks at.
	ClearRouteCache()
	// HasRoute reports whether a route matched the request.
	HasRoute() bool
	// RouteName is the name of the matched route, "" when none matched.
	RouteName() string
	// RouteForwards reports whether the matched route sends the request
	// upstream (Envoy's route entry), not a redirect or direct response.
	RouteForwards() bool
	// PerRouteConfig is this filter's most specific typed_per_filter_config
	// (route, then virtual host), compiled by its Factory, or nil.
	PerRouteConfig() any
	// PerRouteConfigs are all of this filter's typed_per_filter_config
	// values, the most specific first (route, then virtual host), for
	// filters that merge them field by field as Envoy's CORS filter does.
	PerRouteConfigs() []any
	// RequestedServerName is the SNI of the downstream TLS connection,
	// "" without TLS or SNI (Envoy's requestedServerName).
	RequestedServerName() string
	// FilterState is the string value of a connection filter state
	// object, as serializeAsString gives it, and whether there is one.
	FilterState(key string) (string, bool)
	// RemoteAddr is the downstream peer.
	RemoteAddr() netip.AddrPort
	// ClientAddr is Envoy's downstream remote address: the peer when the
	// connection manager sets use_remote_address, else the last
	// X-Forwarded-For address. Unmapped, without a zone.
	ClientAddr() netip.Addr
	// BufferLimit is how many bytes a decoder filter may buffer (Envoy's
	// per_connection_buffer_limit_bytes, 1 MiB by default, unless a
	// filter set the stream's own).
	BufferLimit() int
	// SetDecoderBufferLimit sets what decoder filters of this stream may
	// buffer, as Envoy's setDecoderBufferLimit: the buffer filter raises
	// it to its max_request_bytes.
	SetDecoderBufferLimit(n int)
	// SendToCluster sends req to an endpoint of the named cluster of the
	// current configuration, as Envoy's async client does for filters
	// such as ext_authz. req.URL's path and query are sent; its host is
	// replaced by the endpoint's.
	SendToCluster(cluster string, req *http.Request) (*http.Response, error)
	// RecreateStream is Envoy's recreateStream, for an encoder filter that
	// redirects the request internally: the response being encoded is
	// dropped, and once the stream ends a new one starts with the request
	// headers as the filter left them, routed again through every filter,
	// with no body. It reports false, and changes nothing, unless the
	// whole request has been received and nothing has gone downstream;
	// a stream is recreated at most once.
	RecreateStream() bool
	// SetRequestState keeps v under key for the request, across a
	// recreated stream (Envoy's filter state of request life span).
	SetRequestState(key string, v any)
	// RequestState is what SetRequestState kept under key, or nil.
	RequestState(key string) any
}

// Config is a compiled HttpFilter typed_config. It is immutable and shared
// by all streams.
type Config interface {
	// NewFilter returns the filter instance of one stream. It returns a
	// DecoderFilter, an EncoderFilter, or a value that is both.
	NewFilter(cb Callbacks) any
}

// StreamRecreator is a Config whose filters may call
// Callbacks.RecreateStream. The proxy then keeps what a recreated stream
// needs; RecreateStream reports false to any other filter.
type StreamRecreator interface {
	Config
	RecreatesStreams()
}

// Factory builds a filter from its configuration.
type Factory interface {
	// ConfigType is an empty message of HttpFilter.typed_config's type.
	ConfigType() proto.Message
	// NewConfig compiles a typed_config. Errors name the offending field
	// relative to the message, so the proxy can NACK with a full path.
	// scope is the proxy's, for filters with state.
	NewConfig(cfg proto.Message, scope *Scope) (Config, error)
	// RouteConfigType is an empty message of the filter's per-route
	// config type, or nil when it has none.
	RouteConfigType() proto.Message
	// NewRouteConfig compiles a typed_per_filter_config value.
	NewRouteConfig(cfg proto.Message, scope *Scope) (any, error)
}

var (
	mu        sync.RWMutex
	factories = map[protoreflect.FullName]Factory{}
	perRoute  = map[protoreflect.FullName]Factory{}
)

// Register makes a filter available to every listener. It panics on a
// second factory for the same type, as that is a programming error.
func Register(f Factory) {
	mu.Lock()
	defer mu.Unlock()
	name := f.ConfigType().ProtoReflect().Descriptor().FullName()
	if _, dup := factories[name]; dup {
		panic("httpfilter: two factories for " + string(name))
	}
	factories[name] = f
	if rt := f.RouteConfigType(); rt != nil {
		perRoute[rt.ProtoReflect().Descriptor().FullName()] = f
	}
}

// Lookup returns the factory for a typed_config message type.
func Lookup(name protoreflect.FullName) Factory {
	mu.RLock()
	defer mu.RUnlock()
	return factories[name]
}

// LookupRoute returns the factory whose per-route config has this type.
func LookupRoute(name protoreflect.FullName) Factory {
	mu.RLock()
	defer mu.RUnlock()
	return perRoute[name]
}

// UnsupportedField returns the name of the first field (in name order) set
// in m that is not in allowed, or "". weir-proxy never ignores config it
// does not implement: a filter's NewConfig should refuse such a field, so
// that the update is NACKed instead of served differently from Envoy.
func UnsupportedField(m proto.Message, allowed ...string) string {
	if m == nil {
		return ""
	}
	bad := ""
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		name := string(fd.Name())
		for _, a := range allowed {
			if a == name {
				return true
			}
		}
		if bad == "" || name < bad {
			bad = name
		}
		return true
	})
	return bad
}

// Scope is what one proxy keeps for its filters across config updates. A
// filter whose compiled config holds state, such as rate limit buckets,
// finds there the config an update left unchanged, so the state carries
// over. A nil Scope keeps nothing.
type Scope struct {
	mu sync.Mutex
	m  map[string]any // of weak.Pointer

	dialCluster ClusterDialer
}

// ClusterDialer connects to an endpoint of a cluster of the proxy's
// current configuration, with the cluster's upstream TLS if it has one:
// the transport of Envoy's gRPC client for an envoy_grpc service.
type ClusterDialer func(ctx context.Context, cluster string) (net.Conn, error)

// SetClusterDialer is how the proxy lets its filters reach its clusters.
func (s *Scope) SetClusterDialer(d ClusterDialer) { s.dialCluster = d }

// DialCluster connects to an endpoint of the named cluster.
func (s *Scope) DialCluster(ctx context.Context, cluster string) (net.Conn, error) {
	if s == nil || s.dialCluster == nil {
		return nil, fmt.Errorf("cluster %q: this proxy dials no clusters for its filters", cluster)
	}
	return s.dialCluster(ctx, cluster)
}

// NewScope returns an empty Scope.
func NewScope() *Scope { return &Scope{m: map[string]any{}} }

// Shared returns the value kept under key while something still holds it,
// else what build returns, kept from then on. key must identify the
// config entirely: its type and its content.
func Shared[T any](s *Scope, key string, build func() (*T, error)) (*T, error) {
	if s == nil {
		return build()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if wp, ok := s.m[key].(weak.Pointer[T]); ok {
		if v := wp.Value(); v != nil {
			return v, nil
		}
	}
	v, err := build()
	if err != nil {
		return nil, err
	}
	wp := weak.Make(v)
	s.m[key] = wp
	runtime.AddCleanup(v, func(key string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if cur, ok := s.m[key].(weak.Pointer[T]); ok && cur == wp {
			delete(s.m, key)
		}
	}, key)
	return v, nil
}
