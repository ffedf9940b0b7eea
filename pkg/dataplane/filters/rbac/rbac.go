// Package rbac is weir-proxy's envoy.filters.http.rbac, for the subset of
// Envoy's RBAC that decides by client address and SNI: an ALLOW or DENY
// action, policies whose permissions are "any" or the connection's
// requested_server_name, and whose principals are remote and direct-remote
// IP ranges combined with and, or and not. A request an
// ALLOW policy set does not admit, or that a DENY policy matches, is
// answered 403 "RBAC: access denied", as Envoy does. Anything else in the
// config is refused, so the proxy NACKs what it cannot enforce.
//
// remote_ip is Envoy's downstream remote address: the peer with
// use_remote_address, else the last X-Forwarded-For address (weir-proxy
// trusts no further hop). direct_remote_ip is always the peer. Addresses
// are compared unmapped and without a zone.
package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &rbacv3.RBAC{} }
func (factory) RouteConfigType() proto.Message { return &rbacv3.RBACPerRoute{} }

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	return compile(m.(*rbacv3.RBAC))
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*rbacv3.RBACPerRoute)
	if bad := httpfilter.UnsupportedField(pr, "rbac"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if pr.GetRbac() == nil {
		// Envoy: a per-route config without rbac turns the filter off.
		return &engine{}, nil
	}
	e, err := compile(pr.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("rbac.%w", err)
	}
	return e, nil
}

// engine is a compiled RBAC; without rules it lets everything through.
type engine struct {
	rules    bool
	allow    bool // the action: ALLOW, else DENY
	policies []principal
}

func compile(r *rbacv3.RBAC) (*engine, error) {
	if bad := httpfilter.UnsupportedField(r, "rules"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	rules := r.GetRules()
	if rules == nil {
		return &engine{}, nil
	}
	if bad := httpfilter.UnsupportedField(rules, "action", "policies"); bad != "" {
		return nil, fmt.Errorf("rules.%s: not supported by weir-proxy", bad)
	}
	e := &engine{rules: true}
	switch rules.GetAction() {
	case rbacconfigv3.RBAC_ALLOW:
		e.allow = true
	case rbacconfigv3.RBAC_DENY:
	default:
		return nil, fmt.Errorf("rules.action: %s is not supported by weir-proxy", rules.GetAction())
	}
	for name, p := range rules.GetPolicies() {
		path := fmt.Sprintf("rules.policies[%q]", name)
		if bad := httpfilter.UnsupportedField(p, "permissions", "principals"); bad != "" {
			return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
		}
		if len(p.GetPermissions()) == 0 || len(p.GetPrincipals()) == 0 {
			return nil, fmt.Errorf("%s: permissions and principals are required", path)
		}
		var perms []principal
		for i, perm := range p.GetPermissions() {
			c, err := compilePermission(perm, fmt.Sprintf("%s.permissions[%d]", path, i))
			if err != nil {
				return nil, err
			}
			perms = append(perms, c)
		}
		var alts []principal
		for i, pr := range p.GetPrincipals() {
			c, err := compilePrincipal(pr, fmt.Sprintf("%s.principals[%d]", path, i))
			if err != nil {
				return nil, err
			}
			alts = append(alts, c)
		}
		// A policy matches when a permission and a principal do.
		perm, who := orOf(perms), orOf(alts)
		e.policies = append(e.policies, func(a addrs) bool { return perm(a) && who(a) })
	}
	return e, nil
}

// addrs is what permissions and principals look at: the client's
// addresses and the connection's SNI ("" without TLS or SNI).
type addrs struct {
	remote, direct netip.Addr
	serverName     string
	// filterState looks up the connection's filter state.
	filterState func(key string) (string, bool)
}

// principal reports whether a request from a matches; permissions have
// the same shape.
type principal func(a addrs) bool

// compilePermission: any, and requested_server_name with an exact,
// prefix or suffix matcher (ignore_case as Envoy's StringMatcher).
func compilePermission(p *rbacconfigv3.Permission, path string) (principal, error) {
	switch r := p.GetRule().(type) {
	case *rbacconfigv3.Permission_Any:
		if !r.Any {
			return nil, fmt.Errorf("%s.any: must be true", path)
		}
		return func(addrs) bool { return true }, nil
	case *rbacconfigv3.Permission_RequestedServerName:
		m := r.RequestedServerName
		if bad := httpfilter.UnsupportedField(m, "exact", "prefix", "suffix", "ignore_case"); bad != "" {
			return nil, fmt.Errorf("%s.requested_server_name.%s: not supported by weir-proxy", path, bad)
		}
		fold := func(s string) string { return s }
		if m.GetIgnoreCase() {
			// Envoy ignores the case of ASCII letters only: Unicode
			// folding would take "\u212Aey" (Kelvin sign) for "key".
			fold = asciiLower
		}
		var match func(string) bool
		switch v := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			want := fold(v.Exact)
			match = func(s string) bool { return fold(s) == want }
		case *matcherv3.StringMatcher_Prefix:
			want := fold(v.Prefix)
			match = func(s string) bool { return strings.HasPrefix(fold(s), want) }
		case *matcherv3.StringMatcher_Suffix:
			want := fold(v.Suffix)
			match = func(s string) bool { return strings.HasSuffix(fold(s), want) }
		default:
			return nil, fmt.Errorf("%s.requested_server_name: only exact, prefix and suffix are supported by weir-proxy", path)
		}
		return func(a addrs) bool { return match(a.serverName) }, nil
	}
	return nil, fmt.Errorf("%s: only any and requested_server_name are supported by weir-proxy", path)
}

func orOf(ps []principal) principal {
	return func(a addrs) bool {
		for _, p := range ps {
			if p(a) {
				return true
			}
		}
		return false
	}
}

func compilePrincipal(p *rbacconfigv3.Principal, path string) (principal, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacconfigv3.Principal_Any:
		if !id.Any {
			return nil, fmt.Errorf("%s.any: must be true", path)
		}
		return func(addrs) bool { return true }, nil
	case *rbacconfigv3.Principal_RemoteIp:
		return cidr(id.RemoteIp, path+".remote_ip", func(a addrs) netip.Addr { return a.remote })
	case *rbacconfigv3.Principal_DirectRemoteIp:
		return cidr(id.DirectRemoteIp, path+".direct_remote_ip", func(a addrs) netip.Addr { return a.direct })
	case *rbacconfigv3.Principal_FilterState:
		// Envoy: the object's string form must match; a missing object
		// matches nothing.
		m := id.FilterState
		fp := path + ".filter_state"
		if bad := httpfilter.UnsupportedField(m, "key", "string_match"); bad != "" {
			return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", fp, bad)
		}
		sm := m.GetStringMatch()
		if sm == nil || httpfilter.UnsupportedField(sm, "exact") != "" {
			return nil, fmt.Errorf("%s.string_match: only exact is supported by weir-proxy", fp)
		}
		key, want := m.GetKey(), sm.GetExact()
		return func(a addrs) bool {
			v, ok := a.filterState(key)
			return ok && v == want
		}, nil
	case *rbacconfigv3.Principal_NotId:
		inner, err := compilePrincipal(id.NotId, path+".not_id")
		if err != nil {
			return nil, err
		}
		return func(a addrs) bool { return !inner(a) }, nil
	case *rbacconfigv3.Principal_OrIds:
		var ps []principal
		for i, q := range id.OrIds.GetIds() {
			c, err := compilePrincipal(q, fmt.Sprintf("%s.or_ids.ids[%d]", path, i))
			if err != nil {
				return nil, err
			}
			ps = append(ps, c)
		}
		return orOf(ps), nil
	case *rbacconfigv3.Principal_AndIds:
		var ps []principal
		for i, q := range id.AndIds.GetIds() {
			c, err := compilePrincipal(q, fmt.Sprintf("%s.and_ids.ids[%d]", path, i))
			if err != nil {
				return nil, err
			}
			ps = append(ps, c)
		}
		return func(a addrs) bool {
			for _, p := range ps {
				if !p(a) {
					return false
				}
			}
			return true
		}, nil
	}
	return nil, fmt.Errorf("%s: only any, remote_ip, direct_remote_ip, filter_state, and_ids, or_ids and not_id are supported by weir-proxy", path)
}

func cidr(r *corev3.CidrRange, path string, which func(addrs) netip.Addr) (principal, error) {
	addr, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return nil, fmt.Errorf("%s.address_prefix: %v", path, err)
	}
	bits := int(r.GetPrefixLen().GetValue())
	if bits > addr.BitLen() {
		return nil, fmt.Errorf("%s.prefix_len: %d is longer than the address", path, bits)
	}
	prefix := netip.PrefixFrom(addr.WithZone(""), bits).Masked()
	return func(a addrs) bool { return prefix.Contains(which(a)) }, nil
}

// allows reports whether a request from addr may pass.
func (e *engine) allows(addr addrs) bool {
	if !e.rules {
		return true
	}
	matched := false
	for _, p := range e.policies {
		if p(addr) {
			matched = true
			break
		}
	}
	return matched == e.allow
}

func (e *engine) NewFilter(cb httpfilter.Callbacks) any { return &filter{e: e, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	e  *engine
	cb httpfilter.Callbacks
}

func (f *filter) DecodeHeaders(*httpfilter.RequestHeaders, bool) httpfilter.Status {
	e := f.e
	if rc, ok := f.cb.PerRouteConfig().(*engine); ok {
		e = rc
	}
	if e.allows(addrs{remote: f.cb.ClientAddr(), direct: f.cb.RemoteAddr().Addr().WithZone("").Unmap(), serverName: f.cb.RequestedServerName(), filterState: f.cb.FilterState}) {
		return httpfilter.Continue
	}
	f.cb.SendLocalReply(http.StatusForbidden, "RBAC: access denied", nil, "rbac_access_denied_matched_policy[none]")
	return httpfilter.StopIteration
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
