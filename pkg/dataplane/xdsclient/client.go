// Package xdsclient owns weir-proxy's side of xDS: it subscribes to an ADS
// server (delta, falling back to state of the world), assembles the
// resources it receives into complete configs, hands each complete config
// to the proxy, and ACKs what the proxy applied or NACKs it with the
// proxy's error. When the server goes away the proxy keeps its last config
// and the client reconnects with backoff.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weir-dev/weir/pkg/dataplane"
)

// Applier takes complete configs; *dataplane.Proxy implements it.
type Applier interface {
	Apply(*dataplane.Resources) error
}

// Options configures a Client.
type Options struct {
	// NodeID identifies this proxy to the server, e.g. the pod name.
	NodeID  string
	Cluster string
	Logger  *zap.SugaredLogger
	// Registerer receives weir_proxy_xds_* metrics; nil disables them.
	Registerer prometheus.Registerer
	// MinBackoff and MaxBackoff bound the reconnect delay.
	MinBackoff, MaxBackoff time.Duration
	// StateOfTheWorld skips delta xDS.
	StateOfTheWorld bool
	// WarmingTimeout is how long a config waits for the endpoints of a
	// new EDS cluster before it is applied with that cluster empty, as
	// Envoy's initial_fetch_timeout ends cluster warming (default 15s).
	WarmingTimeout time.Duration
}

// typeOrder is the order subscriptions are sent in, clusters first, as
// Envoy does, so the server's make-before-break order holds.
var typeOrder = []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.RouteType, resource.ListenerType}

type entry struct {
	version string
	msg     proto.Message
}

// Client keeps a proxy in step with an xDS server.
type Client struct {
	conn    grpc.ClientConnInterface
	applier Applier
	opts    Options
	log     *zap.SugaredLogger
	metrics *metrics

	mu        sync.Mutex
	state     map[string]map[string]entry // type URL → name → resource
	versions  map[string]string           // sotw: type URL → last ACKed version
	applied   *dataplane.Resources
	connected bool
	// answered holds the types that have responded at least once. Until
	// every type has, no config is applied: like Envoy's initial fetch, a
	// proxy must not go ready on the clusters alone. initialDeadline
	// bounds that wait for a server that never answers some type.
	answered        map[string]bool
	initialDeadline time.Time
	// warming holds, by service name, when each EDS cluster without
	// endpoints started waiting for them; warmingTimer fires at
	// warmingDue, the end of the earliest wait.
	warming      map[string]time.Time
	warmingTimer *time.Timer
	warmingDue   time.Time
	// stopped is set when Run returns; late warming timers then do nothing.
	stopped bool

	// routes decodes route configurations; only Run's goroutine uses it.
	routes routeDecoder
}

// unmarshal decodes one resource; route configurations keep the protos of
// their unchanged virtual hosts.
func (c *Client) unmarshal(a *anypb.Any) (proto.Message, error) {
	if a.GetTypeUrl() == resource.RouteType {
		return c.routes.decode(a.GetValue())
	}
	return anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
}

// initialFetchTimeout is how long the first config waits for types that
// have not answered, as Envoy's initial_fetch_timeout does.
const initialFetchTimeout = 15 * time.Second

// New returns a client that talks to the server over conn.
func New(conn grpc.ClientConnInterface, applier Applier, opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.WarmingTimeout == 0 {
		opts.WarmingTimeout = initialFetchTimeout
	}
	state := map[string]map[string]entry{}
	for _, t := range typeOrder {
		state[t] = map[string]entry{}
	}
	return &Client{conn: conn, applier: applier, opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer),
		state: state, versions: map[string]string{}, answered: map[string]bool{}, warming: map[string]time.Time{}}
}

// Applied returns the last config the proxy applied, or nil.
func (c *Client) Applied() *dataplane.Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Connected reports whether a stream to the server is open.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Run streams until ctx ends, reconnecting with exponential backoff. The
// proxy keeps serving its last config while the server is away.
func (c *Client) Run(ctx context.Context) {
	defer func() {
		c.mu.Lock()
		c.stopped = true
		c.mu.Unlock()
	}()
	backoff := c.opts.MinBackoff
	delta := !c.opts.StateOfTheWorld
	for ctx.Err() == nil {
		start := time.Now()
		var err error
		if delta {
			err = c.runDelta(ctx)
			if status.Code(err) == codes.Unimplemented {
				c.log.Info("The xDS server does not support delta xDS; using state of the world")
				delta = false
				continue
			}
		} else {
			err = c.runSotW(ctx)
		}
		c.setConnected(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = c.opts.MinBackoff
		}
		c.log.Warnw("xDS stream ended; serving the last good config and reconnecting", "error", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
	c.metrics.setConnected(v)
}

func (c *Client) node() *corev3.Node {
	return &corev3.Node{Id: c.opts.NodeID, Cluster: c.opts.Cluster, UserAgentName: "weir-proxy"}
}

func (c *Client) runDelta(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	for i, t := range typeOrder {
		// Resuming with what we hold makes the server send only changes,
		// including removals that happened while we were away.
		initial := map[string]string{}
		for name, e := range c.state[t] {
			initial[name] = e.version
		}
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: initial}
		if i == 0 {
			req.Node = c.node()
		}
		if err := stream.Send(req); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("server closed the stream")
			}
			return err
		}
		c.setConnected(true)
		updates := map[string]entry{}
		for _, r := range resp.GetResources() {
			msg, err := c.unmarshal(r.GetResource())
			if err != nil {
				updates = nil
				err = fmt.Errorf("%s %q: %w", resp.GetTypeUrl(), r.GetName(), err)
				if err := stream.Send(c.nackDelta(resp, err)); err != nil {
					return err
				}
				break
			}
			updates[r.GetName()] = entry{version: r.GetVersion(), msg: msg}
		}
		if updates == nil {
			continue
		}
		if resp.GetTypeUrl() == resource.RouteType {
			for _, name := range resp.GetRemovedResources() {
				c.routes.forget(name)
			}
		}
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err := c.update(resp.GetTypeUrl(), updates, resp.GetRemovedResources(), false); err != nil {
			ack = c.nackDelta(resp, err)
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
}

func (c *Client) nackDelta(resp *discovery.DeltaDiscoveryResponse, err error) *discovery.DeltaDiscoveryRequest {
	return &discovery.DeltaDiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
	}
}

func (c *Client) runSotW(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for i, t := range typeOrder {
		req := &discovery.DiscoveryRequest{TypeUrl: t}
		if i == 0 {
			req.Node = c.node()
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("server closed the stream")
			}
			return err
		}
		c.setConnected(true)
		t := resp.GetTypeUrl()
		all := map[string]entry{}
		var perr error
		for _, a := range resp.GetResources() {
			msg, err := c.unmarshal(a)
			if err != nil {
				perr = fmt.Errorf("%s: %w", t, err)
				break
			}
			all[resourceName(msg)] = entry{version: resp.GetVersionInfo(), msg: msg}
		}
		if perr == nil {
			perr = c.update(t, all, nil, true)
		}
		req := &discovery.DiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
		c.mu.Lock()
		if perr != nil {
			req.VersionInfo = c.versions[t]
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: perr.Error()}
		} else {
			c.versions[t] = resp.GetVersionInfo()
			req.VersionInfo = resp.GetVersionInfo()
		}
		c.mu.Unlock()
		if err := stream.Send(req); err != nil {
			return err
		}
	}
}

func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	return ""
}

// update stages a change to one type and, when the result is a complete
// config, applies it. On error nothing changes: the proxy and the client's
// state keep the last good config.
func (c *Client) update(typeURL string, updates map[string]entry, removed []string, replace bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.state[typeURL]
	if !ok {
		return fmt.Errorf("unexpected type %s", typeURL)
	}
	next := make(map[string]entry, len(cur)+len(updates))
	if !replace {
		for k, v := range cur {
			next[k] = v
		}
	}
	for _, name := range removed {
		delete(next, name)
	}
	for k, v := range updates {
		next[k] = v
	}
	staged := make(map[string]map[string]entry, len(c.state))
	for t, m := range c.state {
		staged[t] = m
	}
	staged[typeURL] = next
	c.answered[typeURL] = true
	if c.initialDeadline.IsZero() {
		c.initialDeadline = time.Now().Add(initialFetchTimeout)
	}
	res, err := assemble(staged)
	if err != nil {
		c.metrics.update(typeURL, "nack")
		c.log.Warnw("Rejected xDS update; keeping the last good config", "type", typeURL, "error", err)
		return err
	}
	if c.applied == nil && len(c.answered) < len(typeOrder) && time.Now().Before(c.initialDeadline) {
		c.log.Debugw("Waiting for every type's first response before the first config", "answered", len(c.answered))
	} else if missing := c.warm(res); missing == "" {
		if err := c.applier.Apply(res); err != nil {
			c.metrics.update(typeURL, "nack")
			c.log.Warnw("Rejected xDS update; keeping the last good config", "type", typeURL, "error", err)
			return err
		}
		c.applied = res
		c.metrics.applied()
	} else {
		c.log.Debugw("Waiting for referenced resources before applying", "missing", missing)
	}
	c.state[typeURL] = next
	c.metrics.update(typeURL, "ack")
	return nil
}

// warm follows Envoy's cluster warming: an EDS cluster waits for its
// endpoints for at most the warming timeout (initial_fetch_timeout), each
// on its own clock, and is then served without them. It returns what res
// still waits for, or "" when it can be applied. Locked.
func (c *Client) warm(res *dataplane.Resources) string {
	now := time.Now()
	lacking := edsWithoutEndpoints(res)
	for name := range c.warming {
		if !lacking[name] {
			delete(c.warming, name)
		}
	}
	next := time.Time{}
	for name := range lacking {
		start, ok := c.warming[name]
		if !ok {
			start = now
			c.warming[name] = now
		}
		if end := start.Add(c.opts.WarmingTimeout); end.After(now) && (next.IsZero() || end.Before(next)) {
			next = end
		}
	}
	// One timer, for the earliest wait still running.
	if !next.IsZero() && (c.warmingTimer == nil || c.warmingDue.IsZero() || next.Before(c.warmingDue) || !c.warmingDue.After(now)) {
		if c.warmingTimer != nil {
			c.warmingTimer.Stop()
		}
		c.warmingDue = next
		c.warmingTimer = time.AfterFunc(next.Sub(now), c.endWarming)
	}
	return dangling(res, func(name string) bool { return now.Sub(c.warming[name]) >= c.opts.WarmingTimeout })
}

// endWarming runs when a cluster's warming timeout ends: it applies the
// current state if all it lacks are endpoints whose wait is over.
func (c *Client) endWarming() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warmingDue = time.Time{}
	if c.stopped || len(c.warming) == 0 {
		return
	}
	if c.applied == nil && len(c.answered) < len(typeOrder) && time.Now().Before(c.initialDeadline) {
		c.warmingDue = c.initialDeadline
		c.warmingTimer = time.AfterFunc(time.Until(c.initialDeadline), c.endWarming)
		return
	}
	res, err := assemble(c.state)
	if err != nil || c.warm(res) != "" {
		return
	}
	if err := c.applier.Apply(res); err != nil {
		c.log.Warnw("Config with warmed-out clusters rejected; keeping the last good config", "error", err)
		return
	}
	names := make([]string, 0, len(c.warming))
	for n := range c.warming {
		names = append(names, n)
	}
	sort.Strings(names)
	c.log.Warnw("Applied config without endpoints for EDS clusters whose endpoints did not arrive within the warming timeout", "clusters", names)
	c.applied = res
	c.metrics.applied()
}

// edsService is the name an EDS cluster's endpoints come under.
func edsService(cl *clusterv3.Cluster) (string, bool) {
	if cl.GetType() != clusterv3.Cluster_EDS {
		return "", false
	}
	if name := cl.GetEdsClusterConfig().GetServiceName(); name != "" {
		return name, true
	}
	return cl.GetName(), true
}

// edsWithoutEndpoints names the EDS clusters (by service name) that have
// no ClusterLoadAssignment in res.
func edsWithoutEndpoints(res *dataplane.Resources) map[string]bool {
	clas := make(map[string]bool, len(res.Endpoints))
	for _, e := range res.Endpoints {
		clas[e.GetClusterName()] = true
	}
	out := map[string]bool{}
	for _, cl := range res.Clusters {
		if name, ok := edsService(cl); ok && !clas[name] {
			out[name] = true
		}
	}
	return out
}

func assemble(state map[string]map[string]entry) (*dataplane.Resources, error) {
	res := &dataplane.Resources{}
	for _, t := range typeOrder {
		names := make([]string, 0, len(state[t]))
		for n := range state[t] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			switch m := state[t][n].msg.(type) {
			case *clusterv3.Cluster:
				res.Clusters = append(res.Clusters, m)
			case *endpointv3.ClusterLoadAssignment:
				res.Endpoints = append(res.Endpoints, m)
			case *tlsv3.Secret:
				res.Secrets = append(res.Secrets, m)
			case *routev3.RouteConfiguration:
				res.Routes = append(res.Routes, m)
			case *listenerv3.Listener:
				res.Listeners = append(res.Listeners, m)
			default:
				return nil, fmt.Errorf("%s %q holds a %T", t, n, m)
			}
		}
	}
	return res, nil
}

// dangling names the first resource a config refers to but does not hold:
// a listener's route configuration or secret, a cluster's client
// certificate, or an EDS cluster's endpoints (unless warmedOut says that cluster's wait is over). Like
// Envoy's warming, such a config is not applied yet.
func dangling(res *dataplane.Resources, warmedOut func(service string) bool) string {
	has := func(kind string, names map[string]bool, n string) string {
		if !names[n] {
			return kind + " " + n
		}
		return ""
	}
	routes, secrets, clas := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, r := range res.Routes {
		routes[r.GetName()] = true
	}
	for _, s := range res.Secrets {
		secrets[s.GetName()] = true
	}
	for _, e := range res.Endpoints {
		clas[e.GetClusterName()] = true
	}
	for _, cl := range res.Clusters {
		if ts := cl.GetTransportSocket(); ts != nil {
			var tc tlsv3.UpstreamTlsContext
			if ts.GetTypedConfig().UnmarshalTo(&tc) == nil {
				for _, sds := range tc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
					if m := has("secret", secrets, sds.GetName()); m != "" {
						return m
					}
				}
			}
		}
		name, ok := edsService(cl)
		if !ok || (warmedOut != nil && warmedOut(name)) {
			continue
		}
		if m := has("endpoints", clas, name); m != "" {
			return m
		}
	}
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			if ts := fc.GetTransportSocket(); ts != nil {
				var tc tlsv3.DownstreamTlsContext
				if ts.GetTypedConfig().UnmarshalTo(&tc) == nil {
					for _, sds := range tc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
						if m := has("secret", secrets, sds.GetName()); m != "" {
							return m
						}
					}
				}
			}
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
					if m := has("route configuration", routes, hcm.GetRds().GetRouteConfigName()); m != "" {
						return m
					}
				}
			}
		}
	}
	return ""
}
