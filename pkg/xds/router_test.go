package xds

import (
	"context"
	"net"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestGroupOf(t *testing.T) {
	for node, want := range map[string]string{
		"weir-gateway-0":            "",
		"gateway/ns/edge/pod-1":     "ns/edge",
		"gateway/ns/edge":           "", // no pod part: not a Gateway's node
		"gateway//edge/pod":         "",
		"gateway/ns/edge/pod/extra": "ns/edge",
		"gatewayx/ns/edge/pod":      "",
	} {
		if got := GroupOf(node); got != want {
			t.Errorf("GroupOf(%q) = %q, want %q", node, got, want)
		}
	}
}

// TestRouterServesEachGroupItsOwnConfig: a Gateway's gateway gets that
// Gateway's listeners only, over SotW and delta ADS, and the shared
// gateways keep theirs.
func TestRouterServesEachGroupItsOwnConfig(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	shared := NewServer(ctx, Options{})
	router := NewRouter(shared, func(string) *Server { return NewServer(ctx, Options{}) })
	apply := func(s *Server, names ...string) {
		var ls []types.Resource
		for i, n := range names {
			ls = append(ls, listener(n, uint32(9000+i)))
		}
		s.Apply(map[string][]types.Resource{lds: ls})
	}
	apply(shared, "shared")
	apply(router.Group("ns/a"), "a-http", "a-https")
	apply(router.Group("ns/b"), "b-http")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	router.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := discovery.NewAggregatedDiscoveryServiceClient(conn)

	sotw := func(node string) []string {
		stream, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = stream.CloseSend() }()
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: lds}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, a := range resp.GetResources() {
			l := &listenerv3.Listener{}
			if err := a.UnmarshalTo(l); err != nil {
				t.Fatal(err)
			}
			names = append(names, l.GetName())
		}
		return names
	}
	delta := func(node string) []string {
		stream, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = stream.CloseSend() }()
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: lds, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range resp.GetResources() {
			l := &listenerv3.Listener{}
			if err := proto.Unmarshal(r.GetResource().GetValue(), l); err != nil {
				t.Fatal(err)
			}
			names = append(names, l.GetName())
		}
		return names
	}
	for _, tc := range []struct {
		node string
		want []string
	}{
		{"weir-gateway-0", []string{"shared"}},
		{"gateway/ns/a/pod-1", []string{"a-http", "a-https"}},
		{"gateway/ns/b/pod-1", []string{"b-http"}},
		{"gateway/ns/unknown/pod-1", nil},
	} {
		for name, fetch := range map[string]func(string) []string{"sotw": sotw, "delta": delta} {
			got := fetch(tc.node)
			if !sameSet(got, tc.want) {
				t.Errorf("%s %s: listeners %v, want %v", name, tc.node, got, tc.want)
			}
		}
	}
	// A stream is admitted for its first node ID; a later request that
	// claims another ends it.
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"gateway/ns/a/pod-1", "gateway/ns/b/pod-1"} {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: lds}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("a stream that changed its node ID ended with %v, want PermissionDenied", err)
			}
			break
		}
		for _, a := range resp.GetResources() {
			l := &listenerv3.Listener{}
			if err := a.UnmarshalTo(l); err != nil || strings.HasPrefix(l.GetName(), "b-") {
				t.Errorf("a stream admitted for ns/a got %s", l.GetName())
			}
		}
	}
	// Naming a group does not make one.
	if got := router.Groups(); !sameSet(got, []string{"ns/a", "ns/b"}) {
		t.Errorf("groups = %v, want only the two the controller made", got)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}
