package dataplane

import (
	"crypto/sha1" //nolint:gosec // htpasswd's {SHA}
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	basicauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// shaLine is an htpasswd line as `htpasswd -s` writes it.
func shaLine(user, password string) string {
	sum := sha1.Sum([]byte(password)) //nolint:gosec // htpasswd's {SHA}
	return user + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:])
}

func inlineUsers(lines ...string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Join(lines, "\n")}}
}

// TestBasicAuth checks Envoy's basic_auth on real sockets: a route's user
// list replaces the listener's; credentials are parsed as Envoy parses
// them; a request without a known user's password is answered 401 with a
// challenge naming the request's URL, and never reaches the backend; an
// admitted one keeps its Authorization header and gets the user's name in
// forward_username_header, whatever the client sent there.
func TestBasicAuth(t *testing.T) {
	echo := startBackend(t, "app")
	p := newTestProxy(t, Options{})
	route := func(path string, pr *basicauthv3.BasicAuthPerRoute) *routev3.Route {
		r := routeTo(prefixMatch(path), echo.name)
		if pr != nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.basic_auth": mustAny(pr)}
		}
		return r
	}
	listenerConfig := &basicauthv3.BasicAuth{
		Users:                 inlineUsers("# the listener's user, replaced on every route that has its own", shaLine("listener", "l")),
		ForwardUsernameHeader: "x-user",
	}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{
			Name: "envoy.filters.http.basic_auth", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(listenerConfig)},
		}))},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"},
			route("/nobody", &basicauthv3.BasicAuthPerRoute{Users: inlineUsers("")}),
			route("/plain", nil),
			route("/", &basicauthv3.BasicAuthPerRoute{Users: inlineUsers(shaLine("alice", "open sesame"), "", shaLine("bob", "pass:with:colons"))}),
		))},
	}
	addBackends(res, false, echo)
	mustApply(t, p, res)

	basic := func(userPass string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass)) }
	send := func(path string, header map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
		req.Host = "app.example.com"
		for k, v := range header {
			req.Header.Set(k, v)
		}
		before := echo.hits.Load()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if reached := echo.hits.Load() != before; reached != (resp.StatusCode == 200) {
			t.Fatalf("%s: %d, backend reached %v", path, resp.StatusCode, reached)
		}
		return resp, string(b)
	}

	for _, tc := range []struct {
		name, path, authorization, wantBody string
	}{
		{"no credentials", "/app?q=1", "", "User authentication failed. Missing username and password."},
		{"another scheme", "/app", "Bearer abc", "User authentication failed. Expected 'Basic' authentication scheme."},
		{"a lower-case scheme", "/app", "basic " + base64.StdEncoding.EncodeToString([]byte("alice:open sesame")), "User authentication failed. Expected 'Basic' authentication scheme."},
		{"not base64", "/app", "Basic !!!", "User authentication failed. Invalid basic credential format."},
		{"no colon", "/app", basic("alice"), "User authentication failed. Invalid basic credential format."},
		{"a wrong password", "/app", basic("alice:open sesame!"), "User authentication failed. Invalid username/password combination."},
		{"an unknown user", "/app", basic("carol:open sesame"), "User authentication failed. Invalid username/password combination."},
		{"the listener's user on a route with its own", "/app", basic("listener:l"), "User authentication failed. Invalid username/password combination."},
		{"an empty route list", "/nobody", basic("alice:open sesame"), "User authentication failed. Invalid username/password combination."},
	} {
		header := map[string]string{}
		if tc.authorization != "" {
			header["Authorization"] = tc.authorization
		}
		resp, body := send(tc.path, header)
		wantRealm := `Basic realm="http://app.example.com` + tc.path + `"`
		if resp.StatusCode != http.StatusUnauthorized || body != tc.wantBody || resp.Header.Get("Www-Authenticate") != wantRealm {
			t.Errorf("%s: %d %q, challenge %q; want 401 %q, challenge %q", tc.name, resp.StatusCode, body, resp.Header.Get("Www-Authenticate"), tc.wantBody, wantRealm)
		}
	}

	for _, tc := range []struct{ name, authorization, user string }{
		{"alice", basic("alice:open sesame"), "alice"},
		{"a password with colons", basic("bob:pass:with:colons"), "bob"},
		{"unpadded base64", strings.TrimRight(basic("alice:open sesame"), "="), "alice"},
	} {
		resp, body := send("/app", map[string]string{"Authorization": tc.authorization, "X-User": "mallory"})
		var seen echoReply
		if err := json.Unmarshal([]byte(body), &seen); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %q", tc.name, resp.StatusCode, body)
		}
		if got := seen.Headers["X-User"]; len(got) != 1 || got[0] != tc.user {
			t.Errorf("%s: the backend saw X-User %v, want [%s]", tc.name, got, tc.user)
		}
		if got := seen.Headers["Authorization"]; len(got) != 1 || got[0] != tc.authorization {
			t.Errorf("%s: the backend saw Authorization %v, want the client's", tc.name, got)
		}
	}
	if resp, _ := send("/plain", nil); resp.StatusCode != 200 {
		t.Errorf("a route without a user list, the filter disabled: %d", resp.StatusCode)
	}
}

// TestBasicAuthRefusesWhatEnvoyRefuses: a user list Envoy would refuse
// NACKs the update, and the last good config keeps serving.
func TestBasicAuthRefusesWhatEnvoyRefuses(t *testing.T) {
	for name, users := range map[string]string{
		"apr1 (MD5)":         "alice:$apr1$Vv8E6Bq1$3jkJ0t7U5oT9mC3eQ1lIb/",
		"bcrypt":             "alice:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC",
		"a short SHA":        "alice:{SHA}abc",
		"no colon":           "alice",
		"an empty password":  "alice:",
		"a duplicate user":   shaLine("alice", "a") + "\n" + shaLine("alice", "b"),
		"a carriage return":  shaLine("alice", "a") + "\r",
		"an empty user name": ":{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
	} {
		t.Run(name, func(t *testing.T) {
			echo := startBackend(t, "app")
			p := newTestProxy(t, Options{})
			good := &Resources{
				Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{
					Name: "envoy.filters.http.basic_auth", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&basicauthv3.BasicAuth{Users: inlineUsers(shaLine("n", "n"))})},
				}))},
				Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, routeTo(prefixMatch("/"), echo.name)))},
			}
			addBackends(good, false, echo)
			mustApply(t, p, good)
			bad := &Resources{Listeners: good.Listeners, Clusters: good.Clusters, Endpoints: good.Endpoints,
				Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, func() *routev3.Route {
					r := routeTo(prefixMatch("/"), echo.name)
					r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.basic_auth": mustAny(&basicauthv3.BasicAuthPerRoute{Users: inlineUsers(users)})}
					return r
				}()))},
			}
			err := p.Apply(bad)
			if err == nil {
				t.Fatal("applied a user list Envoy refuses")
			}
			if strings.Contains(err.Error(), "$") || strings.Contains(err.Error(), "{SHA}W") {
				t.Errorf("the refusal quotes a hash: %v", err)
			}
			resp, err := http.Get(proxyURL(t, p, "l") + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("after the refused update: %d, want the last good config", resp.StatusCode)
			}
		})
	}
}
