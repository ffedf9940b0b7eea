package dataplane

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

func newUnboundProxy(t *testing.T) *Proxy {
	t.Helper()
	p := New(Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

// TestListenerAddressFamilies binds as Envoy does: 0.0.0.0 takes IPv4
// only, "::" IPv6 only, and "::" with ipv4_compat both. Go's own "tcp"
// on 0.0.0.0 would have taken IPv6 too.
func TestListenerAddressFamilies(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		ln.Close()
	}
	for _, tc := range []struct {
		address    string
		compat     bool
		ipv4, ipv6 bool
	}{
		{"0.0.0.0", false, true, false},
		{"::", false, false, true},
		{"::", true, true, true},
	} {
		p := newUnboundProxy(t)
		l := plainListener("l")
		l.Address = socketAddr(tc.address, 0)
		l.Address.GetSocketAddress().Ipv4Compat = tc.compat
		mustApply(t, p, &Resources{Listeners: []*listenerv3.Listener{l}, Routes: []*routev3.RouteConfiguration{routeConfig("l")}})
		port := strconv.Itoa(p.ListenerAddr("l").(*net.TCPAddr).Port)
		for _, probe := range []struct {
			host string
			want bool
		}{{"127.0.0.1", tc.ipv4}, {"::1", tc.ipv6}} {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(probe.host, port), 2*time.Second)
			if err == nil {
				c.Close()
			}
			if (err == nil) != probe.want {
				t.Errorf("%s ipv4_compat=%v: connecting to %s: %v, want reachable=%v", tc.address, tc.compat, probe.host, err, probe.want)
			}
		}
	}
}

// TestIpv4CompatOnlyOnUnspecifiedV6 is Envoy's listener check.
func TestIpv4CompatOnlyOnUnspecifiedV6(t *testing.T) {
	p := newUnboundProxy(t)
	l := plainListener("l")
	l.Address = socketAddr("::1", 0)
	l.Address.GetSocketAddress().Ipv4Compat = true
	err := p.Apply(&Resources{Listeners: []*listenerv3.Listener{l}, Routes: []*routev3.RouteConfiguration{routeConfig("l")}})
	if err == nil || !strings.Contains(err.Error(), "ipv4_compat") {
		t.Fatalf("Apply = %v, want ipv4_compat refused on ::1", err)
	}
}
