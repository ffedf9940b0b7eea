package xds

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	cds = resource.ClusterType
	eds = resource.EndpointType
	lds = resource.ListenerType
	rds = resource.RouteType
	sds = resource.SecretType

	testNode = "test-node"
	timeout  = 5 * time.Second
)

var short = map[string]string{cds: "CDS", eds: "EDS", lds: "LDS", rds: "RDS", sds: "SDS"}

// --- fixtures ---

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		ConnectTimeout:       durationpb.New(5 * time.Second),
	}
}

func cla(name, ip string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address:       ip,
						PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
					}}},
				}},
			}},
		}},
	}
}

func routeConfig(name string, clusters ...string) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{
		Name:             name,
		ValidateClusters: wrapperspb.Bool(true),
		VirtualHosts:     []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}}},
	}
	for _, c := range clusters {
		rc.VirtualHosts[0].Routes = append(rc.VirtualHosts[0].Routes, &routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/" + c}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}},
		})
	}
	return rc
}

func listener(name string, port uint32) *listenerv3.Listener {
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: name,
			ConfigSource:    ads(),
		}},
	})
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       "0.0.0.0",
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
		}},
	}
}

func secret(name, cert string) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(cert)}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("key-" + cert)}},
		}},
	}
}

// state is what a test hands to Apply. Its methods return copies, so a test
// can keep the previous state and its pointers.
type state map[string][]types.Resource

func baseState() state {
	return state{
		cds: {cluster("default/a:80"), cluster("default/b:80")},
		eds: {cla("default/a:80", "10.0.0.1", 8080), cla("default/b:80", "10.0.0.2", 8080)},
		sds: {secret("default/s1", "cert-1")},
		rds: {routeConfig("external-http", "default/a:80", "default/b:80")},
		lds: {listener("external-http", 8080)},
	}
}

func (st state) clone() state {
	out := make(state, len(st))
	for k, v := range st {
		out[k] = slices.Clone(v)
	}
	return out
}

// with returns a copy of st in which r replaces the resource of the same name,
// or is added.
func (st state) with(typeURL string, r types.Resource) state {
	out := st.clone()
	name := cache.GetResourceName(r)
	for i, cur := range out[typeURL] {
		if cache.GetResourceName(cur) == name {
			out[typeURL][i] = r
			return out
		}
	}
	out[typeURL] = append(out[typeURL], r)
	return out
}

// without returns a copy of st without the named resource.
func (st state) without(typeURL, name string) state {
	out := st.clone()
	out[typeURL] = slices.DeleteFunc(out[typeURL], func(r types.Resource) bool { return cache.GetResourceName(r) == name })
	return out
}

// --- server harness ---

type harness struct {
	t    testing.TB
	s    *Server
	reg  *prometheus.Registry
	conn *grpc.ClientConn
}

func newHarness(t testing.TB) *harness {
	return newHarnessWith(t, Options{})
}

// newHarnessWith is newHarness with opts; a nil Logger logs warnings to the
// test, and the Registerer is always the harness's.
func newHarnessWith(t testing.TB, opts Options) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	if tt, ok := t.(*testing.T); ok && opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel)).Sugar()
	}
	opts.Registerer = reg
	s := NewServer(ctx, opts)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &harness{t: t, s: s, reg: reg, conn: conn}
}

// waitIdle waits until each of n clients subscribed as subs has an open watch
// for every type, i.e. has acknowledged its last push, so the server pushes
// the next change at once. (LinearCache.NumCacheWatches cannot be used: in
// go-control-plane v0.14.0 it is decremented twice for a watch that fired.)
func (h *harness) waitIdle(subs subscriptions, n int) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		idle := true
		for url, names := range subs {
			c := h.s.types[url].cache
			if names == nil && c.NumWildcardWatches() != n || names != nil && c.NumWatches(names[0]) != n {
				idle = false
			}
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %d idle clients", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metric returns the value of the named counter or gauge, for the given
// type_url label ("" for an unlabelled metric), or 0 if it has no sample.
func (h *harness) metric(name, typeURL string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := typeURL == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "type_url" && l.GetValue() == typeURL {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func (h *harness) versions() map[string]string {
	out := map[string]string{}
	for _, url := range servedTypes {
		out[url] = h.s.Version(url)
	}
	return out
}

func (h *harness) pushes() map[string]float64 {
	out := map[string]float64{}
	for _, url := range servedTypes {
		out[url] = h.metric("weir_xds_pushes_total", url)
	}
	return out
}

// --- clients ---

// got is a response as a test sees it, for either protocol.
type got struct {
	typeURL string
	names   []string // resources in the response, sorted
	removed []string // delta only, sorted
	version string
	res     map[string]proto.Message
}

func (g got) String() string {
	s := short[g.typeURL] + " " + joinNames(g.names)
	if len(g.removed) > 0 {
		s += " -" + joinNames(g.removed)
	}
	return s
}

func joinNames(n []string) string {
	out := "["
	for i, s := range n {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out + "]"
}

type client interface {
	// next returns the next response, failing the test after a timeout.
	next() got
	// nextWithin returns the next response, or false if none arrives within d.
	nextWithin(d time.Duration) (got, bool)
	// nackNext makes the client reject its next response of typeURL with msg.
	nackNext(typeURL, msg string)
	// holdACKs makes the client withhold its answers to responses of the
	// given types until releaseACKs; only the latest answer per type is kept.
	holdACKs(typeURLs ...string)
	// releaseACKs sends the withheld answer of typeURL, if any, and stops
	// withholding them.
	releaseACKs(typeURL string)
	// close ends the stream.
	close()
}

// subscriptions says what a client asks for, by type; nil names mean wildcard.
type subscriptions map[string][]string

// envoyLike subscribes the way Envoy does for docs/xds-shape.md: clusters and
// listeners by wildcard, the rest by name.
func envoyLike() subscriptions {
	return subscriptions{
		cds: nil,
		eds: {"default/a:80", "default/b:80"},
		lds: nil,
		rds: {"external-http"},
		sds: {"default/s1"},
	}
}

func wildcard() subscriptions {
	return subscriptions{cds: nil, eds: nil, lds: nil, rds: nil, sds: nil}
}

// subscribeOrder is the order Envoy subscribes in.
var subscribeOrder = []string{cds, eds, lds, rds, sds}

// clientBase holds what both protocols' clients share.
type clientBase struct {
	t      testing.TB
	resps  chan got
	cancel context.CancelFunc

	sendMu sync.Mutex // gRPC streams allow one sender at a time

	mu   sync.Mutex
	nack map[string]string
	hold map[string]bool
	held map[string]func() error
}

func (c *clientBase) next() got {
	c.t.Helper()
	select {
	case g, ok := <-c.resps:
		if !ok {
			c.t.Fatal("xDS stream closed")
		}
		return g
	case <-time.After(timeout):
		c.t.Fatal("timed out waiting for an xDS response")
	}
	return got{}
}

func (c *clientBase) nextWithin(d time.Duration) (got, bool) {
	select {
	case g, ok := <-c.resps:
		return g, ok
	case <-time.After(d):
		return got{}, false
	}
}

func (c *clientBase) close() { c.cancel() }

func (c *clientBase) holdACKs(typeURLs ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range typeURLs {
		c.hold[u] = true
	}
}

func (c *clientBase) releaseACKs(typeURL string) {
	c.mu.Lock()
	send := c.held[typeURL]
	delete(c.held, typeURL)
	delete(c.hold, typeURL)
	c.mu.Unlock()
	if send != nil {
		if err := send(); err != nil {
			c.t.Errorf("sending a withheld ACK: %v", err)
		}
	}
}

// answer sends, or withholds, the answer to a response of typeURL.
func (c *clientBase) answer(typeURL string, send func() error) error {
	c.mu.Lock()
	if c.hold[typeURL] {
		c.held[typeURL] = send
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return send()
}

func (c *clientBase) nackNext(typeURL, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nack[typeURL] = msg
}

func (c *clientBase) takeNACK(typeURL string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg, ok := c.nack[typeURL]
	delete(c.nack, typeURL)
	return msg, ok
}

func newClientBase(t testing.TB, cancel context.CancelFunc) clientBase {
	return clientBase{
		t: t, resps: make(chan got, 1000), cancel: cancel,
		nack: map[string]string{}, hold: map[string]bool{}, held: map[string]func() error{},
	}
}

func nackStatus(msg string) *rpcstatus.Status {
	return &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}
}

// sotwClient is a state-of-the-world ADS client that ACKs every response
// unless told to NACK it.
type sotwClient struct {
	clientBase
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	subs     subscriptions
	accepted map[string]string // only touched by the receive loop
}

func dialSotw(t testing.TB, h *harness, subs subscriptions) *sotwClient {
	t.Helper()
	return dialSotwAs(t, h, subs, testNode)
}

// dialSotwAs dials as node, withholding from the start the ACKs of the types
// in hold (see holdACKs).
func dialSotwAs(t testing.TB, h *harness, subs subscriptions, node string, hold ...string) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{
		clientBase: newClientBase(t, cancel),
		stream:     stream,
		subs:       subs,
		accepted:   map[string]string{},
	}
	c.holdACKs(hold...)
	go c.recv()
	first := true
	for _, url := range subscribeOrder {
		names, ok := subs[url]
		if !ok {
			continue
		}
		req := &discovery.DiscoveryRequest{TypeUrl: url, ResourceNames: names}
		if first {
			req.Node = &corev3.Node{Id: node}
			first = false
		}
		if err := c.send(req); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *sotwClient) send(req *discovery.DiscoveryRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.stream.Send(req)
}

func (c *sotwClient) recv() {
	defer close(c.resps)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		url := resp.GetTypeUrl()
		req := &discovery.DiscoveryRequest{TypeUrl: url, ResponseNonce: resp.GetNonce(), ResourceNames: c.subs[url]}
		if msg, ok := c.takeNACK(url); ok {
			req.VersionInfo = c.accepted[url]
			req.ErrorDetail = nackStatus(msg)
		} else {
			req.VersionInfo = resp.GetVersionInfo()
			c.accepted[url] = resp.GetVersionInfo()
		}
		g := got{typeURL: url, version: resp.GetVersionInfo(), res: map[string]proto.Message{}}
		for _, a := range resp.GetResources() {
			m, err := a.UnmarshalNew()
			if err != nil {
				panic(err)
			}
			g.names = append(g.names, cache.GetResourceName(m))
			g.res[cache.GetResourceName(m)] = m
		}
		slices.Sort(g.names)
		if err := c.answer(url, func() error { return c.send(req) }); err != nil {
			return
		}
		c.resps <- g
	}
}

// deltaClient is a delta ADS client that ACKs every response unless told to
// NACK it.
type deltaClient struct {
	clientBase
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func dialDelta(t testing.TB, h *harness, subs subscriptions) *deltaClient {
	t.Helper()
	return dialDeltaAs(t, h, subs, testNode)
}

// dialDeltaAs dials as node, withholding from the start the ACKs of the
// types in hold (see holdACKs).
func dialDeltaAs(t testing.TB, h *harness, subs subscriptions, node string, hold ...string) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{
		clientBase: newClientBase(t, cancel),
		stream:     stream,
	}
	c.holdACKs(hold...)
	go c.recv()
	first := true
	for _, url := range subscribeOrder {
		names, ok := subs[url]
		if !ok {
			continue
		}
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: url, ResourceNamesSubscribe: names}
		if first {
			req.Node = &corev3.Node{Id: node}
			first = false
		}
		if err := c.send(req); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.stream.Send(req)
}

func (c *deltaClient) recv() {
	defer close(c.resps)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		url := resp.GetTypeUrl()
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: url, ResponseNonce: resp.GetNonce()}
		if msg, ok := c.takeNACK(url); ok {
			req.ErrorDetail = nackStatus(msg)
		}
		g := got{typeURL: url, version: resp.GetSystemVersionInfo(), removed: slices.Clone(resp.GetRemovedResources()), res: map[string]proto.Message{}}
		for _, r := range resp.GetResources() {
			g.names = append(g.names, r.GetName())
			m, err := r.GetResource().UnmarshalNew()
			if err != nil {
				panic(err)
			}
			g.res[r.GetName()] = m
		}
		slices.Sort(g.names)
		slices.Sort(g.removed)
		if err := c.answer(url, func() error { return c.send(req) }); err != nil {
			return
		}
		c.resps <- g
	}
}

// protocols runs a test once per ADS flavour.
var protocols = []struct {
	name   string
	dial   func(*testing.T, *harness, subscriptions) client
	dialAs func(t *testing.T, h *harness, s subscriptions, node string, hold ...string) client
}{
	{"sotw", func(t *testing.T, h *harness, s subscriptions) client { return dialSotw(t, h, s) },
		func(t *testing.T, h *harness, s subscriptions, node string, hold ...string) client {
			return dialSotwAs(t, h, s, node, hold...)
		}},
	{"delta", func(t *testing.T, h *harness, s subscriptions) client { return dialDelta(t, h, s) },
		func(t *testing.T, h *harness, s subscriptions, node string, hold ...string) client {
			return dialDeltaAs(t, h, s, node, hold...)
		}},
}

// initial reads responses until every type in subs has arrived once, and
// returns them by type.
func initial(t *testing.T, c client, subs subscriptions) map[string]got {
	t.Helper()
	out := map[string]got{}
	for len(out) < len(subs) {
		g := c.next()
		if _, dup := out[g.typeURL]; dup {
			t.Fatalf("second %s before the initial state was complete: %v", short[g.typeURL], g)
		}
		out[g.typeURL] = g
	}
	return out
}

func names(rs ...types.Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, cache.GetResourceName(r))
	}
	slices.Sort(out)
	return out
}
