package xds

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GatewayNodePrefix starts the node ID of a gateway that serves one
// Gateway: "gateway/<namespace>/<name>/<pod>". Other node IDs belong to the
// shared gateways.
const GatewayNodePrefix = "gateway/"

// GroupOf returns the group a node ID belongs to: "<namespace>/<name>" of
// its Gateway, or "" for the shared gateways.
func GroupOf(nodeID string) string {
	rest, ok := strings.CutPrefix(nodeID, GatewayNodePrefix)
	if !ok {
		return ""
	}
	ns, rest, ok1 := strings.Cut(rest, "/")
	name, _, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}

// Router serves ADS to several groups of gateways, each from its own
// Server, so a Gateway's data plane gets only that Gateway's config. A
// stream goes to the Server of the group named by the node ID of its first
// request (GroupOf); the shared group "" is the Server given to NewRouter.
//
// Without an Authorizer the node ID is taken as claimed; with one, a
// stream may read only the group its peer's identity allows.
type Router struct {
	shared *Server
	// authorize, when set, decides whether a stream's peer may read the
	// group its node ID names.
	authorize Authorizer
	// unknown serves streams of a group nobody made: nothing.
	unknown  *Server
	newGroup func(group string) *Server

	mu     sync.Mutex
	groups map[string]*Server
}

// Authorizer returns an error when the peer of a stream (from ctx) may not
// read group as node.
type Authorizer func(ctx context.Context, node, group string) error

// SetAuthorizer makes every new stream pass a. Set it before serving.
func (r *Router) SetAuthorizer(a Authorizer) { r.authorize = a }

// admit checks a stream's first node ID against its peer.
func (r *Router) admit(ctx context.Context, node string) (string, error) {
	if node == "" {
		return "", status.Error(codes.InvalidArgument, "the first request must carry the node ID")
	}
	group := GroupOf(node)
	if r.authorize != nil {
		if err := r.authorize(ctx, node, group); err != nil {
			return "", status.Error(codes.PermissionDenied, err.Error())
		}
	}
	return group, nil
}

// NewRouter routes the shared group to shared; the controller makes a
// Server for each other group with Group, through newGroup.
func NewRouter(shared *Server, newGroup func(group string) *Server) *Router {
	return &Router{shared: shared, unknown: newGroup(""), newGroup: newGroup, groups: map[string]*Server{}}
}

// stream returns the Server for a stream of group: a client cannot make a
// group by naming it, so a made-up node ID costs nothing.
func (r *Router) stream(group string) *Server {
	if group == "" {
		return r.shared
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.groups[group]; s != nil {
		return s
	}
	return r.unknown
}

// Group returns the Server of group, creating it if needed.
func (r *Router) Group(group string) *Server {
	if group == "" {
		return r.shared
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.groups[group]
	if s == nil {
		s = r.newGroup(group)
		r.groups[group] = s
	}
	return s
}

// Remove forgets group's Server. Streams already open keep it until they
// end; a new stream gets a new, empty Server.
func (r *Router) Remove(group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.groups, group)
}

// Groups lists the groups with a Server, the shared one excluded.
func (r *Router) Groups() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.groups))
	for g := range r.groups {
		out = append(out, g)
	}
	return out
}

// Register registers ADS on g. Only ADS is routed: the per-type services
// cannot keep a group's resources consistent and are not served.
func (r *Router) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, &routedADS{r: r})
}

type routedADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	r *Router
}

func (a *routedADS) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	node := first.GetNode().GetId()
	group, err := a.r.admit(stream.Context(), node)
	if err != nil {
		return err
	}
	ps := &peekedStream{AggregatedDiscoveryService_StreamAggregatedResourcesServer: stream, first: first, node: node}
	err = a.r.stream(group).xds.StreamAggregatedResources(ps)
	if ps.changed.Load() {
		// The server ends a stream whose Recv fails without saying why.
		return errNodeChanged
	}
	return err
}

func (a *routedADS) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	node := first.GetNode().GetId()
	group, err := a.r.admit(stream.Context(), node)
	if err != nil {
		return err
	}
	ps := &peekedDeltaStream{AggregatedDiscoveryService_DeltaAggregatedResourcesServer: stream, first: first, node: node}
	err = a.r.stream(group).xds.DeltaAggregatedResources(ps)
	if ps.changed.Load() {
		return errNodeChanged
	}
	return err
}

// peekedStream hands back the request the router read first, and ends
// the stream if a later request claims another node: the stream was
// admitted for its first one.
type peekedStream struct {
	discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	first   *discovery.DiscoveryRequest
	node    string
	changed atomic.Bool
}

func (p *peekedStream) Recv() (*discovery.DiscoveryRequest, error) {
	if f := p.first; f != nil {
		p.first = nil
		return f, nil
	}
	req, err := p.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Recv()
	if err == nil && req.GetNode() != nil && req.GetNode().GetId() != p.node {
		p.changed.Store(true)
		return nil, errNodeChanged
	}
	return req, err
}

type peekedDeltaStream struct {
	discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	first   *discovery.DeltaDiscoveryRequest
	node    string
	changed atomic.Bool
}

func (p *peekedDeltaStream) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	if f := p.first; f != nil {
		p.first = nil
		return f, nil
	}
	req, err := p.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Recv()
	if err == nil && req.GetNode() != nil && req.GetNode().GetId() != p.node {
		p.changed.Store(true)
		return nil, errNodeChanged
	}
	return req, err
}

var errNodeChanged = status.Error(codes.PermissionDenied, "a stream's node ID cannot change")

// Served returns the names of the resources of typeURL the server serves
// now, sorted.
func (s *Server) Served(typeURL string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.types[typeURL]
	if ts == nil {
		return nil
	}
	out := make([]string, 0, len(ts.served))
	for name := range ts.served {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
