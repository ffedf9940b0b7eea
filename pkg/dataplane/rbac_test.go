package dataplane

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func remoteIP(cidr string, bits uint32) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: cidr, PrefixLen: wrapperspb.UInt32(bits)}}}
}

func notID(p *rbacconfigv3.Principal) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: p}}
}

func rbacRules(action rbacconfigv3.RBAC_Action, principals ...*rbacconfigv3.Principal) *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{"p": {
		Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
		Principals:  principals,
	}}}}
}

// TestRBACByClientAddress checks Envoy's RBAC semantics for client
// addresses: an ALLOW policy set admits only the clients one policy
// matches, a DENY one refuses them, not_id and and_ids combine ranges, a
// route's config replaces the listener's, and one without rbac turns the
// filter off. A refused request is answered 403 and never forwarded.
func TestRBACByClientAddress(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	route := func(path string, pr *rbacv3.RBACPerRoute) *routev3.Route {
		r := routeTo(prefixMatch(path), b.name)
		if pr != nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(pr)}
		}
		return r
	}
	allow, deny := rbacconfigv3.RBAC_ALLOW, rbacconfigv3.RBAC_DENY
	vh := virtualHost("vh", []string{"*"},
		route("/allow-loopback", &rbacv3.RBACPerRoute{Rbac: rbacRules(allow, remoteIP("127.0.0.0", 8))}),
		route("/allow-other", &rbacv3.RBACPerRoute{Rbac: rbacRules(allow, remoteIP("10.0.0.0", 8), remoteIP("192.0.2.0", 24))}),
		route("/allow-not-me", &rbacv3.RBACPerRoute{Rbac: rbacRules(allow, notID(remoteIP("127.0.0.1", 32)))}),
		route("/allow-range-but-me", &rbacv3.RBACPerRoute{Rbac: rbacRules(allow, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{
			Ids: []*rbacconfigv3.Principal{remoteIP("127.0.0.0", 8), notID(remoteIP("127.0.0.1", 32))}}}})}),
		route("/deny-me", &rbacv3.RBACPerRoute{Rbac: rbacRules(deny, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "127.0.0.1", PrefixLen: wrapperspb.UInt32(32)}}})}),
		route("/deny-other", &rbacv3.RBACPerRoute{Rbac: rbacRules(deny, remoteIP("10.0.0.0", 8))}),
		route("/off", &rbacv3.RBACPerRoute{}),
		route("/", nil),
	)
	// The listener's own rules admit only 10.0.0.0/8: routes without a
	// config of their own get them.
	listenerRBAC := &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(rbacRules(allow, remoteIP("10.0.0.0", 8)))}}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(listenerRBAC))},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", vh)},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)

	for path, want := range map[string]int{
		"/allow-loopback": 200, "/allow-other": 403, "/allow-not-me": 403, "/allow-range-but-me": 403,
		"/deny-me": 403, "/deny-other": 200, "/off": 200, "/plain": 403,
	} {
		before := b.hits.Load()
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
		resp, body := do(t, req)
		forwarded := b.hits.Load() != before
		if resp.StatusCode != want || forwarded != (want == 200) {
			t.Errorf("%s: %d, forwarded %v; want %d", path, resp.StatusCode, forwarded, want)
		}
		if want == 403 && body != "RBAC: access denied" {
			t.Errorf("%s: body %q, want Envoy's", path, body)
		}
	}
}

// TestRBACRefusesWhatItCannotHonour: a permission or principal other than
// by address, or an action other than ALLOW and DENY, is a NACK naming the
// field, never a filter that lets everyone through.
func TestRBACRefusesWhatItCannotHonour(t *testing.T) {
	b, _ := bodyBackend(t)
	header := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-user",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "admin"}}}}}}
	pathOnly := rbacRules(rbacconfigv3.RBAC_ALLOW, remoteIP("127.0.0.0", 8))
	pathOnly.Rules.Policies["p"].Permissions = []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/x"}}}}}}}
	for name, tc := range map[string]struct {
		rbac *rbacv3.RBAC
		want string
	}{
		"a principal by header": {rbacRules(rbacconfigv3.RBAC_ALLOW, header), "principals[0]: only any, remote_ip"},
		"a permission by path":  {pathOnly, "permissions[0]: only any and requested_server_name are supported"},
		"the LOG action":        {rbacRules(rbacconfigv3.RBAC_LOG, remoteIP("127.0.0.0", 8)), "rules.action: LOG is not supported"},
		"shadow rules":          {&rbacv3.RBAC{ShadowRules: &rbacconfigv3.RBAC{}}, "shadow_rules: not supported"},
		"a bad address":         {rbacRules(rbacconfigv3.RBAC_ALLOW, remoteIP("10.0.0", 8)), "remote_ip.address_prefix"},
	} {
		rt := routeTo(prefixMatch("/"), b.name)
		rt.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(&rbacv3.RBACPerRoute{Rbac: tc.rbac})}
		p := newTestProxy(t, Options{})
		disabled := &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacv3.RBAC{})}}
		err := p.Apply(filterResources(b, rt, withFilters(disabled)))
		if err == nil || !strings.Contains(err.Error(), `typed_per_filter_config["envoy.filters.http.rbac"]`) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Apply = %v, want a NACK naming the per-route config and %q", name, err, tc.want)
		}
	}
}

// TestRBACRemoteIPBehindAProxy: without use_remote_address, remote_ip is
// the last X-Forwarded-For address, as in Envoy, while direct_remote_ip
// stays the peer; a client cannot pass an allow-list on remote_ip by
// sending X-Forwarded-For where the remote address is used.
func TestRBACRemoteIPBehindAProxy(t *testing.T) {
	b, _ := bodyBackend(t)
	allow := rbacconfigv3.RBAC_ALLOW
	route := func(path string, p *rbacconfigv3.Principal) *routev3.Route {
		r := routeTo(prefixMatch(path), b.name)
		r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(&rbacv3.RBACPerRoute{Rbac: rbacRules(allow, p)})}
		return r
	}
	direct := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}}
	vh := virtualHost("vh", []string{"*"}, route("/remote", remoteIP("10.0.0.0", 8)), route("/direct", direct))
	listenerRBAC := &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacv3.RBAC{})}}
	for _, useRemote := range []bool{false, true} {
		p := newTestProxy(t, Options{})
		res := &Resources{
			Listeners: []*listenerv3.Listener{plainListener("l", withFilters(listenerRBAC), func(h *hcmv3.HttpConnectionManager) {
				h.UseRemoteAddress = wrapperspb.Bool(useRemote)
			})},
			Routes: []*routev3.RouteConfiguration{routeConfig("l", vh)},
		}
		addBackends(res, false, b)
		mustApply(t, p, res)
		want := map[string]int{"/remote": 200, "/direct": 403}
		if useRemote {
			want["/remote"] = 403
		}
		for path, code := range want {
			req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
			req.Header.Set("X-Forwarded-For", "192.0.2.1, 10.1.2.3")
			if resp, _ := do(t, req); resp.StatusCode != code {
				t.Errorf("use_remote_address %v, %s: %d, want %d", useRemote, path, resp.StatusCode, code)
			}
		}
	}
}

// TestDownstreamAddr checks Envoy's trusted client address: with
// use_remote_address, the peer, or with xff_num_trusted_hops N the Nth
// X-Forwarded-For entry from the right; without it, the entry N+1 from the
// right. A missing or malformed entry leaves the peer.
func TestDownstreamAddr(t *testing.T) {
	for _, tc := range []struct {
		useRemote bool
		hops      uint32
		peer      string
		xff       []string
		want      string
	}{
		{true, 0, "127.0.0.1", []string{"10.0.0.1"}, "127.0.0.1"},
		{false, 0, "127.0.0.1", []string{"10.0.0.1"}, "10.0.0.1"},
		{false, 0, "127.0.0.1", []string{"192.0.2.1", "10.0.0.2, 10.0.0.3"}, "10.0.0.3"},
		{false, 0, "127.0.0.1", []string{"not an address"}, "127.0.0.1"},
		{false, 0, "127.0.0.1", nil, "127.0.0.1"},
		{true, 1, "127.0.0.1", []string{"192.0.2.1, 10.0.0.2"}, "10.0.0.2"},
		{true, 2, "127.0.0.1", []string{"192.0.2.1, 10.0.0.2"}, "192.0.2.1"},
		{true, 2, "127.0.0.1", []string{"192.0.2.1", " 10.0.0.2 "}, "192.0.2.1"},
		{true, 3, "127.0.0.1", []string{"192.0.2.1, 10.0.0.2"}, "127.0.0.1"},
		{true, 1, "127.0.0.1", nil, "127.0.0.1"},
		{true, 1, "127.0.0.1", []string{"192.0.2.1, garbage"}, "127.0.0.1"},
		{false, 1, "127.0.0.1", []string{"192.0.2.1, 10.0.0.2"}, "192.0.2.1"},
		// Zones and v4-mapped forms never keep a range from matching.
		{true, 0, "fe80::1%eth0", nil, "fe80::1"},
		{true, 0, "::ffff:10.0.0.1", nil, "10.0.0.1"},
	} {
		if got := downstreamAddr(tc.useRemote, tc.hops, tc.peer, tc.xff).String(); got != tc.want {
			t.Errorf("downstreamAddr(%v, %d, %q, %q) = %s, want %s", tc.useRemote, tc.hops, tc.peer, tc.xff, got, tc.want)
		}
	}
}
