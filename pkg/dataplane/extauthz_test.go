package dataplane

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// authCheck is what the authorization service saw of one check.
type authCheck struct {
	Method, Path, Host, Body string
	Header                   http.Header
}

// startAuthService answers checks: "Bearer good" is admitted with
// X-User, a request asking for it is redirected or fails, and anything
// else is refused 401 with a challenge.
func startAuthService(t *testing.T) (*backend, func() []authCheck) {
	t.Helper()
	var mu sync.Mutex
	var seen []authCheck
	b := &backend{name: "auth"}
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, authCheck{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Body: string(body), Header: r.Header.Clone()})
		mu.Unlock()
		switch {
		case r.Header.Get("X-Want") == "redirect":
			w.Header().Set("Location", "https://login.example.com/start")
			w.Header().Set("Set-Cookie", "state=1")
			w.WriteHeader(http.StatusFound)
		case r.Header.Get("X-Want") == "fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Header.Get("Authorization") == "Bearer good":
			w.Header().Set("X-User", "alice")
			w.Header().Set("X-Not-Passed", "1")
		case r.Header.Get("Authorization") == "Bearer anonymous":
			// Admitted, with no user to set.
		case r.Header.Get("Authorization") == "Bearer accepted":
			// oauth2-proxy's /oauth2/auth answers 202, which Envoy
			// does not take as admitting.
			w.WriteHeader(http.StatusAccepted)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "who are you?")
		}
	}))
	return b, func() []authCheck {
		mu.Lock()
		defer mu.Unlock()
		return append([]authCheck(nil), seen...)
	}
}

// noRedirects hands a redirect back instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestExtAuthz checks Envoy's ext_authz with an HTTP service on real
// sockets: the check carries the request's method, Host and headers (not
// its body) to path_override, with headers_to_add copying request headers;
// a 200 admits the request with the allowed answer headers set on it; any
// other answer reaches the client as it is; a 5xx or an unknown cluster is
// answered status_on_error; a route may turn the filter off.
func TestExtAuthz(t *testing.T) {
	echo := startBackend(t, "app")
	auth, checks := startAuthService(t)
	p := newTestProxy(t, Options{})
	service := func(cluster string) *extauthzv3.ExtAuthzPerRoute {
		return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
			ServiceOverride: &extauthzv3.CheckSettings_HttpService{HttpService: &extauthzv3.HttpService{
				ServerUri:    &corev3.HttpUri{Uri: "http://auth", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster}, Timeout: durationpb.New(5 * time.Second)},
				PathOverride: "/check?from=gateway",
				AuthorizationRequest: &extauthzv3.AuthorizationRequest{HeadersToAdd: []*corev3.HeaderValue{
					{Key: "x-original-url", Value: "%REQ(x-forwarded-proto)%://%REQ(:authority)%%REQ(:path)%"},
					{Key: "x-original-method", Value: "%REQ(:method)%"},
					{Key: "x-real-ip", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
				}},
				AuthorizationResponse: &extauthzv3.AuthorizationResponse{AllowedUpstreamHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{
					{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x-user"}, IgnoreCase: true},
				}}},
			}},
		}}}
	}
	route := func(path string, pr *extauthzv3.ExtAuthzPerRoute) *routev3.Route {
		r := routeTo(prefixMatch(path), echo.name)
		if pr != nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{
				"envoy.filters.http.ext_authz": mustAny(pr),
				// The client's X-User never passes: only the service's.
				"envoy.filters.http.header_mutation": mustAny(&headermutationv3.HeaderMutationPerRoute{Mutations: &headermutationv3.Mutations{
					RequestMutations: []*mutationv3.HeaderMutation{{Action: &mutationv3.HeaderMutation_Remove{Remove: "x-user"}}},
				}}),
			}
		}
		return r
	}
	listenerConfig := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{Uri: "http://unset", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "unset"}, Timeout: durationpb.New(time.Second)},
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		AllowedHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}},
		}},
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_InternalServerError},
	}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{
			Name: "envoy.filters.http.header_mutation", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&headermutationv3.HeaderMutation{})},
		}, &hcmv3.HttpFilter{
			Name: "envoy.filters.http.ext_authz", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(listenerConfig)},
		}))},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"},
			route("/off", &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}),
			route("/lost", service("no-such-cluster")),
			route("/plain", nil),
			route("/", service(auth.name)),
		))},
	}
	addBackends(res, false, echo, auth)
	mustApply(t, p, res)

	send := func(method, path string, header map[string]string, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, proxyURL(t, p, "l")+path, strings.NewReader(body))
		req.Host = "app.example.com"
		for k, v := range header {
			req.Header.Set(k, v)
		}
		before := echo.hits.Load()
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got := string(b)
		if reached := echo.hits.Load() != before; reached != (resp.StatusCode == 200) {
			t.Fatalf("%s %s: %d, backend reached %v", method, path, resp.StatusCode, reached)
		}
		return resp, got
	}

	resp, body := send(http.MethodPost, "/app/x?y=1", map[string]string{"Authorization": "Bearer good", "Cookie": "session=abc", "X-User": "mallory", "X-Real-IP": "10.9.9.9"}, "payload")
	var seen echoReply
	if err := json.Unmarshal([]byte(body), &seen); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admitted request: %d %q", resp.StatusCode, body)
	}
	if got := seen.Headers["X-User"]; len(got) != 1 || got[0] != "alice" || seen.Headers["X-Not-Passed"] != nil {
		t.Errorf("the backend saw X-User %v, X-Not-Passed %v; want alice from the service, and nothing else of its answer", got, seen.Headers["X-Not-Passed"])
	}
	c := checks()[0]
	if c.Method != http.MethodPost || c.Path != "/check?from=gateway" || c.Host != "app.example.com" || c.Body != "" ||
		c.Header.Get("Cookie") != "session=abc" || c.Header.Get("X-Original-Url") != "http://app.example.com/app/x?y=1" || c.Header.Get("X-Original-Method") != "POST" ||
		c.Header.Get("X-Real-Ip") != "127.0.0.1" || c.Header.Get("X-User") != "" {
		t.Errorf("the check: %+v", c)
	}

	// Admitted without a user: the client's own X-User does not pass.
	resp, body = send(http.MethodGet, "/app", map[string]string{"Authorization": "Bearer anonymous", "X-User": "mallory"}, "")
	seen = echoReply{}
	if err := json.Unmarshal([]byte(body), &seen); err != nil || resp.StatusCode != 200 || seen.Headers["X-User"] != nil {
		t.Errorf("admitted without a user: %d, the backend saw X-User %v", resp.StatusCode, seen.Headers["X-User"])
	}
	if resp, _ = send(http.MethodGet, "/app", map[string]string{"Authorization": "Bearer accepted"}, ""); resp.StatusCode != http.StatusAccepted {
		t.Errorf("a 202 from the service: %d, want it passed back as Envoy does", resp.StatusCode)
	}

	resp, body = send(http.MethodGet, "/app", nil, "")
	if resp.StatusCode != 401 || body != "who are you?" || resp.Header.Get("Www-Authenticate") != `Bearer realm="test"` {
		t.Errorf("refused: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = send(http.MethodGet, "/app", map[string]string{"X-Want": "redirect"}, "")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://login.example.com/start" || resp.Header.Get("Set-Cookie") != "state=1" {
		t.Errorf("redirected: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body = send(http.MethodGet, "/app", map[string]string{"X-Want": "fail"}, ""); resp.StatusCode != 500 || body != "" {
		t.Errorf("a failing service: %d %q, want status_on_error 500", resp.StatusCode, body)
	}
	if resp, _ = send(http.MethodGet, "/lost", map[string]string{"Authorization": "Bearer good"}, ""); resp.StatusCode != 500 {
		t.Errorf("an unknown cluster: %d, want 500", resp.StatusCode)
	}
	n := len(checks())
	for _, path := range []string{"/off", "/plain"} {
		if resp, _ = send(http.MethodGet, path, nil, ""); resp.StatusCode != 200 {
			t.Errorf("%s: %d, want the filter off", path, resp.StatusCode)
		}
	}
	if len(checks()) != n {
		t.Errorf("routes without the filter were checked")
	}
}
