package dataplane

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var corsHTTPFilter = &hcmv3.HttpFilter{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})}}

func exactOrigin(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// TestCORS checks Envoy's CORS filter semantics: preflights from allowed
// origins are answered by the proxy with the route's policy merged over the
// virtual host's, other preflights are forwarded, and allowed requests get
// the origin echoed with credentials and exposed headers.
func TestCORS(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	strict := routeTo(prefixMatch("/strict"), b.name)
	strict.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{
			exactOrigin("https://www.foo.com"),
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `https://[a-z.]+\.bar\.com`}}},
		},
		AllowMethods:     "GET, OPTIONS",
		AllowHeaders:     "x-a, x-b",
		MaxAge:           "3600",
		AllowCredentials: wrapperspb.Bool(true),
	})}
	wildcard := routeTo(prefixMatch("/any"), b.name)
	wildcard.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exactOrigin("*")},
		AllowMethods:           "*",
		AllowHeaders:           "*",
	})}
	closed := routeTo(prefixMatch("/closed"), b.name)
	closed.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{
		AllowOriginStringMatch:       []*matcherv3.StringMatcher{exactOrigin("https://www.foo.com")},
		AllowMethods:                 "GET",
		AllowCredentials:             wrapperspb.Bool(true),
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	})}
	// Envoy's CORS filter acts only on routes that forward.
	direct := &routev3.Route{Match: prefixMatch("/direct"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}},
		TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{
			AllowOriginStringMatch: []*matcherv3.StringMatcher{exactOrigin("*")}, AllowMethods: "GET",
		})}}
	plain := routeTo(prefixMatch("/"), b.name)
	vh := virtualHost("vh", []string{"*"}, strict, wildcard, closed, direct, plain)
	// The virtual host's expose_headers fills in what the routes leave unset.
	vh.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{ExposeHeaders: "x-exposed"})}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(corsHTTPFilter))},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", vh)},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)

	type want struct {
		status    int
		forwarded bool
		headers   map[string]string // "" means absent
	}
	absent := ""
	for name, tc := range map[string]struct {
		method, path string
		headers      map[string]string
		want         want
	}{
		"preflight from an exact origin": {"OPTIONS", "/strict", map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"},
			want{200, false, map[string]string{
				"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "GET, OPTIONS",
				"Access-Control-Allow-Headers": "x-a, x-b", "Access-Control-Max-Age": "3600",
				"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-exposed"}}},
		"preflight from a regex origin": {"OPTIONS", "/strict", map[string]string{"Origin": "https://a.b.bar.com", "Access-Control-Request-Method": "GET"},
			want{200, false, map[string]string{"Access-Control-Allow-Origin": "https://a.b.bar.com"}}},
		"preflight from another origin is forwarded": {"OPTIONS", "/strict", map[string]string{"Origin": "https://evil.com", "Access-Control-Request-Method": "GET"},
			want{200, true, map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Allow-Methods": absent}}},
		"a preflight from another origin answered without CORS headers": {"OPTIONS", "/closed", map[string]string{"Origin": "https://evil.com", "Access-Control-Request-Method": "GET"},
			want{200, false, map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Allow-Methods": "GET", "Access-Control-Allow-Credentials": "true"}}},
		"a direct response route is not CORS's": {"OPTIONS", "/direct", map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"},
			want{500, false, map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Allow-Methods": absent}}},
		"request from an allowed origin": {"GET", "/strict", map[string]string{"Origin": "https://www.foo.com"},
			want{200, true, map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com",
				"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-exposed"}}},
		"request from another origin": {"GET", "/strict", map[string]string{"Origin": "https://evil.com"},
			want{200, true, map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Allow-Credentials": absent}}},
		"OPTIONS without a request method is not a preflight": {"OPTIONS", "/strict", map[string]string{"Origin": "https://www.foo.com"},
			want{200, true, map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": absent}}},
		"wildcards echo what the preflight asks": {"OPTIONS", "/any", map[string]string{"Origin": "https://x.example:8443",
			"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-one, x-two"},
			want{200, false, map[string]string{"Access-Control-Allow-Origin": "https://x.example:8443",
				"Access-Control-Allow-Methods": "PUT", "Access-Control-Allow-Headers": "x-one, x-two",
				"Access-Control-Allow-Credentials": absent}}},
		"a route without a policy": {"GET", "/other", map[string]string{"Origin": "https://www.foo.com"},
			want{200, true, map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Expose-Headers": absent}}},
	} {
		before := b.hits.Load()
		req, _ := http.NewRequest(tc.method, proxyURL(t, p, "l")+tc.path, nil)
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		resp, body := do(t, req)
		forwarded := b.hits.Load() != before
		if resp.StatusCode != tc.want.status || forwarded != tc.want.forwarded {
			t.Errorf("%s: %d, forwarded %v; want %d, forwarded %v (body %q)", name, resp.StatusCode, forwarded, tc.want.status, tc.want.forwarded, body)
		}
		for k, v := range tc.want.headers {
			if got, ok := resp.Header[k]; v == absent && ok {
				t.Errorf("%s: %s: %q, want none", name, k, got)
			} else if v != absent && strings.Join(got, ",") != v {
				t.Errorf("%s: %s: %q, want %q", name, k, got, v)
			}
		}
	}
}

func TestCORSRefusesWhatItCannotHonour(t *testing.T) {
	b, _ := bodyBackend(t)
	for name, pol := range map[string]*corsv3.CorsPolicy{
		"runtime fraction": {FilterEnabled: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 50}}},
		"header injection": {AllowMethods: "GET\r\nX-Evil: 1"},
		"bad regex":        {AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}},
	} {
		rt := routeTo(prefixMatch("/"), b.name)
		rt.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(pol)}
		p := newTestProxy(t, Options{})
		err := p.Apply(filterResources(b, rt, withFilters(corsHTTPFilter)))
		if err == nil || !strings.Contains(err.Error(), `typed_per_filter_config["envoy.filters.http.cors"]`) {
			t.Errorf("%s: Apply = %v, want a NACK naming the per-route config", name, err)
		}
	}
}
