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

// maxClientBuckets bounds the per-client buckets a route keeps, shared out
// over its wildcard descriptors, each of which Envoy gives an LRU (an
// evicted client comes back with a full bucket); minClientBuckets is the
// least one descriptor gets.
const (
	maxClientBuckets = 65536
	minClientBuckets = 1024
)

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
//
// It returns nil when every client is exempt: there is nothing to limit.
func localRateLimit(r *ir.RateLimit, statPrefix string) (*localratelimitv3.LocalRateLimit, error) {
	if len(r.Buckets) == 0 {
		return nil, fmt.Errorf("a rate limit without a bucket")
	}
	if len(r.Exempt) > 0 && !r.PerClient {
		return nil, fmt.Errorf("a rate limit shared by all clients cannot exempt some")
	}
	slots, ranges, none := exemptionSlots(r.Exempt)
	if none {
		return nil, nil
	}
	if len(ranges) > ir.MaxLimitedRanges {
		return nil, fmt.Errorf("the exempt ranges leave %d ranges of clients to limit, each a descriptor Envoy compares every request with; at most %d", len(ranges), ir.MaxLimitedRanges)
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
	if r.PerClient {
		// Envoy keeps that many clients per wildcard descriptor; the
		// route's total stays near maxClientBuckets.
		wildcards := len(r.Buckets) * max(len(ranges), 1)
		out.MaxDynamicDescriptors = wrapperspb.UInt32(uint32(max(minClientBuckets, maxClientBuckets/wildcards))) //nolint:gosec // at most maxClientBuckets
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

// exemptionSlots covers the clients outside exempt with ir.LimitedRanges,
// and gives each prefix length a masked_remote_address action (a slot)
// that produces it. A family without exempt ranges is covered by its whole
// space, which a slot masking that family to 0 bits produces. none is true
// when every client is exempt.
func exemptionSlots(exempt []netip.Prefix) (slots []maskSlot, ranges []slotRange, none bool) {
	if len(exempt) == 0 {
		return nil, nil, false
	}
	cover4, cover6 := ir.LimitedRanges(exempt)
	if len(cover4)+len(cover6) == 0 {
		return nil, nil, true
	}
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
	// A family wholly exempt still needs a slot value for its clients that
	// matches no range: mask it to 0 bits in some slot, and no range of
	// that family exists to match.
	slots = make([]maskSlot, max(len(l4), len(l6)))
	for i := range slots {
		if i < len(l4) {
			slots[i].v4 = l4[i]
		}
		if i < len(l6) {
			slots[i].v6 = l6[i]
		}
	}
	for _, c := range [][]netip.Prefix{cover4, cover6} {
		for _, p := range c {
			for i, s := range slots {
				if p.Addr().Is4() && s.v4 == p.Bits() || p.Addr().Is6() && s.v6 == p.Bits() {
					ranges = append(ranges, slotRange{slot: i, prefix: p})
					break
				}
			}
		}
	}
	return slots, ranges, false
}
