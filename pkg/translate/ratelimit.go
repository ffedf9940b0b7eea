package translate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// localRateLimitFilter is Envoy's local rate limit filter, which
// ir.RateLimit runs.
const localRateLimitFilter = "envoy.filters.http.local_ratelimit"

// maxClientBuckets bounds the per-client buckets Envoy keeps for each
// wildcard descriptor (an LRU; an evicted client comes back with a full
// bucket). ingress-nginx's default 5 MB zone holds about as many.
const maxClientBuckets = 65536

// rateLimitBucketKey names the descriptor entry saying which of the
// route's buckets a descriptor counts against.
const rateLimitBucketKey = "weir_bucket"

// localRateLimit is the per-route local_ratelimit config for r.
//
// Every bucket is a descriptor, so that a route can have several (a rate
// per second and one per minute) and each client its own (a wildcard
// remote_address entry, one bucket per address). The route's default
// bucket is unlimited and not charged when a descriptor matched, since
// Envoy requires one per route.
//
// Exempt clients must match no descriptor. Envoy's descriptors cannot say
// "not in this range", and when several wildcard descriptors match, which
// one counts is unspecified. So each descriptor names one range of the
// complement of Exempt through masked_remote_address entries: the ranges
// are disjoint, every client outside Exempt is in exactly one of them, and
// a client inside matches none.
func localRateLimit(r *ir.RateLimit, statPrefix string) (*localratelimitv3.LocalRateLimit, error) {
	if len(r.Buckets) == 0 {
		return nil, fmt.Errorf("a rate limit without a bucket")
	}
	if len(r.Exempt) > 0 && !r.PerClient {
		return nil, fmt.Errorf("a rate limit shared by all clients cannot exempt some")
	}
	out := &localratelimitv3.LocalRateLimit{
		StatPrefix:                      statPrefix,
		TokenBucket:                     unlimitedBucket(),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		FilterEnabled:                   allRequests("local_rate_limit_enabled"),
		FilterEnforced:                  allRequests("local_rate_limit_enforced"),
	}
	if r.Status != 0 {
		if r.Status < 400 || r.Status > 599 {
			return nil, fmt.Errorf("rate limit status %d is not an error status", r.Status)
		}
		out.Status = &typev3.HttpStatus{Code: typev3.StatusCode(r.Status)} //nolint:gosec // 400..599
	}
	slots, ranges := exemptionSlots(r.Exempt)
	if r.PerClient {
		out.MaxDynamicDescriptors = wrapperspb.UInt32(maxClientBuckets)
	}
	for i, b := range r.Buckets {
		bucket, err := tokenBucket(b)
		if err != nil {
			return nil, err
		}
		id := strconv.Itoa(i)
		actions := []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
			GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: rateLimitBucketKey, DescriptorValue: id},
		}}}
		for _, s := range slots {
			actions = append(actions, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_MaskedRemoteAddress_{
				MaskedRemoteAddress: &routev3.RateLimit_Action_MaskedRemoteAddress{
					V4PrefixMaskLen: wrapperspb.UInt32(uint32(s.v4)), V6PrefixMaskLen: wrapperspb.UInt32(uint32(s.v6)), //nolint:gosec // 0..128
				},
			}})
		}
		if r.PerClient {
			actions = append(actions, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}})
		}
		out.RateLimits = append(out.RateLimits, &routev3.RateLimit{Actions: actions})

		entries := func(slot int, value string) []*ratelimitv3.RateLimitDescriptor_Entry {
			es := []*ratelimitv3.RateLimitDescriptor_Entry{{Key: rateLimitBucketKey, Value: id}}
			for j := range slots {
				v := ""
				if j == slot {
					v = value
				}
				es = append(es, &ratelimitv3.RateLimitDescriptor_Entry{Key: "masked_remote_address", Value: v})
			}
			if r.PerClient {
				es = append(es, &ratelimitv3.RateLimitDescriptor_Entry{Key: "remote_address"})
			}
			return es
		}
		if len(slots) == 0 {
			out.Descriptors = append(out.Descriptors, &ratelimitv3.LocalRateLimitDescriptor{Entries: entries(-1, ""), TokenBucket: bucket})
			continue
		}
		for _, rg := range ranges {
			out.Descriptors = append(out.Descriptors, &ratelimitv3.LocalRateLimitDescriptor{Entries: entries(rg.slot, rg.prefix.String()), TokenBucket: bucket})
		}
	}
	return out, out.ValidateAll()
}

// tokenBucket is b in Envoy's terms. Envoy refills continuously at
// tokens_per_fill per fill_interval, so the interval is b's own.
func tokenBucket(b ir.TokenBucket) (*typev3.TokenBucket, error) {
	if b.Requests == 0 || b.Burst == 0 {
		return nil, fmt.Errorf("a token bucket of %d requests, %d at once, never lets a request through", b.Requests, b.Burst)
	}
	if b.Interval < 50*time.Millisecond {
		return nil, fmt.Errorf("a token bucket interval of %v is shorter than Envoy's 50ms", b.Interval)
	}
	return &typev3.TokenBucket{MaxTokens: b.Burst, TokensPerFill: wrapperspb.UInt32(b.Requests), FillInterval: durationpb.New(b.Interval)}, nil
}

// unlimitedBucket is a bucket no client can empty.
func unlimitedBucket() *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: math.MaxUint32, TokensPerFill: wrapperspb.UInt32(math.MaxUint32), FillInterval: durationpb.New(time.Second)}
}

func allRequests(runtimeKey string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{RuntimeKey: runtimeKey, DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
}

// maskSlot is one masked_remote_address action: the prefix lengths it
// masks IPv4 and IPv6 clients to.
type maskSlot struct{ v4, v6 int }

// slotRange is a range of clients that are limited, as the value the
// masked_remote_address action of slot gives them.
type slotRange struct {
	slot   int
	prefix netip.Prefix
}

// exemptionSlots covers the clients outside exempt with disjoint ranges,
// and gives each prefix length a masked_remote_address action (a slot)
// that produces it. A family without exempt ranges is covered by its
// whole space, which a slot masking that family to 0 bits produces.
func exemptionSlots(exempt []netip.Prefix) ([]maskSlot, []slotRange) {
	if len(exempt) == 0 {
		return nil, nil
	}
	var v4, v6 []netip.Prefix
	for _, p := range exempt {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmappedBits(p)).Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	cover4 := complement(netip.MustParsePrefix("0.0.0.0/0"), v4)
	cover6 := complement(netip.MustParsePrefix("::/0"), v6)
	lengths := func(ps []netip.Prefix) []int {
		var ls []int
		for _, p := range ps {
			if !slices.Contains(ls, p.Bits()) {
				ls = append(ls, p.Bits())
			}
		}
		slices.Sort(ls)
		return ls
	}
	l4, l6 := lengths(cover4), lengths(cover6)
	slots := make([]maskSlot, max(len(l4), len(l6)))
	for i := range slots {
		if i < len(l4) {
			slots[i].v4 = l4[i]
		}
		if i < len(l6) {
			slots[i].v6 = l6[i]
		}
	}
	var out []slotRange
	for _, c := range [][]netip.Prefix{cover4, cover6} {
		for _, p := range c {
			for i, s := range slots {
				if p.Addr().Is4() && s.v4 == p.Bits() || p.Addr().Is6() && s.v6 == p.Bits() {
					out = append(out, slotRange{slot: i, prefix: p})
					break
				}
			}
		}
	}
	return slots, out
}

// unmappedBits is how many of p's bits an IPv4-mapped IPv6 prefix spends
// on the mapping.
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return min(96, p.Bits())
	}
	return 0
}

// complement returns disjoint prefixes covering what of space no prefix
// in holes covers.
func complement(space netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	for _, h := range holes {
		if h.Contains(space.Addr()) && h.Bits() <= space.Bits() {
			return nil // space is wholly a hole
		}
	}
	inside := false
	for _, h := range holes {
		if space.Contains(h.Addr()) {
			inside = true
			break
		}
	}
	if !inside {
		return []netip.Prefix{space}
	}
	lo, hi := halves(space)
	return append(complement(lo, holes), complement(hi, holes)...)
}

// halves splits p into its two prefixes one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := lo.Addr().As16()
	i := p.Bits()
	if p.Addr().Is4() {
		i += 96
	}
	b[i/8] |= 0x80 >> (i % 8)
	hiAddr := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		hiAddr = hiAddr.Unmap()
	}
	return lo, netip.PrefixFrom(hiAddr, bits)
}
