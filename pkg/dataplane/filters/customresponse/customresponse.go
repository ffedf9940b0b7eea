// Package customresponse is weir-proxy's envoy.filters.http.custom_response
// with Envoy's redirect policy: a response whose status a matcher selects
// is dropped, and the request is sent again, internally, to another URI
// (Envoy's recreateStream); what that answers goes to the client.
// ingress-nginx's custom-http-errors runs on it.
package customresponse

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	customresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	redirectpolicyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/redirect_policy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

// stateKey is the request state a redirect leaves for the recreated
// stream, under the name Envoy gives its filter state object.
const stateKey = "envoy.filters.http.custom_response"

type factory struct{}

func (factory) ConfigType() proto.Message { return &customresponsev3.CustomResponse{} }

// RouteConfigType is the same message: Envoy reads a route's, a virtual
// host's and the filter's own config alike.
func (factory) RouteConfigType() proto.Message { return &customresponsev3.CustomResponse{} }

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	return compile(m.(*customresponsev3.CustomResponse))
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	return compile(m.(*customresponsev3.CustomResponse))
}

// config is a compiled CustomResponse: its matcher, nil when it has none.
type config struct{ m *matcher }

// RecreatesStreams implements httpfilter.StreamRecreator.
func (*config) RecreatesStreams() {}

func compile(c *customresponsev3.CustomResponse) (*config, error) {
	if bad := httpfilter.UnsupportedField(c, "custom_response_matcher"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if c.GetCustomResponseMatcher() == nil {
		return &config{}, nil
	}
	m, err := compileMatcher(c.GetCustomResponseMatcher(), "custom_response_matcher")
	if err != nil {
		return nil, err
	}
	return &config{m: m}, nil
}

// matcher is a compiled xds.type.matcher.v3.Matcher of a matcher_list:
// the first field matcher whose predicate holds gives the policy, else
// on_no_match does (nil: none).
type matcher struct {
	fields    []fieldMatcher
	onNoMatch *policy
}

type fieldMatcher struct {
	pred   predicate
	action *policy
}

// predicate is evaluated on the response's status code.
type predicate func(status int) bool

func compileMatcher(m *xdsmatcherv3.Matcher, path string) (*matcher, error) {
	if bad := httpfilter.UnsupportedField(m, "matcher_list", "on_no_match"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	if m.GetMatcherList() == nil {
		return nil, fmt.Errorf("%s.matcher_list: required by weir-proxy (it has no matcher_tree)", path)
	}
	out := &matcher{}
	for i, fm := range m.GetMatcherList().GetMatchers() {
		fp := fmt.Sprintf("%s.matcher_list.matchers[%d]", path, i)
		pred, err := compilePredicate(fm.GetPredicate(), fp+".predicate")
		if err != nil {
			return nil, err
		}
		act, err := compileOnMatch(fm.GetOnMatch(), fp+".on_match")
		if err != nil {
			return nil, err
		}
		out.fields = append(out.fields, fieldMatcher{pred: pred, action: act})
	}
	if nm := m.GetOnNoMatch(); nm != nil {
		act, err := compileOnMatch(nm, path+".on_no_match")
		if err != nil {
			return nil, err
		}
		out.onNoMatch = act
	}
	return out, nil
}

// find is the policy for a response status, or nil.
func (m *matcher) find(status int) *policy {
	if m == nil {
		return nil
	}
	for _, f := range m.fields {
		if f.pred(status) {
			return f.action
		}
	}
	return m.onNoMatch
}

func compileOnMatch(om *xdsmatcherv3.Matcher_OnMatch, path string) (*policy, error) {
	if om.GetAction() == nil {
		return nil, fmt.Errorf("%s.action: required by weir-proxy (it has no nested matchers)", path)
	}
	if om.GetKeepMatching() {
		return nil, fmt.Errorf("%s.keep_matching: not supported by weir-proxy", path)
	}
	tc := om.GetAction().GetTypedConfig()
	var rp redirectpolicyv3.RedirectPolicy
	if tc.MessageIs(&rp) {
		if err := tc.UnmarshalTo(&rp); err != nil {
			return nil, fmt.Errorf("%s.action.typed_config: %w", path, err)
		}
		if err := rp.Validate(); err != nil {
			return nil, fmt.Errorf("%s.action.typed_config: %w", path, err)
		}
		return compilePolicy(&rp, path+".action.typed_config")
	}
	return nil, fmt.Errorf("%s.action.typed_config: policy type %q is not supported by weir-proxy (only RedirectPolicy)", path, tc.GetTypeUrl())
}

func compilePredicate(p *xdsmatcherv3.Matcher_MatcherList_Predicate, path string) (predicate, error) {
	list := func(l *xdsmatcherv3.Matcher_MatcherList_Predicate_PredicateList, lp string) ([]predicate, error) {
		if len(l.GetPredicate()) < 2 {
			return nil, fmt.Errorf("%s.predicate: at least 2 are required", lp)
		}
		var out []predicate
		for i, q := range l.GetPredicate() {
			c, err := compilePredicate(q, fmt.Sprintf("%s.predicate[%d]", lp, i))
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
	switch t := p.GetMatchType().(type) {
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_:
		return compileSingle(t.SinglePredicate, path+".single_predicate")
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_OrMatcher:
		ps, err := list(t.OrMatcher, path+".or_matcher")
		if err != nil {
			return nil, err
		}
		return func(s int) bool {
			for _, q := range ps {
				if q(s) {
					return true
				}
			}
			return false
		}, nil
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_AndMatcher:
		ps, err := list(t.AndMatcher, path+".and_matcher")
		if err != nil {
			return nil, err
		}
		return func(s int) bool {
			for _, q := range ps {
				if !q(s) {
					return false
				}
			}
			return true
		}, nil
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_NotMatcher:
		q, err := compilePredicate(t.NotMatcher, path+".not_matcher")
		if err != nil {
			return nil, err
		}
		return func(s int) bool { return !q(s) }, nil
	}
	return nil, fmt.Errorf("%s: one of single_predicate, or_matcher, and_matcher or not_matcher is required", path)
}

// compileSingle compiles a predicate on one of Envoy's response status
// inputs: the code ("404") or its class ("4xx").
func compileSingle(sp *xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate, path string) (predicate, error) {
	input := sp.GetInput().GetTypedConfig()
	var value func(int) (string, bool)
	switch {
	case input.MessageIs(&matcherv3.HttpResponseStatusCodeMatchInput{}):
		value = func(s int) (string, bool) { return strconv.Itoa(s), true }
	case input.MessageIs(&matcherv3.HttpResponseStatusCodeClassMatchInput{}):
		value = func(s int) (string, bool) {
			if s < 100 || s >= 600 {
				return "", false
			}
			return strconv.Itoa(s/100) + "xx", true
		}
	default:
		return nil, fmt.Errorf("%s.input.typed_config: input %q is not supported by weir-proxy (only HttpResponseStatusCodeMatchInput and HttpResponseStatusCodeClassMatchInput)", path, input.GetTypeUrl())
	}
	sm := sp.GetValueMatch()
	if sm == nil {
		return nil, fmt.Errorf("%s.value_match: required by weir-proxy (it has no custom_match)", path)
	}
	match, err := compileStringMatcher(sm, path+".value_match")
	if err != nil {
		return nil, err
	}
	return func(s int) bool {
		v, ok := value(s)
		return ok && match(v)
	}, nil
}

// compileStringMatcher compiles xds's StringMatcher, which has the fields
// of Envoy's own, on the wire too.
func compileStringMatcher(sm *xdsmatcherv3.StringMatcher, path string) (func(string) bool, error) {
	if sm.GetCustom() != nil {
		return nil, fmt.Errorf("%s.custom: not supported by weir-proxy", path)
	}
	b, err := proto.Marshal(sm)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var m matcherv3.StringMatcher
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return httpfilter.CompileStringMatcher(&m, path)
}

// policy is a compiled RedirectPolicy.
type policy struct {
	uri      *url.URL // the whole URI, or nil for redirect
	redirect *redirectAction
	// status replaces a 2xx status of the redirected response; 0 keeps it.
	status          int
	requestHeaders  []headerOption
	responseHeaders []headerOption
}

// redirectAction is the part of Envoy's RedirectAction a custom response
// may use.
type redirectAction struct {
	scheme, host, port, path string
	pathHasQuery, stripQuery bool
}

func compilePolicy(rp *redirectpolicyv3.RedirectPolicy, path string) (*policy, error) {
	if bad := httpfilter.UnsupportedField(rp, "uri", "redirect_action", "status_code", "request_headers_to_add", "response_headers_to_add"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	p := &policy{}
	if sc := rp.GetStatusCode(); sc != nil {
		p.status = int(sc.GetValue())
	}
	switch {
	case rp.GetRedirectAction() != nil:
		ra := rp.GetRedirectAction()
		rp := path + ".redirect_action"
		// Envoy refuses these for a custom response; response_code it
		// ignores.
		if ra.GetPrefixRewrite() != "" || ra.GetRegexRewrite() != nil {
			return nil, fmt.Errorf("%s: prefix_rewrite and regex_rewrite are not supported for a custom response", rp)
		}
		if bad := httpfilter.UnsupportedField(ra, "scheme_redirect", "https_redirect", "host_redirect", "port_redirect", "path_redirect", "strip_query", "response_code"); bad != "" {
			return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", rp, bad)
		}
		a := &redirectAction{host: ra.GetHostRedirect(), path: ra.GetPathRedirect(), stripQuery: ra.GetStripQuery()}
		switch {
		case ra.GetSchemeRedirect() != "":
			a.scheme = ra.GetSchemeRedirect()
		case ra.GetHttpsRedirect():
			a.scheme = "https"
		}
		if n := ra.GetPortRedirect(); n != 0 {
			a.port = ":" + strconv.FormatUint(uint64(n), 10)
		}
		if strings.Contains(a.path, "#") {
			return nil, fmt.Errorf("%s.path_redirect: #fragment is not supported for a custom response", rp)
		}
		if a.host == "" && a.path == "" {
			return nil, fmt.Errorf("%s: at least one of host_redirect and path_redirect is required", rp)
		}
		a.pathHasQuery = strings.Contains(a.path, "?")
		p.redirect = a
	default:
		u, err := url.Parse(rp.GetUri())
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("%s.uri: %q is not an absolute URI", path, rp.GetUri())
		}
		p.uri = u
	}
	var err error
	if p.requestHeaders, err = compileHeaderOptions(rp.GetRequestHeadersToAdd(), path+".request_headers_to_add"); err != nil {
		return nil, err
	}
	if p.responseHeaders, err = compileHeaderOptions(rp.GetResponseHeadersToAdd(), path+".response_headers_to_add"); err != nil {
		return nil, err
	}
	return p, nil
}

// target is the new scheme, authority and path (with query) of a request,
// as Envoy's newUri builds them from its headers.
func (p *policy) target(h *httpfilter.RequestHeaders) (scheme, authority, path string) {
	if p.uri != nil {
		path = p.uri.EscapedPath()
		if path == "" {
			path = "/"
		}
		if p.uri.RawQuery != "" || p.uri.ForceQuery {
			path += "?" + p.uri.RawQuery
		}
		return p.uri.Scheme, p.uri.Host, path
	}
	a := p.redirect
	scheme = a.scheme
	if scheme == "" {
		scheme = h.Scheme
	}
	authority = a.host + a.port
	if a.host == "" {
		// The request's host, as Envoy's processRequestHost: without its
		// port when one is given, or when the scheme changes and the
		// port is the old scheme's default.
		authority = h.Authority
		host, port := hostWithoutPort(authority), authority[len(hostWithoutPort(authority)):]
		switch {
		case a.port != "":
			authority = host + a.port
		case scheme != h.Scheme && (h.Scheme == "http" && port == ":80" || h.Scheme == "https" && port == ":443"):
			authority = host
		}
	}
	path = h.Path
	if a.path != "" {
		path = a.path
		if i := strings.IndexByte(h.Path, '?'); i >= 0 && !a.pathHasQuery {
			path += h.Path[i:]
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if a.stripQuery && !a.pathHasQuery {
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	return scheme, authority, path
}

func hostWithoutPort(h string) string {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.LastIndexByte(h, ']') > i {
		return h
	}
	return h[:i]
}

// headerOption is a compiled HeaderValueOption.
type headerOption struct {
	key       string
	value     httpfilter.HeaderValue
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

func compileHeaderOptions(hs []*corev3.HeaderValueOption, path string) ([]headerOption, error) {
	var out []headerOption
	for i, hv := range hs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if bad := httpfilter.UnsupportedField(hv, "header", "append_action", "keep_empty_value"); bad != "" {
			return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", p, bad)
		}
		if bad := httpfilter.UnsupportedField(hv.GetHeader(), "key", "value"); bad != "" {
			return nil, fmt.Errorf("%s.header.%s: not supported by weir-proxy", p, bad)
		}
		key := hv.GetHeader().GetKey()
		if k := strings.ToLower(key); k == "" || strings.HasPrefix(k, ":") || k == "host" {
			return nil, fmt.Errorf("%s.header.key: header %q may not be modified", p, key)
		}
		v, err := httpfilter.CompileHeaderValue(hv.GetHeader().GetValue())
		if err != nil {
			return nil, fmt.Errorf("%s.header.value: %w", p, err)
		}
		out = append(out, headerOption{key: textproto.CanonicalMIMEHeaderKey(key), value: v, action: hv.GetAppendAction(), keepEmpty: hv.GetKeepEmptyValue()})
	}
	return out, nil
}

// apply evaluates the options on the request r and sets them on dst.
func applyHeaderOptions(dst http.Header, opts []headerOption, r *httpfilter.RequestHeaders, cb httpfilter.Callbacks) {
	for _, o := range opts {
		v := o.value.Render(r, cb)
		if v == "" && !o.keepEmpty {
			continue
		}
		_, exists := dst[o.key]
		switch o.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			dst[o.key] = append(dst[o.key], v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				dst[o.key] = []string{v}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			dst[o.key] = []string{v}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				dst[o.key] = []string{v}
			}
		}
	}
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{conf: c, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	conf *config
	cb   httpfilter.Callbacks
	// req is the downstream request, nil on a stream a redirect recreated
	// (whose responses are never redirected again) and before this
	// filter's DecodeHeaders (a local reply from a filter before it).
	req *httpfilter.RequestHeaders
	// applied is the policy that recreated this stream, if one did, and
	// redirected the request it recreated it with.
	applied    *policy
	redirected *httpfilter.RequestHeaders
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	if p, ok := f.cb.RequestState(stateKey).(*policy); ok {
		f.applied, f.redirected = p, h
		return httpfilter.Continue
	}
	f.req = h
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *httpfilter.ResponseHeaders, _ bool) httpfilter.Status {
	if p := f.applied; p != nil {
		// The redirected request's answer: only a 2xx is changed.
		if h.Status >= 200 && h.Status <= 299 {
			applyHeaderOptions(h.Header, p.responseHeaders, f.redirected, f.cb)
			if p.status != 0 {
				h.Status = p.status
			}
		}
		return httpfilter.Continue
	}
	if f.req == nil {
		return httpfilter.Continue
	}
	// The most specific config with a match wins, then the filter's own.
	var p *policy
	for _, rc := range f.cb.PerRouteConfigs() {
		if c, ok := rc.(*config); ok {
			if p = c.m.find(h.Status); p != nil {
				break
			}
		}
	}
	if p == nil {
		p = f.conf.m.find(h.Status)
	}
	if p == nil {
		return httpfilter.Continue
	}
	r := f.req
	orig := *r
	r.Scheme, r.Authority, r.Path = p.target(r)
	// As Envoy: the headers are set, then the route is found again.
	applyHeaderOptions(r.Header, p.requestHeaders, r, f.cb)
	f.cb.ClearRouteCache()
	if !f.cb.HasRoute() {
		// No route for the new URI: the response goes out as it is
		// (the header options stay applied, as in Envoy).
		f.restore(&orig)
		return httpfilter.Continue
	}
	r.Method = http.MethodGet
	f.cb.SetRequestState(stateKey, p)
	if !f.cb.RecreateStream() {
		// The request is still arriving. Envoy's filter would stop the
		// response for good; weir-proxy lets it through.
		f.cb.SetRequestState(stateKey, nil)
		f.restore(&orig)
		return httpfilter.Continue
	}
	return httpfilter.StopIteration
}

func (f *filter) restore(orig *httpfilter.RequestHeaders) {
	f.req.Scheme, f.req.Authority, f.req.Path, f.req.Method = orig.Scheme, orig.Authority, orig.Path, orig.Method
	f.cb.ClearRouteCache()
}

func (f *filter) EncodeData([]byte, bool) httpfilter.Status    { return httpfilter.Continue }
func (f *filter) EncodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }
