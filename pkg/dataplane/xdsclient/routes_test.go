package xdsclient

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRouteDecoderKeepsUnchangedVirtualHosts: decoding is exact, and a
// virtual host whose bytes did not change is the previous decode's proto.
func TestRouteDecoderKeepsUnchangedVirtualHosts(t *testing.T) {
	vh := func(name, prefix string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: []string{name + ".example.com"}, Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		}}}
	}
	rc := &routev3.RouteConfiguration{Name: "http", ValidateClusters: wrapperspb.Bool(true),
		VirtualHosts: []*routev3.VirtualHost{vh("a", "/"), vh("b", "/"), vh("c", "/")}}
	var d routeDecoder
	decode := func(m *routev3.RouteConfiguration) *routev3.RouteConfiguration {
		t.Helper()
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("decoded %v, want %v", got, m)
		}
		return got
	}
	first := decode(rc)
	rc.VirtualHosts[1] = vh("b", "/v2")
	second := decode(rc)
	if second.VirtualHosts[0] != first.VirtualHosts[0] || second.VirtualHosts[2] != first.VirtualHosts[2] {
		t.Error("unchanged virtual hosts were decoded again")
	}
	if second.VirtualHosts[1] == first.VirtualHosts[1] {
		t.Error("the changed virtual host kept its old proto")
	}
	// Hosts added in front and in the middle, and one removed: the others
	// keep their protos wherever they moved to.
	rc.VirtualHosts = []*routev3.VirtualHost{vh("new1", "/"), rc.VirtualHosts[0], vh("new2", "/"), rc.VirtualHosts[2]}
	third := decode(rc)
	if third.VirtualHosts[1] != second.VirtualHosts[0] || third.VirtualHosts[3] != second.VirtualHosts[2] {
		t.Error("moved, unchanged virtual hosts were decoded again")
	}
	// Two hosts swap places: both are found by their bytes.
	rc.VirtualHosts[1], rc.VirtualHosts[2] = rc.VirtualHosts[2], rc.VirtualHosts[1]
	fourth := decode(rc)
	if fourth.VirtualHosts[2] != third.VirtualHosts[1] || fourth.VirtualHosts[1] != third.VirtualHosts[2] {
		t.Error("swapped virtual hosts were decoded again")
	}
	if _, err := d.decode([]byte{0x12, 0x05, 0x01}); err == nil {
		t.Error("a truncated configuration decoded without error")
	}
}
