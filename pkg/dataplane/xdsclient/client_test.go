package xdsclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/xds"
)

// recordingApplier keeps every config it was given and fails on demand.
type recordingApplier struct {
	mu      sync.Mutex
	applied []*dataplane.Resources
	fail    error
	changed chan struct{}
}

func newApplier() *recordingApplier { return &recordingApplier{changed: make(chan struct{}, 100)} }

func (a *recordingApplier) Apply(r *dataplane.Resources) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.applied = append(a.applied, r)
	a.changed <- struct{}{}
	return nil
}

func (a *recordingApplier) last() *dataplane.Resources {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.applied) == 0 {
		return nil
	}
	return a.applied[len(a.applied)-1]
}

func (a *recordingApplier) all() []*dataplane.Resources {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*dataplane.Resources(nil), a.applied...)
}

func (a *recordingApplier) setFail(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

// waitFor polls cond until it holds; each applied config wakes it early.
func (a *recordingApplier) waitFor(t *testing.T, what string, cond func(*dataplane.Resources) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if r := a.last(); r != nil && cond(r) {
			return
		}
		select {
		case <-a.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func listener(name, route string) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: route, ConfigSource: ads()}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

func routeTo(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}}
}

func cla(cluster string, ports ...uint32) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, p := range ports {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}}}}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func desired(cluster string, ports ...uint32) map[string][]types.Resource {
	return map[string][]types.Resource{
		resource.ClusterType:  {edsCluster(cluster)},
		resource.EndpointType: {cla(cluster, ports...)},
		resource.RouteType:    {routeTo("external-http", cluster)},
		resource.ListenerType: {listener("external-http", "external-http")},
	}
}

// startServer serves srv on addr ("" picks a port) and returns the address
// and a stop function.
func startServer(t *testing.T, srv *xds.Server, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the previous server's port may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	return lis.Addr().String(), g.Stop
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func clusterOf(r *dataplane.Resources) string {
	if len(r.Clusters) != 1 {
		return ""
	}
	return r.Clusters[0].GetName()
}

func endpointPorts(r *dataplane.Resources) []uint32 {
	var ports []uint32
	for _, e := range r.Endpoints {
		for _, l := range e.GetEndpoints() {
			for _, lb := range l.GetLbEndpoints() {
				ports = append(ports, lb.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())
			}
		}
	}
	return ports
}

func TestClientAppliesCompleteConfigs(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		name := map[bool]string{false: "delta", true: "sotw"}[sotw]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv := xds.NewServer(ctx, xds.Options{})
			srv.Apply(desired("a", 9001))
			addr, stop := startServer(t, srv, "")
			defer stop()
			app := newApplier()
			c := New(dial(t, addr), app, Options{NodeID: "test", StateOfTheWorld: sotw})
			go c.Run(ctx)

			app.waitFor(t, "the initial config", func(r *dataplane.Resources) bool {
				return clusterOf(r) == "a" && len(r.Listeners) == 1 && len(r.Routes) == 1
			})
			// The first config is the whole config, not the clusters that
			// arrive first: a proxy must not go ready without listeners.
			if first := app.all()[0]; len(first.Listeners) != 1 || len(first.Routes) != 1 || len(first.Clusters) != 1 {
				t.Errorf("first applied config is partial: %d listeners, %d routes, %d clusters",
					len(first.Listeners), len(first.Routes), len(first.Clusters))
			}
			// Every applied config is complete: never a route without its cluster.
			for _, r := range app.all() {
				if dangling(r, nil) != "" {
					t.Errorf("applied an incomplete config: missing %s", dangling(r, nil))
				}
			}
			srv.Apply(desired("a", 9002))
			app.waitFor(t, "the endpoint change", func(r *dataplane.Resources) bool {
				p := endpointPorts(r)
				return len(p) == 1 && p[0] == 9002
			})
			srv.Apply(desired("b", 9003))
			app.waitFor(t, "cluster a replaced by b", func(r *dataplane.Resources) bool { return clusterOf(r) == "b" })
			if !c.Connected() {
				t.Error("Connected() = false on a live stream")
			}
		})
	}
}

func TestClientNACKsWhatTheProxyRejects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := xds.NewServer(ctx, xds.Options{})
	nacks := make(chan xds.NACK, 10)
	srv.OnNACK(func(n xds.NACK) { nacks <- n })
	srv.Apply(desired("a", 9001))
	addr, stop := startServer(t, srv, "")
	defer stop()
	app := newApplier()
	go New(dial(t, addr), app, Options{NodeID: "test"}).Run(ctx)
	app.waitFor(t, "the initial config", func(r *dataplane.Resources) bool { return clusterOf(r) == "a" })
	good := app.last()

	app.setFail(errors.New(`route "external-http": unsupported field x`))
	srv.Apply(desired("a", 9005))
	select {
	case n := <-nacks:
		if n.TypeURL != resource.EndpointType || !strings.Contains(n.Error, "unsupported field x") {
			t.Errorf("NACK = %+v, want EDS with the proxy's error", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NACK reached the server")
	}
	if app.last() != good {
		t.Error("the applied config changed despite the NACK")
	}

	// A later good update is applied, and carries the change that was NACKed.
	app.setFail(nil)
	srv.Apply(desired("b", 9006))
	app.waitFor(t, "the next good config", func(r *dataplane.Resources) bool { return clusterOf(r) == "b" })
}

func TestClientSurvivesServerRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := xds.NewServer(ctx, xds.Options{})
	srv.Apply(desired("a", 9001))
	addr, stop := startServer(t, srv, "")
	app := newApplier()
	c := New(dial(t, addr), app, Options{NodeID: "test", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	go c.Run(ctx)
	app.waitFor(t, "the initial config", func(r *dataplane.Resources) bool { return clusterOf(r) == "a" })

	stop()
	deadline := time.Now().Add(5 * time.Second)
	for c.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Connected() {
		t.Fatal("still connected after the server stopped")
	}
	applied := len(app.all())
	if clusterOf(app.last()) != "a" {
		t.Fatal("lost the last good config when the server went away")
	}

	// A new server process with different state: the client resyncs,
	// including the removal of cluster a.
	srv2 := xds.NewServer(ctx, xds.Options{})
	srv2.Apply(desired("b", 9002))
	_, stop2 := startServer(t, srv2, addr)
	defer stop2()
	app.waitFor(t, "the resynced config", func(r *dataplane.Resources) bool {
		return clusterOf(r) == "b" && len(r.Endpoints) == 1 && r.Endpoints[0].GetClusterName() == "b"
	})
	if len(app.all()) <= applied {
		t.Error("no config applied after reconnecting")
	}
}

func TestDangling(t *testing.T) {
	r := &dataplane.Resources{
		Listeners: []*listenerv3.Listener{listener("l", "r")},
		Clusters:  []*clusterv3.Cluster{edsCluster("c")},
	}
	if got := dangling(r, nil); got != "endpoints c" {
		t.Errorf("dangling = %q, want endpoints c", got)
	}
	r.Endpoints = []*endpointv3.ClusterLoadAssignment{cla("c")}
	if got := dangling(r, nil); got != "route configuration r" {
		t.Errorf("dangling = %q, want route configuration r", got)
	}
	r.Routes = []*routev3.RouteConfiguration{routeTo("r", "c")}
	if got := dangling(r, nil); got != "" {
		t.Errorf("dangling = %q, want none", got)
	}
}

// TestResyncWithRemovalsBeforeRoutes replays what a gateway sees when it
// reconnects after a cluster was swapped for another: the server's answers
// come type by type, clusters (with the old one removed) and endpoints
// before routes. No step may be rejected by the real proxy, and the end
// state must serve the new cluster.
func TestResyncWithRemovalsBeforeRoutes(t *testing.T) {
	proxy := dataplane.New(dataplane.Options{ListenAddress: "127.0.0.1"})
	defer proxy.Shutdown(context.Background())
	c := New(nil, proxy, Options{NodeID: "test"})
	// Weir's route configurations set validate_clusters.
	validated := func(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
		rc.ValidateClusters = wrapperspb.Bool(true)
		return rc
	}
	entries := func(msgs ...proto.Message) map[string]entry {
		out := map[string]entry{}
		for _, m := range msgs {
			out[resourceName(m)] = entry{version: "1", msg: m}
		}
		return out
	}
	steps := []struct {
		typeURL string
		updates map[string]entry
		removed []string
	}{
		{resource.ClusterType, entries(edsCluster("a")), nil},
		{resource.EndpointType, entries(cla("a", 9001)), nil},
		{resource.SecretType, entries(), nil},
		{resource.RouteType, entries(validated(routeTo("external-http", "a"))), nil},
		{resource.ListenerType, entries(listener("external-http", "external-http")), nil},
		// The resync after reconnecting: b replaces a.
		{resource.ClusterType, entries(edsCluster("b")), []string{"a"}},
		{resource.EndpointType, entries(cla("b", 9002)), []string{"a"}},
		{resource.RouteType, entries(validated(routeTo("external-http", "b"))), nil},
	}
	for i, st := range steps {
		if err := c.update(st.typeURL, st.updates, st.removed, false); err != nil {
			t.Fatalf("step %d (%s): rejected: %v", i, st.typeURL, err)
		}
	}
	r := c.Applied()
	if clusterOf(r) != "b" || len(r.Endpoints) != 1 || r.Endpoints[0].GetClusterName() != "b" {
		t.Fatalf("final config: clusters %v, endpoints %v", r.Clusters, r.Endpoints)
	}
}

// TestWarmingTimeout: endpoints that never come for a new EDS cluster hold
// the config back only until the warming timeout, as in Envoy.
func TestWarmingTimeout(t *testing.T) {
	app := newApplier()
	c := New(nil, app, Options{NodeID: "test", WarmingTimeout: 200 * time.Millisecond})
	for _, st := range []struct {
		typeURL string
		msg     proto.Message
	}{
		{resource.ClusterType, edsCluster("a")},
		{resource.EndpointType, cla("a", 9001)},
		{resource.SecretType, nil},
		{resource.RouteType, routeTo("external-http", "a")},
		{resource.ListenerType, listener("external-http", "external-http")},
	} {
		u := map[string]entry{}
		if st.msg != nil {
			u[resourceName(st.msg)] = entry{version: "1", msg: st.msg}
		}
		if err := c.update(st.typeURL, u, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	// Cluster b arrives, its endpoints never do (say, lost to a NACK).
	if err := c.update(resource.ClusterType, map[string]entry{"b": {version: "2", msg: edsCluster("b")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if n := len(app.last().Clusters); n != 1 {
		t.Fatalf("applied %d clusters before the warming timeout, want the old 1", n)
	}
	app.waitFor(t, "the config with b after the warming timeout", func(r *dataplane.Resources) bool { return len(r.Clusters) == 2 })

	// b's wait is over for good: an unrelated change applies at once.
	if err := c.update(resource.RouteType, map[string]entry{"other": {version: "3", msg: routeTo("other", "a")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if n := len(app.last().Routes); n != 2 {
		t.Fatalf("an update after b warmed out was held back: %d route configurations applied, want 2", n)
	}
	// A new cluster c waits on its own clock, not b's.
	if err := c.update(resource.ClusterType, map[string]entry{"c": {version: "4", msg: edsCluster("c")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if n := len(app.last().Clusters); n != 2 {
		t.Fatalf("cluster c was applied before its own warming timeout (%d clusters)", n)
	}
	app.waitFor(t, "the config with c after its warming timeout", func(r *dataplane.Resources) bool { return len(r.Clusters) == 3 })
}
