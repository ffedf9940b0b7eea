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
// unchanged virtual host is not marshalled again, in place or moved.
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
	encoding := func(i int) *byte { return &w.configs[rc.GetName()].encoded[i][0] }
	roundTrip(rc)
	second := encoding(1)

	next := proto.Clone(rc).(*routev3.RouteConfiguration)
	next.VirtualHosts[1] = rc.VirtualHosts[1] // unchanged, as translate hands it back
	next.VirtualHosts[0].Domains = append(next.VirtualHosts[0].Domains, "more.example.com")
	roundTrip(next)
	if encoding(1) != second {
		t.Error("an unchanged virtual host was marshalled again")
	}

	// A host added in front moves the unchanged one.
	moved := &routev3.RouteConfiguration{Name: next.Name, ValidateClusters: next.ValidateClusters,
		VirtualHosts: []*routev3.VirtualHost{{Name: "first", Domains: []string{"first.example.com"}}, next.VirtualHosts[0], next.VirtualHosts[1]}}
	roundTrip(moved)
	if encoding(2) != second {
		t.Error("a moved, unchanged virtual host was marshalled again")
	}
	w.forget(rc.GetName())
	if len(w.configs) != 0 {
		t.Error("a forgotten configuration is still held")
	}
}
