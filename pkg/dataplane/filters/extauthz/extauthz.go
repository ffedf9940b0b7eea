// Package extauthz is weir-proxy's envoy.filters.http.ext_authz for an
// HTTP authorization service, with Envoy's semantics.
//
// For each request the filter sends the service a check: the request's
// method, its :authority as Host, the path path_override (or path_prefix
// followed by the request's path), the request headers allowed_headers
// admits (and always authorization), no body, and headers_to_add, whose
// values may copy request headers with %REQ(name)%. A 200 answer lets the
// request through, with the answer's headers that allowed_upstream_headers
// admits set on it (and those named by x-envoy-auth-headers-to-remove
// removed). Any other answer below 500 goes back to the client as it is:
// status, body, and the headers allowed_client_headers admits (all of them
// when unset). A failed check (no answer, a timeout, a 5xx, an unknown
// cluster) lets the request through with failure_mode_allow, and is
// otherwise answered status_on_error (403 by default) with no body.
//
// A route's ExtAuthzPerRoute turns the filter off (disabled) or names its
// own service (check_settings.service_override.http_service), which then
// replaces the listener's.
package extauthz

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &extauthzv3.ExtAuthz{} }
func (factory) RouteConfigType() proto.Message { return &extauthzv3.ExtAuthzPerRoute{} }

// maxDeniedBody bounds the body of a denying answer passed to the client.
const maxDeniedBody = 64 << 10

// config is a compiled ExtAuthz.
type config struct {
	svc           *service
	allowed       matchers // request headers sent to the service
	statusOnError int
	failOpen      bool
}

// service is a compiled HttpService.
type service struct {
	cluster          string
	timeout          time.Duration
	pathPrefix, path string // path replaces the request's when set
	headersToAdd     []headerToAdd
	upstream, client matchers
}

type headerToAdd struct {
	name  string
	value httpfilter.HeaderValue
}

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	e := m.(*extauthzv3.ExtAuthz)
	if bad := httpfilter.UnsupportedField(e, "http_service", "transport_api_version", "allowed_headers", "status_on_error", "failure_mode_allow", "stat_prefix"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if e.GetHttpService() == nil {
		return nil, fmt.Errorf("http_service: required by weir-proxy (it has no gRPC authorization client)")
	}
	c := &config{statusOnError: http.StatusForbidden, failOpen: e.GetFailureModeAllow()}
	if code := int(e.GetStatusOnError().GetCode()); code != 0 {
		c.statusOnError = code
	}
	var err error
	if c.svc, err = compileService(e.GetHttpService(), "http_service"); err != nil {
		return nil, err
	}
	if c.allowed, err = compileMatchers(e.GetAllowedHeaders(), "allowed_headers"); err != nil {
		return nil, err
	}
	return c, nil
}

// routeConfig is a compiled ExtAuthzPerRoute.
type routeConfig struct {
	disabled bool
	svc      *service
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*extauthzv3.ExtAuthzPerRoute)
	switch o := pr.GetOverride().(type) {
	case *extauthzv3.ExtAuthzPerRoute_Disabled:
		return &routeConfig{disabled: o.Disabled}, nil
	case *extauthzv3.ExtAuthzPerRoute_CheckSettings:
		cs := o.CheckSettings
		// context_extensions reach only gRPC services, as in Envoy.
		if bad := httpfilter.UnsupportedField(cs, "context_extensions", "disable_request_body_buffering", "http_service"); bad != "" {
			return nil, fmt.Errorf("check_settings.%s: not supported by weir-proxy", bad)
		}
		rc := &routeConfig{}
		if hs := cs.GetHttpService(); hs != nil {
			svc, err := compileService(hs, "check_settings.http_service")
			if err != nil {
				return nil, err
			}
			rc.svc = svc
		}
		return rc, nil
	}
	return nil, fmt.Errorf("override: one of disabled or check_settings is required")
}

func compileService(hs *extauthzv3.HttpService, path string) (*service, error) {
	if bad := httpfilter.UnsupportedField(hs, "server_uri", "path_prefix", "path_override", "authorization_request", "authorization_response"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	su := hs.GetServerUri()
	if su.GetCluster() == "" {
		return nil, fmt.Errorf("%s.server_uri.cluster: required", path)
	}
	// Envoy 1.38: a 0s timeout is none.
	s := &service{cluster: su.GetCluster(), timeout: su.GetTimeout().AsDuration(), pathPrefix: hs.GetPathPrefix(), path: hs.GetPathOverride()}
	if s.path != "" && s.pathPrefix != "" {
		return nil, fmt.Errorf("%s: path_prefix and path_override cannot both be set", path)
	}
	for _, p := range []string{s.path, s.pathPrefix} {
		if p != "" && !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("%s: %q does not start with /", path, p)
		}
	}
	if ar := hs.GetAuthorizationRequest(); ar != nil {
		if bad := httpfilter.UnsupportedField(ar, "headers_to_add"); bad != "" {
			return nil, fmt.Errorf("%s.authorization_request.%s: not supported by weir-proxy", path, bad)
		}
		for i, h := range ar.GetHeadersToAdd() {
			hp := fmt.Sprintf("%s.authorization_request.headers_to_add[%d]", path, i)
			if bad := httpfilter.UnsupportedField(h, "key", "value"); bad != "" {
				return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", hp, bad)
			}
			name := strings.ToLower(h.GetKey())
			if name == "host" || strings.HasPrefix(name, ":") {
				return nil, fmt.Errorf("%s.key: %q cannot be set", hp, h.GetKey())
			}
			parts, err := httpfilter.CompileHeaderValue(h.GetValue())
			if err != nil {
				return nil, fmt.Errorf("%s.value: %w", hp, err)
			}
			s.headersToAdd = append(s.headersToAdd, headerToAdd{name: http.CanonicalHeaderKey(name), value: parts})
		}
	}
	if ar := hs.GetAuthorizationResponse(); ar != nil {
		if bad := httpfilter.UnsupportedField(ar, "allowed_upstream_headers", "allowed_client_headers"); bad != "" {
			return nil, fmt.Errorf("%s.authorization_response.%s: not supported by weir-proxy", path, bad)
		}
		var err error
		if s.upstream, err = compileMatchers(ar.GetAllowedUpstreamHeaders(), path+".authorization_response.allowed_upstream_headers"); err != nil {
			return nil, err
		}
		if s.client, err = compileMatchers(ar.GetAllowedClientHeaders(), path+".authorization_response.allowed_client_headers"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// matchers is a compiled ListStringMatcher; nil matches nothing.
type matchers []func(string) bool

func (ms matchers) match(s string) bool {
	for _, m := range ms {
		if m(s) {
			return true
		}
	}
	return false
}

func compileMatchers(l *matcherv3.ListStringMatcher, path string) (matchers, error) {
	var out matchers
	for i, m := range l.GetPatterns() {
		p := fmt.Sprintf("%s.patterns[%d]", path, i)
		match, err := httpfilter.CompileStringMatcher(m, p)
		if err != nil {
			return nil, err
		}
		out = append(out, match)
	}
	return out, nil
}

// hopByHop are never sent to the service nor copied from its answer.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{c: c, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	c  *config
	cb httpfilter.Callbacks
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	svc := f.c.svc
	if rc, ok := f.cb.PerRouteConfig().(*routeConfig); ok {
		if rc.disabled {
			return httpfilter.Continue
		}
		if rc.svc != nil {
			svc = rc.svc
		}
	}
	resp, err := f.check(svc, h)
	if err != nil || resp.StatusCode >= 500 || resp.StatusCode < 200 {
		if resp != nil {
			resp.Body.Close()
		}
		if f.c.failOpen {
			return httpfilter.Continue
		}
		f.cb.SendLocalReply(f.c.statusOnError, "", nil, "ext_authz_error")
		return httpfilter.StopIteration
	}
	defer resp.Body.Close()
	// Envoy takes this header out of the answer before matching any.
	toRemove := resp.Header.Values("X-Envoy-Auth-Headers-To-Remove")
	delete(resp.Header, "X-Envoy-Auth-Headers-To-Remove")
	if resp.StatusCode == http.StatusOK {
		// Drain a little, so the connection to the service is reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		for name, vv := range resp.Header {
			if !hopByHop[name] && name != "Host" && svc.upstream.match(strings.ToLower(name)) {
				h.Header[name] = vv
			}
		}
		for _, name := range toRemove {
			for n := range strings.SplitSeq(name, ",") {
				if n = strings.TrimSpace(n); n != "" && !strings.EqualFold(n, "host") {
					h.Header.Del(n)
				}
			}
		}
		return httpfilter.Continue
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxDeniedBody))
	out := http.Header{}
	for name, vv := range resp.Header {
		if hopByHop[name] {
			continue
		}
		if len(svc.client) == 0 || svc.client.match(strings.ToLower(name)) || name == "Www-Authenticate" || name == "Location" {
			out[name] = vv
		}
	}
	f.cb.SendLocalReply(resp.StatusCode, string(body), out, "ext_authz_denied")
	return httpfilter.StopIteration
}

// check sends the authorization request for h to svc.
func (f *filter) check(svc *service, h *httpfilter.RequestHeaders) (*http.Response, error) {
	path := svc.path
	if path == "" {
		path = svc.pathPrefix + h.Path
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, err
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if svc.timeout > 0 {
		ctx, cancel = context.WithTimeout(f.cb.Context(), svc.timeout)
	} else {
		ctx, cancel = context.WithCancel(f.cb.Context())
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, "http://authz", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.URL = u
	req.Host = h.Authority
	req.ContentLength = 0
	for name, vv := range h.Header {
		if hopByHop[name] || !(name == "Authorization" || f.c.allowed.match(strings.ToLower(name))) {
			continue
		}
		sep := ","
		if name == "Cookie" {
			sep = "; "
		}
		req.Header[name] = []string{strings.Join(vv, sep)}
	}
	for _, a := range svc.headersToAdd {
		req.Header[a.name] = []string{a.value.Render(h, f.cb)}
	}
	resp, err := f.cb.SendToCluster(svc.cluster, req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
