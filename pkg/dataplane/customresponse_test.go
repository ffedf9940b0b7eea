package dataplane

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	customresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	localresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/local_response_policy/v3"
	redirectpolicyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/redirect_policy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const customResponseFilter = "envoy.filters.http.custom_response"

// statusIs is a custom response predicate on the response's status code.
func statusIs(codes ...int) *xdsmatcherv3.Matcher_MatcherList_Predicate {
	single := func(c int) *xdsmatcherv3.Matcher_MatcherList_Predicate {
		return &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
			SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
				Input: &xdscorev3.TypedExtensionConfig{Name: "status", TypedConfig: mustAny(&matcherv3.HttpResponseStatusCodeMatchInput{})},
				Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
					MatchPattern: &xdsmatcherv3.StringMatcher_Exact{Exact: strconv.Itoa(c)},
				}},
			},
		}}
	}
	if len(codes) == 1 {
		return single(codes[0])
	}
	l := &xdsmatcherv3.Matcher_MatcherList_Predicate_PredicateList{}
	for _, c := range codes {
		l.Predicate = append(l.Predicate, single(c))
	}
	return &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_OrMatcher{OrMatcher: l}}
}

// customResponses is a CustomResponse whose matchers run the policies in
// order.
func customResponses(pairs ...any) *customresponsev3.CustomResponse {
	ml := &xdsmatcherv3.Matcher_MatcherList{}
	for i := 0; i < len(pairs); i += 2 {
		ml.Matchers = append(ml.Matchers, &xdsmatcherv3.Matcher_MatcherList_FieldMatcher{
			Predicate: pairs[i].(*xdsmatcherv3.Matcher_MatcherList_Predicate),
			OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
				Name: "policy", TypedConfig: mustAny(pairs[i+1].(proto.Message)),
			}}},
		})
	}
	return &customresponsev3.CustomResponse{CustomResponseMatcher: &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: ml}}}
}

func requestHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

// TestCustomResponseRedirect checks Envoy's custom_response filter with
// its redirect policy on real sockets, as ingress-nginx's
// custom-http-errors uses it: a response whose status a matcher selects is
// dropped and the request goes, as a GET with no body and the policy's
// headers (formatted from the original request), to the URI the policy
// builds; that answer reaches the client, its status changed only when it
// is a 2xx and the policy says so. A redirect with no route, and a request
// whose status no matcher selects, get the original answer; the
// redirected request is never redirected again.
func TestCustomResponseRedirect(t *testing.T) {
	app := startBackend(t, "app")
	errorPages := &backend{name: "errors"}
	var (
		mu   sync.Mutex
		seen []echoReply
	)
	errorPages.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errorPages.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, echoReply{Path: r.URL.RequestURI(), Host: r.Host, Method: r.Method, Headers: r.Header.Clone()})
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		code := http.StatusOK
		if c, err := strconv.Atoi(r.Header.Get("X-Code")); err == nil {
			code = c
		}
		w.WriteHeader(code)
		io.WriteString(w, "error page for "+r.Header.Get("X-Original-Uri")+" body="+string(body))
	}))
	p := newTestProxy(t, Options{})

	toErrors := func(code int) *redirectpolicyv3.RedirectPolicy {
		return &redirectpolicyv3.RedirectPolicy{
			RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_RedirectAction{RedirectAction: &routev3.RedirectAction{
				HostRedirect: "errors.internal",
			}},
			RequestHeadersToAdd: []*corev3.HeaderValueOption{
				requestHeader("X-Code", strconv.Itoa(code)),
				requestHeader("X-Original-URI", "%REQ(:path)%"),
				requestHeader("X-Format", "%REQ(accept)%"),
			},
		}
	}
	perRoute := customResponses(
		statusIs(404), toErrors(404),
		statusIs(500, 503), toErrors(503),
		statusIs(418), &redirectpolicyv3.RedirectPolicy{
			RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_Uri{Uri: "http://errors.internal/teapot?page=1"},
			StatusCode:              wrapperspb.UInt32(299),
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{requestHeader("X-Custom", "teapot for %REQ(:path)%")},
		},
		statusIs(410), &redirectpolicyv3.RedirectPolicy{
			RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_RedirectAction{RedirectAction: &routev3.RedirectAction{HostRedirect: "nowhere.internal"}},
		},
		// A new path, on a host whose only route is that path, found
		// with the policy's headers set.
		statusIs(409), &redirectpolicyv3.RedirectPolicy{
			RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_RedirectAction{RedirectAction: &routev3.RedirectAction{
				HostRedirect: "pages.internal", PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/e409"},
			}},
			RequestHeadersToAdd: []*corev3.HeaderValueOption{requestHeader("X-Code", "409"), requestHeader("X-Token", "secret")},
		},
	)
	withCustom := func(r *routev3.Route, cr *customresponsev3.CustomResponse) *routev3.Route {
		r.TypedPerFilterConfig = map[string]*anypb.Any{customResponseFilter: mustAny(cr)}
		return r
	}
	errorsRoute := routeTo(prefixMatch("/"), errorPages.name)
	// As ingress-nginx's error location, the error backend is asked for "/".
	errorsRoute.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/[^?]*$"}, Substitution: "/"}
	// The policy's status and headers apply where the filter runs on the
	// redirected request's route, as in Envoy.
	teapot := withCustom(routeTo(pathMatch("/teapot"), errorPages.name), &customresponsev3.CustomResponse{})
	// Even a route that asks for it does not redirect a redirected request.
	errorsRoute = withCustom(errorsRoute, perRoute)
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{
			Name: customResponseFilter, Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&customresponsev3.CustomResponse{})},
		}))},
		Routes: []*routev3.RouteConfiguration{routeConfig("l",
			virtualHost("app", []string{"app.example.com"},
				withCustom(routeTo(prefixMatch("/down"), "down"), perRoute),
				routeTo(prefixMatch("/plain"), app.name),
				withCustom(routeTo(prefixMatch("/"), app.name), perRoute),
			),
			virtualHost("errors", []string{"errors.internal"}, teapot, errorsRoute),
			virtualHost("pages", []string{"pages.internal"}, routeTo(withHeader(pathMatch("/e409"), "x-token", "secret"), errorPages.name)),
		)},
	}
	addBackends(res, false, app, errorPages)
	res.Clusters = append(res.Clusters, edsCluster("down", false))
	res.Endpoints = append(res.Endpoints, cla("down"))
	mustApply(t, p, res)

	send := func(method, path, accept, body string) (*http.Response, string) {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		req, _ := http.NewRequest(method, proxyURL(t, p, "l")+path, strings.NewReader(body))
		req.Host = "app.example.com"
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		// The client has the whole answer: the error backend is done.
		mu.Lock()
		defer mu.Unlock()
		return resp, string(b)
	}
	checkErrorPage := func(what string, resp *http.Response, body string, code int, originalURI string) {
		t.Helper()
		want := "error page for " + originalURI + " body="
		if resp.StatusCode != code || body != want || len(seen) != 1 {
			t.Fatalf("%s: %d %q, error backend asked %d times; want %d %q once", what, resp.StatusCode, body, len(seen), code, want)
		}
		got := seen[0]
		if got.Method != http.MethodGet || got.Host != "errors.internal" || http.Header(got.Headers).Get("X-Code") != strconv.Itoa(code) ||
			http.Header(got.Headers).Get("X-Original-Uri") != originalURI || http.Header(got.Headers).Get("Content-Length") != "" {
			t.Errorf("%s: the error backend saw %+v", what, got)
		}
		if resp.Header.Get("X-Backend") != "" {
			t.Errorf("%s: the dropped response's headers reached the client: %v", what, resp.Header)
		}
	}

	resp, body := send(http.MethodGet, "/missing?status=404&x=1", "text/html", "")
	checkErrorPage("a 404", resp, body, 404, "/missing?status=404&x=1")
	if seen[0].Path != "/?status=404&x=1" || http.Header(seen[0].Headers).Get("X-Format") != "text/html" {
		t.Errorf("the error backend was asked for %q with X-Format %q; want / with the query, and the Accept header", seen[0].Path, http.Header(seen[0].Headers).Get("X-Format"))
	}
	if http.Header(seen[0].Headers).Get("X-Request-Id") == "" || strings.Count(http.Header(seen[0].Headers).Get("X-Forwarded-For"), "127.0.0.1") > 1 {
		t.Errorf("the redirected request lost the first's edge headers, or got them twice: %v", seen[0].Headers)
	}

	// A POST whose body the backend read: the redirect is a GET without it.
	resp, body = send(http.MethodPost, "/missing?status=404", "", "form=data")
	checkErrorPage("a POST answered 404", resp, body, 404, "/missing?status=404")

	// The router's own 503 (no endpoints) is a response like any other.
	resp, body = send(http.MethodGet, "/down", "", "")
	checkErrorPage("no healthy upstream", resp, body, 503, "/down")

	// The error backend's 503 is not redirected again, though its route
	// would redirect a 503.
	resp, body = send(http.MethodGet, "/boom?status=500", "", "")
	checkErrorPage("a 500", resp, body, 503, "/boom?status=500")

	// A 2xx from the new URI takes the policy's status and headers.
	resp, body = send(http.MethodGet, "/pot?status=418", "", "")
	if resp.StatusCode != 299 || resp.Header.Get("X-Custom") != "teapot for /teapot?page=1" || len(seen) != 1 || seen[0].Path != "/teapot?page=1" {
		t.Errorf("a 418 to a URI: %d %q %v, error backend saw %+v", resp.StatusCode, body, resp.Header, seen)
	}

	resp, body = send(http.MethodGet, "/conflict?status=409", "", "")
	if resp.StatusCode != 409 || !strings.HasPrefix(body, "error page for ") || len(seen) != 1 || seen[0].Path != "/e409?status=409" {
		t.Errorf("a 409 to a path of its own: %d %q, error backend saw %+v", resp.StatusCode, body, seen)
	}

	// No route for the new URI: the original answer goes out.
	resp, body = send(http.MethodGet, "/gone?status=410", "", "")
	if resp.StatusCode != http.StatusGone || resp.Header.Get("X-Backend") != "app" || !strings.Contains(body, `"backend":"app"`) || len(seen) != 0 {
		t.Errorf("a redirect with no route: %d %q", resp.StatusCode, body)
	}
	// Neither for a status no matcher selects, nor on a route without
	// the config.
	for _, path := range []string{"/other?status=402", "/plain?status=404"} {
		if resp, body = send(http.MethodGet, path, "", ""); resp.StatusCode == 200 || resp.Header.Get("X-Backend") != "app" || len(seen) != 0 {
			t.Errorf("%s: %d %q; want the app's own answer", path, resp.StatusCode, body)
		}
	}
	// A HEAD gets the error page's status and headers, and no body.
	if resp, body = send(http.MethodHead, "/missing?status=404", "", ""); resp.StatusCode != 404 || body != "" || len(seen) != 1 {
		t.Errorf("HEAD: %d %q, %d redirects", resp.StatusCode, body, len(seen))
	}
}

// TestCustomResponseRefusals checks that a custom_response config weir-proxy
// cannot honour is NACKed, naming the field.
func TestCustomResponseRefusals(t *testing.T) {
	p := newTestProxy(t, Options{})
	redirect := func(ra *routev3.RedirectAction) *redirectpolicyv3.RedirectPolicy {
		return &redirectpolicyv3.RedirectPolicy{RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_RedirectAction{RedirectAction: ra}}
	}
	tree := &customresponsev3.CustomResponse{CustomResponseMatcher: &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
		Input:    &xdscorev3.TypedExtensionConfig{Name: "status", TypedConfig: mustAny(&matcherv3.HttpResponseStatusCodeMatchInput{})},
		TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: &xdsmatcherv3.Matcher_MatcherTree_MatchMap{Map: map[string]*xdsmatcherv3.Matcher_OnMatch{"404": {OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{Name: "p", TypedConfig: mustAny(&redirectpolicyv3.RedirectPolicy{RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_Uri{Uri: "http://e/"}})}}}}}},
	}}}}
	for name, tc := range map[string]struct {
		cr   *customresponsev3.CustomResponse
		want string
	}{
		"a matcher tree":        {tree, "matcher_tree: not supported by weir-proxy"},
		"a local response":      {customResponses(statusIs(404), &localresponsev3.LocalResponsePolicy{}), "only RedirectPolicy"},
		"neither host nor path": {customResponses(statusIs(404), redirect(&routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}})), "at least one of host_redirect and path_redirect"},
		"a prefix rewrite":      {customResponses(statusIs(404), redirect(&routev3.RedirectAction{HostRedirect: "x", PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/"}})), "prefix_rewrite and regex_rewrite are not supported"},
		"a fragment":            {customResponses(statusIs(404), redirect(&routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/a#b"}})), "#fragment"},
		"a relative URI":        {customResponses(statusIs(404), &redirectpolicyv3.RedirectPolicy{RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_Uri{Uri: "/errors"}}), "not an absolute URI"},
		"a formatter it lacks":  {customResponses(statusIs(404), &redirectpolicyv3.RedirectPolicy{RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_Uri{Uri: "http://e/"}, RequestHeadersToAdd: []*corev3.HeaderValueOption{requestHeader("x", "%START_TIME%")}}), "request_headers_to_add[0].header.value"},
		"another matching input": {customResponses(&xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{Input: &xdscorev3.TypedExtensionConfig{Name: "h", TypedConfig: mustAny(&matcherv3.HttpResponseHeaderMatchInput{HeaderName: "x"})},
			Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{MatchPattern: &xdsmatcherv3.StringMatcher_Exact{Exact: "1"}}}}}}, redirect(&routev3.RedirectAction{HostRedirect: "x"})), "is not supported by weir-proxy"},
	} {
		res := &Resources{
			Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{
				Name: customResponseFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(tc.cr)},
			}))},
			Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, routeTo(prefixMatch("/"), "c")))},
		}
		res.Clusters = append(res.Clusters, edsCluster("c", false))
		err := p.Apply(res)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Apply = %v, want an error with %q", name, err, tc.want)
		}
	}
}
