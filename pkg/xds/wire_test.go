package xds

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRouteWireEncodesTheSameConfiguration: what go-control-plane sends
// for the pre-encoded copy decodes to the configuration itself, and an
// unchanged virtual host is not marshalled again.
func TestRouteWireEncodesTheSameConfiguration(t *testing.T) {
	rc := routeConfig("external-http", "default/a:80", "default/b:80")
	rc.ValidateClusters = wrapperspb.Bool(true)
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "second", Domains: []string{"second.example.com"}})
	var w routeWire
	roundTrip := func(rc *routev3.RouteConfiguration) {
		t.Helper()
		enc, err := w.encode(rc)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := cache.MarshalResource(enc)
		if err != nil {
			t.Fatal(err)
		}
		got := &routev3.RouteConfiguration{}
		if err := proto.Unmarshal(raw, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, rc) {
			t.Errorf("decoded %v, want %v", got, rc)
		}
	}
	roundTrip(rc)
	first := &w.next[rc.VirtualHosts[1]][0]
	w.rotate()

	next := proto.Clone(rc).(*routev3.RouteConfiguration)
	next.VirtualHosts[1] = rc.VirtualHosts[1] // unchanged, as translate hands it back
	next.VirtualHosts[0].Domains = append(next.VirtualHosts[0].Domains, "more.example.com")
	roundTrip(next)
	if &w.next[next.VirtualHosts[1]][0] != first {
		t.Error("an unchanged virtual host was marshalled again")
	}
	w.rotate()
	if _, kept := w.prev[rc.VirtualHosts[0]]; kept {
		t.Error("a virtual host no longer served is still held")
	}
}
