// Package xds owns the xDS control-plane endpoint: it holds the Envoy v3
// resources that pkg/translate produced, serves them over ADS (state of the
// world and delta) to Envoy and to weir-proxy, and decides when and in what
// order each client sees a change. It does not build or validate config; it
// only diffs, orders, pushes, and reports what clients rejected.
//
// Serving is delegated to go-control-plane: one cache.LinearCache per type URL
// behind a cache.MuxCache, fronted by its server/v3 implementation. Only the
// resources that changed in an Apply are handed to the caches, so a single
// endpoint change costs one EDS push, not a new snapshot.
package xds

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Options configures a Server.
type Options struct {
	// Logger receives the server's logs. Nil discards them.
	Logger *zap.SugaredLogger
	// Registerer receives the weir_xds_* metrics. Nil keeps them unregistered
	// (useful in tests that create many servers).
	Registerer prometheus.Registerer
	// StepTimeout bounds how long an Apply waits, before a push that depends
	// on an earlier one, for each client to be sent that earlier push (see
	// applySteps). Zero means DefaultStepTimeout; negative disables waiting.
	StepTimeout time.Duration
	// PointerIdentity promises that the caller hands back the same pointer
	// for every resource that did not change, as pkg/translate does. Apply
	// then treats a new pointer as a change without proto.Equal, which on a
	// route configuration of 30,000 virtual hosts costs milliseconds.
	PointerIdentity bool
}

// DefaultStepTimeout is the StepTimeout used when Options leaves it zero.
const DefaultStepTimeout = 2 * time.Second

// NACK describes one rejection of a push by a client.
type NACK struct {
	// Node is the client's node id.
	Node string
	// TypeURL is the type of the rejected push.
	TypeURL string
	// Error is the client's error_detail message.
	Error string
	// Resources names the resources in the most recent push of TypeURL to that
	// client, i.e. the push being rejected. Removals carried by a delta push
	// are not listed.
	Resources []string
}

// ApplyStats counts, by type URL, what an Apply pushed. Types with nothing to
// push are absent, so an Apply that changed nothing returns empty maps.
type ApplyStats struct {
	Updated, Removed map[string]int
}

// servedTypes are the type URLs Weir serves, see docs/xds-shape.md.
var servedTypes = [...]string{
	resource.ClusterType,
	resource.EndpointType,
	resource.SecretType,
	resource.RouteType,
	resource.ListenerType,
}

// Server serves Weir's xDS resources. Create it with NewServer.
type Server struct {
	ctx         context.Context
	log         *zap.SugaredLogger
	metrics     *metrics
	xds         serverv3.Server
	stepTimeout time.Duration

	// versionPrefix makes versions unique to this process, so a client that
	// reconnects after a restart never mistakes a reused version number for
	// config it already has.
	versionPrefix string

	// types is fixed after NewServer; the typeState contents are guarded by mu.
	types map[string]*typeState

	// mu serializes Apply.
	mu sync.Mutex
	// routeWire is guarded by mu.
	routeWire routeWire
	gen       uint64 // Apply generation, used to find removed resources without a set

	hooksMu  sync.Mutex
	hooks    []func(NACK)
	ackHooks []func(node string)

	// trackMu guards streams, the tracked part of each streamState, and
	// waitCh. It is never held while calling into a cache.
	trackMu sync.Mutex
	streams map[streamKey]*streamState
	// waitCh, when not nil, is closed by the next response or stream close
	// to wake the Apply waiting in waitFor.
	waitCh chan struct{}
	// deltaReqs hands each delta request's typeTrack from the request
	// callback to watchCache.CreateDeltaWatch.
	deltaReqs sync.Map // *discovery.DeltaDiscoveryRequest -> *typeTrack

	retryMu sync.Mutex
	retries [numTypes]retryQueue
}

// typeState is what one type URL serves.
type typeState struct {
	url   string
	cache *cache.LinearCache
	// pointerIdentity mirrors Options.PointerIdentity.
	pointerIdentity bool
	// served is what the cache holds, by resource name.
	served map[string]*servedResource
	// version mirrors the LinearCache's internal counter, which it bumps
	// exactly once per UpdateResources call and does not expose.
	version atomic.Uint64
	// count is how many resources are served, for streams' first requests.
	count atomic.Int64

	// prev and prevEntry are the previous Apply's list for this type and the
	// served entry of each of its positions (nil where it was skipped). A
	// translator that reuses pointers mostly hands back the same list.
	prev      []types.Resource
	prevEntry []*servedResource

	// toUpdate and toRemove carry one Apply's diff from diff to the steps.
	toUpdate map[string]types.Resource
	toRemove []string
}

type servedResource struct {
	res types.Resource
	gen uint64
}

// NewServer returns a Server that serves nothing until the first Apply.
// Streams end when ctx is done.
func NewServer(ctx context.Context, opts Options) *Server {
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop().Sugar()
	}
	logger = logger.Named("xds")
	stepTimeout := opts.StepTimeout
	if stepTimeout == 0 {
		stepTimeout = DefaultStepTimeout
	}
	s := &Server{
		ctx:           ctx,
		log:           logger,
		metrics:       newMetrics(opts.Registerer),
		stepTimeout:   stepTimeout,
		versionPrefix: strconv.FormatInt(time.Now().UnixNano(), 36) + "-",
		types:         make(map[string]*typeState, len(servedTypes)),
		streams:       make(map[streamKey]*streamState),
	}
	gcpLog := gcpLogger{logger}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        make(map[string]cache.Cache, len(servedTypes)),
	}
	for _, url := range servedTypes {
		ts := &typeState{
			url:             url,
			cache:           cache.NewLinearCache(url, cache.WithVersionPrefix(s.versionPrefix), cache.WithLogger(gcpLog)),
			served:          make(map[string]*servedResource),
			pointerIdentity: opts.PointerIdentity,
		}
		s.types[url] = ts
		mux.Caches[url] = watchCache{LinearCache: ts.cache, s: s}
	}
	// Ordered ADS makes the state-of-the-world server send responses in the
	// order the caches produced them, as the delta server always does; Apply's
	// ordering depends on it.
	s.xds = serverv3.NewServer(ctx, mux, &callbacks{s: s}, sotw.WithOrderedADS(), sotw.WithLogger(gcpLog))
	return s
}

// Register registers ADS and the per-type discovery services on g.
// Only ADS preserves ordering across types; the per-type services exist for
// clients that cannot use ADS.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
}

// OnNACK adds fn to the functions called for every NACK. fn runs on the
// client's stream goroutine, so it must not block.
func (s *Server) OnNACK(fn func(NACK)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	// Copy on write so nackHooks can hand out the slice without holding the lock.
	s.hooks = append(s.hooks[:len(s.hooks):len(s.hooks)], fn)
}

func (s *Server) nackHooks() []func(NACK) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	return s.hooks
}

// Version returns the version the server currently sends for typeURL, or ""
// for a type it does not serve.
func (s *Server) Version(typeURL string) string {
	ts := s.types[typeURL]
	if ts == nil {
		return ""
	}
	return s.versionPrefix + strconv.FormatUint(ts.version.Load(), 10)
}

// gcpLogger adapts zap to go-control-plane's logger. go-control-plane logs
// every watch it opens at info level, which is debug noise for us.
type gcpLogger struct{ l *zap.SugaredLogger }

func (g gcpLogger) Debugf(format string, args ...any) { g.l.Debugf(format, args...) }
func (g gcpLogger) Infof(format string, args ...any)  { g.l.Debugf(format, args...) }
func (g gcpLogger) Warnf(format string, args ...any)  { g.l.Warnf(format, args...) }
func (g gcpLogger) Errorf(format string, args ...any) { g.l.Errorf(format, args...) }
