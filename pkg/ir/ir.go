// Package ir owns Weir's routing model: the one graph that every front end
// (KIngress, networking.k8s.io Ingress, Gateway API) produces and that
// pkg/translate turns into Envoy config. It imports neither Kubernetes client
// types nor Envoy protos, so both sides can change independently.
//
// A front end contributes one Fragment per source object. A Model holds the
// fragments, decides which one owns a contested domain, and hands translate a
// stable, sorted view.
package ir

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// ObjectRef names a source object, e.g. {KIngress, default, hello}.
type ObjectRef struct {
	Kind      string
	Namespace string
	Name      string
}

func (r ObjectRef) String() string {
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// Provenance lists the source objects an element came from, for status and
// debugging. Elements shared by several sources (a backend, a certificate)
// carry all of them.
type Provenance []ObjectRef

// ListenerRole says which gateway listener an element is served on.
type ListenerRole uint8

const (
	// ExternalHTTP is the public plain-text listener.
	ExternalHTTP ListenerRole = 1 << iota
	// ExternalHTTPS is the public TLS listener.
	ExternalHTTPS
	// InternalHTTP is the cluster-local plain-text listener. It serves every
	// rule, external ones included, so in-cluster callers reach everything.
	InternalHTTP
	// InternalHTTPS is the cluster-local TLS listener.
	InternalHTTPS
)

// AllRoles lists the roles in the order listeners are emitted.
var AllRoles = []ListenerRole{ExternalHTTP, ExternalHTTPS, InternalHTTP, InternalHTTPS}

// ListenerSet is a set of roles.
type ListenerSet uint8

// Has reports whether r is in the set.
func (s ListenerSet) Has(r ListenerRole) bool { return s&ListenerSet(r) != 0 }

// With returns the set with r added.
func (s ListenerSet) With(r ListenerRole) ListenerSet { return s | ListenerSet(r) }

func (r ListenerRole) String() string {
	switch r {
	case ExternalHTTP:
		return "external-http"
	case ExternalHTTPS:
		return "external-https"
	case InternalHTTP:
		return "internal-http"
	case InternalHTTPS:
		return "internal-https"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// TLS reports whether the role terminates TLS.
func (r ListenerRole) TLS() bool { return r == ExternalHTTPS || r == InternalHTTPS }

// Fragment is everything one source object contributes to the gateway.
type Fragment struct {
	Source ObjectRef
	// Created orders fragments when two claim the same domain: the older one
	// keeps it. Ties break on Source.
	Created time.Time

	// Listeners are ports the fragment defines for itself, as a Gateway
	// does. The KIngress listeners (ListenerRole) are the gateway's own and
	// are not listed here.
	Listeners    []*Listener
	VirtualHosts []*VirtualHost
	// TLSRoutes are served on the fragment's TLS passthrough listeners.
	TLSRoutes []*TLSRoute
	// Backends are the upstreams the routes refer to, by Backend.Name.
	Backends []*Backend
	// Certificates are served on the TLS listeners for their hosts.
	Certificates []*Certificate
}

// Domains returns every domain the fragment serves on the gateway's shared
// (ListenerRole) listeners, as the gateway compares them: lower-cased with ASCII rules, as Envoy does.
// Only ASCII is folded: the Kelvin sign must not become another's "k".
func (f *Fragment) Domains() []string {
	seen := map[string]bool{}
	var out []string
	for _, vh := range f.VirtualHosts {
		if vh.Listener != "" || vh.Internal {
			// On the fragment's own listener, nobody else's.
			continue
		}
		for _, d := range vh.Domains {
			d = LowerASCII(d)
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// InternalDomainSuffix ends the domains of Internal virtual hosts. It is
// under .invalid (RFC 2606), so it is no real host's; translate leaves it
// out of any other virtual host, so no object can claim an internal name.
const InternalDomainSuffix = ".weir.invalid"

// LowerASCII lower-cases the ASCII letters of s and nothing else, as Envoy
// folds hosts and header names: Unicode folding would turn the Kelvin sign
// into "k". It returns s itself when there is nothing to change.
func LowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}

// VirtualHost is a set of domains and the routes served for them.
type VirtualHost struct {
	// Name is unique within a listener's route table.
	Name string
	// Domains are host names without ports; translate also matches host:port.
	// A leading "*." is a suffix wildcard.
	Domains   []string
	Listeners ListenerSet
	// Listener, when set, names one of the fragment's own Listeners that
	// serves the virtual host instead of the shared ones in Listeners.
	Listener string
	// Internal marks a virtual host that only the gateway's own internal
	// redirects reach (CustomErrors): its domains are under
	// InternalDomainSuffix, which no other virtual host may use, and no
	// source owns them.
	Internal bool
	// Routes are matched in order; the first match wins.
	Routes     []*Route
	Provenance Provenance
	// Field is where the front end found it, e.g. "spec.rules[0]", so
	// problems name what the user wrote.
	Field string
}

// Route is one match and what to do with a request that hits it.
type Route struct {
	Name  string
	Match Match

	// At most one of Backends, Redirect and DirectResponse is set; a route
	// with none answers 503.
	Backends []WeightedBackend
	Redirect *Redirect
	// DirectResponse answers with a fixed status and no upstream, e.g. 500
	// for a route whose backends are all invalid, as Gateway API requires.
	DirectResponse *DirectResponse

	// RequestHeaders apply before the split, to every backend.
	RequestHeaders HeaderMutation
	// ResponseHeaders apply to the response on its way to the client.
	ResponseHeaders HeaderMutation
	// HostRewrite replaces the Host/:authority header sent upstream.
	HostRewrite string
	// PathRewrite changes the path sent upstream.
	PathRewrite *PathModifier

	// Timeout is the whole-request timeout; nil means none, which is what
	// Knative requires (Envoy's 15 s default must be switched off).
	Timeout *time.Duration
	// IdleTimeout, when set, replaces the listener's stream idle timeout
	// for this route: how long a request may see no bytes either way. 0
	// turns it off.
	IdleTimeout *time.Duration
	// Retry is nil for no retries.
	Retry *RetryPolicy
	// HashPolicy keys the choice of endpoint of the route's
	// LBConsistentHash backends.
	HashPolicy []HashPolicy
	// UnresolvedStatus answers the share of Unresolved backends: 0 is 503
	// (a cluster without endpoints); 500 or 404 is Envoy's
	// cluster_not_found_response_code. Only a fragment's own listeners
	// (VirtualHost.Listener set) honour 500 and 404, since their route
	// configurations do not validate clusters; elsewhere it is 503.
	UnresolvedStatus int
	// WebsocketUpgrade allows "Upgrade: websocket" on this route.
	WebsocketUpgrade bool
	// Mirrors get a copy of each request (or of a sampled fraction), whose
	// answers are dropped. Only routes with Backends send them.
	Mirrors []Mirror
	// Filters are the per-request policies attached to this route, at most
	// one of each kind. They are the attachment point for policies and
	// plugins: translate runs each kind as one filter of Envoy's HTTP
	// filter chain, present only where some route uses it, with the
	// route's settings as its typed_per_filter_config.
	Filters []HTTPFilter

	Provenance Provenance
}

// Mirror sends copies of a route's requests to a backend. The copy's host
// gets "-shadow" appended, as Envoy's shadowing does.
type Mirror struct {
	BackendName string
	// Numerator/Denominator is the fraction of requests copied; a zero
	// Denominator means all of them.
	Numerator, Denominator uint32
}

// HTTPFilter is a per-request policy attached to a route.
type HTTPFilter interface {
	// FilterKind says which filter runs it. Kinds run in the order of
	// their values, before the router.
	FilterKind() FilterKind
}

// FilterKind is a kind of HTTPFilter, in filter chain order.
type FilterKind uint8

const (
	// FilterCustomErrors replaces error responses with another virtual
	// host's answer. It is first, so that it sees the local replies of
	// every filter after it.
	FilterCustomErrors FilterKind = iota + 1
	// FilterSourceRanges refuses clients by address.
	FilterSourceRanges
	// FilterCORS answers CORS preflights and adds CORS response headers.
	FilterCORS
	// FilterRateLimit answers requests over a route's rate with a local
	// reply, before they cost a backend anything.
	FilterRateLimit
	// FilterRemoveRequestHeaders drops request headers the filters after
	// it must not take from the client.
	FilterRemoveRequestHeaders
	// FilterBasicAuth admits only requests with a known user's password.
	FilterBasicAuth
	// FilterExtAuth asks an authorization service about each request.
	FilterExtAuth
	// FilterGlobalRateLimit asks the gateways' shared rate limit service
	// about each request, letting it pass when the service does not
	// answer; FilterGlobalRateLimitFailClosed refuses it then. After
	// authentication, so that requests refused there cost no call and
	// count against no one's limit, and a header it sets can partition.
	FilterGlobalRateLimit
	FilterGlobalRateLimitFailClosed
	// FilterBodyLimit holds a request until its body is whole, and
	// answers 413 when it is larger than the limit.
	FilterBodyLimit
)

// CustomErrors sends a request whose response has one of Codes again, as
// a GET without a body, to the virtual host Host of the route's own
// listeners, keeping its path and query (Envoy's custom_response filter
// with a redirect policy); that answer goes to the client. Responses of the
// redirected request are never redirected again.
type CustomErrors struct {
	Codes []int
	// Host is the domain of the virtual host that answers, one of the
	// fragment's, on the listeners of the route.
	Host string
	// CodeHeader, when set, names a request header that carries the
	// status code answered.
	CodeHeader string
	// Headers are set on the redirected request; a value may use
	// Envoy's %REQ(name)% to copy a header of the original request
	// (":path" is its path and query).
	Headers []Header
}

// FilterKind implements HTTPFilter.
func (*CustomErrors) FilterKind() FilterKind { return FilterCustomErrors }

// SourceRanges answers 403 to a client whose address is outside Allow
// (when Allow is set) or inside Deny. The address is the connection's
// peer.
type SourceRanges struct {
	Allow, Deny []netip.Prefix
}

// FilterKind implements HTTPFilter.
func (*SourceRanges) FilterKind() FilterKind { return FilterSourceRanges }

// RateLimit limits a route's requests with token buckets that each
// gateway replica counts on its own (Envoy's local_ratelimit): a request
// takes a token from every bucket, and is answered Status when one is
// empty.
type RateLimit struct {
	Buckets []TokenBucket
	// PerClient gives every client address its own buckets; otherwise the
	// route's clients share them.
	PerClient bool
	// Exempt clients are never limited and take no tokens.
	Exempt []netip.Prefix
	// Status answers a limited request; 0 is Envoy's 429.
	Status int
}

// TokenBucket holds up to Burst tokens and gains Requests of them every
// Interval, starting full.
type TokenBucket struct {
	Requests uint32
	Interval time.Duration
	Burst    uint32
}

// FilterKind implements HTTPFilter.
func (*RateLimit) FilterKind() FilterKind { return FilterRateLimit }

// GlobalRateLimit counts a route's requests against a limit that every
// gateway shares: each request asks Weir's rate limit service (Envoy's
// ratelimit filter), which counts with Sentinel. A refused request is
// answered 429 with Block's body and headers.
type GlobalRateLimit struct {
	// Name names the limit in the service; routes with one Name share
	// its count, and must agree on the rest.
	Name string
	// QPS is the requests a second admitted over all gateways, per
	// partition when PartitionBy is set.
	QPS float64
	// PartitionBy gives each client address (PartitionClient) or each
	// value of Header (PartitionHeader) a count of its own; requests
	// without the header are not limited.
	PartitionBy RateLimitPartition
	Header      string
	// Throttle makes a request over the limit wait its turn, up to
	// MaxQueueing (at most MaxRateLimitQueueing, within the gateways'
	// wait for the service), instead of being refused.
	Throttle    bool
	MaxQueueing time.Duration
	// WarmUp starts the limit at QPS/ColdFactor and raises it to QPS
	// over WarmUp.
	WarmUp     time.Duration
	ColdFactor uint32
	// FailClosed refuses requests (500) while the service does not
	// answer; otherwise they pass.
	FailClosed bool
	Block      BlockResponse
}

// The descriptors of a GlobalRateLimit, as translate sends them and Weir's
// rate limit service reads them: in RateLimitDomain, the entry
// RateLimitNameKey names the limit, and the partition's entry follows it.
const (
	RateLimitDomain      = "weir"
	RateLimitNameKey     = "weir_limit"
	RateLimitClientKey   = "remote_address"
	RateLimitHeaderKey   = "header"
	MaxRateLimitQueueing = 500 * time.Millisecond
)

// MaxRateLimitQPS is the largest GlobalRateLimit.QPS.
const MaxRateLimitQPS = 1_000_000

// Check says what Weir's rate limit service cannot count as g asks: the
// field (qps, maxQueueingTime, warmUp) and why, or "" for nothing.
// Sentinel, which counts, admits floor(qps) a second and nothing below
// one, spaces a throttled partition's requests in whole milliseconds,
// and divides by zero when a warm-up is too short for its rate.
func (g *GlobalRateLimit) Check() (field, reason string) {
	switch {
	case !(g.QPS >= 1 && g.QPS <= MaxRateLimitQPS) || g.QPS != math.Trunc(g.QPS):
		return "qps", fmt.Sprintf("%v is not a whole number from 1 to %d", g.QPS, MaxRateLimitQPS)
	case g.Throttle && g.PartitionBy != PartitionNone && (g.QPS > 1000 || 1000%int64(g.QPS) != 0):
		return "qps", fmt.Sprintf("%v; a throttled limit per client or header must divide 1000", g.QPS)
	case g.Throttle && (g.MaxQueueing <= 0 || g.MaxQueueing > MaxRateLimitQueueing || g.MaxQueueing%time.Millisecond != 0):
		return "maxQueueingTime", fmt.Sprintf("%v; from 1ms to %v, in whole milliseconds, to throttle", g.MaxQueueing, MaxRateLimitQueueing)
	case !g.Throttle && g.MaxQueueing != 0:
		return "maxQueueingTime", "only to throttle"
	case g.WarmUp != 0 && g.PartitionBy != PartitionNone:
		return "warmUp", "only a limit on the whole target warms up"
	case g.WarmUp < 0 || g.WarmUp%time.Second != 0:
		return "warmUp.period", fmt.Sprintf("%v is not whole seconds", g.WarmUp)
	case g.WarmUp > 0 && g.ColdFactor < 2:
		return "warmUp.coldFactor", fmt.Sprintf("%d; at least 2", g.ColdFactor)
	case g.WarmUp > 0 && math.Floor(2*g.WarmUp.Seconds()*g.QPS/float64(1+g.ColdFactor)) < 1:
		return "warmUp", fmt.Sprintf("a period of %v at %v a second with cold factor %d is too short to warm up", g.WarmUp, g.QPS, g.ColdFactor)
	}
	return "", ""
}

// PartitionKey is the descriptor key of the partition's entry, "" for
// PartitionNone.
func (g *GlobalRateLimit) PartitionKey() string {
	switch g.PartitionBy {
	case PartitionClient:
		return RateLimitClientKey
	case PartitionHeader:
		return RateLimitHeaderKey
	}
	return ""
}

// RateLimitPartition is what a rate limit counts separately.
type RateLimitPartition uint8

const (
	// PartitionNone counts every request of the target together.
	PartitionNone RateLimitPartition = iota
	// PartitionClient counts each client address on its own.
	PartitionClient
	// PartitionHeader counts each value of a request header on its own.
	PartitionHeader
)

// BlockResponse is the body and headers of a refused request's answer.
type BlockResponse struct {
	Body    string
	Headers []Header
}

// FilterKind implements HTTPFilter.
func (g *GlobalRateLimit) FilterKind() FilterKind {
	if g.FailClosed {
		return FilterGlobalRateLimitFailClosed
	}
	return FilterGlobalRateLimit
}

// RemoveRequestHeaders drops request headers before the filters after it
// run: those an authorization service is trusted to set (ExtAuth's
// UpstreamHeaders) must not be the client's when the service sets none.
type RemoveRequestHeaders struct {
	Names []string
}

// FilterKind implements HTTPFilter.
func (*RemoveRequestHeaders) FilterKind() FilterKind { return FilterRemoveRequestHeaders }

// BasicAuth admits a request whose credentials (RFC 7617's Basic scheme,
// in Authorization) are a user's name and password, and answers any other
// request 401 with a Basic challenge (Envoy's basic_auth).
type BasicAuth struct {
	// Users are the users and their passwords' hashes, as htpasswd writes
	// them; none admits no one. Only "{SHA}" hashes can be served: Envoy
	// verifies no other.
	Users []HtpasswdUser
}

// HtpasswdUser is one line of an htpasswd file.
type HtpasswdUser struct {
	Name string
	// Hash is the password's hash with its scheme's prefix, such as
	// "{SHA}" followed by the base64 of the password's SHA-1.
	Hash string
}

// FilterKind implements HTTPFilter.
func (*BasicAuth) FilterKind() FilterKind { return FilterBasicAuth }

// ExtAuth asks an HTTP service whether each request may pass (Envoy's
// ext_authz): the service gets the request's method and headers, with no
// body, at Path. A 200 lets the request through, with the answer's
// UpstreamHeaders set on it; any other answer goes back to the client as
// it is (status, headers and body); no answer, or a 5xx, is answered
// ErrorStatus.
type ExtAuth struct {
	// BackendName is the service, one of the fragment's Backends.
	BackendName string
	// Path is the path and query every check is sent to.
	Path string
	// CheckHeaders are set on the check; a value may use Envoy's
	// %REQ(name)% to copy a request header (":path", ":authority",
	// ":method" and "x-forwarded-proto" among them).
	CheckHeaders []Header
	// UpstreamHeaders are copied from an allowing answer onto the request.
	UpstreamHeaders []string
	// Timeout bounds each check.
	Timeout time.Duration
}

// FilterKind implements HTTPFilter.
func (*ExtAuth) FilterKind() FilterKind { return FilterExtAuth }

// BodyLimit refuses request bodies larger than MaxBytes with 413
// (Envoy's buffer filter): the request is held until its body is whole.
type BodyLimit struct {
	MaxBytes uint32
}

// FilterKind implements HTTPFilter.
func (*BodyLimit) FilterKind() FilterKind { return FilterBodyLimit }

// CORSPolicy is the Fetch standard's CORS protocol for a route. A request
// whose Origin is allowed gets Access-Control-Allow-Origin set to that
// origin (never "*", so credentials work). Every preflight is answered by
// the gateway, with the CORS headers only for an allowed origin. Other
// requests pass through untouched.
type CORSPolicy struct {
	// AllowOrigins are "scheme://host[:port]" origins; "*" in place of
	// the leftmost host labels matches one or more labels, and "*" alone
	// matches every origin.
	AllowOrigins []string
	// AllowMethods, AllowHeaders and ExposeHeaders are listed as given;
	// a lone "*" in AllowMethods or AllowHeaders answers a preflight with
	// what it asked for.
	AllowMethods  []string
	AllowHeaders  []string
	ExposeHeaders []string
	// MaxAge is how long, in seconds, a preflight answer may be cached;
	// nil sends no Access-Control-Max-Age.
	MaxAge           *int32
	AllowCredentials bool
}

// FilterKind implements HTTPFilter.
func (*CORSPolicy) FilterKind() FilterKind { return FilterCORS }

// PathMatchKind is how Match.Path is compared.
type PathMatchKind uint8

const (
	// PathPrefix matches a literal prefix; "" and "/" match everything.
	PathPrefix PathMatchKind = iota
	// PathExact matches the whole path.
	PathExact
	// PathRegex matches the whole path against an RE2 expression.
	PathRegex
	// PathSegmentPrefix matches whole path segments: "/api" matches "/api"
	// and "/api/x" but not "/apix". A trailing "/" in Value is ignored.
	PathSegmentPrefix
)

// PathMatch matches the request path (without query).
type PathMatch struct {
	Kind  PathMatchKind
	Value string
}

// HeaderMatchKind is how a header is compared.
type HeaderMatchKind uint8

const (
	// HeaderExact compares the whole value.
	HeaderExact HeaderMatchKind = iota
	// HeaderRegex matches the whole value against RE2.
	HeaderRegex
	// HeaderPresent only requires the header to exist.
	HeaderPresent
)

// HeaderMatch matches one request header. Names are case-insensitive.
type HeaderMatch struct {
	Name  string
	Kind  HeaderMatchKind
	Value string
}

// QueryParamMatch matches one query parameter, by exact name.
type QueryParamMatch struct {
	Name  string
	Kind  HeaderMatchKind
	Value string
}

// Match selects requests. All set conditions must hold.
type Match struct {
	Path        PathMatch
	Headers     []HeaderMatch
	QueryParams []QueryParamMatch
	// Method is empty for any method.
	Method string
	// ViaCertificate, when set, matches only requests that came over a
	// connection the filter chain of that certificate, one of the
	// fragment's Certificates, took. A host whose certificate checks
	// clients (ClientValidation) is then reached only over connections
	// that were checked, whatever server name and Host a client sends.
	ViaCertificate string
}

// Header is one name/value pair.
type Header struct {
	Name  string
	Value string
}

// HeaderMutation edits request headers. Set overwrites whatever the client
// sent (Knative's appendHeaders semantics); Append adds a value.
type HeaderMutation struct {
	Set    []Header
	Append []Header
	Remove []string
}

// Empty reports whether the mutation does nothing.
func (m HeaderMutation) Empty() bool {
	return len(m.Set) == 0 && len(m.Append) == 0 && len(m.Remove) == 0
}

// WeightedBackend sends Weight parts of the route's traffic to a backend.
type WeightedBackend struct {
	// BackendName refers to Fragment.Backends[].Name.
	BackendName string
	// Weight is relative to the route's other backends; 0 gets no traffic.
	Weight uint32
	// RequestHeaders apply after the split, for this backend only.
	RequestHeaders HeaderMutation
	// Unresolved: the backend did not resolve, and its share of the
	// traffic is refused (a cluster without endpoints), as Gateway API
	// asks; BackendName then only names it in messages.
	Unresolved bool
}

// PathModifierKind is how a PathModifier changes the path.
type PathModifierKind uint8

const (
	// ReplaceFullPath replaces the whole path with Value.
	ReplaceFullPath PathModifierKind = iota
	// ReplacePrefixMatch replaces the part of the path that the route's
	// prefix match (PathPrefix or PathSegmentPrefix) matched with Value.
	ReplacePrefixMatch
	// ReplaceRegex replaces the part of the path that the RE2 expression
	// Pattern matches with Value, where \1 to \9 are its groups (Envoy's
	// regex_rewrite).
	ReplaceRegex
)

// PathModifier rewrites a request path; the query is kept.
type PathModifier struct {
	Kind  PathModifierKind
	Value string
	// Pattern is the expression of ReplaceRegex.
	Pattern string
}

// DirectResponse is a fixed answer from the gateway itself.
type DirectResponse struct {
	StatusCode int
	Body       string
}

// Redirect answers with a redirect instead of proxying. Empty fields keep
// the request's value.
type Redirect struct {
	Scheme string
	Host   string
	Port   uint32
	Path   *PathModifier
	// StatusCode is 301, 302, 303, 307 or 308.
	StatusCode int
	// StripQuery drops the request's query from the Location.
	StripQuery bool
}

// RetryPolicy retries failed upstream attempts.
type RetryPolicy struct {
	Attempts      uint32
	PerTryTimeout time.Duration
	// On is Envoy's retry_on list, e.g. "5xx", "reset".
	On []string
	// StatusCodes are retried as well (Envoy's retriable-status-codes).
	StatusCodes []uint32
	// Backoff is the least wait before a retry; 0 is Envoy's default
	// (25 ms, growing).
	Backoff time.Duration
	// OtherEndpoints sends each retry to an endpoint not tried yet, where
	// the backend has one (Envoy's previous_hosts predicate), as nginx's
	// proxy_next_upstream moves to the next server.
	OtherEndpoints bool
	// NotForMethods are methods whose requests are never retried (as
	// nginx does not retry POST, LOCK and PATCH once sent).
	NotForMethods []string
}

// Protocol is the upstream application protocol.
type Protocol uint8

const (
	// HTTP1 speaks HTTP/1.1 upstream.
	HTTP1 Protocol = iota
	// H2C speaks cleartext HTTP/2 upstream.
	H2C
	// GRPC is H2C carrying gRPC.
	GRPC
)

func (p Protocol) String() string {
	switch p {
	case H2C:
		return "h2c"
	case GRPC:
		return "grpc"
	}
	return "http1"
}

// ServiceRef names a Kubernetes Service port.
type ServiceRef struct {
	Namespace string
	Name      string
	Port      int32
}

// Backend is one upstream: a Service port and the endpoints behind it.
type Backend struct {
	// Name is stable for the same Service port, so fragments that share a
	// Service share one cluster, and endpoint churn only changes endpoints.
	Name     string
	Service  ServiceRef
	Protocol Protocol
	// ExternalName, when set, is resolved by DNS (an ExternalName Service)
	// and Endpoints is ignored.
	ExternalName string
	// TLS, when set, makes the gateway originate TLS to the backend.
	TLS *BackendTLS
	// ConnectTimeout bounds each connection attempt; 0 is the gateway's
	// default (5 s).
	ConnectTimeout time.Duration
	// LoadBalancer is how a request's endpoint is chosen.
	LoadBalancer LoadBalancer
	// MaxRequests bounds the requests in flight to the backend from each
	// gateway (Envoy's circuit breaker); the next is answered 503. 0 is
	// no bound.
	MaxRequests uint32
	// Endpoints are the ready addresses; empty means no healthy upstream.
	Endpoints  []Endpoint
	Provenance Provenance
}

// LoadBalancer is how a backend's endpoint is chosen for a request.
type LoadBalancer uint8

const (
	// LBRoundRobin takes the endpoints in turn.
	LBRoundRobin LoadBalancer = iota
	// LBLeastRequest takes the less busy of two endpoints picked at random.
	LBLeastRequest
	// LBConsistentHash maps the hash of the route's HashPolicy onto a ring
	// of the endpoints, so the same key reaches the same endpoint and a
	// change of endpoints moves few keys. Without a hash, it is random.
	LBConsistentHash
)

// String names the policy as backend name suffixes do.
func (l LoadBalancer) String() string {
	switch l {
	case LBLeastRequest:
		return "least-request"
	case LBConsistentHash:
		return "consistent-hash"
	}
	return "round-robin"
}

// HashPolicy is one input of the key a route's consistent-hash backends
// choose an endpoint by; a route's policies are combined.
type HashPolicy struct {
	Kind HashKind
	// Name is the header, cookie or query parameter.
	Name string
	// Cookie only: when a request has no such cookie, the gateway makes
	// one up, hashes by it, and sets it on the response, so the client's
	// next requests reach the same endpoint. Nil TTL sets none; 0 sets a
	// session cookie.
	CookieTTL        *time.Duration
	CookiePath       string
	CookieAttributes []CookieAttribute
}

// HashKind is what a HashPolicy hashes.
type HashKind uint8

const (
	HashHeader HashKind = iota + 1
	HashCookie
	HashSourceIP
	HashQueryParameter
)

// CookieAttribute is an attribute of a cookie the gateway sets, such as
// SameSite=Lax or Secure (no value).
type CookieAttribute struct{ Name, Value string }

// ValidCookiePath reports whether p may be a Set-Cookie Path: RFC 6265
// allows any character but controls and ";".
func ValidCookiePath(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == ';' {
			return false
		}
	}
	return true
}

// BackendTLS is how the gateway connects to a backend over TLS: the SNI
// it sends and the certificate it accepts.
type BackendTLS struct {
	// ServerName is sent as SNI. It is also the name the certificate must
	// carry when SubjectAltNames is empty. It may be empty (no SNI) only
	// when Verify is not VerifyFull or SubjectAltNames are set.
	ServerName string
	// Verify is how much of the certificate is checked.
	Verify VerifyMode
	// CACertificates is the PEM bundle the chain is verified against;
	// empty means the gateway's system bundle.
	CACertificates string
	// SubjectAltNames, when set, replace ServerName in verification: the
	// certificate must carry one of them.
	SubjectAltNames []SubjectAltName
	// ClientCertificate, when set, names the fragment's Certificate the
	// gateway presents to the backend (a Gateway's
	// spec.tls.backend.clientCertificateRef).
	ClientCertificate string
	// Source is the object that asked for TLS (a BackendTLSPolicy), if
	// not the backend's own.
	Source *ObjectRef
}

// VerifyMode is how much of a backend's certificate the gateway checks.
type VerifyMode uint8

const (
	// VerifyFull checks the chain and the name.
	VerifyFull VerifyMode = iota
	// VerifyChain checks the chain against CACertificates only.
	VerifyChain
	// VerifyNone accepts any certificate, as nginx's proxy_ssl_verify off
	// does: the connection is encrypted, not authenticated.
	VerifyNone
)

// SubjectAltName is a name a backend certificate may carry.
type SubjectAltName struct {
	// URI is true for a URI SAN; otherwise Value is a DNS name.
	URI   bool
	Value string
}

// Key is a canonical string of everything that shapes the connection, so
// that two backends with the same key share one cluster definition.
func (t *BackendTLS) Key() string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(t.ServerName)
	b.WriteByte(0)
	b.WriteByte('0' + byte(t.Verify))
	b.WriteByte(0)
	b.WriteString(t.CACertificates)
	b.WriteByte(0)
	b.WriteString(t.ClientCertificate)
	for _, s := range t.SubjectAltNames {
		if s.URI {
			b.WriteString("\x00uri:")
		} else {
			b.WriteString("\x00dns:")
		}
		b.WriteString(s.Value)
	}
	return b.String()
}

// BackendName is the canonical backend name for a Service port.
func BackendName(ns, name string, port int32) string {
	return fmt.Sprintf("%s/%s:%d", ns, name, port)
}

// Endpoint is one ready upstream address.
type Endpoint struct {
	Address string
	Port    uint32
}

// Certificate is a TLS key pair served for its hosts.
type Certificate struct {
	// Name is stable per key pair (namespace/secret), so sharing one secret
	// across fragments yields one filter chain.
	Name      string
	Hosts     []string
	Listeners ListenerSet
	CertChain []byte
	// PrivateKey never appears in String or logs.
	PrivateKey []byte
	// ClientValidation asks the clients of Hosts for a certificate; nil
	// does not ask. A host served with it should also have its routes
	// match ViaCertificate, so that no other filter chain's connection
	// reaches them.
	ClientValidation *ClientValidation
	Provenance       Provenance
	// Field is where the front end found it, e.g. "spec.tls[0]".
	Field string
}

// String omits key material.
func (c *Certificate) String() string {
	return fmt.Sprintf("Certificate{%s hosts=%s}", c.Name, strings.Join(c.Hosts, ","))
}

// GoString keeps %#v from printing the key.
func (c *Certificate) GoString() string { return c.String() }
