package dataplane

import (
	"io"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// TestPathQueryAndRewriteFields covers the route fields Gateway API needs,
// with Envoy's semantics: path_separated_prefix, query_parameters,
// prefix_rewrite and regex_rewrite (path only, query kept),
// response_headers_to_add/remove, direct_response, and redirect rewrites.
func TestPathQueryAndRewriteFields(t *testing.T) {
	t.Parallel()
	bs := map[string]*backend{}
	for _, n := range []string{"seg", "query", "rewrite", "fallback"} {
		bs[n] = startBackend(t, n)
	}
	segment := func(v string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: v}}
	}
	regexRewrite := func(pattern, substitution string) *matcherv3.RegexMatchAndSubstitute {
		return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: substitution}
	}

	queryMatch := prefixMatch("/q")
	queryMatch.QueryParameters = []*routev3.QueryParameterMatcher{
		{Name: "tier", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "gold"},
		}}},
		{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
	}

	prefixRw := routeTo(segment("/old"), "rewrite")
	action(prefixRw).PrefixRewrite = "/new"
	stripRw := routeTo(segment("/strip"), "rewrite")
	action(stripRw).RegexRewrite = regexRewrite(`^/strip/*`, "/")
	fullRw := routeTo(segment("/full"), "rewrite")
	action(fullRw).RegexRewrite = regexRewrite(`^/.*$`, "/replaced")
	groupRw := routeTo(segment("/v"), "rewrite")
	action(groupRw).RegexRewrite = regexRewrite(`^/v/([a-z]+)/([0-9]+)$`, `/\2/\1`)

	respHdr := routeTo(segment("/resp"), "fallback")
	respHdr.ResponseHeadersToAdd = setHeaders(map[string]string{"x-added": "yes", "x-backend": "overwritten"})
	respHdr.ResponseHeadersToRemove = []string{"content-type"}

	direct := &routev3.Route{Match: segment("/direct"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 500, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "no backend"}},
	}}}
	redirect := &routev3.Route{Match: segment("/moved"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/here"},
		ResponseCode:         routev3.RedirectAction_FOUND,
	}}}
	redirect.ResponseHeadersToAdd = setHeaders(map[string]string{"x-redirected": "yes"})
	direct.ResponseHeadersToAdd = setHeaders(map[string]string{"content-type": "application/problem+json"})

	rc := routeConfig(listenerName, virtualHost("all", []string{"*"},
		routeTo(segment("/seg"), "seg"),
		routeTo(queryMatch, "query"),
		prefixRw, stripRw, fullRw, groupRw, respHdr, direct, redirect,
		routeTo(prefixMatch("/"), "fallback"),
	))
	res := &Resources{Listeners: []*listenerv3.Listener{plainListener(listenerName)}, Routes: []*routev3.RouteConfiguration{rc}}
	for _, b := range bs {
		addBackends(res, false, b)
	}
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, listenerName)
	client := keepAliveClient()

	for _, c := range []struct {
		path, backend, upstreamPath string
	}{
		{"/seg", "seg", "/seg"},
		{"/seg/x", "seg", "/seg/x"},
		{"/seg?a=1", "seg", "/seg?a=1"},
		{"/segment", "fallback", "/segment"}, // not a whole segment
		{"/q?tier=gold&debug", "query", "/q?tier=gold&debug"},
		{"/q?tier=gold&debug=1", "query", "/q?tier=gold&debug=1"},
		{"/q?tier=%67old&debug", "fallback", "/q?tier=%67old&debug"}, // values are not decoded
		{"/q?tier=silver&debug", "fallback", "/q?tier=silver&debug"},
		{"/q?debug&tier=gold&tier=silver", "query", "/q?debug&tier=gold&tier=silver"}, // the first value counts
		{"/q?tier=silver&tier=gold&debug", "fallback", "/q?tier=silver&tier=gold&debug"},
		{"/q?Tier=gold&debug", "fallback", "/q?Tier=gold&debug"}, // names are case-sensitive
		{"/q?tier=gold", "fallback", "/q?tier=gold"},
		{"/old/a?k=v", "rewrite", "/new/a?k=v"},
		{"/old", "rewrite", "/new"},
		{"/strip/a/b?k=v", "rewrite", "/a/b?k=v"},
		{"/strip", "rewrite", "/"},
		{"/full/deep/path?k=v", "rewrite", "/replaced?k=v"},
		{"/v/abc/123", "rewrite", "/123/abc"},
	} {
		req, _ := http.NewRequest("GET", base+c.path, nil)
		e, resp := getEcho(t, client, req)
		if resp.StatusCode != 200 || e.Backend != c.backend || e.Path != c.upstreamPath {
			t.Errorf("GET %s: got %d from %q with path %q, want %q with %q", c.path, resp.StatusCode, e.Backend, e.Path, c.backend, c.upstreamPath)
		}
		if c.upstreamPath != c.path && e.Backend == "rewrite" {
			if got := e.Headers["X-Envoy-Original-Path"]; len(got) != 1 || got[0] != c.path {
				t.Errorf("GET %s: x-envoy-original-path = %v", c.path, got)
			}
		}
	}

	t.Run("response headers", func(t *testing.T) {
		resp, err := client.Get(base + "/resp")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Added") != "yes" || resp.Header.Get("X-Backend") != "overwritten" || resp.Header.Get("Content-Type") != "" {
			t.Errorf("headers = %v", resp.Header)
		}
	})
	t.Run("direct response", func(t *testing.T) {
		resp, err := client.Get(base + "/direct/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || string(body) != "no backend" || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("redirect prefix rewrite keeps the rest and the query", func(t *testing.T) {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("GET", base+"/moved/a?k=v", nil)
		req.Host = "example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "http://example.com/here/a?k=v" || resp.Header.Get("X-Redirected") != "yes" {
			t.Errorf("got %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("refused as Envoy refuses", func(t *testing.T) {
		for name, r := range map[string]*routev3.Route{
			"trailing slash":          routeTo(segment("/a/"), "seg"),
			"prefix rewrite on regex": func() *routev3.Route { r := routeTo(regexMatch("/a"), "seg"); action(r).PrefixRewrite = "/b"; return r }(),
			"rewrite group out of range": func() *routev3.Route {
				r := routeTo(segment("/a"), "seg")
				action(r).RegexRewrite = regexRewrite("^/a", `\1`)
				return r
			}(),
			"direct response status": {Match: segment("/a"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}},
		} {
			bad := &Resources{Listeners: res.Listeners, Clusters: res.Clusters, Endpoints: res.Endpoints,
				Routes: []*routev3.RouteConfiguration{routeConfig(listenerName, virtualHost("all", []string{"*"}, r))}}
			if err := p.Apply(bad); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	})
}
