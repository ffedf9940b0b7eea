package translate

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// descriptorFor is the descriptor Envoy builds from rl's actions for a
// client, as its router_ratelimit does.
func descriptorFor(rl *routev3.RateLimit, client netip.Addr) (keys, values []string) {
	for _, a := range rl.GetActions() {
		switch s := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_GenericKey_:
			keys, values = append(keys, s.GenericKey.GetDescriptorKey()), append(values, s.GenericKey.GetDescriptorValue())
		case *routev3.RateLimit_Action_RemoteAddress_:
			keys, values = append(keys, "remote_address"), append(values, client.String())
		case *routev3.RateLimit_Action_MaskedRemoteAddress_:
			bits := int(s.MaskedRemoteAddress.GetV6PrefixMaskLen().GetValue())
			if client.Is4() {
				bits = int(s.MaskedRemoteAddress.GetV4PrefixMaskLen().GetValue())
			}
			p, _ := client.Prefix(bits)
			keys, values = append(keys, "masked_remote_address"), append(values, p.String())
		}
	}
	return keys, values
}

// matchingDescriptors counts the configured descriptors that a request
// descriptor matches, a wildcard (empty) value matching anything.
func matchingDescriptors(l *localratelimitv3.LocalRateLimit, keys, values []string) int {
	n := 0
descriptors:
	for _, d := range l.GetDescriptors() {
		if len(d.GetEntries()) != len(keys) {
			continue
		}
		for i, e := range d.GetEntries() {
			if e.GetKey() != keys[i] || e.GetValue() != "" && e.GetValue() != values[i] {
				continue descriptors
			}
		}
		n++
	}
	return n
}

// TestLocalRateLimitExemptions checks the claim localRateLimit rests on:
// each of a route's buckets is matched by exactly one descriptor for a
// client outside Exempt, and by none for a client inside, so which of
// several matching wildcards Envoy picks never matters.
func TestLocalRateLimitExemptions(t *testing.T) {
	for _, exempt := range [][]string{
		{"10.0.0.0/8"},
		{"127.0.0.1/32"},
		{"10.0.0.0/8", "192.168.0.0/16", "192.168.3.0/24", "2001:db8::/32"},
		{"2001:db8::/48"},
		{"0.0.0.0/0"},
		{"::ffff:10.0.0.0/104"},
		{"0.0.0.0/0", "2001:db8::/32"},
	} {
		var ps []netip.Prefix
		for _, s := range exempt {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		rl := &ir.RateLimit{PerClient: true, Exempt: ps, Buckets: []ir.TokenBucket{
			{Requests: 10, Interval: time.Second, Burst: 51}, {Requests: 100, Interval: time.Minute, Burst: 501},
		}}
		out, err := localRateLimit(rl, "test")
		if err != nil {
			t.Fatalf("%v: %v", exempt, err)
		}
		isExempt := func(a netip.Addr) bool {
			for _, p := range ps {
				if p.Contains(a) || p.Addr().Is4In6() && netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Contains(a) {
					return true
				}
			}
			return false
		}
		rnd := rand.New(rand.NewPCG(1, 2))
		clients := []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("9.255.255.255"), netip.MustParseAddr("11.0.0.0"),
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("192.168.3.7"),
			netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("::1")}
		for range 2000 {
			var b4 [4]byte
			var b16 [16]byte
			for i := range b16 {
				b16[i] = byte(rnd.Uint32())
			}
			copy(b4[:], b16[:4])
			clients = append(clients, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
			// Neighbours of the exempt ranges' edges.
			p := ps[rnd.IntN(len(ps))]
			clients = append(clients, p.Addr().Unmap().Prev(), p.Addr().Unmap().Next())
		}
		for _, c := range clients {
			if !c.IsValid() {
				continue
			}
			want := 1
			if isExempt(c) {
				want = 0
			}
			for i, lim := range out.GetRateLimits() {
				keys, values := descriptorFor(lim, c)
				if got := matchingDescriptors(out, keys, values); got != want {
					t.Fatalf("exempt %v, client %v, bucket %d: %d descriptors match, want %d", exempt, c, i, got, want)
				}
			}
		}
	}
}

// TestLocalRateLimitRefusals checks what no Envoy config can express, or
// only at a cost every request would pay.
func TestLocalRateLimitRefusals(t *testing.T) {
	for want, rl := range map[string]*ir.RateLimit{
		"without a bucket":          {PerClient: true},
		"cannot exempt":             {Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Second, Burst: 1}}, Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		"never lets a request":      {Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Second}}},
		"shorter than Envoy's 50ms": {Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Millisecond, Burst: 1}}},
		"is not an error status":    {Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Second, Burst: 1}}, Status: 200},
		// A single IPv6 address leaves 128 ranges, plus IPv4's one.
		"leave 129 ranges of clients to limit": {PerClient: true, Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Second, Burst: 1}}, Exempt: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
	} {
		if _, err := localRateLimit(rl, "x"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error saying %q", rl, err, want)
		}
	}
}

// TestLocalRateLimitAllExempt: with every client exempt there is nothing to
// limit, and no descriptor may limit anyone.
func TestLocalRateLimitAllExempt(t *testing.T) {
	rl := &ir.RateLimit{PerClient: true, Buckets: []ir.TokenBucket{{Requests: 1, Interval: time.Second, Burst: 1}},
		Exempt: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	out, err := localRateLimit(rl, "x")
	if err != nil || out != nil {
		t.Fatalf("got %v, %v; want no config", out, err)
	}
	fs, err := perFilterConfig([]ir.HTTPFilter{rl}, "x", nameSet{}, newShared(DefaultOptions()))
	if err != nil || len(fs) != 0 {
		t.Fatalf("per-filter config %v, %v; want none", fs, err)
	}
}
