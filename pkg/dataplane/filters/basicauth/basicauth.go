// Package basicauth is weir-proxy's envoy.filters.http.basic_auth: RFC
// 7617 credentials checked against an htpasswd list of {SHA} hashes, with
// Envoy's parsing, answers and per-route user lists. A request without a
// known user's password is answered 401 with a Basic challenge whose realm
// is the request's URL, as Envoy builds it. The Authorization header is
// passed on, as Envoy does. emit_dynamic_metadata is refused: nothing in
// weir-proxy reads dynamic metadata.
package basicauth

import (
	"crypto/sha1" //nolint:gosec // htpasswd's {SHA} scheme is SHA-1, as Envoy verifies it
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	basicauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &basicauthv3.BasicAuth{} }
func (factory) RouteConfigType() proto.Message { return &basicauthv3.BasicAuthPerRoute{} }

// users maps a user name to the base64 of its password's SHA-1.
type users map[string]string

type config struct {
	users users
	// header carries the credentials; forwardUser, when set, is
	// overwritten with the admitted user's name.
	header, forwardUser string
	allowMissing        bool
}

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	ba := m.(*basicauthv3.BasicAuth)
	if bad := httpfilter.UnsupportedField(ba, "users", "forward_username_header", "authentication_header", "allow_missing"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	text, err := inline(ba.GetUsers(), "users")
	if err != nil {
		return nil, err
	}
	if text == "" {
		return nil, fmt.Errorf("users: DataSource cannot be empty")
	}
	u, err := parseHtpasswd(text)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	c := &config{users: u, header: "Authorization", allowMissing: ba.GetAllowMissing()}
	if h := ba.GetAuthenticationHeader(); h != "" {
		if !httpguts.ValidHeaderFieldName(h) {
			return nil, fmt.Errorf("authentication_header: %q is not a header name", h)
		}
		c.header = http.CanonicalHeaderKey(h)
	}
	if h := ba.GetForwardUsernameHeader(); h != "" {
		if !httpguts.ValidHeaderFieldName(h) {
			return nil, fmt.Errorf("forward_username_header: %q is not a header name", h)
		}
		c.forwardUser = http.CanonicalHeaderKey(h)
	}
	return c, nil
}

// NewRouteConfig is a route's own user list, which replaces the
// listener's. An empty list admits no one, as in Envoy.
func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*basicauthv3.BasicAuthPerRoute)
	if bad := httpfilter.UnsupportedField(pr, "users"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if pr.GetUsers() == nil {
		return nil, fmt.Errorf("users: required")
	}
	text, err := inline(pr.GetUsers(), "users")
	if err != nil {
		return nil, err
	}
	u, err := parseHtpasswd(text)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	return u, nil
}

// inline reads an inline DataSource; a file is not read, since what the
// gateway serves must come from xDS alone.
func inline(ds *corev3.DataSource, path string) (string, error) {
	switch s := ds.GetSpecifier().(type) {
	case nil:
		return "", nil
	case *corev3.DataSource_InlineString:
		return s.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(s.InlineBytes), nil
	default:
		return "", fmt.Errorf("%s: only an inline DataSource is supported by weir-proxy", path)
	}
}

// parseHtpasswd reads users as Envoy does: one "name:{SHA}hash" per line,
// split at the first colon, skipping empty lines and lines starting with
// "#". Envoy trims nothing, so a "\r" left at a line's end is an error.
func parseHtpasswd(text string) (users, error) {
	out := users{}
	for i, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: invalid htpasswd format, username:password is expected", i+1)
		case name == "" || hash == "":
			return nil, fmt.Errorf("line %d: empty user name or password", i+1)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("line %d: duplicate users", i+1)
		}
		sum, ok := strings.CutPrefix(hash, "{SHA}")
		if !ok {
			// Neither the line nor its hash goes in the error: the
			// message reaches logs and the control plane.
			return nil, fmt.Errorf("line %d: unsupported htpasswd format: please use {SHA}", i+1)
		}
		if len(sum) != base64.StdEncoding.EncodedLen(sha1.Size) {
			return nil, fmt.Errorf("line %d: invalid htpasswd format, invalid SHA hash length", i+1)
		}
		out[name] = sum
	}
	return out, nil
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{c: c, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	c  *config
	cb httpfilter.Callbacks
}

// Envoy's answers to a request it does not admit, and their response code
// details.
const (
	missingCredentials = "User authentication failed. Missing username and password."
	notBasic           = "User authentication failed. Expected 'Basic' authentication scheme."
	badFormat          = "User authentication failed. Invalid basic credential format."
	badCredentials     = "User authentication failed. Invalid username/password combination."
)

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	us := f.c.users
	if route, ok := f.cb.PerRouteConfig().(users); ok {
		us = route
	}
	values := h.Header[f.c.header]
	if len(values) == 0 {
		if f.c.allowMissing {
			return httpfilter.Continue
		}
		return f.deny(h, missingCredentials, "no_credential_for_basic_auth")
	}
	encoded, ok := strings.CutPrefix(values[0], "Basic ")
	if !ok {
		if f.c.allowMissing {
			return httpfilter.Continue
		}
		return f.deny(h, notBasic, "invalid_scheme_for_basic_auth")
	}
	name, password, ok := decodeCredentials(encoded)
	if !ok {
		return f.deny(h, badFormat, "invalid_format_for_basic_auth")
	}
	want, known := us[name]
	sum := sha1.Sum([]byte(password)) //nolint:gosec // htpasswd's {SHA} scheme
	got := base64.StdEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !known {
		return f.deny(h, badCredentials, "invalid_credential_for_basic_auth")
	}
	if f.c.forwardUser != "" {
		h.Header[f.c.forwardUser] = []string{name}
	}
	return httpfilter.Continue
}

// decodeCredentials decodes "user:password" as Envoy does: standard
// base64, its padding optional, with no stray characters or bits; the
// name ends at the first colon.
func decodeCredentials(encoded string) (name, password string, ok bool) {
	for range 2 {
		encoded = strings.TrimSuffix(encoded, "=")
	}
	raw, err := base64.RawStdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

// deny answers 401 with Envoy's challenge, whose realm is the request's
// URL (its original path when a filter rewrote it, at most 256 bytes).
func (f *filter) deny(h *httpfilter.RequestHeaders, body, details string) httpfilter.Status {
	path := h.Header.Get("X-Envoy-Original-Path")
	if path == "" {
		path = h.Path
	}
	if len(path) > 256 {
		path = path[:256]
	}
	// Envoy's buildOriginalUri: :scheme, :authority and the path.
	realm := h.Scheme + "://" + h.Authority + path
	if !httpguts.ValidHeaderFieldValue(realm) {
		realm = h.Scheme + "://" + h.Authority
	}
	f.cb.SendLocalReply(http.StatusUnauthorized, body, http.Header{"Www-Authenticate": {`Basic realm="` + realm + `"`}}, details)
	return httpfilter.StopIteration
}
