package translate

import (
	"fmt"
	"strconv"
	"strings"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	customresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	redirectpolicyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/redirect_policy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weir-dev/weir/pkg/ir"
)

// customResponseFilter is Envoy's custom response filter, which
// ir.CustomErrors runs.
const customResponseFilter = "envoy.filters.http.custom_response"

// customErrors is a route's custom_response config for c: one matcher per
// status code, each redirecting to c.Host with the code in c.CodeHeader.
func customErrors(c *ir.CustomErrors) (*customresponsev3.CustomResponse, error) {
	if len(c.Codes) == 0 {
		return nil, fmt.Errorf("custom errors without a status code")
	}
	host, err := canonicalHost(c.Host)
	if err != nil || strings.ContainsAny(host, "*/?#@") {
		return nil, fmt.Errorf("custom errors host %q is not a host name", c.Host)
	}
	var headers []*corev3.HeaderValueOption
	for _, h := range c.Headers {
		if !httpguts.ValidHeaderFieldName(h.Name) || strings.EqualFold(h.Name, "host") || !httpguts.ValidHeaderFieldValue(h.Value) {
			return nil, fmt.Errorf("custom errors header %q: %q", h.Name, h.Value)
		}
		headers = append(headers, overwriteHeader(h.Name, h.Value))
	}
	if c.CodeHeader != "" && (!httpguts.ValidHeaderFieldName(c.CodeHeader) || strings.EqualFold(c.CodeHeader, "host")) {
		return nil, fmt.Errorf("custom errors code header %q is not a header name", c.CodeHeader)
	}
	list := &xdsmatcherv3.Matcher_MatcherList{}
	seen := map[int]bool{}
	for _, code := range c.Codes {
		if code < 100 || code > 599 || seen[code] {
			return nil, fmt.Errorf("custom errors status code %d is not a status code, or is there twice", code)
		}
		seen[code] = true
		policy := &redirectpolicyv3.RedirectPolicy{
			RedirectActionSpecifier: &redirectpolicyv3.RedirectPolicy_RedirectAction{RedirectAction: &routev3.RedirectAction{HostRedirect: host}},
			RequestHeadersToAdd:     headers,
		}
		if c.CodeHeader != "" {
			policy.RequestHeadersToAdd = append([]*corev3.HeaderValueOption{overwriteHeader(c.CodeHeader, strconv.Itoa(code))}, headers...)
		}
		list.Matchers = append(list.Matchers, &xdsmatcherv3.Matcher_MatcherList_FieldMatcher{
			Predicate: &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
				SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
					Input: &xdscorev3.TypedExtensionConfig{Name: "status", TypedConfig: mustAny(&matcherv3.HttpResponseStatusCodeMatchInput{})},
					Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
						MatchPattern: &xdsmatcherv3.StringMatcher_Exact{Exact: strconv.Itoa(code)},
					}},
				},
			}},
			OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
				Name: "custom-error-" + strconv.Itoa(code), TypedConfig: mustAny(policy),
			}}},
		})
	}
	out := &customresponsev3.CustomResponse{CustomResponseMatcher: &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: list}}}
	return out, out.ValidateAll()
}

// overwriteHeader sets a header, to empty when the value formats empty,
// so a client's own copy never passes as nginx's proxy_set_header.
func overwriteHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:         &corev3.HeaderValue{Key: strings.ToLower(name), Value: value},
		AppendAction:   corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		KeepEmptyValue: true,
	}
}
