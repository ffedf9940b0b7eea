// Package localratelimit is weir-proxy's envoy.filters.http.local_ratelimit:
// token buckets that this proxy counts on its own, with Envoy's semantics.
//
// The filter acts only where filter_enabled lets it. A request's
// descriptors come from the config's rate_limits (generic_key,
// remote_address, masked_remote_address and request_headers actions; a descriptor any of
// whose actions cannot produce a value is dropped). Each descriptor takes
// the bucket of the first configured descriptor equal to it, else of the
// first whose entries have the same keys and whose values are equal or
// empty; an empty value is a wildcard, with one bucket per distinct value
// in an LRU of max_dynamic_descriptors (20 by default). The matched buckets
// each take a token, the slowest-filling first, and the first one empty
// refuses the request; the config's own token_bucket takes one too when
// nothing matched or always_consume_default_token_bucket (true by default)
// is set. A refused request is answered status (429 by default)
// "local_rate_limited" where filter_enforced lets it.
//
// Buckets refill continuously at tokens_per_fill per fill_interval and
// start full. Unlike Envoy, which starts each route's buckets afresh on
// every route update, weir-proxy keeps the buckets of a config that an
// update leaves unchanged (in the proxy's httpfilter.Scope), so that a busy
// cluster does not reset a limit by changing other routes or endpoints.
// Buckets are found by the config's content, so routes whose configs are
// equal share them; translate gives each route its own stat_prefix.
package localratelimit

import (
	"cmp"
	"container/list"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &localratelimitv3.LocalRateLimit{} }
func (factory) RouteConfigType() proto.Message { return &localratelimitv3.LocalRateLimit{} }

func (factory) NewConfig(m proto.Message, scope *httpfilter.Scope) (httpfilter.Config, error) {
	return shared(m.(*localratelimitv3.LocalRateLimit), false, scope)
}

func (factory) NewRouteConfig(m proto.Message, scope *httpfilter.Scope) (any, error) {
	return shared(m.(*localratelimitv3.LocalRateLimit), true, scope)
}

// shared finds the config, with its buckets, in the proxy's scope.
func shared(m *localratelimitv3.LocalRateLimit, perRoute bool, scope *httpfilter.Scope) (*config, error) {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("local_ratelimit\x00%t\x00%s", perRoute, raw)
	return httpfilter.Shared(scope, key, func() (*config, error) { return compile(m, perRoute) })
}

// config is a compiled LocalRateLimit with its buckets.
type config struct {
	status            int
	enabled, enforced httpfilter.Fraction
	// defaultBucket is nil when the config has no token_bucket.
	defaultBucket *bucket
	alwaysDefault bool
	limits        []httpfilter.RateLimitActions
	exact         map[string]*bucket
	wildcards     []*wildcard
}

func compile(m *localratelimitv3.LocalRateLimit, perRoute bool) (*config, error) {
	if bad := httpfilter.UnsupportedField(m, "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
		"descriptors", "rate_limits", "max_dynamic_descriptors", "always_consume_default_token_bucket"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	c := &config{status: http.StatusTooManyRequests, alwaysDefault: true, exact: map[string]*bucket{}}
	if code := int(m.GetStatus().GetCode()); code >= 400 {
		c.status = code
	}
	var err error
	// Unset, Envoy's fraction is 0%: the filter is off.
	if c.enabled, err = httpfilter.CompileFraction(m.GetFilterEnabled(), httpfilter.Fraction{}, "filter_enabled"); err != nil {
		return nil, err
	}
	if c.enforced, err = httpfilter.CompileFraction(m.GetFilterEnforced(), httpfilter.Fraction{}, "filter_enforced"); err != nil {
		return nil, err
	}
	if a := m.GetAlwaysConsumeDefaultTokenBucket(); a != nil {
		c.alwaysDefault = a.GetValue()
	}
	switch tb := m.GetTokenBucket(); {
	case tb != nil:
		if c.defaultBucket, err = compileBucket(tb, "token_bucket"); err != nil {
			return nil, err
		}
	case perRoute:
		return nil, fmt.Errorf("token_bucket: required in a per-route config")
	}
	lruSize := 20
	if v := m.GetMaxDynamicDescriptors(); v != nil {
		lruSize = int(v.GetValue())
	}
	seen := map[string]bool{}
	for i, d := range m.GetDescriptors() {
		path := fmt.Sprintf("descriptors[%d]", i)
		if bad := httpfilter.UnsupportedField(d, "entries", "token_bucket"); bad != "" {
			return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
		}
		b, err := compileBucket(d.GetTokenBucket(), path+".token_bucket")
		if err != nil {
			return nil, err
		}
		var keys, values []string
		wild := false
		for _, e := range d.GetEntries() {
			keys, values = append(keys, e.GetKey()), append(values, e.GetValue())
			wild = wild || e.GetValue() == ""
		}
		k := descriptorKey(keys, values)
		if seen[k] {
			return nil, fmt.Errorf("%s: a duplicate descriptor", path)
		}
		seen[k] = true
		if wild {
			c.wildcards = append(c.wildcards, &wildcard{keys: keys, values: values, template: b, lru: newLRU(lruSize)})
			continue
		}
		c.exact[k] = b
	}
	for i, rl := range m.GetRateLimits() {
		acts, err := httpfilter.CompileRateLimit(rl, fmt.Sprintf("rate_limits[%d]", i))
		if err != nil {
			return nil, err
		}
		c.limits = append(c.limits, acts)
	}
	return c, nil
}

func descriptorKey(keys, values []string) string {
	var b strings.Builder
	for i := range keys {
		b.WriteString(keys[i])
		b.WriteByte(0)
		b.WriteString(values[i])
		b.WriteByte(0)
	}
	return b.String()
}

// wildcard is a configured descriptor with empty values: each distinct
// request descriptor it matches gets a bucket like template, in an LRU.
type wildcard struct {
	keys, values []string
	template     *bucket
	lru          *lru
}

func (w *wildcard) matches(keys, values []string) bool {
	if len(keys) != len(w.keys) {
		return false
	}
	for i := range keys {
		if keys[i] != w.keys[i] || w.values[i] != "" && w.values[i] != values[i] {
			return false
		}
	}
	return true
}

// bucket is a token bucket refilled continuously, starting full.
type bucket struct {
	max  float64
	rate float64 // tokens per second
	mu   sync.Mutex
	have float64
	at   time.Time
}

func compileBucket(tb *typev3.TokenBucket, path string) (*bucket, error) {
	if tb == nil {
		return nil, fmt.Errorf("%s: required", path)
	}
	fill := tb.GetFillInterval().AsDuration()
	if fill < 50*time.Millisecond {
		return nil, fmt.Errorf("%s.fill_interval: %v is shorter than 50ms", path, fill)
	}
	per := uint32(1)
	if tb.GetTokensPerFill() != nil {
		per = tb.GetTokensPerFill().GetValue()
	}
	if tb.GetMaxTokens() == 0 || per == 0 {
		return nil, fmt.Errorf("%s: max_tokens and tokens_per_fill must be positive", path)
	}
	return &bucket{max: float64(tb.GetMaxTokens()), rate: float64(per) / fill.Seconds(), have: float64(tb.GetMaxTokens())}, nil
}

func (b *bucket) clone() *bucket { return &bucket{max: b.max, rate: b.rate, have: b.max} }

// take takes a token if one is there.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.at.IsZero() {
		b.have = min(b.max, b.have+now.Sub(b.at).Seconds()*b.rate)
	}
	b.at = now
	if b.have < 1 {
		return false
	}
	b.have--
	return true
}

// lru keeps at most size buckets, dropping the least recently used.
type lru struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *lruEntry, most recent first
	byKey map[string]*list.Element
}

type lruEntry struct {
	key string
	b   *bucket
}

func newLRU(size int) *lru {
	return &lru{size: max(size, 1), order: list.New(), byKey: map[string]*list.Element{}}
}

func (l *lru) get(key string, template *bucket) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruEntry).b
	}
	if l.order.Len() >= l.size {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.byKey, last.Value.(*lruEntry).key)
	}
	b := template.clone()
	l.byKey[key] = l.order.PushFront(&lruEntry{key: key, b: b})
	return b
}

// allows reports whether a request from client may pass, taking its
// tokens.
func (c *config) allows(client netip.Addr, h *httpfilter.RequestHeaders, now time.Time) bool {
	var matched []*bucket
	if len(c.exact) > 0 || len(c.wildcards) > 0 {
		for _, acts := range c.limits {
			keys, values, ok := acts.Descriptor(client, h)
			if !ok {
				continue
			}
			key := descriptorKey(keys, values)
			if b, ok := c.exact[key]; ok {
				matched = append(matched, b)
				continue
			}
			for _, w := range c.wildcards {
				if w.matches(keys, values) {
					matched = append(matched, w.lru.get(key, w.template))
					break
				}
			}
		}
	}
	// The slowest-filling bucket first, as Envoy.
	slices.SortStableFunc(matched, func(a, b *bucket) int { return cmp.Compare(a.rate, b.rate) })
	for _, b := range matched {
		if !b.take(now) {
			return false
		}
	}
	if c.defaultBucket != nil && (len(matched) == 0 || c.alwaysDefault) {
		return c.defaultBucket.take(now)
	}
	return true
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{c: c, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	c  *config
	cb httpfilter.Callbacks
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	c := f.c
	if rc, ok := f.cb.PerRouteConfig().(*config); ok {
		c = rc
	}
	if !c.enabled.Sample() || c.allows(f.cb.ClientAddr(), h, time.Now()) {
		return httpfilter.Continue
	}
	if !c.enforced.Sample() {
		return httpfilter.Continue
	}
	f.cb.SendLocalReply(c.status, "local_rate_limited", nil, "local_rate_limited")
	return httpfilter.StopIteration
}
