package dataplane

import (
	"fmt"
	"math/bits"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weir-dev/weir/pkg/ir"
)

// This file is Envoy's consistent hashing: a route's hash_policy gives a
// request a 64-bit key (xxHash64 of each input, combined as Envoy
// combines them), and a RING_HASH cluster maps it onto a ring of its
// endpoints.

// hashPolicy is one compiled RouteAction.HashPolicy.
type hashPolicy struct {
	kind     hashKind
	name     string // header (canonical, or a pseudo header), cookie or parameter
	terminal bool
	// Cookie generation: ttl nil generates none.
	ttl   *time.Duration
	path  string
	attrs []*routev3.RouteAction_HashPolicy_CookieAttribute
}

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

func compileHashPolicies(in []*routev3.RouteAction_HashPolicy, path string) ([]hashPolicy, error) {
	var out []hashPolicy
	for i, hp := range in {
		p := idx(path, i)
		if err := onlyFields(hp, p, "header", "cookie", "connection_properties", "query_parameter", "terminal"); err != nil {
			return nil, err
		}
		h := hashPolicy{terminal: hp.GetTerminal()}
		switch s := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			if err := onlyFields(s.Header, sub(p, "header"), "header_name"); err != nil {
				return nil, err
			}
			name := s.Header.GetHeaderName()
			if strings.HasPrefix(name, ":") {
				if !slices.Contains([]string{":authority", ":path", ":method"}, name) {
					return nil, invalid(sub(p, "header.header_name"), "%q is not supported by weir-proxy", name)
				}
				h.name = name
			} else {
				h.name = http.CanonicalHeaderKey(name)
			}
		case *routev3.RouteAction_HashPolicy_Cookie_:
			if err := onlyFields(s.Cookie, sub(p, "cookie"), "name", "ttl", "path", "attributes"); err != nil {
				return nil, err
			}
			h.kind, h.name, h.path, h.attrs = hashCookie, s.Cookie.GetName(), s.Cookie.GetPath(), s.Cookie.GetAttributes()
			if s.Cookie.GetTtl() != nil {
				d, ok := duration(s.Cookie.GetTtl())
				if !ok || d < 0 {
					return nil, invalid(sub(p, "cookie.ttl"), "not a duration")
				}
				h.ttl = &d
			}
			for j, a := range h.attrs {
				if !httpguts.ValidHeaderFieldName(a.GetName()) || strings.ContainsAny(a.GetValue(), ";\r\n\x00") {
					return nil, invalid(idx(sub(p, "cookie.attributes"), j), "not a cookie attribute")
				}
			}
			if !httpguts.ValidHeaderFieldName(h.name) || strings.ContainsAny(h.name, "=") {
				return nil, invalid(sub(p, "cookie.name"), "%q is not a cookie name", h.name)
			}
			if !ir.ValidCookiePath(h.path) {
				return nil, invalid(sub(p, "cookie.path"), "%q holds a control character or \";\"", h.path)
			}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				return nil, invalid(sub(p, "connection_properties.source_ip"), "must be true")
			}
			h.kind = hashSourceIP
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			h.kind, h.name = hashQuery, s.QueryParameter.GetName()
		default:
			return nil, invalid(p, "only header, cookie, connection_properties and query_parameter are supported by weir-proxy")
		}
		out = append(out, h)
	}
	return out, nil
}

// requestHash is the request's key under policies, as Envoy's
// HashPolicyImpl computes it: each policy that yields a value is hashed
// and folded in; a terminal one that yields stops the rest. setCookie is
// the Set-Cookie value of a cookie the gateway made up, or "".
func (s *stream) requestHash(policies []hashPolicy) (hash uint64, ok bool, setCookie string) {
	r := s.r
	for _, p := range policies {
		var h uint64
		found := false
		switch p.kind {
		case hashHeader:
			var values []string
			switch p.name {
			case ":authority":
				values = []string{r.Host}
			case ":path":
				values = []string{r.URL.RequestURI()}
			case ":method":
				values = []string{r.Method}
			default:
				values = r.Header[p.name]
			}
			if len(values) > 0 {
				// Several values are hashed together, sorted, as Envoy
				// does, so their order does not matter.
				if len(values) > 1 {
					values = slices.Sorted(slices.Values(values))
				}
				h, found = xxhash.Sum64String(strings.Join(values, "\x00")), true
			}
		case hashCookie:
			if c, err := r.Cookie(p.name); err == nil {
				h, found = xxhash.Sum64String(c.Value), true
			} else if p.ttl != nil {
				// Envoy's made-up value: the hash of the connection's
				// two ends, so a client behind a NAT gets its own.
				local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
				value := fmt.Sprintf("%016x", xxhash.Sum64String(r.RemoteAddr+addrString(local)))
				h, found = xxhash.Sum64String(value), true
				setCookie = setCookieValue(p, value)
			}
		case hashSourceIP:
			if s.clientAddr.IsValid() {
				h, found = xxhash.Sum64String(s.clientAddr.String()), true
			}
		case hashQuery:
			if v, has := r.URL.Query()[p.name]; has && len(v) > 0 {
				h, found = xxhash.Sum64String(v[0]), true
			}
		}
		if !found {
			continue
		}
		if ok {
			hash = bits.RotateLeft64(hash, 1) ^ h
		} else {
			hash, ok = h, true
		}
		if p.terminal {
			break
		}
	}
	return hash, ok, setCookie
}

// setCookieValue is the Set-Cookie Envoy sends for a made-up cookie.
func setCookieValue(p hashPolicy, value string) string {
	var b strings.Builder
	b.WriteString(p.name + `="` + value + `"`)
	if p.ttl != nil && *p.ttl > 0 {
		b.WriteString("; Max-Age=" + strconv.FormatInt(int64(p.ttl.Seconds()), 10))
	}
	if p.path != "" {
		b.WriteString("; Path=" + p.path)
	}
	for _, a := range p.attrs {
		b.WriteString("; " + a.GetName())
		if a.GetValue() != "" {
			b.WriteString("=" + a.GetValue())
		}
	}
	b.WriteString("; HttpOnly")
	return b.String()
}

// ringConfig is a RING_HASH cluster's ring_hash_lb_config.
type ringConfig struct{ min, max uint64 }

func compileRingConfig(c *clusterv3.Cluster) (ringConfig, error) {
	rc := ringConfig{min: 1024, max: 8 << 20}
	cfg := c.GetRingHashLbConfig()
	if cfg == nil {
		return rc, nil
	}
	if err := onlyFields(cfg, "ring_hash_lb_config", "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
		return rc, err
	}
	if cfg.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
		return rc, invalid("ring_hash_lb_config.hash_function", "only XX_HASH is supported by weir-proxy")
	}
	if v := cfg.GetMinimumRingSize(); v != nil {
		rc.min = v.GetValue()
	}
	if v := cfg.GetMaximumRingSize(); v != nil {
		rc.max = v.GetValue()
	}
	if rc.min > rc.max {
		return rc, invalid("ring_hash_lb_config", "minimum_ring_size %d is larger than maximum_ring_size %d", rc.min, rc.max)
	}
	return rc, nil
}

// hashRing is Envoy's ring: every endpoint at the hashes of
// "address_0", "address_1", … with as many entries each as it takes to
// reach the minimum ring size, sorted.
type hashRing struct {
	hashes []uint64
	eps    []*endpoint
}

func buildRing(eps []*endpoint, rc ringConfig) *hashRing {
	if len(eps) == 0 {
		return &hashRing{}
	}
	perHost := max((rc.min+uint64(len(eps))-1)/uint64(len(eps)), 1)
	if perHost*uint64(len(eps)) > rc.max {
		perHost = max(rc.max/uint64(len(eps)), 1)
	}
	type entry struct {
		hash uint64
		ep   *endpoint
	}
	entries := make([]entry, 0, perHost*uint64(len(eps)))
	for _, ep := range eps {
		for i := range perHost {
			entries = append(entries, entry{xxhash.Sum64String(ep.addr + "_" + strconv.FormatUint(i, 10)), ep})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return strings.Compare(a.ep.addr, b.ep.addr)
	})
	r := &hashRing{hashes: make([]uint64, len(entries)), eps: make([]*endpoint, len(entries))}
	for i, e := range entries {
		r.hashes[i], r.eps[i] = e.hash, e.ep
	}
	return r
}

// lookup is the first entry at or after hash, wrapping around.
func (r *hashRing) lookup(hash uint64) *endpoint {
	if len(r.hashes) == 0 {
		return nil
	}
	i, _ := slices.BinarySearch(r.hashes, hash)
	if i == len(r.hashes) {
		i = 0
	}
	return r.eps[i]
}

// lazyRing is built on first use: most clusters of a snapshot never see a
// request before the next one replaces them.
type lazyRing struct {
	once sync.Once
	cfg  ringConfig
	ring *hashRing
}

func (s *clusterSpec) lazyRing() *lazyRing {
	if s.ring == nil {
		return nil
	}
	return &lazyRing{cfg: *s.ring}
}

// pickHashed is pick for a request with a hash key: the key's endpoint on
// the ring.
func (c *cluster) pickHashed(hash uint64, hashed bool) *endpoint { return c.pickAgain(hash, hashed, 0) }

// pickAgain is the choice of a retry's attempt-th selection: on the ring,
// the attempt-th endpoint after the key's, walking the ring (entries of an
// endpoint already passed are skipped, so each selection is another
// endpoint while there is one); otherwise the policy's next choice.
func (c *cluster) pickAgain(hash uint64, hashed bool, attempt int) *endpoint {
	if c.ring == nil || !hashed || len(c.endpoints) == 0 {
		return c.pick()
	}
	c.ring.once.Do(func() { c.ring.ring = buildRing(c.endpoints, c.ring.cfg) })
	r := c.ring.ring
	if len(r.hashes) == 0 {
		return nil
	}
	i, _ := slices.BinarySearch(r.hashes, hash)
	seen := []*endpoint{r.eps[i%len(r.eps)]}
	for step := 1; step < len(r.eps) && len(seen) <= attempt; step++ {
		if ep := r.eps[(i+step)%len(r.eps)]; !slices.Contains(seen, ep) {
			seen = append(seen, ep)
		}
	}
	return seen[min(attempt, len(seen)-1)]
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
