package dataplane

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func TestFindVhostEnvoyOrder(t *testing.T) {
	rc := routeConfig("r",
		virtualHost("exact", []string{"example.com", "example.com:*"}),
		virtualHost("suffix-long", []string{"*.b.example.com"}),
		virtualHost("suffix", []string{"*.example.com", "*-bar.foo.com"}),
		virtualHost("prefix", []string{"foo.*"}),
		virtualHost("default", []string{"*"}),
	)
	rt, err := compileRoutes(rc, nil, nil, newVhostCache(nil))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"example.com":        "exact",
		"example.com:8080":   "exact", // "example.com:*" is a prefix wildcard "example.com:" + any
		"example.com:":       "default",
		"a.example.com":      "suffix",
		"a.b.example.com":    "suffix-long", // longest suffix wins
		"x.y.example.com":    "suffix",      // a suffix wildcard spans labels
		".example.com":       "default",     // wildcards never match the empty string
		"a.example.com:8080": "default",     // the port is part of the host; "*.example.com" does not cover it
		"baz-bar.foo.com":    "suffix",
		"-bar.foo.com":       "default", // wildcards never match the empty string
		"foo.com":            "prefix",
		"foo.":               "default",
		"other":              "default",
		"":                   "default",
	} {
		got := rt.findVhost(lowerASCII(host))
		if got == nil || got.name != want {
			t.Errorf("host %q: got %v, want %s", host, got, want)
		}
	}
	// Host matching is case-insensitive.
	if v := rt.findVhost(lowerASCII("EXAMPLE.Com")); v == nil || v.name != "exact" {
		t.Errorf("upper-case host did not match exact domain")
	}
}

// TestFindVhostIgnoringPort is ignore_port_in_host_matching: a Host with a
// port reaches its exact and its wildcard virtual hosts.
func TestFindVhostIgnoringPort(t *testing.T) {
	rc := routeConfig("r",
		virtualHost("exact", []string{"example.com"}),
		virtualHost("suffix", []string{"*.example.com"}),
		virtualHost("prefix", []string{"foo.*"}),
		virtualHost("v6", []string{"[::1]"}),
	)
	rc.IgnorePortInHostMatching = true
	rt, err := compileRoutes(rc, nil, nil, newVhostCache(nil))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"example.com:8080":   "exact",
		"example.com":        "exact",
		"a.example.com:8443": "suffix",
		"foo.bar:80":         "prefix",
		"[::1]:8080":         "v6",
		"[::1]":              "v6", // the colons inside the brackets are not a port
		"other:80":           "",
	} {
		got := rt.findVhost(lowerASCII(host))
		if name := ""; got != nil {
			name = got.name
			if name != want {
				t.Errorf("host %q: got %s, want %q", host, name, want)
			}
		} else if want != "" {
			t.Errorf("host %q: no virtual host, want %s", host, want)
		}
	}
	// Without the flag the port is part of the host, as in Envoy.
	rc.IgnorePortInHostMatching = false
	rt, err = compileRoutes(rc, nil, nil, newVhostCache(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.findVhost("a.example.com:8443"); got != nil {
		t.Errorf("without ignore_port_in_host_matching, a.example.com:8443 matched %s", got.name)
	}
}

// TestLeadingDotServerNameOverlapsWildcard mirrors Envoy's filter chain
// manager, which keys "*.x.example.com" as ".x.example.com".
func TestLeadingDotServerNameOverlapsWildcard(t *testing.T) {
	for _, names := range [][2]string{{".x.example.com", "*.x.example.com"}, {"A.example.com", "a.example.com"}} {
		l := tlsListener("l", sniChain{names: names[:1], secret: "s"}, sniChain{names: names[1:], secret: "s"})
		env := &compileEnv{opts: &Options{}, routes: map[string]*routeTable{"l": {}}, secrets: map[string]*tls.Certificate{"s": {}}}
		if _, err := compileListener(l, env); err == nil || !strings.Contains(err.Error(), "overlapping matching rules") {
			t.Errorf("%q and %q: err = %v, want overlapping matching rules", names[0], names[1], err)
		}
	}
}

func TestDuplicateDomainRejected(t *testing.T) {
	rc := routeConfig("r", virtualHost("a", []string{"x.com"}), virtualHost("b", []string{"X.com"}))
	if _, err := compileRoutes(rc, nil, nil, newVhostCache(nil)); err == nil || !strings.Contains(err.Error(), "virtual_hosts[1].domains[0]") {
		t.Fatalf("want duplicate domain error, got %v", err)
	}
}

func TestChainForSNI(t *testing.T) {
	a, b, c := &filterChain{}, &filterChain{}, &filterChain{}
	l := &listenerConf{tls: true,
		sniExact: map[string]*filterChain{"a.example.com": a},
		sniWild:  map[string]*filterChain{".example.com": b, ".sub.example.com": c},
	}
	for sni, want := range map[string]*filterChain{
		"a.example.com":     a,
		"A.Example.com":     a,
		"b.example.com":     b,
		"x.y.example.com":   b,
		"x.sub.example.com": c, // most specific wildcard
		"example.com":       nil,
		"":                  nil,
		"other.org":         nil,
	} {
		if got := l.chainForSNI(sni); got != want {
			t.Errorf("sni %q: wrong chain", sni)
		}
	}
	l.sniAny = c
	if l.chainForSNI("other.org") != c {
		t.Errorf("chain without server_names should catch the rest")
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":            "/a/b",
		"/a/./b":          "/a/b",
		"/a/../b":         "/b",
		"/../a":           "/a",
		"/a/%2e%2E/b":     "/b",
		"/a/%41%2fb":      "/a/A%2Fb",
		"/a\\b":           "/a/b",
		"/a/b/..":         "/a/",
		"/a//b":           "/a//b", // merge_slashes is off
		"/a/.hidden/x":    "/a/.hidden/x",
		"/caf%C3%A9/./x":  "/caf%C3%A9/x",
		"/a/b/./":         "/a/b/",
		"/a/%7euser/%2D.": "/a/~user/-.",
	} {
		if got := normalizePath(in, true, false); got != want {
			t.Errorf("normalize %q = %q, want %q", in, got, want)
		}
	}
	if got := normalizePath("/a//b///c", false, true); got != "/a/b/c" {
		t.Errorf("merge slashes: %q", got)
	}
}

func TestLiteralHeaderValue(t *testing.T) {
	if v, err := literalHeaderValue("100%% sure", "p"); err != nil || v != "100% sure" {
		t.Fatalf("got %q %v", v, err)
	}
	if _, err := literalHeaderValue("%DOWNSTREAM_REMOTE_ADDRESS%", "p"); err == nil {
		t.Fatal("substitutions must be rejected, not sent literally")
	}
	if _, err := literalHeaderValue("50%", "p"); err == nil {
		t.Fatal("an unterminated % must be rejected like Envoy does")
	}
}

func TestHeaderMutationOrder(t *testing.T) {
	mk := func(mostSpecific bool) []headerOp {
		r := routeSplit(prefixMatch("/"), split{cluster: "c", weight: 1, headers: map[string]string{"x-who": "split"}})
		r.RequestHeadersToAdd = setHeaders(map[string]string{"x-who": "route"})
		r.RequestHeadersToRemove = []string{"x-gone"}
		rc := routeConfig("r", virtualHost("v", []string{"*"}, r))
		rc.MostSpecificHeaderMutationsWins = mostSpecific
		rt, err := compileRoutes(rc, nil, map[string]*cluster{"c": {name: "c"}}, newVhostCache(nil))
		if err != nil {
			t.Fatal(err)
		}
		return rt.index.star.routes[0].fwd.targets[0].ops
	}
	apply := func(ops []headerOp) http.Header {
		h := http.Header{"X-Who": {"client"}, "X-Gone": {"x"}}
		for _, op := range ops {
			switch op.kind {
			case opRemove:
				delete(h, op.key)
			case opOverwriteOrAdd:
				h[op.key] = op.value
			}
		}
		return h
	}
	if got := apply(mk(true)).Get("X-Who"); got != "split" {
		t.Errorf("most_specific_header_mutations_wins=true: got %q, want split", got)
	}
	if got := apply(mk(false)).Get("X-Who"); got != "route" {
		t.Errorf("most_specific_header_mutations_wins=false: got %q, want route", got)
	}
	if _, ok := apply(mk(true))["X-Gone"]; ok {
		t.Errorf("request_headers_to_remove not applied")
	}
}

func TestUnsupportedFieldsNamed(t *testing.T) {
	c := map[string]*cluster{"c": {name: "c"}}
	cases := map[string]func(r *routev3.Route){
		"routes[0].route.hash_policy[0].filter_state": func(r *routev3.Route) {
			action(r).HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "x"}}}}
		},
		"routes[0].match.case_sensitive": func(r *routev3.Route) { r.Match.CaseSensitive = wrapperspb.Bool(false) },
		"routes[0].match.headers[0].treat_missing_header_as_empty": func(r *routev3.Route) {
			withHeader(r.Match, "x", "y").Headers[0].TreatMissingHeaderAsEmpty = true
		},
		"routes[0].match.headers[0].string_match.ignore_case": func(r *routev3.Route) {
			withHeader(r.Match, "x", "y").Headers[0].GetStringMatch().IgnoreCase = true
		},
		"routes[0].request_headers_to_add[0].append": func(r *routev3.Route) {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "a", Value: "b"}, Append: wrapperspb.Bool(true)}}
		},
		"routes[0].response_headers_to_add[0].header.value": func(r *routev3.Route) {
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "a", Value: "%START_TIME%"}}}
		},
		"routes[0].route.request_mirror_policies[0].cluster_header": func(r *routev3.Route) {
			action(r).RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{ClusterHeader: "x-mirror"}}
		},
		"routes[0].route.retry_policy.retry_on": func(r *routev3.Route) {
			action(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,refused-stream"}
		},
		"routes[0].request_headers_to_add[0].header.key": func(r *routev3.Route) {
			r.RequestHeadersToAdd = setHeaders(map[string]string{":authority": "x"})
		},
	}
	for want, mutate := range cases {
		r := routeTo(prefixMatch("/"), "c")
		mutate(r)
		_, err := compileRoutes(routeConfig("r", virtualHost("v", []string{"*"}, r)), nil, c, newVhostCache(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got error %v", want, err)
		}
	}
}

// TestRegexOverProgramSizeRejected: weir-proxy refuses a regex over the
// RE2 program size that the release bootstrap lets Envoy accept, as Envoy
// does, and accepts one over Envoy's default of 100.
func TestRegexOverProgramSizeRejected(t *testing.T) {
	ok := routeConfig("r", virtualHost("v", []string{"*"}, &routev3.Route{Match: regexMatch(`^/api/v[0-9]{1,3}/users/[a-z0-9-]{1,64}$`),
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "x"}}}))
	if _, err := compileRoutes(ok, nil, nil, newVhostCache(nil)); err != nil {
		t.Fatalf("a regex of RE2 size 271 was refused: %v", err)
	}
	huge := routeConfig("r", virtualHost("v", []string{"*"}, &routev3.Route{Match: regexMatch(`/\pL{40}`),
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "x"}}}))
	if _, err := compileRoutes(huge, nil, nil, newVhostCache(nil)); err == nil || !strings.Contains(err.Error(), "max program size") {
		t.Fatalf("a regex of RE2 size 47,725 was accepted: %v", err)
	}
}

// TestClusterNotFoundResponseCode: without validate_clusters, a route to a
// cluster that is not configured answers its cluster_not_found_response_code
// (503 by default), as Envoy does; with it, the config is refused.
func TestClusterNotFoundResponseCode(t *testing.T) {
	echo := startBackend(t, "echo")
	rc := routeConfig("http", virtualHost("all", []string{"*"},
		routeTo(pathMatch("/default"), "not-configured"),
		routeTo(pathMatch("/500"), "not-configured"),
		routeTo(prefixMatch("/"), "echo"),
	))
	rc.ValidateClusters = wrapperspb.Bool(false)
	action(rc.VirtualHosts[0].Routes[1]).ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
	res := &Resources{Listeners: []*listenerv3.Listener{plainListener("http")}, Routes: []*routev3.RouteConfiguration{rc}}
	addBackends(res, false, echo)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	base := proxyURL(t, p, "http")
	for path, want := range map[string]int{"/default": 503, "/500": 500, "/x": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	rc.ValidateClusters = wrapperspb.Bool(true)
	if err := newTestProxy(t, Options{}).Apply(res); err == nil || !strings.Contains(err.Error(), "not-configured") {
		t.Errorf("with validate_clusters: Apply = %v, want the unknown cluster refused", err)
	}
}

// TestInvertedHeaderMatch follows Envoy's HeaderUtility::matchHeaders: a
// present header's result is inverted; a missing header fails a value
// match inverted or not, and an inverted presence check matches it.
func TestInvertedHeaderMatch(t *testing.T) {
	exact := func(v string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "x", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}}
	}
	present := &routev3.HeaderMatcher{Name: "x", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	for _, tc := range []struct {
		m      *routev3.HeaderMatcher
		header []string
		want   bool
	}{
		{exact("a"), []string{"a"}, false},
		{exact("a"), []string{"b"}, true},
		{exact("a"), nil, false},
		{present, []string{"a"}, false},
		{present, nil, true},
	} {
		hm, err := compileHeaderMatcher(tc.m, "m")
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		if tc.header != nil {
			h["X"] = tc.header
		}
		s := &stream{req: httpfilter.RequestHeaders{Method: "GET", Header: h}}
		if got := s.headersMatch([]headerMatcher{hm}); got != tc.want {
			t.Errorf("%v with x=%v: %v, want %v", tc.m, tc.header, got, tc.want)
		}
	}
}
