package translate

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	basicauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// basicAuthFilter is Envoy's basic_auth filter, which ir.BasicAuth runs.
const basicAuthFilter = "envoy.filters.http.basic_auth"

// basicAuthNobody is the listener-level user list, which Envoy requires to
// be non-empty. Every route that turns the filter on replaces it with its
// own (BasicAuthPerRoute); nobody knows a password whose SHA-1 is all
// zeros, so even a route that did not would admit no one.
const basicAuthNobody = "weir-nobody:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="

func basicAuthListenerConfig() *basicauthv3.BasicAuth {
	return &basicauthv3.BasicAuth{Users: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: basicAuthNobody}}}
}

// basicAuthPerRoute is a route's user list, checked as Envoy checks it
// when it loads the config, so a bad list fails the route, not the
// listener. An empty list admits no one.
func basicAuthPerRoute(a *ir.BasicAuth) (*basicauthv3.BasicAuthPerRoute, error) {
	var b strings.Builder
	seen := make(map[string]bool, len(a.Users))
	for _, u := range a.Users {
		if err := validHtpasswdUser(u); err != nil {
			return nil, err
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("basic auth user %q is listed twice", u.Name)
		}
		seen[u.Name] = true
		b.WriteString(u.Name)
		b.WriteByte(':')
		b.WriteString(u.Hash)
		b.WriteByte('\n')
	}
	return &basicauthv3.BasicAuthPerRoute{Users: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String()}}}, nil
}

// validHtpasswdUser reports why Envoy would refuse u's line. Envoy splits
// a line at its first colon and skips those starting with "#".
func validHtpasswdUser(u ir.HtpasswdUser) error {
	switch {
	case u.Name == "":
		return fmt.Errorf("basic auth user without a name")
	case !utf8.ValidString(u.Name) || !utf8.ValidString(u.Hash):
		return fmt.Errorf("basic auth user %+q: not UTF-8", u.Name)
	case strings.ContainsAny(u.Name, ":\r\n") || strings.HasPrefix(u.Name, "#"):
		return fmt.Errorf("basic auth user name %q has a colon, a line break or a leading #", u.Name)
	}
	sum, ok := strings.CutPrefix(u.Hash, "{SHA}")
	if !ok {
		return fmt.Errorf("basic auth user %q: only {SHA} password hashes can be served (Envoy's basic_auth verifies no other)", u.Name)
	}
	if raw, err := base64.StdEncoding.DecodeString(sum); err != nil || len(raw) != 20 || len(sum) != 28 {
		return fmt.Errorf("basic auth user %q: {SHA} hash is not the base64 of a SHA-1", u.Name)
	}
	return nil
}
