// Package cors is weir-proxy's envoy.filters.http.cors: the CORS protocol
// of the Fetch standard, configured per route by a CorsPolicy in
// typed_per_filter_config, with Envoy's semantics. A request with an
// allowed Origin gets Access-Control-Allow-Origin set to that origin (and
// Allow-Credentials and Expose-Headers as configured) on its response; a
// preflight (OPTIONS with Origin and Access-Control-Request-Method) from an
// allowed origin is answered 200 by the filter. A route's and its virtual
// host's policies are merged field by field, the route's first.
package cors

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
	"github.com/weir-dev/weir/pkg/re2size"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &corsv3.Cors{} }
func (factory) RouteConfigType() proto.Message { return &corsv3.CorsPolicy{} }

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	if bad := httpfilter.UnsupportedField(m); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	return config{}, nil
}

// policy is a compiled CorsPolicy. Unset fields stay unset so that a less
// specific policy can supply them, as in Envoy.
type policy struct {
	origins                      []matcher
	allowMethods, allowHeaders   string
	exposeHeaders, maxAge        string
	allowCredentials             *bool
	forwardNotMatchingPreflights *bool
	allowPrivateNetworkAccess    *bool
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	p := m.(*corsv3.CorsPolicy)
	// filter_enabled and shadow_enabled are runtime fractions, which
	// weir-proxy has no runtime for.
	if bad := httpfilter.UnsupportedField(p, "allow_origin_string_match", "allow_methods", "allow_headers",
		"expose_headers", "max_age", "allow_credentials", "forward_not_matching_preflights",
		"allow_private_network_access"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	out := &policy{
		allowMethods:  p.GetAllowMethods(),
		allowHeaders:  p.GetAllowHeaders(),
		exposeHeaders: p.GetExposeHeaders(),
		maxAge:        p.GetMaxAge(),
	}
	for field, v := range map[string]string{"allow_methods": out.allowMethods, "allow_headers": out.allowHeaders,
		"expose_headers": out.exposeHeaders, "max_age": out.maxAge} {
		if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return nil, fmt.Errorf("%s: %q is not a valid header value", field, v)
		}
	}
	for i, sm := range p.GetAllowOriginStringMatch() {
		mt, err := compileMatcher(sm)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d].%w", i, err)
		}
		out.origins = append(out.origins, mt)
	}
	if v := p.GetAllowCredentials(); v != nil {
		out.allowCredentials = &v.Value
	}
	if v := p.GetForwardNotMatchingPreflights(); v != nil {
		out.forwardNotMatchingPreflights = &v.Value
	}
	if v := p.GetAllowPrivateNetworkAccess(); v != nil {
		out.allowPrivateNetworkAccess = &v.Value
	}
	return out, nil
}

// matcher is a compiled StringMatcher.
type matcher func(string) bool

func compileMatcher(sm *matcherv3.StringMatcher) (matcher, error) {
	if bad := httpfilter.UnsupportedField(sm, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	fold := sm.GetIgnoreCase()
	str := func(want string, cmp func(s, want string) bool) matcher {
		if fold {
			want = strings.ToLower(want)
			return func(s string) bool { return cmp(strings.ToLower(s), want) }
		}
		return func(s string) bool { return cmp(s, want) }
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return str(p.Exact, func(s, w string) bool { return s == w }), nil
	case *matcherv3.StringMatcher_Prefix:
		return str(p.Prefix, strings.HasPrefix), nil
	case *matcherv3.StringMatcher_Suffix:
		return str(p.Suffix, strings.HasSuffix), nil
	case *matcherv3.StringMatcher_Contains:
		return str(p.Contains, strings.Contains), nil
	case *matcherv3.StringMatcher_SafeRegex:
		if bad := httpfilter.UnsupportedField(p.SafeRegex, "regex", "google_re2"); bad != "" {
			return nil, fmt.Errorf("safe_regex.%s: not supported by weir-proxy", bad)
		}
		expr := p.SafeRegex.GetRegex()
		if size, err := re2size.Bound(expr); err != nil || size > re2size.MaxProgramSize {
			return nil, fmt.Errorf("safe_regex.regex: %q is over the RE2 program size limit of %d", expr, re2size.MaxProgramSize)
		}
		// Envoy's regex matchers match the whole value; ignore_case does
		// not apply to them.
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return nil, fmt.Errorf("safe_regex.regex: invalid RE2 regex: %v", err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("match_pattern: one of exact, prefix, suffix, contains or safe_regex is required")
}

type config struct{}

func (config) NewFilter(cb httpfilter.Callbacks) any { return &filter{cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	httpfilter.PassThroughEncoder
	cb       httpfilter.Callbacks
	policies []*policy
	// corsRequest is set once a request with an Origin is seen on a route
	// with a policy; latchedOrigin is that Origin when it is allowed.
	corsRequest   bool
	latchedOrigin string
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	// As Envoy: only a route that forwards (not a redirect or a direct
	// response) has a CORS policy.
	if !f.cb.RouteForwards() {
		return httpfilter.Continue
	}
	for _, c := range f.cb.PerRouteConfigs() {
		if p, ok := c.(*policy); ok {
			f.policies = append(f.policies, p)
		}
	}
	if len(f.policies) == 0 {
		return httpfilter.Continue
	}
	origin := h.Header.Get("Origin")
	if origin == "" {
		return httpfilter.Continue
	}
	allowed := f.originAllowed(origin)
	if allowed {
		f.latchedOrigin = origin
	}
	f.corsRequest = true
	requestMethod := h.Header.Get("Access-Control-Request-Method")
	if h.Method != http.MethodOptions || requestMethod == "" {
		return httpfilter.Continue
	}
	if !allowed && f.flag(func(p *policy) *bool { return p.forwardNotMatchingPreflights }, true) {
		return httpfilter.Continue
	}
	// A preflight: answered here, never forwarded. The encoder side adds
	// Allow-Origin and Expose-Headers for an allowed origin; the rest is
	// set whatever the origin, as in Envoy.
	out := http.Header{}
	if f.flag(func(p *policy) *bool { return p.allowCredentials }, false) {
		out.Set("Access-Control-Allow-Credentials", "true")
	}
	if methods := f.str(func(p *policy) string { return p.allowMethods }); methods == "*" {
		out.Set("Access-Control-Allow-Methods", requestMethod)
	} else if methods != "" {
		out.Set("Access-Control-Allow-Methods", methods)
	}
	if headers := f.str(func(p *policy) string { return p.allowHeaders }); headers == "*" {
		out.Set("Access-Control-Allow-Headers", h.Header.Get("Access-Control-Request-Headers"))
	} else if headers != "" {
		out.Set("Access-Control-Allow-Headers", headers)
	}
	if maxAge := f.str(func(p *policy) string { return p.maxAge }); maxAge != "" {
		out.Set("Access-Control-Max-Age", maxAge)
	}
	if f.flag(func(p *policy) *bool { return p.allowPrivateNetworkAccess }, false) &&
		h.Header.Get("Access-Control-Request-Private-Network") == "true" {
		out.Set("Access-Control-Allow-Private-Network", "true")
	}
	f.cb.SendLocalReply(http.StatusOK, "", out, "cors_response")
	return httpfilter.StopIteration
}

func (f *filter) EncodeHeaders(h *httpfilter.ResponseHeaders, _ bool) httpfilter.Status {
	if !f.corsRequest || f.latchedOrigin == "" {
		return httpfilter.Continue
	}
	h.Header.Set("Access-Control-Allow-Origin", f.latchedOrigin)
	if f.flag(func(p *policy) *bool { return p.allowCredentials }, false) {
		h.Header.Set("Access-Control-Allow-Credentials", "true")
	}
	if expose := f.str(func(p *policy) string { return p.exposeHeaders }); expose != "" {
		h.Header.Set("Access-Control-Expose-Headers", expose)
	}
	return httpfilter.Continue
}

// originAllowed uses the most specific policy that lists origins. A
// matcher that takes "*" takes every origin, as in Envoy.
func (f *filter) originAllowed(origin string) bool {
	for _, p := range f.policies {
		if len(p.origins) == 0 {
			continue
		}
		for _, m := range p.origins {
			if m("*") || m(origin) {
				return true
			}
		}
		return false
	}
	return false
}

func (f *filter) str(field func(*policy) string) string {
	for _, p := range f.policies {
		if v := field(p); v != "" {
			return v
		}
	}
	return ""
}

func (f *filter) flag(field func(*policy) *bool, def bool) bool {
	for _, p := range f.policies {
		if v := field(p); v != nil {
			return *v
		}
	}
	return def
}
